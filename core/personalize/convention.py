"""MediaPipe's keypoint conventions against the model's joints, per bone, for calibration.

MediaPipe does not put its keypoints where the hand model's joint centres are: on rendered
hands with a known skeleton, a calibration that fits the skeleton to MediaPipe's keypoints
(:mod:`core.personalize.bundle`) comes out with proximal phalanges about 5-6 mm too long,
metacarpals 2-3 mm and distal phalanges 2-5 mm too short - the same every time, whoever the
person (measured on the synthetic people of :mod:`core.synth.people`: mean absolute bone
error 3.6 mm, of which leave-one-person-out removal of the per-bone median bias leaves 1.8).
The bias is the difference between two conventions, not noise, so it is removed after the
fit: bone ``b``'s length is divided by ``exp(delta_b)``, ``delta_b`` the median over training
people of ``log(calibrated / true)`` (:func:`fit_convention`), and the skeleton is rescaled
to the pinned hand length.

The corrected skeleton is then **shrunk toward the shape-space hand** (the rest skeleton of
the calibration's Eq. 7 shape at the same length): ``base + shrink * (corrected - base)``.
From about 20 MediaPipe-detected frames a person's proportions are measured with an error
comparable to how far people are from the mean hand (held-out people: 1.69 mm per bone
corrected, 1.55 mm for the shape-space hand), so the best estimate lies between the two
(empirical Bayes; ``shrink`` 0.5 gave 1.45 mm). ``shrink`` is chosen on the training people too.

``delta`` and ``shrink`` are learned by ``python -m core.tools.train_confidence`` on the
training people (held-out people only evaluate) and ship in
``resources/personalize/convention.json``; without that file no correction is applied.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.keypoints import BONES, Keypoint, bone_lengths

log = logging.getLogger(__name__)

CONVENTION_PATH = Path(__file__).resolve().parents[2] / "resources" / "personalize" / "convention.json"
FORMAT = "handtwin-keypoint-convention"


def fit_convention(calibrated: np.ndarray, true: np.ndarray) -> np.ndarray:
    """(20,) per-bone log bias: the median over people of log(calibrated / true) bone lengths
    (arrays (N, 20), any length unit)."""
    c = np.asarray(calibrated, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if c.shape != t.shape or c.ndim != 2 or c.shape[1] != len(BONES):
        raise ValueError(f"expected two (N, 20) arrays, got {c.shape} and {t.shape}")
    return np.median(np.log(c / t), axis=0)


def correct_skeleton(skeleton: np.ndarray, delta: np.ndarray, hand_length_m: float | None = None) -> np.ndarray:
    """(21, 3) ``skeleton`` with bone ``b`` scaled by ``exp(-delta_b)`` along itself (children
    follow), then scaled about the wrist to ``hand_length_m`` (wrist to middle fingertip) when
    given."""
    s = np.asarray(skeleton, dtype=np.float64)
    d = np.asarray(delta, dtype=np.float64)
    out = s.copy()
    for b, (p, c) in enumerate(BONES):  # parents come first in BONES
        out[c] = out[p] + (s[c] - s[p]) * np.exp(-d[b])
    if hand_length_m is not None:
        length = float(np.linalg.norm(out[Keypoint.MIDDLE_TIP] - out[Keypoint.WRIST]))
        out = out[Keypoint.WRIST] + (out - out[Keypoint.WRIST]) * (float(hand_length_m) / length)
    return out


@dataclass(frozen=True)
class Convention:
    """A learned convention. delta: (20,) per-bone log bias; shrink: in [0, 1], how much of
    the corrected skeleton's departure from the shape-space hand is kept."""

    delta: np.ndarray
    shrink: float = 1.0

    def apply(self, skeleton: np.ndarray, base: np.ndarray, hand_length_m: float) -> np.ndarray:
        """(21, 3) the calibrated ``skeleton`` corrected (:func:`correct_skeleton`), shrunk
        toward ``base`` (21, 3; the shape-space hand) and pinned to ``hand_length_m``."""
        corrected = correct_skeleton(skeleton, self.delta, hand_length_m)
        b = correct_skeleton(base, np.zeros(len(BONES)), hand_length_m)
        return correct_skeleton(b + self.shrink * (corrected - b), np.zeros(len(BONES)), hand_length_m)


def load_convention(path: str | Path | None = None) -> Convention | None:
    """The bundled convention, or None when the file is missing or unreadable."""
    p = Path(path) if path is not None else CONVENTION_PATH
    if not p.exists():
        return None
    try:
        doc = json.loads(p.read_text())
        delta = np.asarray(doc["delta"], dtype=np.float64)
        shrink = float(doc.get("shrink", 1.0))
        if doc.get("format") != FORMAT or delta.shape != (len(BONES),) or not np.isfinite(delta).all() \
                or np.abs(delta).max() > 0.5 or not 0.0 <= shrink <= 1.0:
            raise ValueError("not a keypoint convention of 20 finite log factors within +-0.5 and a shrink in [0, 1]")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring the keypoint convention %s (%s)", p, exc)
        return None
    return Convention(delta, shrink)


def convention_document(conv: Convention, people: int, metadata: dict | None = None) -> dict:
    """The JSON document of a learned convention."""
    return {
        "format": FORMAT,
        "version": 1,
        "delta": [round(float(v), 6) for v in conv.delta],
        "shrink": round(float(conv.shrink), 4),
        "bones": [f"{p}-{c}" for p, c in BONES],
        "people": int(people),
        **(metadata or {}),
    }


def bone_error_mm(skeleton: np.ndarray, true_skeleton: np.ndarray) -> float:
    """Mean absolute bone-length error (mm) between two skeletons (metres)."""
    return float(np.abs(bone_lengths(np.asarray(skeleton)) - bone_lengths(np.asarray(true_skeleton))).mean() * 1000.0)
