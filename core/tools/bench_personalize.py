"""``bench --only calibration``: calibration time and accuracy (identity-aware paper, Sec. 4).

Figures (lengths in mm):

- ``calibration_ms``: :meth:`CalibrationSession.calibrate` for K = 20 frames (median), with
  the surface fit (the default); ``calibration_no_surface_ms`` without it.
- ``calibration_demo_surface_*``: the surface fit on the demo clip (:func:`demo_surface`).
- Synthetic subjects (shapes from the model's shape distribution; 20 detected frames each,
  known intrinsics; :mod:`core.personalize.synthdata`, cached): W- and L-errors with the
  size pinned to the true hand length (isolates proportions; L is then pinned by
  construction), with attention (Eq. 6) and with uniform weights (Table 4's ablation), and
  with the prior's size only; error against K (Fig. 4: random subsets, 1 to 20 frames).
- Demo clip (one subject, ground truth known): calibrated W/L errors, and the hand length
  of every tracked frame with a free shape against identity-aware tracking with the
  calibrated profile (standard deviation across frames).

With ``bench --plots DIR``: ``calibration_hand_length.png`` and ``calibration_error_vs_k.png``.

``bench --only people``: synthetic *people* (:mod:`core.synth.people`: skeletons off the
template by the spread anthropometric studies report), rendered and detected by the real
MediaPipe (held-out set, cached), K = 20 frames each, true intrinsics, the true hand length
given: the calibrated per-bone error (mm, mean over the 20 bones and the subjects) with
attention and with uniform weights and for the mean hand at the true length; the confidence
predictor's ranking accuracy on these frames; PA-MPJPE of identity-aware tracking with the
calibrated hand against the shape-free fit, on each person's *other* frames (not used to
calibrate); calibration time; and the surface figures below. Two bounds say what the
MediaPipe input allows: identity-aware tracking with the person's *true* skeleton
(``people_pa_mpjpe_true_skeleton_mm``: no calibration can do better), and attention from an
oracle confidence, minus the log of each frame's true MediaPipe 2D error
(``people_bone_error_oracle_attention_mm``: down-weighting exactly the frames MediaPipe got
wrong). ``people_deviation_slope`` is the least-squares slope of the calibrated skeleton's
per-bone log deviation from the mean hand against the person's true one (1: the calibration
sees a person's proportions; 0: it returns the mean hand).
``people_attention_paired_mm`` is the per-person paired difference, uniform minus attention
(mean, ``_se_mm`` its standard error, ``people_attention_better_people`` how many people gain).
The same figures without identity-aware tracking, keys ``people_webcam_*``, on held-out people
whose frames are a webcam session's (:mod:`core.synth.webcam`: each frame far away, edge-on,
cut by the border, blurred by motion, dim and noisy, occluded, at random;
:data:`core.tools.train_confidence.PEOPLE_WEBCAM_HELDOUT_SET`). Attention and uniform weights
go through the same joint optimization with its robust loss.

``bench --only surface`` (also part of ``people``): synthetic people with a known surface
(:func:`core.personalize.people.surfaced_person`: an off-template skeleton plus a per-finger and
palm thickness change along the rest normals, :func:`core.synth.people.sample_person_surface`),
K = 20 calibration frames each (true keypoints projected with 2 px noise, shape-free fit starts,
the hand's silhouette rendered by our hard rasterizer and cut at the wrist, true intrinsics and
hand length) and 10 held-out frames: the joint optimization, then the surface fit
(:mod:`core.personalize.surface`). ``surface_people_error_*_mm``: mean distance of the
calibrated rest mesh's vertices to the true rest surface, without and with the fitted surface;
``surface_people_heldout_iou_*``: silhouette IoU on the held-out frames (pose from the
identity-aware fit of their keypoints; the surface changes no keypoint, so both meshes share
the pose) against the true silhouette, in the hand's crop, wrist-cut region ignored.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

K_VALUES = (1, 2, 5, 10, 20)
SUBSETS_PER_K = 8


def _subject_candidates(session, data) -> dict[int, list]:
    from core.personalize.synthdata import candidates

    out: dict[int, list] = {}
    for s in np.unique(data.subject):
        idx = np.nonzero(data.subject == s)[0]
        out[int(s)] = [c for c in candidates(session, data, idx) if c is not None]
    return out


def _errors(session, cands, true_betas, frames, scale_true: bool, uniform: bool) -> tuple[float, float]:
    from core.personalize.scale import ScaleOption, measures

    L, W, _ = measures(session.layer, true_betas)
    session._candidates = cands
    session._selected = None
    opt = ScaleOption.from_hand_length(L * 1000.0) if scale_true else None
    # Shape-space subjects: Eq. 7's shape is what this measures (the joint optimization of the
    # personal skeleton is measured on synthetic people, people_calibration / keypoint_people).
    r = session.calibrate(opt, frames=frames, uniform=uniform, personal=False)
    return r.hand_width_mm - W * 1000.0, r.hand_length_mm - L * 1000.0


def synthetic_calibration(session=None) -> dict[str, Any]:
    """W/L errors on the held-out synthetic subjects (see the module docstring)."""
    from core.personalize.session import CalibrationSession
    from core.personalize.synthdata import load_or_generate
    from core.tools.train_confidence import HELDOUT_SET

    name, n_subj, n_frames, seed = HELDOUT_SET
    data = load_or_generate(name, n_subj, n_frames, seed)
    session = session or CalibrationSession(k=20)
    per_subject = _subject_candidates(session, data)
    truth = {int(s): data.true_betas[np.nonzero(data.subject == s)[0][0]] for s in per_subject}
    rows: dict[str, list] = {"att_true": [], "uni_true": [], "att_prior": [], "uni_prior": []}
    for s, cands in per_subject.items():
        if not cands:
            continue
        frames = list(range(min(20, len(cands))))
        rows["att_true"].append(_errors(session, cands, truth[s], frames, True, False))
        rows["uni_true"].append(_errors(session, cands, truth[s], frames, True, True))
        rows["att_prior"].append(_errors(session, cands, truth[s], frames, False, False))
        rows["uni_prior"].append(_errors(session, cands, truth[s], frames, False, True))
    mean_abs = {k: np.abs(np.asarray(v)).mean(0) for k, v in rows.items()}
    rng = np.random.default_rng(0)
    vs_k: dict[str, dict[int, list[float]]] = {k: {kk: [] for kk in K_VALUES} for k in ("w_true", "w_prior", "l_prior",
                                                                                        "w_true_uniform")}
    for s, cands in per_subject.items():
        for kk in K_VALUES:
            n = min(kk, len(cands))  # K = 20: all of the subject's usable frames (<= 20)
            for _ in range(SUBSETS_PER_K if n < len(cands) else 1):
                frames = sorted(rng.choice(len(cands), n, replace=False).tolist())
                w_t, _ = _errors(session, cands, truth[s], frames, True, False)
                w_u, _ = _errors(session, cands, truth[s], frames, True, True)
                w_p, l_p = _errors(session, cands, truth[s], frames, False, False)
                vs_k["w_true"][kk].append(abs(w_t))
                vs_k["w_true_uniform"][kk].append(abs(w_u))
                vs_k["w_prior"][kk].append(abs(w_p))
                vs_k["l_prior"][kk].append(abs(l_p))
    curve = {k: {str(kk): round(float(np.mean(v)), 3) for kk, v in d.items() if v} for k, d in vs_k.items()}
    # The shape prior alone (mean shape, pinned to the true length): what the frames add.
    from core.personalize.scale import measures, pin_hand_length

    prior_only = []
    for s in per_subject:
        L, W, _ = measures(session.layer, truth[s])
        prior_only.append(measures(session.layer,
                                   pin_hand_length(session.layer, np.zeros(session.layer.num_betas), L))[1] - W)
    return {
        "calibration_subjects": len(rows["att_true"]),
        "calibration_frames_per_subject": round(float(np.mean([min(20, len(c)) for c in per_subject.values()])), 1),
        "calibration_confidence": session.predictor.source,
        "calibration_w_error_mm": round(float(mean_abs["att_true"][0]), 3),
        "calibration_l_error_mm": round(float(mean_abs["att_true"][1]), 3),
        "calibration_w_error_uniform_mm": round(float(mean_abs["uni_true"][0]), 3),
        "calibration_l_error_uniform_mm": round(float(mean_abs["uni_true"][1]), 3),
        "calibration_w_error_prior_scale_mm": round(float(mean_abs["att_prior"][0]), 3),
        "calibration_l_error_prior_scale_mm": round(float(mean_abs["att_prior"][1]), 3),
        "calibration_w_error_prior_scale_uniform_mm": round(float(mean_abs["uni_prior"][0]), 3),
        "calibration_l_error_prior_scale_uniform_mm": round(float(mean_abs["uni_prior"][1]), 3),
        "calibration_w_error_mean_shape_true_length_mm": round(float(np.mean(np.abs(prior_only)) * 1000), 3),
        "calibration_error_vs_k": curve,
    }


def _people_truth(data, s: int) -> np.ndarray:
    return data.true_skeleton[np.nonzero(data.subject == s)[0][0]].astype(np.float64)


def calibrated_skeleton(session, result) -> np.ndarray:
    """(21, 3) the rest keypoints of a calibration result: its personal skeleton when the
    calibration produced one, else the rest keypoints of its shape."""
    skel = getattr(result, "skeleton", None)
    if skel is not None:
        return np.asarray(skel, dtype=np.float64)
    k0, kd = session._basis
    return k0 + (kd @ np.asarray(result.shape, dtype=np.float64)).reshape(21, 3)


def identity_fitter(session, result):
    """A tailor fitter on the calibrated identity (its personal model when it has a skeleton)
    and the betas to fix, for identity-aware tracking."""
    from core.fit import TailorFitter
    from core.model.data import mirror_model
    from core.model.personal import personal_model

    skel = getattr(result, "skeleton", None)
    if skel is None:
        return session.fitter, result.shape
    right = personal_model(session.model_data if session.side == "right" else mirror_model(session.model_data),
                           np.asarray(skel), betas=result.shape)
    return TailorFitter(right, mirror_model(right), session.fitter.settings), result.shape


def people_calibration(session=None, k: int = 20, conditions: str = "clean", tracking: bool = True) -> dict[str, Any]:
    """Calibration of synthetic people (see the module docstring). ``conditions``: the held-out
    set's (``"webcam"``: keys ``people_webcam_*``); ``tracking``: also measure identity-aware
    tracking on each person's frames beyond the first ``k``."""
    from core.fit import HandObservation, TailorFitter
    from core.keypoints import Keypoint, bone_lengths
    from core.metrics import pa_mpjpe
    from core.model.data import mirror_model
    from core.model.personal import personal_model
    from core.personalize.scale import ScaleOption, measures, pin_hand_length
    from core.personalize.session import CalibrationSession
    from core.tools.diagnose_people import deviation_recovery
    from core.tools.train_confidence import frame_targets, load_people, ranking_quality

    data = load_people("heldout", conditions)
    session = session or CalibrationSession(k=k)
    per_subject = _subject_candidates(session, data)
    rows: dict[str, list] = {"att": [], "uni": [], "oracle": [], "mean_hand": [], "free": [], "aware": [], "true": [],
                             "ms": [], "dev_true": [], "dev_cal": [], "dev_mean": []}
    conf_all, err_all, subj_all = [], [], []
    zero = np.zeros(session.layer.num_betas, np.float32)
    for s, cands in per_subject.items():
        if len(cands) < 2:
            continue
        truth = _people_truth(data, s)
        true_bones = bone_lengths(truth) * 1000.0
        L = float(np.linalg.norm(truth[Keypoint.MIDDLE_TIP] - truth[Keypoint.WRIST]))
        opt = ScaleOption.from_hand_length(L * 1000.0)
        frames = list(range(min(k, len(cands))))
        session._candidates = cands
        session._selected = None
        t0 = time.perf_counter()
        r_att = session.calibrate(opt, frames=frames)
        rows["ms"].append((time.perf_counter() - t0) * 1000.0)
        r_uni = session.calibrate(opt, frames=frames, uniform=True)
        idx = np.nonzero(data.subject == s)[0]
        # The oracle confidence: minus the log of each calibration frame's true MediaPipe 2D error.
        session._candidates = [dataclasses.replace(c, confidence=-float(np.log(max(e, 1e-6)))) for c, e in
                               zip(cands, frame_targets(session, data, idx, cands, "detection"))]
        r_oracle = session.calibrate(opt, frames=frames)
        session._candidates = cands
        cal_bones = bone_lengths(calibrated_skeleton(session, r_att)) * 1000.0
        rows["att"].append(np.abs(cal_bones - true_bones).mean())
        rows["uni"].append(np.abs(bone_lengths(calibrated_skeleton(session, r_uni)) * 1000.0 - true_bones).mean())
        rows["oracle"].append(np.abs(bone_lengths(calibrated_skeleton(session, r_oracle)) * 1000.0 - true_bones).mean())
        mean_hand = pin_hand_length(session.layer, np.zeros(session.layer.num_betas), L)
        mean_bones = measures(session.layer, mean_hand)[2] * 1000.0
        rows["mean_hand"].append(np.abs(mean_bones - true_bones).mean())
        rows["dev_true"].append(true_bones)
        rows["dev_cal"].append(cal_bones)
        rows["dev_mean"].append(mean_bones)
        targets = frame_targets(session, data, idx, cands)
        if targets is not None:
            conf_all.append(np.array([c.confidence for c in cands]))
            err_all.append(targets)
            subj_all.append(np.full(len(cands), s))
        # Identity-aware tracking with the calibrated hand (and with the true one) against the
        # shape-free fit, on the frames calibration did not use.
        fitter, betas = identity_fitter(session, r_att)
        true_model = personal_model(session.model_data, truth)
        true_fitter = TailorFitter(true_model, mirror_model(true_model), session.fitter.settings)
        used = {int(cands[j].frame_index) for j in frames}
        for i in idx if tracking else ():
            if int(data.frame[i]) in used:
                continue
            w, h = (int(v) for v in data.image_size[i])
            obs = HandObservation("right", data.keypoints_2d[i], data.world[i], data.K[i].astype(np.float32), (w, h),
                                  float(data.score[i]))
            free = session.fitter.fit([obs], None, None, 20)[0]
            aware = fitter.fit([obs], betas, None, 20)[0]
            oracle = true_fitter.fit([obs], zero, None, 20)[0]
            rows["free"].append(pa_mpjpe(free.keypoints_3d, data.true_keypoints_3d[i]) * 1000.0)
            rows["aware"].append(pa_mpjpe(aware.keypoints_3d, data.true_keypoints_3d[i]) * 1000.0)
            rows["true"].append(pa_mpjpe(oracle.keypoints_3d, data.true_keypoints_3d[i]) * 1000.0)
    m = {key: float(np.mean(v)) if v else float("nan") for key, v in rows.items() if not key.startswith("dev")}
    slope, _ = deviation_recovery(np.stack(rows["dev_cal"]), np.stack(rows["dev_true"]), np.stack(rows["dev_mean"]))
    paired = np.asarray(rows["uni"]) - np.asarray(rows["att"])
    out = {
        "people_conditions": conditions,
        "people_subjects": len(rows["att"]),
        "people_frames_per_subject": k,
        "people_heldout_frames": len(rows["free"]),
        "people_confidence": session.predictor.source,
        "people_bone_error_mm": round(m["att"], 3),
        "people_bone_error_uniform_mm": round(m["uni"], 3),
        "people_bone_error_oracle_attention_mm": round(m["oracle"], 3),
        "people_bone_error_mean_hand_mm": round(m["mean_hand"], 3),
        "people_attention_gain_over_uniform": round(1.0 - m["att"] / m["uni"], 4),
        # per person, uniform minus attention (> 0: attention better): mean and standard error
        "people_attention_paired_mm": round(float(paired.mean()), 4),
        "people_attention_paired_se_mm": round(float(paired.std(ddof=1) / np.sqrt(len(paired))), 4),
        "people_attention_better_people": int((paired > 0).sum()),
        "people_oracle_attention_gain_over_uniform": round(1.0 - m["oracle"] / m["uni"], 4),
        "people_deviation_slope": round(slope, 3),
        "people_pa_mpjpe_shape_free_mm": round(m["free"], 3),
        "people_pa_mpjpe_identity_aware_mm": round(m["aware"], 3),
        "people_pa_mpjpe_true_skeleton_mm": round(m["true"], 3),
        "people_identity_aware_gain": round(1.0 - m["aware"] / m["free"], 4),
        "people_true_skeleton_gain": round(1.0 - m["true"] / m["free"], 4),
        "people_calibration_ms": round(float(np.median(rows["ms"])), 1) if rows["ms"] else None,
    }
    if conf_all:
        out["people_ranking"] = ranking_quality(np.concatenate(conf_all), np.concatenate(err_all),
                                                np.concatenate(subj_all))
    if not tracking:
        out = {key: v for key, v in out.items() if "pa_mpjpe" not in key and not key.endswith("_skeleton_gain")
               and key not in ("people_identity_aware_gain", "people_heldout_frames")}
    if conditions != "clean":
        out = {f"people_{conditions}_" + key[len("people_"):]: v for key, v in out.items()}
    return out


