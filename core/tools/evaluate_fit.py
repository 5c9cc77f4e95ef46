"""Accuracy on real labelled data (``../shared/data``): is the fit at least as good as its input?

* 2D: the fitted hand's reprojected keypoints against the human labels, next to MediaPipe's
  own keypoints (FreiHAND, OneHand10K and CMU Panoptic samples), as ``track`` fits a photo:
  its assumed camera (EXIF, else the default field of view) and the engine's sides.
* 3D: PA-MPJPE of the fitted joints against InterHand2.6M's 3D labels, next to MediaPipe's
  world landmarks (known intrinsics, perspective fit).

The data are research samples that are never shipped; everything here skips cleanly when
the folder is absent.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.camera import bgr_to_rgb
from core.metrics import centred_mpjpe, keypoint_error_px, mpjpe, pa_mpjpe

log = logging.getLogger(__name__)

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
INTERHAND_TO_MEDIAPIPE = [20, 3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12, 19, 18, 17, 16]
#: The labelled 2D sets, in :func:`evaluate_2d`'s order.
SETS_2D = ("freihand", "onehand10k", "panoptic")


@dataclass(frozen=True)
class _Labelled:
    image: np.ndarray
    keypoints: np.ndarray  # (21, 2) px
    visible: np.ndarray  # (21,) bool
    name: str


def _read_rgb(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(path)
    return bgr_to_rgb(img)


def _coco_hands(folder: Path) -> list[_Labelled]:
    js = next(folder.glob("*.json"))
    doc = json.loads(js.read_text())
    images = {im["id"]: im for im in doc["images"]}
    out = []
    for ann in doc["annotations"]:
        kp = np.asarray(ann["keypoints"], dtype=np.float64).reshape(21, 3)
        im = images[ann["image_id"]]
        out.append(_Labelled(_read_rgb(folder / im["file_name"]), kp[:, :2], kp[:, 2] > 0, im["file_name"]))
    return out


def _best_detection(detections, gt: np.ndarray):
    """The detection nearest the labelled hand (images may hold several hands)."""
    if not detections:
        return None
    return min(detections, key=lambda d: np.linalg.norm(d.keypoints_2d - gt, axis=-1).mean())


def _photo_frame(path: Path):
    """The photo as ``python main.py track PHOTO`` reads it: its EXIF focal length, else the
    assumed :data:`~core.camera.DEFAULT_FOV_DEG` camera (:func:`core.capture.open.open_source`)."""
    from core.capture.open import open_source

    with open_source(path) as src:
        return next(iter(src))


def _nearest_hand(hands, gt: np.ndarray):
    """The tracked hand whose detection lies nearest the labelled keypoints (or None)."""
    if not hands:
        return None
    return min(hands, key=lambda h: np.linalg.norm(h.detection.keypoints_2d - gt, axis=-1).mean())


def _is_labelled_hand(keypoints_2d: np.ndarray, item: _Labelled) -> bool:
    """Whether a detection is the labelled hand: within half the labelled hand's extent."""
    extent = np.ptp(item.keypoints[item.visible], axis=0).max() if item.visible.any() else 0.0
    return keypoint_error_px(keypoints_2d, item.keypoints, item.visible) <= 0.5 * extent


def track_labelled_photo(engine, path: Path, item: _Labelled):
    """The labelled hand of a photo as ``track`` fits it.

    Args:
        engine: a :class:`core.engine.Engine` in static (photo) mode.
        path: the photo. item: its labels.

    Returns:
        (the frame as read, MediaPipe's detections, the engine's :class:`~core.engine.HandResult`
        of the labelled hand, or None where no detection is that hand).
    """
    frame = _photo_frame(path)
    detections = engine.detector.detect(frame.image)  # what engine.process(frame) does
    hand = _nearest_hand(engine.process_detections(frame, detections).hands, item.keypoints)
    if hand is None or not _is_labelled_hand(hand.detection.keypoints_2d, item):
        hand = None
    return frame, detections, hand


