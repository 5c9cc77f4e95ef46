"""Train the confidence predictor: ``python -m core.personalize.train_confidence``.

Identity-aware paper, Sec. 3.5: pairs of frames ranked by their true shape error
``l_i = |beta_i - beta|_1`` (the frame's free-shape fit against the subject's true shape),
margin ranking loss on every pair. The frames are synthetic subjects from
:mod:`core.personalize.synthdata` (rendered, degraded, detected by MediaPipe; cached), the
inputs the quality features of :mod:`core.personalize.features`. Pairs are taken within a
subject, because attention only compares frames of one user. Deterministic (seeded; one
thread). Writes ``resources/personalize/confidence.safetensors`` and ``confidence.json``
(training metadata and held-out ranking quality).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from core.personalize.confidence import META_PATH, WEIGHTS_PATH, ConfidenceNet, save_confidence_net
from core.personalize.features import FEATURE_NAMES

log = logging.getLogger("train_confidence")

#: The data sets: (name, subjects, detected frames per subject, seed).
TRAIN_SET = ("train", 30, 20, 1)
HELDOUT_SET = ("heldout", 16, 20, 1000)


def frame_table(data, session=None) -> dict[str, np.ndarray]:
    """Free-shape refits of cached synthetic frames: features (N, F), betas, poses, true
    betas, subject ids and the shape error l_i, for the usable frames."""
    from core.personalize.session import CalibrationSession
    from core.personalize.synthdata import candidates

    session = session or CalibrationSession(confidence="heuristic")
    cands = candidates(session, data)
    keep = np.array([c is not None for c in cands])
    cs = [c for c in cands if c is not None]
    betas = np.stack([c.betas for c in cs])
    true = data.true_betas[keep]
    return {
        "features": np.stack([c.features for c in cs]),
        "betas": betas,
        "poses": np.stack([c.pose for c in cs]),
        "true_betas": true,
        "subject": data.subject[keep],
        "error": np.abs(betas - true).sum(1),
    }


def within_subject_pairs(subject: np.ndarray, error: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i, j) of frames of the same subject with different errors, and the target
    y = +1 when frame i has the smaller error (should get the higher confidence)."""
    ii, jj = [], []
    for s in np.unique(subject):
        idx = np.nonzero(subject == s)[0]
        a, b = np.triu_indices(len(idx), 1)
        ii.append(idx[a])
        jj.append(idx[b])
    i, j = np.concatenate(ii), np.concatenate(jj)
    keep = error[i] != error[j]
    i, j = i[keep], j[keep]
    return i, j, np.where(error[i] < error[j], 1.0, -1.0)


def ranking_quality(conf: np.ndarray, error: np.ndarray, subject: np.ndarray) -> dict[str, float]:
    """Pairwise accuracy (within subjects) and mean per-subject Spearman between c and -l."""
    from scipy.stats import spearmanr

    i, j, y = within_subject_pairs(subject, error)
    acc = float(np.mean(np.sign(conf[i] - conf[j]) == y)) if len(y) else float("nan")
    rhos = []
    for s in np.unique(subject):
        m = subject == s
        if m.sum() >= 3:
            rho = spearmanr(conf[m], -error[m]).statistic
            if np.isfinite(rho):
                rhos.append(float(rho))
    return {"pairwise_accuracy": round(acc, 4), "spearman": round(float(np.mean(rhos)), 4) if rhos else float("nan")}


def train(table: dict[str, np.ndarray], epochs: int = 400, margin: float = 0.1, lr: float = 3e-3,
          weight_decay: float = 1e-2, hidden: int = 0, seed: int = 0) -> ConfidenceNet:
    """Margin ranking training over all within-subject pairs (full batch, Adam).

    The default is one linear layer over the standardized features, as the paper's predictor
    (one fully connected layer): on a validation split of the training subjects (22 / 8) it
    ranked as well as MLPs of 4 or 16 hidden units, which overfit the 30 training subjects.
    """
    torch.manual_seed(seed)
    x = torch.as_tensor(table["features"], dtype=torch.float32)
    net = ConfidenceNet(x.shape[1], hidden)
    net.mean.copy_(x.mean(0))
    net.std.copy_(x.std(0).clamp(min=1e-3))
    i, j, y = within_subject_pairs(table["subject"], table["error"])
    i, j, y = torch.as_tensor(i), torch.as_tensor(j), torch.as_tensor(y, dtype=torch.float32)
    loss_fn = torch.nn.MarginRankingLoss(margin=margin)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    for epoch in range(epochs):
        c = net(x)
        loss = loss_fn(c[i], c[j], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if epoch % 100 == 0 or epoch == epochs - 1:
            log.info("epoch %d: ranking loss %.4f", epoch, float(loss.detach()))
    net.eval()
    return net


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH)
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--margin", type=float, default=0.1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    from core.personalize.synthdata import load_or_generate

    t0 = time.perf_counter()
    tr = frame_table(load_or_generate(*TRAIN_SET[:3], seed=TRAIN_SET[3], progress=True))
    te = frame_table(load_or_generate(*HELDOUT_SET[:3], seed=HELDOUT_SET[3], progress=True))
    log.info("frames: %d train, %d held-out (%.0f s)", len(tr["error"]), len(te["error"]), time.perf_counter() - t0)
    net = train(tr, epochs=args.epochs, margin=args.margin)
    from core.personalize.features import heuristic_confidence

    with torch.no_grad():
        c_tr = net(torch.as_tensor(tr["features"])).numpy()
        c_te = net(torch.as_tensor(te["features"])).numpy()
    quality = {
        "train": ranking_quality(c_tr, tr["error"], tr["subject"]),
        "heldout": ranking_quality(c_te, te["error"], te["subject"]),
        "heldout_heuristic": ranking_quality(heuristic_confidence(te["features"]), te["error"], te["subject"]),
    }
    log.info("ranking quality: %s", quality)
    meta = {
        "command": "python -m core.personalize.train_confidence" + (f" --epochs {args.epochs}" if args.epochs != 400 else "")
                   + (f" --margin {args.margin}" if args.margin != 0.1 else ""),
        "feature_names": list(FEATURE_NAMES),
        "target": "l_i = |beta_i - beta_true|_1 of the frame's free-shape refit; pairs within a subject",
        "model": "one linear layer over standardized features (hidden=0)",
        "loss": f"MarginRankingLoss(margin={args.margin}), full batch, Adam lr 3e-3, weight decay 1e-2",
        "epochs": args.epochs,
        "train": {"set": TRAIN_SET, "frames": int(len(tr["error"]))},
        "heldout": {"set": HELDOUT_SET, "frames": int(len(te["error"]))},
        "ranking_quality": quality,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    save_confidence_net(net, args.out, {"training": json.dumps(meta)})
    from core.export.writer import write_atomic

    meta_path = args.out.with_suffix(".json") if args.out != WEIGHTS_PATH else META_PATH
    write_atomic(meta_path, (json.dumps(meta, indent=2) + "\n").encode())
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