def demo_identity(session=None) -> dict[str, Any]:
    """Calibrate on the demo clip; hand length per tracked frame, free shape vs profile."""
    from core.capture import DEMO_CLIP_PATH, open_source
    from core.detect import HandDetector
    from core.fit import HandObservation
    from core.personalize.scale import ScaleOption, measures
    from core.personalize.session import CalibrationSession

    if not DEMO_CLIP_PATH.exists():
        return {"calibration_demo": "absent"}
    gt = np.load(DEMO_CLIP_PATH.with_name("demo_groundtruth.npz"))
    session = session or CalibrationSession(k=20)
    frames, dets = [], []
    with open_source("demo") as src, HandDetector(max_hands=1, mode="video") as det:
        for f in src:
            found = det.detect(f.image, f.timestamp_s)
            frames.append(f)
            dets.append(found[0] if found else None)
    for f, d in zip(frames, dets):
        if d is not None:
            session.offer_detection(f.image, d, f.intrinsics.K, "demo", f.index, f.timestamp_s)
    L, W, _ = measures(session.layer, gt["betas"][0])
    r_prior = session.calibrate()
    r_true = session.calibrate(ScaleOption.from_hand_length(L * 1000.0))

    def track(betas):
        prev, lengths = None, []
        for f, d in zip(frames, dets):
            if d is None:
                lengths.append(np.nan)
                continue
            obs = HandObservation("right", d.keypoints_2d, d.world_landmarks, f.intrinsics.K.astype(np.float32),
                                  (f.width, f.height), d.score)
            fit = session.fitter.fit([obs], betas, [prev])[0]
            prev = fit
            lengths.append(session.frame_lengths_mm(fit.betas[None])[0])
        return np.asarray(lengths)

    with torch.inference_mode():
        free = track(None)
        aware = track(r_prior.shape)
    out = {
        "calibration_demo_w_error_prior_scale_mm": round(r_prior.hand_width_mm - W * 1000, 3),
        "calibration_demo_l_error_prior_scale_mm": round(r_prior.hand_length_mm - L * 1000, 3),
        "calibration_demo_w_error_true_length_mm": round(r_true.hand_width_mm - W * 1000, 3),
        "calibration_demo_hand_length_std_free_mm": round(float(np.nanstd(free)), 3),
        "calibration_demo_hand_length_range_free_mm": round(float(np.nanmax(free) - np.nanmin(free)), 3),
        "calibration_demo_hand_length_std_identity_aware_mm": round(float(np.nanstd(aware)), 6),
    }
    from core.tools.bench import figure, plots_dir

    folder = plots_dir()
    if folder is not None:
        with figure(folder / "calibration_hand_length.png") as ax:
            t = np.arange(len(free))
            ax.plot(t, free, label="shape-free fit (per frame)", lw=1.2)
            ax.plot(t, aware, label="identity-aware (calibrated profile)", lw=1.6)
            ax.axhline(L * 1000, color="k", ls="--", lw=0.8, label="ground truth")
            ax.set_xlabel("demo frame")
            ax.set_ylabel("hand length (mm)")
            ax.set_title("Hand length across tracked frames")
            ax.legend(fontsize=8)
    return out


