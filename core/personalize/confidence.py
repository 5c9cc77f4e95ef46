"""The confidence predictor c_i of the identity-aware paper (Sec. 3.4), over frame features.

The paper puts one fully connected layer on the image encoder's features and trains it with a
margin ranking loss on pairs of images ranked by their true shape error (Sec. 3.5). We have no
learned image encoder, so the predictor is a small MLP over the quality features of
:mod:`core.personalize.features` (standardized), trained the same way on synthetic frames with
known shapes (:mod:`core.tools.train_confidence`). Weights ship in
``resources/personalize/confidence.safetensors``; when they are missing or were trained on
other features, :func:`core.personalize.features.heuristic_confidence` is used instead.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from core.personalize.features import FEATURE_NAMES, NUM_FEATURES, heuristic_confidence

log = logging.getLogger(__name__)

RESOURCE_DIR = Path(__file__).resolve().parents[2] / "resources" / "personalize"
WEIGHTS_PATH = RESOURCE_DIR / "confidence.safetensors"
META_PATH = RESOURCE_DIR / "confidence.json"


class ConfidenceNet(torch.nn.Module):
    """features (N, F) -> confidence (N,): standardize, then F -> H -> H -> 1 with SiLU
    (or F -> 1 when ``hidden`` is 0)."""

    def __init__(self, num_features: int = NUM_FEATURES, hidden: int = 32) -> None:
        """hidden = 0: one linear layer (the paper's predictor is one fully connected layer)."""
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))
        self.hidden = int(hidden)
        if hidden <= 0:
            self.net = torch.nn.Sequential(torch.nn.Linear(num_features, 1))
        else:
            self.net = torch.nn.Sequential(
                torch.nn.Linear(num_features, hidden), torch.nn.SiLU(),
                torch.nn.Linear(hidden, hidden), torch.nn.SiLU(),
                torch.nn.Linear(hidden, 1),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)[:, 0]


class ConfidencePredictor:
    """c_i for candidate frames; thin state: the network (or None: heuristic).

    Args:
        weights: a ``.safetensors`` file (default: the bundled one); ``"heuristic"`` forces
            the heuristic.
    """

    def __init__(self, weights: str | Path | None = None) -> None:
        self.net: ConfidenceNet | None = None
        self.source = "heuristic"
        if weights == "heuristic":
            return
        path = Path(weights) if weights is not None else WEIGHTS_PATH
        if not path.exists():
            if weights is not None:
                log.warning("confidence weights %s not found; using the heuristic confidence", path)
            return
        try:
            self.net = load_confidence_net(path)
            self.source = str(path.name)
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            log.warning("cannot load the confidence predictor %s (%s); using the heuristic", path, exc)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """(N, F) features -> (N,) float32 confidences (higher: a more trustworthy shape)."""
        f = np.atleast_2d(np.asarray(features, dtype=np.float32))
        if f.shape[0] == 0:
            return np.zeros(0, np.float32)
        if self.net is None:
            return heuristic_confidence(f)
        with torch.no_grad():
            return self.net(torch.as_tensor(f)).numpy().astype(np.float32)


def load_confidence_net(path: str | Path) -> ConfidenceNet:
    """Read a :class:`ConfidenceNet` from safetensors; its metadata must list our features."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    names = json.loads(meta.get("feature_names", "[]"))
    if tuple(names) != FEATURE_NAMES:
        raise ValueError("trained on different features")
    state = load_file(str(path))
    hidden = int(meta.get("hidden", 0 if "net.2.weight" not in state else state["net.0.weight"].shape[0]))
    net = ConfidenceNet(len(names), hidden)
    net.load_state_dict(state)
    net.eval()
    return net


def save_confidence_net(net: ConfidenceNet, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write the network to safetensors (atomically) with the feature names as metadata."""
    from safetensors.torch import save

    from core.outputs import write_atomic

    meta = {"feature_names": json.dumps(list(FEATURE_NAMES)), "hidden": str(net.hidden)}
    meta.update(metadata or {})
    state = {k: v.detach().contiguous().clone() for k, v in net.state_dict().items()}
    write_atomic(path, save(state, metadata=meta))
