"""Train the confidence predictor: ``python -m core.tools.train_confidence``.

Identity-aware paper, Sec. 3.5: pairs of frames ranked by their true error ``l_i``, margin
ranking loss on every pair. The frames are synthetic *people* (:mod:`core.synth.people`:
skeletons off the template beyond the shape space; rendered, degraded, detected by MediaPipe;
cached by :mod:`core.personalize.synthdata`) of two training sets (``--conditions``): clean
renders, and frames degraded as a webcam session's (:mod:`core.synth.webcam`), the inputs the quality features of
:mod:`core.personalize.features`, the error by default the frame's own free-shape fit's bone
proportions against the person's (``--target``, :data:`TARGETS`). Pairs are taken within a
person, because attention only compares frames of one user.

Then, on the training people: MediaPipe's per-bone keypoint convention is learned
(:mod:`core.personalize.convention`, written to ``resources/personalize/convention.json``),
and the predictor's **output scale is calibrated against T**: the factor alpha on its outputs
(folded into its last layer) that minimizes the people's calibrated bone error with
``softmax(alpha c / T)`` - margin ranking fixes the order of the confidences, not their
spread, which is what the softmax of Eq. 6 turns into weights. Held-out people report the
ranking accuracy and attention against uniform weights (paired per person), clean and webcam
people apart. Deterministic (seeded; one thread).
Writes ``resources/personalize/confidence.safetensors`` and ``confidence.json``.
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
from core.personalize.synthdata import DATA_VERSION

log = logging.getLogger("train_confidence")

#: The data sets: (name, subjects, detected frames per subject, seed).
TRAIN_SET = ("train", 30, 20, 1)
HELDOUT_SET = ("heldout", 16, 20, 1000)
#: Synthetic people (off-template skeletons, :mod:`core.synth.people`), same layout.
PEOPLE_TRAIN_SET = ("people-train", 30, 20, 2)
#: Held-out people have 40 frames: calibration uses the first 20 usable ones, identity-aware
#: tracking is measured on the others (``bench --only people``).
PEOPLE_HELDOUT_SET = ("people-heldout", 12, 40, 2000)
#: Synthetic people seen as a webcam session sees them (each frame's conditions drawn by
#: :mod:`core.synth.webcam`: far away, edge-on, cut by the border, motion blur, dim light,
#: occluders, JPEG), same layout; calibration uses each held-out person's first 20 usable frames.
PEOPLE_WEBCAM_TRAIN_SET = ("people-webcam-train", 40, 20, 3)
PEOPLE_WEBCAM_HELDOUT_SET = ("people-webcam-heldout", 20, 22, 3000)
#: The people sets by conditions (:data:`core.personalize.synthdata.CONDITIONS`): (train, held-out).
PEOPLE_SETS = {"clean": (PEOPLE_TRAIN_SET, PEOPLE_HELDOUT_SET),
               "webcam": (PEOPLE_WEBCAM_TRAIN_SET, PEOPLE_WEBCAM_HELDOUT_SET)}


def load_people(which: str, conditions: str = "clean", progress: bool = False):
    """The ``"train"`` or ``"heldout"`` people set of ``conditions`` (cached; rendered and
    detected on first use)."""
    from core.personalize.synthdata import load_or_generate

    name, n_subj, n_frames, seed = PEOPLE_SETS[conditions][0 if which == "train" else 1]
    return load_or_generate(name, n_subj, n_frames, seed, progress=progress, people=True, conditions=conditions)


#: What a frame's confidence ranks (the error ``l_i`` it should be low for):
#: ``"bone"``: the frame's own free-shape fit's bone proportions against the truth (scale-free
#: mean absolute log ratio over the 20 bones: how wrong this frame alone says the hand is);
#: ``"detection"``: MediaPipe's 2D keypoint error against the truth over the hand's size (how
#: much the frame's evidence misleads a calibration that fits the keypoints);
#: ``"consistency"``: how far MediaPipe's keypoints are from anything the person's *true* hand
#: can show (the mean reprojection error of the true skeleton's personal model fitted to them,
#: pose free, over the hand's size): the part of a frame's error that no pose absorbs, which is
#: what pulls a calibration's shared skeleton away from the truth;
#: ``"shape"``: ``|beta_i - beta_true|_1`` (the paper's target; shape-space subjects only).
TARGETS = ("bone", "detection", "consistency", "shape")
DEFAULT_TARGET = "bone"


def frame_targets(session, data, indices: np.ndarray, cands: list, target: str = "bone") -> np.ndarray | None:
    """(len(cands),) the error ``l_i`` (see :data:`TARGETS`) of the candidates that the data
    frames ``indices`` (one subject's) produced; None when the target cannot be computed."""
    from core.keypoints import bone_lengths

    idx = np.asarray(indices)
    by_frame = {int(data.frame[i]): int(i) for i in idx}
    rows = [by_frame[int(c.frame_index)] for c in cands]
    if target == "shape":
        return np.array([np.abs(c.betas - data.true_betas[i]).sum() for c, i in zip(cands, rows)])
    if target == "detection":
        true = data.true_keypoints_2d[rows].astype(np.float64)
        size = np.linalg.norm(np.ptp(true, axis=1), axis=1)
        return np.linalg.norm(data.keypoints_2d[rows] - true, axis=2).mean(1) / size
    if target == "consistency":
        from core.fit import HandObservation, TailorFitter
        from core.model.data import mirror_model
        from core.model.personal import personal_model

        model = personal_model(session.model_data, data.true_skeleton[rows[0]].astype(np.float64))
        fitter = TailorFitter(model, mirror_model(model), session.fitter.settings)
        zero = np.zeros(model.num_betas, np.float32)
        out = []
        for i in rows:
            w, h = (int(v) for v in data.image_size[i])
            obs = HandObservation("right", data.keypoints_2d[i], data.world[i], data.K[i].astype(np.float32), (w, h),
                                  float(data.score[i]))
            fit = fitter.fit([obs], zero, None, 20)[0]
            out.append(fit.reprojection_error_px / np.linalg.norm(np.ptp(data.true_keypoints_2d[i], axis=0)))
        return np.asarray(out, dtype=np.float64)
    if target != "bone":
        raise ValueError(f"unknown target {target!r}")
    k0, kd = session._basis
    kp = k0[None] + (np.stack([c.betas for c in cands]).astype(np.float64) @ kd.T).reshape(-1, 21, 3)
    true = bone_lengths(data.true_skeleton[rows[0]].astype(np.float64))
    r = np.log(bone_lengths(kp) / true)
    return np.abs(r - np.median(r, axis=1, keepdims=True)).mean(1)


def frame_table(data, session=None, target: str = "bone") -> dict[str, np.ndarray]:
    """Free-shape refits of cached synthetic frames: features (N, F), betas, poses, subject
    ids, the error l_i (:data:`TARGETS`) and the candidates themselves, for the usable frames."""
    from core.personalize.session import CalibrationSession
    from core.personalize.synthdata import candidates

    session = session or CalibrationSession(confidence="heuristic")
    cs, err, subj = [], [], []
    for s in np.unique(data.subject):
        idx = np.nonzero(data.subject == s)[0]
        cands = [c for c in candidates(session, data, idx) if c is not None]
        if not cands:
            continue
        cs += cands
        err.append(frame_targets(session, data, idx, cands, target))
        subj.append(np.full(len(cands), s))
    return {
        "features": np.stack([c.features for c in cs]),
        "betas": np.stack([c.betas for c in cs]),
        "poses": np.stack([c.pose for c in cs]),
        "subject": np.concatenate(subj),
        "error": np.concatenate(err),
        "candidates": cs,
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


def subject_groups(table: dict) -> dict[int, np.ndarray]:
    """Frame indices of the table per subject."""
    return {int(s): np.nonzero(table["subject"] == s)[0] for s in np.unique(table["subject"])}


def calibrated_skeletons(session, table: dict, data, confidence: np.ndarray, k: int = 20,
                         uniform: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Calibrated skeletons, their shape-space hands (rest keypoints of the Eq. 7 shape) and the
    true skeletons, (subjects, 21, 3) metres: each subject calibrated from its first ``k`` usable
    frames with the given confidences (attention, Eq. 6, or uniform), the true hand length given
    (as the benchmark's acceptance row: isolates the proportions)."""
    import dataclasses

    from core.keypoints import Keypoint
    from core.personalize.scale import ScaleOption
    from core.tools.bench_personalize import calibrated_skeleton

    cal, base, true = [], [], []
    k0, kd = session._basis
    for s, rows in subject_groups(table).items():
        rows = rows[:k]
        truth = data.true_skeleton[np.nonzero(data.subject == s)[0][0]].astype(np.float64)
        L = float(np.linalg.norm(truth[Keypoint.MIDDLE_TIP] - truth[Keypoint.WRIST]))
        session._candidates = [dataclasses.replace(table["candidates"][i],
                                                   confidence=float(confidence[i])) for i in rows]
        session._selected = None
        r = session.calibrate(ScaleOption.from_hand_length(L * 1000.0), frames=list(range(len(rows))), uniform=uniform)
        cal.append(calibrated_skeleton(session, r))
        base.append(k0 + (kd @ np.asarray(r.shape, dtype=np.float64)).reshape(21, 3))
        true.append(truth)
    return np.asarray(cal), np.asarray(base), np.asarray(true)


def fit_convention_and_shrink(cal: np.ndarray, base: np.ndarray, true: np.ndarray):
    """The :class:`~core.personalize.convention.Convention` of uncorrected calibrations: the
    per-bone median log bias, then the shrink in 0, 0.1, ..., 1 with the least mean bone error."""
    from core.keypoints import Keypoint, bone_lengths
    from core.personalize.convention import Convention, fit_convention

    delta = fit_convention(bone_lengths(cal), bone_lengths(true))
    lengths = np.linalg.norm(true[:, Keypoint.MIDDLE_TIP] - true[:, Keypoint.WRIST], axis=1)

    def error(shrink: float) -> float:
        conv = Convention(delta, shrink)
        fixed = np.stack([conv.apply(c, b, L) for c, b, L in zip(cal, base, lengths)])
        return float(np.abs(bone_lengths(fixed) - bone_lengths(true)).mean() * 1000.0)

    errors = {round(float(x), 1): error(float(x)) for x in np.linspace(0.0, 1.0, 11)}
    best = min(errors, key=errors.get)
    return Convention(delta, best), errors


def calibration_bone_errors(session, table: dict, data, confidence: np.ndarray, k: int = 20,
                            uniform: bool = False) -> np.ndarray:
    """(subjects,) mean absolute bone-length error (mm) of :func:`calibrated_skeletons`."""
    from core.keypoints import bone_lengths

    cal, _, true = calibrated_skeletons(session, table, data, confidence, k, uniform)
    return np.abs(bone_lengths(cal) - bone_lengths(true)).mean(1) * 1000.0


#: Output scales tried when calibrating the predictor against the temperature T.
OUTPUT_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def fit_output_scale(session, sets: list[tuple[dict, object, np.ndarray]]) -> tuple[float, dict[str, float]]:
    """The factor alpha on the raw confidences that minimizes the training subjects' mean
    calibrated bone error with ``w = softmax(alpha c / T)``: the predictor's output scale
    calibrated against T (equivalently a learned temperature T / alpha). ``sets``: (table,
    data, raw confidences) of each training set; every subject counts once. Returns alpha and
    the error at each scale tried (plus ``"uniform"``)."""
    def mean_error(scale: float | None) -> float:
        errs = [calibration_bone_errors(session, table, data, (scale or 0.0) * raw, uniform=scale is None)
                for table, data, raw in sets]
        return float(np.concatenate(errs).mean())

    errors = {"uniform": mean_error(None)}
    for a in OUTPUT_SCALES:
        errors[f"{a:.3g}"] = mean_error(a)
    best = min(OUTPUT_SCALES, key=lambda a: errors[f"{a:.3g}"])
    return best, errors


def merge_tables(tables: list[dict]) -> dict[str, np.ndarray]:
    """One training table of several sets' (features, subject, error); subject ids are made
    distinct per set (pairs stay within one person)."""
    offset = 0
    subjects = []
    for t in tables:
        subjects.append(t["subject"] + offset)
        offset = int(subjects[-1].max()) + 1
    return {"features": np.concatenate([t["features"] for t in tables]), "subject": np.concatenate(subjects),
            "error": np.concatenate([t["error"] for t in tables])}


def heldout_report(session, table: dict, data, conf: np.ndarray) -> dict[str, float]:
    """Attention against uniform weights (same robust joint calibration) on held-out people:
    mean bone errors, the gain, the per-person paired difference (uniform minus attention, mm:
    mean, standard error, people where attention is better)."""
    att = calibration_bone_errors(session, table, data, conf)
    uni = calibration_bone_errors(session, table, data, conf, uniform=True)
    paired = uni - att
    return {
        "people": int(len(att)),
        "bone_error_attention_mm": round(float(att.mean()), 4),
        "bone_error_uniform_mm": round(float(uni.mean()), 4),
        "attention_gain_over_uniform": round(float(1.0 - att.mean() / uni.mean()), 4),
        "paired_mm": round(float(paired.mean()), 4),
        "paired_se_mm": round(float(paired.std(ddof=1) / np.sqrt(len(paired))), 4),
        "attention_better_people": int((paired > 0).sum()),
    }


def fold_output_scale(net: ConfidenceNet, alpha: float) -> None:
    """Multiply the network's output by ``alpha`` (its last layer's weights and bias)."""
    last = net.net[-1]
    with torch.no_grad():
        last.weight.mul_(alpha)
        last.bias.mul_(alpha)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH)
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--margin", type=float, default=0.1)
    parser.add_argument("--target", choices=TARGETS[:3], default=DEFAULT_TARGET)
    parser.add_argument("--conditions", choices=("clean", "webcam", "both"), default="both",
                        help="the training people's frames (held-out people of both are reported)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    from core.personalize.session import CalibrationSession

    t0 = time.perf_counter()
    session = CalibrationSession(confidence="heuristic")
    conditions = ("clean", "webcam") if args.conditions == "both" else (args.conditions,)
    d_tr = [load_people("train", c, progress=True) for c in conditions]
    d_te = {c: load_people("heldout", c, progress=True) for c in ("clean", "webcam")}
    tr = [frame_table(d, session, args.target) for d in d_tr]
    te = {c: frame_table(d, session, args.target) for c, d in d_te.items()}
    log.info("frames: %s train, %s held-out (%.0f s)", [len(t["error"]) for t in tr],
             {c: len(t["error"]) for c, t in te.items()}, time.perf_counter() - t0)
    # MediaPipe's keypoint convention against the model's joints (core.personalize.convention),
    # from uniform calibrations of the training people; then everything below runs corrected.
    from core.personalize.convention import CONVENTION_PATH, convention_document

    session.convention = None
    raw = [calibrated_skeletons(session, t, d, np.zeros(len(t["error"])), uniform=True) for t, d in zip(tr, d_tr)]
    raw_cal, raw_base, raw_true = (np.concatenate([r[i] for r in raw]) for i in range(3))
    conv, shrink_errors = fit_convention_and_shrink(raw_cal, raw_base, raw_true)
    session.convention = conv
    convention_meta = {"training_bone_error_mm_by_shrink": {str(k): round(v, 4) for k, v in shrink_errors.items()},
                       "shrink": conv.shrink}
    log.info("keypoint convention: %s", convention_meta)
    merged = merge_tables(tr)
    net = train(merged, epochs=args.epochs, margin=args.margin)
    from core.personalize.features import heuristic_confidence

    def confidences(table: dict) -> np.ndarray:
        with torch.no_grad():
            return net(torch.as_tensor(table["features"])).numpy().astype(np.float64)

    alpha, scale_errors = fit_output_scale(session, [(t, d, confidences(t)) for t, d in zip(tr, d_tr)])
    fold_output_scale(net, alpha)
    quality = {"train": ranking_quality(confidences(merged), merged["error"], merged["subject"])}
    heldout_calibration = {}
    for c, t in te.items():
        conf = confidences(t)
        quality[f"heldout_{c}"] = ranking_quality(conf, t["error"], t["subject"])
        quality[f"heldout_{c}_heuristic"] = ranking_quality(heuristic_confidence(t["features"]), t["error"],
                                                            t["subject"])
        heldout_calibration[c] = heldout_report(session, t, d_te[c], conf)
    session.convention = None
    heldout_calibration["clean"]["bone_error_uniform_without_convention_mm"] = round(float(
        calibration_bone_errors(session, te["clean"], d_te["clean"], np.zeros(len(te["clean"]["error"])),
                                uniform=True).mean()), 4)
    session.convention = conv
    log.info("ranking quality: %s", quality)
    log.info("output scale %.3g; held-out calibration: %s", alpha, heldout_calibration)
    meta = {
        "command": "python -m core.tools.train_confidence" + (f" --epochs {args.epochs}" if args.epochs != 400 else "")
                   + (f" --margin {args.margin}" if args.margin != 0.1 else "")
                   + (f" --target {args.target}" if args.target != DEFAULT_TARGET else "")
                   + (f" --conditions {args.conditions}" if args.conditions != "both" else ""),
        "feature_names": list(FEATURE_NAMES),
        "target": {"bone": "scale-free bone error of the frame's free-shape refit against the person's true skeleton",
                   "detection": "MediaPipe's 2D keypoint error over the hand's size",
                   "consistency": "reprojection error of the person's true hand fitted to MediaPipe's keypoints "
                                  "(pose free) over the hand's size"}[args.target]
                  + "; pairs within a subject",
        "model": "one linear layer over standardized features (hidden=0)",
        "loss": f"MarginRankingLoss(margin={args.margin}), full batch, Adam lr 3e-3, weight decay 1e-2",
        "epochs": args.epochs,
        "output_scale": {"alpha": alpha, "folded_into_last_layer": True,
                         "chosen_by": "mean calibrated bone error of the training people, "
                                      "softmax(alpha c / T), T = 0.33",
                         "training_bone_error_mm": {k: round(v, 4) for k, v in scale_errors.items()}},
        "data_version": DATA_VERSION,
        "train": {"sets": [PEOPLE_SETS[c][0] for c in conditions], "conditions": list(conditions), "people": True,
                  "frames": [int(len(t["error"])) for t in tr]},
        "heldout": {c: {"set": PEOPLE_SETS[c][1], "frames": int(len(t["error"]))} for c, t in te.items()},
        "ranking_quality": quality,
        "keypoint_convention": convention_meta,
        "heldout_calibration": heldout_calibration,
        "calibration": "session.calibrate (true hand length given, the joint optimization's robust loss), "
                       "first 20 usable frames per person; attention vs uniform weights",
        "seconds": round(time.perf_counter() - t0, 1),
    }
    save_confidence_net(net, args.out, {"training": json.dumps(meta)})
    from core.export.writer import write_atomic

    conv_path = CONVENTION_PATH if args.out == WEIGHTS_PATH else args.out.with_name(args.out.stem + "-convention.json")
    doc = convention_document(conv, len(raw_cal), {"learned_by": meta["command"], **convention_meta})
    write_atomic(conv_path, (json.dumps(doc, indent=1) + "\n").encode())

    meta_path = args.out.with_suffix(".json") if args.out != WEIGHTS_PATH else META_PATH
    write_atomic(meta_path, (json.dumps(meta, indent=2) + "\n").encode())
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