def _plot_error_vs_k(curve: dict[str, dict[str, float]]) -> None:
    from core.tools.bench import figure, plots_dir

    folder = plots_dir()
    if folder is None:
        return
    with figure(folder / "calibration_error_vs_k.png", figsize=(6, 3.5)) as ax:
        labels = {"w_true": "W-error, true length, attention", "w_true_uniform": "W-error, true length, uniform",
                  "w_prior": "W-error, prior scale", "l_prior": "L-error, prior scale"}
        for key, label in labels.items():
            pts = curve.get(key, {})
            if pts:
                ks = [int(k) for k in pts]
                ax.plot(ks, list(pts.values()), marker="o", label=label)
        ax.set_xscale("log")
        ax.set_xticks(list(K_VALUES))
        ax.set_xticklabels([str(k) for k in K_VALUES])
        ax.set_xlabel("K (frames used for calibration)")
        ax.set_ylabel("mean absolute error (mm)")
        ax.set_title("Calibration error vs number of frames (synthetic subjects)")
        ax.legend(fontsize=7)


def bench_calibration() -> dict[str, Any]:
    from core.personalize.session import CalibrationSession
    from core.tools.bench import median_ms

    torch.set_num_threads(1)
    session = CalibrationSession(k=20)
    out = demo_identity(session)
    chosen = session.selected
    out["calibration_ms"] = round(median_ms(lambda: session.calibrate(frames=chosen), repeats=10, warmup=2), 2)
    out["calibration_no_surface_ms"] = round(median_ms(lambda: session.calibrate(frames=chosen, surface=False),
                                                       repeats=10, warmup=2), 2)
    out["calibration_k"] = len(chosen)
    out.update(demo_surface(session, chosen))
    out.update(synthetic_calibration(CalibrationSession(k=20)))
    _plot_error_vs_k(out["calibration_error_vs_k"])
    out.update(keypoint_people())
    return out


