"""What limits calibration on rendered people: ``python -m core.tools.diagnose_people``.

``bench --only people`` measures attention and identity-aware tracking on synthetic people
rendered and detected by MediaPipe; this command says why both gain little there. On the same
held-out people (:data:`core.tools.train_confidence.PEOPLE_HELDOUT_SET`, cached; with
``--conditions webcam`` the webcam session's, :data:`~core.tools.train_confidence.PEOPLE_WEBCAM_HELDOUT_SET`), each
calibrated from its first usable frames with the true hand length given (lengths in mm):

- ``bone_error_uniform_by_k``: the per-bone error with uniform weights from K = 5, 10, 20
  frames. Flat in K: the error is shared by the frames (systematic), not per-frame noise that
  an attention could down-weight.
- ``deviation``: how much of a person's per-bone deviation from the mean hand (log lengths, at
  the true length) the calibrated skeleton recovers - the least-squares ``slope`` of calibrated
  on true deviations and their correlation, with MediaPipe's keypoints and with the renderer's
  exact keypoints in their place (same frames, same fits; keypoint convention off, each bone's
  median bias removed in-sample, which favours both equally). ``bone_error_mm`` is the error
  left, ``mean_hand_mm`` the mean hand's.
- ``attention_oracle``: the per-bone error when the confidence is an oracle: minus the log of
  each frame's true MediaPipe 2D error (``detection``), or of the true error of its own refit's
  bone proportions (``bone``), or of how far its keypoints are from anything the true hand can
  show (``consistency``; :data:`core.tools.train_confidence.TARGETS`), at output scales 1 and 3
  against uniform weights: what any confidence predictor could at best buy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


def deviation_recovery(calibrated: np.ndarray, true: np.ndarray, mean: np.ndarray,
                       remove_bias: bool = False) -> tuple[float, float]:
    """How much of people's bone deviations from the mean hand a calibration recovers.

    Args:
        calibrated, true, mean: (N, 20) bone lengths of N people: calibrated, true and the
            mean hand's at each person's size (any one length unit).
        remove_bias: subtract each bone's median calibrated-minus-true log deviation first.

    Returns:
        the least-squares slope of the calibrated log deviations on the true ones (1: the
        calibration sees a person's proportions, 0: it returns the mean hand) and their correlation.
    """
    d_true = np.log(np.asarray(true, dtype=np.float64) / mean).ravel()
    d_cal = np.log(np.asarray(calibrated, dtype=np.float64) / mean)
    if remove_bias:
        d_cal = d_cal - np.median(d_cal - d_true.reshape(d_cal.shape), axis=0)
    d_cal = d_cal.ravel()
    slope = float(d_true @ d_cal / max(float(d_true @ d_true), 1e-12))
    corr = float(np.corrcoef(d_true, d_cal)[0, 1]) if d_cal.std() > 0 and d_true.std() > 0 else 0.0
    return slope, corr


def _deviation(session, table: dict, data) -> dict[str, float]:
    """:func:`deviation_recovery` of uniform calibrations with the convention off and each
    bone's bias removed, the bone error left and the mean hand's, mm."""
    from core.keypoints import bone_lengths
    from core.personalize.convention import correct_skeleton
    from core.tools.train_confidence import calibrated_skeletons

    convention, session.convention = session.convention, None
    try:
        cal, base, true = calibrated_skeletons(session, table, data, np.zeros(len(table["error"])), uniform=True)
    finally:
        session.convention = convention
    length = np.linalg.norm(true[:, 12] - true[:, 0], axis=1)
    mean = bone_lengths(np.stack([correct_skeleton(b, np.zeros(20), L) for b, L in zip(base, length)]))
    true_b, cal_b = bone_lengths(true), bone_lengths(cal)
    slope, corr = deviation_recovery(cal_b, true_b, mean, remove_bias=True)
    unbiased = mean * np.exp(np.log(cal_b / mean) - np.median(np.log(cal_b / true_b), axis=0))
    return {"slope": round(slope, 3), "corr": round(corr, 3),
            "bone_error_mm": round(float(np.abs(unbiased - true_b).mean() * 1000.0), 3),
            "mean_hand_mm": round(float(np.abs(mean - true_b).mean() * 1000.0), 3)}


def diagnose(conditions: str = "clean") -> dict[str, Any]:
    """The figures of the module docstring, on the held-out people of ``conditions``."""
    from core.personalize.session import CalibrationSession
    from core.tools.train_confidence import calibration_bone_errors, frame_table, frame_targets, load_people

    data = load_people("heldout", conditions)
    session = CalibrationSession()
    table = frame_table(data, session)
    zeros = np.zeros(len(table["error"]))
    out: dict[str, Any] = {"conditions": conditions, "people": int(len(np.unique(table["subject"]))),
                           "frames": int(len(zeros))}
    out["bone_error_uniform_by_k"] = {
        k: round(float(calibration_bone_errors(session, table, data, zeros, k=k, uniform=True).mean()), 4)
        for k in (5, 10, 20)}
    exact = dataclasses.replace(data, keypoints_2d=data.true_keypoints_2d.astype(np.float32))
    out["deviation"] = {"mediapipe": _deviation(session, table, data),
                        "exact_keypoints": _deviation(session, frame_table(exact, session), exact)}
    def targets(target: str) -> np.ndarray:
        return np.concatenate([
            frame_targets(session, data, np.nonzero(data.subject == s)[0],
                          [table["candidates"][i] for i in np.nonzero(table["subject"] == s)[0]], target)
            for s in np.unique(table["subject"])])

    uniform = float(calibration_bone_errors(session, table, data, zeros, uniform=True).mean())
    oracle: dict[str, Any] = {"uniform_mm": round(uniform, 4)}
    for target, err in (("detection", targets("detection")), ("bone", table["error"]),
                        ("consistency", targets("consistency"))):
        for alpha in (1.0, 3.0):
            e = float(calibration_bone_errors(session, table, data, -alpha * np.log(err + 1e-3)).mean())
            oracle[f"{target}_x{alpha:g}_mm"] = round(e, 4)
            oracle[f"{target}_x{alpha:g}_gain"] = round(1.0 - e / uniform, 4)
    out["attention_oracle"] = oracle
    return out


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - renders and detects on first use
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conditions", choices=("clean", "webcam"), default="clean",
                        help="the held-out people's frames (core.personalize.synthdata.CONDITIONS)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    torch.set_num_threads(1)
    print(json.dumps(diagnose(args.conditions), indent=1))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
