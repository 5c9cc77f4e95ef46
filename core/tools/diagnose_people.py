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
  show (``consistency``; :data:`core.tools.train_confidence.TARGETS`), at output scales 0.3, 1
  and 3 against uniform weights: what any confidence predictor could at best buy.
- ``leave_one_out`` (``--leave-one-out``): per person, the bone error after dropping the one
  frame whose removal helps most, chosen with the truth (an upper bound for any single
  rejection), and how each frame's harm correlates with the targets and with the predictor's
  confidence (:func:`leave_one_out_bound`).

``--refine`` instead measures identity-aware tracking with silhouette refinement (the identity
held fixed, as with a loaded profile) against shape-free refinement on new renders of the
held-out people (:func:`refined_tracking`).
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


def diagnose(conditions: str = "clean", leave_one_out: bool = False) -> dict[str, Any]:
    """The figures of the module docstring, on the held-out people of ``conditions``
    (``leave_one_out``: also :func:`leave_one_out_bound`)."""
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
    errors = {"detection": targets("detection"), "bone": table["error"], "consistency": targets("consistency")}
    for target, err in errors.items():
        for alpha in (0.3, 1.0, 3.0):
            e = float(calibration_bone_errors(session, table, data, -alpha * np.log(err + 1e-3)).mean())
            oracle[f"{target}_x{alpha:g}_mm"] = round(e, 4)
            oracle[f"{target}_x{alpha:g}_gain"] = round(1.0 - e / uniform, 4)
    out["attention_oracle"] = oracle
    if leave_one_out:
        conf = np.array([c.confidence for c in table["candidates"]])
        out["leave_one_out"] = leave_one_out_bound(session, table, data, {**errors, "predictor": -conf})
    return out


def _bone_error(session, opt, frames: list[int], truth: np.ndarray) -> float:
    from core.keypoints import bone_lengths
    from core.tools.bench_personalize import calibrated_skeleton

    session._selected = None
    r = session.calibrate(opt, frames=frames, uniform=True)
    return float(np.abs(bone_lengths(calibrated_skeleton(session, r)) - bone_lengths(truth)).mean() * 1000.0)


def leave_one_out_bound(session, table: dict, data, badness: dict[str, np.ndarray], k: int = 20) -> dict[str, Any]:
    """What rejecting one frame could buy: per person, the uniform calibration (true length) of
    its first ``k`` frames and of those frames without each one in turn. A frame's *harm* is
    the bone error with it minus without it. Returns the mean bone error of all frames, of the
    best single frame dropped (chosen with the truth: an upper bound for any one rejection),
    the gain, and the mean per-person Spearman correlation of the harm with each ``badness``
    (N,) score (higher: a worse frame; e.g. a target error, or minus the confidence)."""
    from scipy.stats import spearmanr

    from core.keypoints import Keypoint
    from core.personalize.scale import ScaleOption
    from core.tools.train_confidence import subject_groups

    full, best = [], []
    rho: dict[str, list[float]] = {name: [] for name in badness}
    for s, rows in subject_groups(table).items():
        rows = rows[:k]
        truth = data.true_skeleton[np.nonzero(data.subject == s)[0][0]].astype(np.float64)
        opt = ScaleOption.from_hand_length(float(np.linalg.norm(truth[Keypoint.MIDDLE_TIP] - truth[Keypoint.WRIST]))
                                           * 1000.0)
        session._candidates = [table["candidates"][i] for i in rows]
        n = len(rows)
        all_frames = _bone_error(session, opt, list(range(n)), truth)
        harm = all_frames - np.array([_bone_error(session, opt, [j for j in range(n) if j != i], truth)
                                      for i in range(n)])
        full.append(all_frames)
        best.append(all_frames - max(float(harm.max()), 0.0))
        for name, score in badness.items():
            r = spearmanr(harm, np.asarray(score)[rows]).statistic
            if np.isfinite(r):
                rho[name].append(float(r))
    return {"uniform_mm": round(float(np.mean(full)), 4), "best_single_drop_mm": round(float(np.mean(best)), 4),
            "best_single_drop_gain": round(float(1.0 - np.mean(best) / np.mean(full)), 4),
            "spearman_harm": {name: round(float(np.mean(v)), 3) for name, v in rho.items() if v}}