def bench_people() -> dict[str, Any]:
    torch.set_num_threads(1)
    out = people_calibration()
    out.update(people_calibration(conditions="webcam", tracking=False))
    out.update(surface_people())
    return out


def bench_surface() -> dict[str, Any]:
    torch.set_num_threads(1)
    return surface_people()


BENCHMARKS = {"calibration": bench_calibration, "people": bench_people, "surface": bench_surface}


def keypoint_people(n_people: int = 6, k: int = 20, noise_px: float = 2.0) -> dict[str, Any]:
    """The joint optimization on fast keypoint-level synthetic people (:mod:`core.personalize.people`).

    Each person (an off-template skeleton, :func:`core.synth.people.sample_person_skeleton`) is
    seen in ``k`` calibration frames (projected true keypoints + ``noise_px`` Gaussian noise,
    world landmarks with a few degrees of error, 640 x 480, 60 degree camera, start poses from
    the shape-free fit) and ``k`` other test frames. Figures: mean per-bone error of the
    calibrated skeleton (true intrinsics and hand length) against the template's at the true
    length; PA-MPJPE of identity-aware tracking (the personal model, shape fixed) against the
    shape-free fit on the test frames; the focal length estimated without intrinsics (true
    camera 45 degrees, starting from the nominal 60); the joint optimization's time.
    """
    from core.fit import HandObservation, TailorFitter
    from core.keypoints import Keypoint, bone_lengths
    from core.metrics import pa_mpjpe
    from core.model import load_model_data, mirror_model
    from core.model.personal import model_rest_keypoints, personal_model
    from core.personalize.bundle import bundle_adjust
    from core.personalize.people import synthetic_person

    base = load_model_data(None, "right")
    free_fitter = TailorFitter(base, mirror_model(base))
    template = model_rest_keypoints(base)
    rows: dict[str, list] = {"bone": [], "template": [], "free": [], "aware": [], "focal": [], "s": [], "s_free": []}
    for p in range(n_people):
        person = synthetic_person(base, np.random.default_rng([7, p]), 2 * k, noise_px=noise_px)
        calib, test = person.frames[:k], person.frames[k:]
        length = float(np.linalg.norm(person.skeleton[Keypoint.MIDDLE_TIP] - person.skeleton[Keypoint.WRIST]))
        r = bundle_adjust(base, calib, length)
        rows["s"].append(r.seconds)
        rows["bone"].append(np.abs(bone_lengths(r.skeleton) - bone_lengths(person.skeleton)).mean() * 1000)
        scaled = template * (length / np.linalg.norm(template[Keypoint.MIDDLE_TIP] - template[Keypoint.WRIST]))
        rows["template"].append(np.abs(bone_lengths(scaled) - bone_lengths(person.skeleton)).mean() * 1000)
        mine = personal_model(base, r.skeleton)
        aware_fitter = TailorFitter(mine, mirror_model(mine))
        zero = np.zeros(base.num_betas, np.float32)
        for f, truth in zip(test, person.keypoints_3d[k:]):
            obs = HandObservation("right", f.keypoints_2d.astype(np.float32), f.world_landmarks.astype(np.float32),
                                  f.K.astype(np.float32), f.image_size, 1.0)
            rows["free"].append(pa_mpjpe(free_fitter.fit([obs], None, None, 20)[0].keypoints_3d, truth) * 1000)
            rows["aware"].append(pa_mpjpe(aware_fitter.fit([obs], zero, None, 20)[0].keypoints_3d, truth) * 1000)
        unknown = synthetic_person(base, np.random.default_rng([8, p]), k, noise_px=noise_px, known_intrinsics=False,
                                   fov_deg=45.0)
        ru = bundle_adjust(base, unknown.frames, float(np.linalg.norm(unknown.skeleton[12] - unknown.skeleton[0])))
        rows["focal"].append(abs(ru.focal_px[0] / unknown.K[0, 0] - 1.0))
        rows["s_free"].append(ru.seconds)
    m = {key: float(np.mean(v)) for key, v in rows.items()}
    return {
        "kp_people": n_people, "kp_people_frames": k, "kp_people_noise_px": noise_px,
        "kp_people_bone_error_mm": round(m["bone"], 3),
        "kp_people_bone_error_template_mm": round(m["template"], 3),
        "kp_people_pa_mpjpe_shape_free_mm": round(m["free"], 3),
        "kp_people_pa_mpjpe_identity_aware_mm": round(m["aware"], 3),
        "kp_people_identity_aware_gain": round(1.0 - m["aware"] / m["free"], 4),
        "kp_people_focal_error_max": round(float(np.max(rows["focal"])), 4),
        "kp_people_focal_error_mean": round(m["focal"], 4),
        "kp_people_bundle_s": round(float(np.median(rows["s"])), 3),
        "kp_people_bundle_unknown_focal_s": round(float(np.median(rows["s_free"])), 3),
    }