def evaluate_2d(data_dir: Path = DEFAULT_DATA, detail: bool = False, fit=None) -> dict[str, Any]:
    """Mean 2D error (px) of MediaPipe and of the fit against the labels, per set and overall.

    The fit is what a user gets from ``python main.py track PHOTO``: the engine on photos
    (static detection, sides from the hands' geometry and both models' fits, no refinement)
    in the photo's camera (EXIF, else the assumed field of view), through the same functions
    (:func:`core.capture.open.open_source`, :class:`core.engine.Engine`). ``weak_fit_2d_px`` is
    the previous measure, kept as a second line: the tailor alone in weak perspective with
    MediaPipe's side label.

    Args:
        data_dir: the shared data folder. detail: also report each set's mean error per
            keypoint (MediaPipe order) and each photo's error, for MediaPipe and the fit.
        fit: the tailor's :class:`~core.fit.FitSettings` (None: the engine's default).
    """
    from core.engine import Engine, EngineSettings
    from core.fit import HandObservation

    result: dict[str, Any] = {}
    all_mp, all_fit, all_weak = [], [], []
    settings = EngineSettings(detector_mode="static", detector_process=False)
    if fit is not None:
        settings = dataclasses.replace(settings, fit=fit)
    with Engine(settings) as engine:
        for name in SETS_2D:
            folder = data_dir / "mmpose_hand_testdata" / name
            if not folder.exists():
                continue
            mp_err, fit_err, weak_err, total = [], [], [], 0
            mp_kp, fit_kp, photos = [], [], []
            for item in _coco_hands(folder):
                total += 1
                frame, detections, hand = track_labelled_photo(engine, folder / item.name, item)
                if hand is None:
                    continue  # no detection of this labelled hand (another hand, or none)
                d = hand.detection
                mp_err.append(keypoint_error_px(d.keypoints_2d, item.keypoints, item.visible))
                fit_err.append(keypoint_error_px(hand.final_keypoints_2d, item.keypoints, item.visible))
                vis = np.where(item.visible, 1.0, np.nan)
                mp_kp.append(np.linalg.norm(d.keypoints_2d - item.keypoints, axis=-1) * vis)
                fit_kp.append(np.linalg.norm(hand.final_keypoints_2d - item.keypoints, axis=-1) * vis)
                # the previous measure: the tailor in weak perspective with MediaPipe's own side label
                raw = _best_detection(detections, item.keypoints)
                obs = HandObservation(raw.handedness, raw.keypoints_2d, raw.world_landmarks, None,
                                      (frame.width, frame.height), raw.score)
                weak = engine.fitter.fit([obs])[0]
                weak_err.append(keypoint_error_px(weak.keypoints_2d, item.keypoints, item.visible))
                photos.append({"photo": item.name, "side": hand.side, "camera_source": frame.intrinsics_source,
                               "mediapipe_2d_px": _mean(mp_err[-1:]), "fit_2d_px": _mean(fit_err[-1:]),
                               "fit_to_mediapipe_px": round(float(hand.fit.reprojection_error_px), 2)})
            all_mp += mp_err
            all_fit += fit_err
            all_weak += weak_err
            result[name] = {
                "hands": total, "detected": len(mp_err),
                "mediapipe_2d_px": _mean(mp_err), "fit_2d_px": _mean(fit_err), "weak_fit_2d_px": _mean(weak_err),
            }
            if detail and mp_kp:
                result[name]["mediapipe_per_keypoint_px"] = np.round(np.nanmean(mp_kp, 0), 1).tolist()
                result[name]["fit_per_keypoint_px"] = np.round(np.nanmean(fit_kp, 0), 1).tolist()
                result[name]["photos"] = photos
    if all_mp:
        result["all"] = {"hands": len(all_mp), "mediapipe_2d_px": _mean(all_mp), "fit_2d_px": _mean(all_fit),
                         "weak_fit_2d_px": _mean(all_weak)}
    return result


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 2) if values else None