def refined_tracking(conditions: str = "clean", frames_per_person: int = 8) -> dict[str, Any]:
    """Identity-aware tracking with silhouette refinement against shape-free refinement.

    Each held-out person (``conditions``' set) is calibrated from its first 20 usable cached
    frames (attention, true hand length); then ``frames_per_person`` *new* frames of that
    person are rendered (clean, with their silhouettes; the same person rebuilt from its true
    skeleton) and detected by MediaPipe. Each is fitted and refined (offline iterations)
    shape-free, with the calibrated identity held fixed (the personal model, shape off, as
    with a loaded profile) and with the person's true skeleton. Returns PA-MPJPE (mm) of the
    fits and of the refined hands, and the identity's gains over shape-free.
    """
    from core.detect import HandDetector
    from core.fit import HandObservation, TailorFitter
    from core.keypoints import Keypoint
    from core.metrics import pa_mpjpe
    from core.model.data import mirror_model
    from core.model.personal import personal_model
    from core.personalize.scale import ScaleOption
    from core.personalize.session import CalibrationSession
    from core.refine import Refiner, RefineSettings, RefineTarget
    from core.synth.people import person_layers
    from core.synth.render import SynthSettings, procedural_skin_texture, render_hand_sample
    from core.tools.bench_personalize import _subject_candidates, identity_fitter
    from core.tools.train_confidence import PEOPLE_SETS, load_people

    data = load_people("heldout", conditions)
    seed = PEOPLE_SETS[conditions][1][3]
    session = CalibrationSession(k=20)
    base = session.model_data
    zero = np.zeros(base.num_betas, np.float32)
    settings = SynthSettings(image_size=(256, 256), fill=(0.35, 0.75), max_tilt_deg=60.0, back_facing=0.4,
                             supersample=1)
    fixed = RefineSettings(optimize_shape=False)
    free_refiner = Refiner(base, mirror_model(base), RefineSettings())
    rows: dict[str, list[float]] = {k: [] for k in ("free", "aware", "true", "free_refined", "aware_refined",
                                                     "true_refined")}
    with HandDetector(max_hands=1, mode="static") as det:
        for s, cands in _subject_candidates(session, data).items():
            truth = data.true_skeleton[np.nonzero(data.subject == s)[0][0]].astype(np.float64)
            length = float(np.linalg.norm(truth[Keypoint.MIDDLE_TIP] - truth[Keypoint.WRIST]))
            session._candidates, session._selected = cands, None
            r = session.calibrate(ScaleOption.from_hand_length(length * 1000.0),
                                  frames=list(range(min(20, len(cands)))), surface=False)
            aware_fitter, betas = identity_fitter(session, r)
            mine = personal_model(base, np.asarray(r.skeleton), betas=r.shape) if r.skeleton is not None else base
            true_model = personal_model(base, truth)
            fitters = {"free": (session.fitter, None, free_refiner),
                       "aware": (aware_fitter, betas, Refiner(mine, mirror_model(mine), fixed)),
                       "true": (TailorFitter(true_model, mirror_model(true_model), session.fitter.settings), zero,
                                Refiner(true_model, mirror_model(true_model), fixed))}
            layers = person_layers(base, truth)
            rng = np.random.default_rng([seed, s, 77])
            texture = procedural_skin_texture(rng, 256)
            found_here = 0
            for _ in range(4 * frames_per_person):
                if found_here >= frames_per_person:
                    break
                sample = render_hand_sample(rng, layers, settings, betas=zero, texture=texture)
                found = det.detect(sample.image)
                if not found:
                    continue
                found_here += 1
                d = found[0]
                K = sample.K.astype(np.float32)
                obs = HandObservation("right", d.keypoints_2d, d.world_landmarks, K, (256, 256), d.score)
                target = RefineTarget(sample.mask, d.keypoints_2d, K)
                for key, (fitter, b, refiner) in fitters.items():
                    fit = fitter.fit([obs], b, None, 20)[0]
                    rows[key].append(pa_mpjpe(fit.keypoints_3d, sample.joints_3d) * 1000.0)
                    refined = refiner.refine([fit], [target])[0]
                    rows[f"{key}_refined"].append(pa_mpjpe(refined.keypoints_3d, sample.joints_3d) * 1000.0)
    m = {k: float(np.mean(v)) for k, v in rows.items()}
    out: dict[str, Any] = {"frames": len(rows["free"])}
    out.update({f"pa_mpjpe_{k}_mm": round(v, 3) for k, v in m.items()})
    for stage in ("", "_refined"):
        out[f"identity_aware_gain{stage}"] = round(1.0 - m[f"aware{stage}"] / m[f"free{stage}"], 4)
        out[f"true_skeleton_gain{stage}"] = round(1.0 - m[f"true{stage}"] / m[f"free{stage}"], 4)
    return out


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - renders and detects on first use
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conditions", choices=("clean", "webcam"), default="clean",
                        help="the held-out people's frames (core.personalize.synthdata.CONDITIONS)")
    parser.add_argument("--leave-one-out", action="store_true",
                        help="also what dropping each person's most harmful frame (known from the truth) gains "
                             "(about 20 calibrations per person)")
    parser.add_argument("--refine", action="store_true",
                        help="only identity-aware tracking with silhouette refinement (refined_tracking: renders "
                             "and detects new frames of the held-out people)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    torch.set_num_threads(1)
    if args.refine:
        print(json.dumps(refined_tracking(args.conditions), indent=1))
    else:
        print(json.dumps(diagnose(args.conditions, args.leave_one_out), indent=1))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