def demo_surface(session, chosen: list[int]) -> dict[str, Any]:
    """The surface fit on the demo clip (its hand has the template's surface at the true
    shape; silhouettes from our colour segmentation, poses from MediaPipe's keypoints): mean
    distance of the calibrated rest mesh's vertices to the true rest surface without and with
    the fitted surface, true hand length given."""
    from core.capture import DEMO_CLIP_PATH
    from core.metrics import surface_distance
    from core.model import HandModel
    from core.model.personal import personal_model
    from core.personalize.scale import ScaleOption, measures

    if not DEMO_CLIP_PATH.exists() or not chosen:
        return {}
    gt = np.load(DEMO_CLIP_PATH.with_name("demo_groundtruth.npz"))
    length, _, _ = measures(session.layer, gt["betas"][0])
    r = session.calibrate(ScaleOption.from_hand_length(length * 1000.0), frames=chosen)
    if r.skeleton is None or r.surface is None:
        return {"calibration_demo_surface": "none"}
    shape = np.asarray(r.shape, dtype=np.float64)
    betas = torch.as_tensor(r.shape, dtype=torch.float64)[None]
    with torch.no_grad():
        truth = HandModel(session.model_data, dtype=torch.float64).rest(
            torch.as_tensor(gt["betas"][0], dtype=torch.float64)[None]).vertices[0].numpy()
        rest = [HandModel(personal_model(session.model_data, r.skeleton, offsets=o, betas=shape),
                          dtype=torch.float64).rest(betas).vertices[0].numpy() for o in (None, r.surface.offsets)]
    faces = session.model_data.faces
    used = r.surface.used
    before, after = (float(surface_distance(v, truth, faces).mean() * 1000) for v in rest)
    return {
        "calibration_demo_surface_error_before_mm": round(before, 3),
        "calibration_demo_surface_error_after_mm": round(after, 3),
        "calibration_demo_surface_mean_mm": round(r.surface.mean_mm, 3),
        "calibration_demo_surface_iou_before": round(float(np.nanmean(r.surface.iou_before[used])), 4),
        "calibration_demo_surface_iou_after": round(float(np.nanmean(r.surface.iou_after[used])), 4),
    }