def evaluate_interhand(data_dir: Path = DEFAULT_DATA, iterations: int = 20) -> dict[str, Any]:
    """PA-MPJPE (mm) of MediaPipe's world landmarks and of the fitted joints on InterHand2.6M."""
    from core.detect import HandDetector
    from core.fit import HandObservation, TailorFitter
    from core.model import load_model_data

    folder = data_dir / "mmpose_hand_testdata" / "interhand2.6m"
    if not folder.exists():
        return {}
    data = json.loads((folder / "test_interhand2.6m_data.json").read_text())
    cams = json.loads((folder / "test_interhand2.6m_camera.json").read_text())
    joints = json.loads((folder / "test_interhand2.6m_joint_3d.json").read_text())
    fitter = TailorFitter(load_model_data(None, "right"), load_model_data(None, "left"))
    mp_err, fit_err, found, total = [], [], 0, 0
    with HandDetector(max_hands=2, mode="static", tiles=True) as det:  # as the engine's photos
        for im in data["images"]:
            cap, cam, frame = str(im["capture"]), im["camera"], str(im["frame_idx"])
            c = cams[cap]
            R = np.asarray(c["camrot"][cam], dtype=np.float64)
            pos = np.asarray(c["campos"][cam], dtype=np.float64)
            f, pp = c["focal"][cam], c["princpt"][cam]
            K = np.array([[f[0], 0, pp[0]], [0, f[1], pp[1]], [0, 0, 1]], dtype=np.float32)
            rec = joints[cap][frame]
            world = np.asarray(rec["world_coord"], dtype=np.float64)
            valid = np.asarray(rec["joint_valid"], dtype=bool).reshape(-1)
            cam_xyz = (R @ (world - pos).T).T / 1000.0  # metres, camera frame
            image = _read_rgb(folder / im["file_name"])
            h, w = image.shape[:2]
            dets = det.detect(image)
            for side, offset in (("right", 0), ("left", 21)):
                idx = [offset + i for i in INTERHAND_TO_MEDIAPIPE]
                if not valid[idx].all():
                    continue
                total += 1
                gt = cam_xyz[idx]
                uv = (K.astype(np.float64) @ gt.T).T
                uv = uv[:, :2] / uv[:, 2:]
                d = _best_detection([x for x in dets if x.handedness == side] or list(dets), uv)
                if d is None or np.linalg.norm(d.keypoints_2d - uv, axis=-1).mean() > 40:
                    continue
                found += 1
                obs = HandObservation(side, d.keypoints_2d, d.world_landmarks, K, (w, h), d.score)
                fit = fitter.fit([obs], iterations=iterations)[0]
                mp_err.append(pa_mpjpe(d.world_landmarks, gt) * 1000)
                fit_err.append(pa_mpjpe(fit.keypoints_3d, gt) * 1000)
    return {
        "interhand": {
            "hands": total, "detected": found,
            "mediapipe_world_pa_mpjpe_mm": round(float(np.mean(mp_err)), 2) if mp_err else None,
            "fit_pa_mpjpe_mm": round(float(np.mean(fit_err)), 2) if fit_err else None,
        }
    }


def evaluate_synthetic(n: int = 60, seed: int = 0, iterations: int = 20) -> dict[str, Any]:
    """Accuracy on synthetic hands with exact ground truth (known K), through the real MediaPipe.

    Reports, over the samples where MediaPipe finds the hand: 2D error (px) of MediaPipe and of
    the fit, PA-MPJPE (mm) of MediaPipe's world landmarks, of the shape-free fit and of the
    identity-aware fit (true shape given), and the hand-length spread of the shape-free fits.
    """
    from core.detect import HandDetector
    from core.fit import HandObservation, TailorFitter
    from core.synth import SynthSettings, default_layers, render_hand_sample

    rng = np.random.default_rng(seed)
    layers = default_layers()
    fitter = TailorFitter(layers["right"].data, layers["left"].data)
    rows = []
    with HandDetector(max_hands=1, mode="static") as det:
        for _ in range(n):
            s = render_hand_sample(rng, layers, SynthSettings(left_probability=0.3))
            dets = det.detect(s.image)
            if not dets:
                rows.append(None)
                continue
            d = dets[0]
            h, w = s.image.shape[:2]
            obs = HandObservation(s.side, d.keypoints_2d, d.world_landmarks, s.K.astype(np.float32), (w, h), d.score)
            free = fitter.fit([obs], iterations=iterations)[0]
            known = fitter.fit([obs], betas=s.betas, iterations=iterations)[0]
            rows.append((
                keypoint_error_px(d.keypoints_2d, s.keypoints_2d),
                keypoint_error_px(free.keypoints_2d, s.keypoints_2d),
                pa_mpjpe(d.world_landmarks, s.joints_3d) * 1000,
                pa_mpjpe(free.keypoints_3d, s.joints_3d) * 1000,
                pa_mpjpe(known.keypoints_3d, s.joints_3d) * 1000,
                d.handedness == s.side,
                centred_mpjpe(free.keypoints_3d, s.joints_3d) * 1000,
                centred_mpjpe(known.keypoints_3d, s.joints_3d) * 1000,
                mpjpe(free.keypoints_3d, s.joints_3d) * 1000,
                mpjpe(known.keypoints_3d, s.joints_3d) * 1000,
            ))
    found = np.array([r for r in rows if r is not None], dtype=np.float64)
    if not len(found):
        return {"synthetic": {"samples": n, "detected": 0}}
    m = found.mean(0)
    return {"synthetic": {
        "samples": n,
        "detected": int(len(found)),
        "handedness_correct": round(float(m[5]), 3),
        "mediapipe_2d_px": round(float(m[0]), 2),
        "fit_2d_px": round(float(m[1]), 2),
        "mediapipe_world_pa_mpjpe_mm": round(float(m[2]), 2),
        "fit_pa_mpjpe_mm": round(float(m[3]), 2),
        "identity_aware_pa_mpjpe_mm": round(float(m[4]), 2),
        "identity_aware_gain": round(float(1 - m[4] / m[3]), 3),
        "fit_centred_mpjpe_mm": round(float(m[6]), 2),
        "identity_aware_centred_mpjpe_mm": round(float(m[7]), 2),
        "fit_camera_mpjpe_mm": round(float(m[8]), 2),
        "identity_aware_camera_mpjpe_mm": round(float(m[9]), 2),
    }}


def leave_one_set_out(grid: dict[str, Any], data_dir: Path = DEFAULT_DATA) -> dict[str, Any]:
    """Whether a fit setting chosen on some labelled sets holds on the one left out.

    Every setting of ``grid`` (name -> :class:`~core.fit.FitSettings`) is evaluated on every
    set; for each set, the setting with the lowest mean of fit - MediaPipe over the *other* sets
    is chosen and reported on the held-out set, next to the default's (the grid's first). The
    sets hold 6, 4 and 2 detected hands: a look at transfer, not a statistic.
    """
    table = {name: evaluate_2d(data_dir, fit=fit) for name, fit in grid.items()}
    sets = [s for s in SETS_2D if all(s in t for t in table.values())]
    out: dict[str, Any] = {"grid": {name: {s: t[s]["fit_2d_px"] for s in sets} for name, t in table.items()}}
    default = next(iter(grid))
    for held in sets:
        train = [s for s in sets if s != held]
        best = min(table, key=lambda n: np.mean([table[n][s]["fit_2d_px"] - table[n][s]["mediapipe_2d_px"]
                                                 for s in train]))
        out[f"held_out_{held}"] = {"chosen": best, "fit_2d_px": table[best][held]["fit_2d_px"],
                                   "default_fit_2d_px": table[default][held]["fit_2d_px"],
                                   "mediapipe_2d_px": table[best][held]["mediapipe_2d_px"]}
    return out


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - needs ../shared/data
    """``python -m core.tools.evaluate_fit [--detail | --loso]``: :func:`evaluate_2d` (or
    :func:`leave_one_set_out` over the direction and shape weights) as JSON."""
    import argparse

    from core.fit import FitSettings

    parser = argparse.ArgumentParser(description="2D error of MediaPipe and of the fit on the labelled real sets.")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--detail", action="store_true", help="per keypoint and per photo too")
    parser.add_argument("--loso", action="store_true",
                        help="leave one set out over the tailor's direction / shape weights (a few minutes)")
    args = parser.parse_args(argv)
    if not args.data.exists():
        print(f"no data at {args.data}: nothing to evaluate")
        return 0
    if args.loso:
        d = FitSettings()
        grid = {f"w_dir {wd:g}, w_shape {ws:g}": dataclasses.replace(d, w_dir=wd, w_shape=ws)
                for wd in (d.w_dir, 5.0, 2.5) for ws in (d.w_shape, 2.0)}
        print(json.dumps(leave_one_set_out(grid, args.data), indent=1))
        return 0
    print(json.dumps(evaluate_2d(args.data, args.detail), indent=1))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