def surface_people(n_people: int = 4, k: int = 20, n_test: int = 10, noise_px: float = 2.0) -> dict[str, Any]:
    """The surface fit on synthetic people with a known surface (see the module docstring)."""
    from core.fit import HandObservation, TailorFitter
    from core.keypoints import Keypoint
    from core.metrics import surface_distance
    from core.model import HandModel, load_model_data, mirror_model
    from core.model.personal import personal_model
    from core.personalize.bundle import bundle_adjust
    from core.personalize.people import surfaced_person
    from core.personalize.surface import SurfaceFrame, fit_surface, hand_silhouette, wrist_weight
    from core.render import RasterSettings, rasterize

    base = load_model_data(None, "right")
    rows: dict[str, list] = {k_: [] for k_ in ("true", "before", "after", "iou_before", "iou_after",
                                                "calib_iou_before", "calib_iou_after", "ms", "used")}
    for p in range(n_people):
        sp = surfaced_person(base, np.random.default_rng([13, p]), k + n_test, noise_px=noise_px)
        person = sp.person
        calib = person.frames[:k]
        length = float(np.linalg.norm(person.skeleton[Keypoint.MIDDLE_TIP] - person.skeleton[Keypoint.WRIST]))
        ba = bundle_adjust(base, calib, length)
        mine = personal_model(base, ba.skeleton)
        frames = [SurfaceFrame(hand_silhouette(sp.masks[i], f.keypoints_2d), f.keypoints_2d, person.K, ba.poses[i],
                               ba.transl[i], float(ba.frame_weights[i])) for i, f in enumerate(calib)]
        t0 = time.perf_counter()
        res = fit_surface(mine, frames)
        rows["ms"].append((time.perf_counter() - t0) * 1000.0)
        rows["used"].append(int(res.used.sum()))
        rows["calib_iou_before"].append(float(np.nanmean(res.iou_before[res.used])))
        rows["calib_iou_after"].append(float(np.nanmean(res.iou_after[res.used])))
        surfaced = personal_model(base, ba.skeleton, offsets=res.offsets)
        with torch.no_grad():
            truth = HandModel(sp.model, dtype=torch.float64).rest().vertices[0].numpy()
            plain_rest = HandModel(mine, dtype=torch.float64).rest().vertices[0].numpy()
            surf_rest = HandModel(surfaced, dtype=torch.float64).rest().vertices[0].numpy()
        rows["true"].append(float(np.linalg.norm(sp.offsets, axis=1).mean() * 1000.0))
        rows["before"].append(float(surface_distance(plain_rest, truth, base.faces).mean() * 1000.0))
        rows["after"].append(float(surface_distance(surf_rest, truth, base.faces).mean() * 1000.0))
        # Held-out frames: identity-aware fit of the keypoints, both meshes at that pose.
        fitter = TailorFitter(mine, mirror_model(mine))
        layers = (HandModel(mine), HandModel(surfaced))
        for i in range(k, k + n_test):
            f = person.frames[i]
            obs = HandObservation("right", f.keypoints_2d.astype(np.float32), f.world_landmarks.astype(np.float32),
                                  person.K.astype(np.float32), person.image_size, 1.0)
            fit = fitter.fit([obs], np.zeros(base.num_betas, np.float32), None, 20)[0]
            sil = hand_silhouette(sp.masks[i], f.keypoints_2d)
            kc = sil.box.intrinsics(torch.as_tensor(person.K, dtype=torch.float64)).float()[None]
            region = wrist_weight(sil.box, f.keypoints_2d) > 0
            target = sil.target() > 0.5
            for layer, key in zip(layers, ("iou_before", "iou_after")):
                with torch.no_grad():
                    v = layer(torch.as_tensor(fit.pose)[None], None, torch.as_tensor(fit.transl)[None]).vertices
                frag = rasterize(v, layer.faces, kc, RasterSettings(image_size=(sil.box.size, sil.box.size)))
                drawn = (frag.pix_to_face[0] >= 0).numpy()
                inter, union = (drawn & target & region).sum(), ((drawn | target) & region).sum()
                rows[key].append(float(inter / max(union, 1)))
    m = {key: float(np.mean(v)) for key, v in rows.items()}
    return {
        "surface_people": n_people, "surface_people_frames": k, "surface_people_heldout_frames": n_test,
        "surface_people_noise_px": noise_px,
        "surface_people_true_offset_mm": round(m["true"], 3),
        "surface_people_error_before_mm": round(m["before"], 3),
        "surface_people_error_after_mm": round(m["after"], 3),
        "surface_people_heldout_iou_before": round(m["iou_before"], 4),
        "surface_people_heldout_iou_after": round(m["iou_after"], 4),
        "surface_people_calib_iou_before": round(m["calib_iou_before"], 4),
        "surface_people_calib_iou_after": round(m["calib_iou_after"], 4),
        "surface_people_frames_fitted": round(m["used"], 1),
        "surface_people_fit_ms": round(float(np.median(rows["ms"])), 1),
    }
