"""Compare the hand detector (Tasks API HandLandmarker on the shipped bundles) with the legacy
``mediapipe.solutions.hands`` graph it replaced: detection rate, 2D error, handedness, ms per frame.

Usage (from the project root; the legacy graph needs ``mediapipe<=0.10.21``, and is left out
with a note where the installed MediaPipe has no ``solutions``)::

    python tools/compare_detectors.py [--data ../shared/data] [--rounds 3]

Sets: the labelled 2D samples of ``../shared/data/mmpose_hand_testdata`` (freihand,
onehand10k, panoptic; static mode, two hands, the detection nearest the label counts, as
:func:`core.tools.evaluate_fit.evaluate_2d`), and the demo clip against its ground truth (video mode,
one hand, as ``main.py bench``). ms per frame over ``--rounds`` interleaved rounds: wall time
(median and best round) and the process's CPU time (robust to other processes' load).
``--more`` adds: InterHand2.6M (labels projected with the known cameras, as
:func:`core.tools.evaluate_fit.evaluate_interhand`), the FreiHAND evaluation crops and the nvGesture
clip (detection only), the hand boxes of unipd_handseg30 (a box counts as found when a
detected hand's keypoint centre lies in it), and ``--synthetic N`` rendered hands with exact
keypoints (:mod:`core.synth`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.capture import DEMO_CLIP_PATH, open_source  # noqa: E402
from core.detect import Detection, HandDetector, swap_handedness  # noqa: E402
from core.keypoints import NUM_KEYPOINTS  # noqa: E402
from core.metrics import keypoint_error_px  # noqa: E402
from core.tools.evaluate_fit import DEFAULT_DATA, _best_detection, _coco_hands  # noqa: E402


class LegacyHandDetector:
    """The replaced detector (``mediapipe.solutions.hands``, MediaPipe <= 0.10.21), as it was."""

    def __init__(self, max_hands: int, mode: str) -> None:
        from mediapipe.python.solutions import hands as mp_hands

        self._hands = mp_hands.Hands(static_image_mode=mode == "static", max_num_hands=max_hands,
                                     model_complexity=1, min_detection_confidence=0.5,
                                     min_tracking_confidence=0.5)

    def detect(self, image: np.ndarray, timestamp_s: float | None = None) -> tuple[Detection, ...]:
        height, width = image.shape[:2]
        result = self._hands.process(np.ascontiguousarray(image))
        if not result.multi_hand_landmarks:
            return ()
        out = []
        for lm, world, handed in zip(result.multi_hand_landmarks, result.multi_hand_world_landmarks,
                                     result.multi_handedness):
            norm = np.array([(p.x, p.y, p.z) for p in lm.landmark], dtype=np.float32)
            kp = np.stack([norm[:, 0] * width - 0.5, norm[:, 1] * height - 0.5], axis=1)
            label = swap_handedness(handed.classification[0].label.lower())  # selfie-view label
            out.append(Detection(label, float(handed.classification[0].score), kp, norm[:, 2],
                                 np.array([(p.x, p.y, p.z) for p in world.landmark], np.float32), (width, height)))
        out.sort(key=lambda d: d.score, reverse=True)
        return tuple(out)

    def close(self) -> None:
        self._hands.close()


def _make(kind: str, max_hands: int, mode: str) -> Any:
    return LegacyHandDetector(max_hands, mode) if kind == "legacy" else HandDetector(max_hands=max_hands, mode=mode)


def labelled_sets(kinds: list[str], data: Path, rounds: int) -> dict[str, Any]:
    items = {name: _coco_hands(data / "mmpose_hand_testdata" / name)
             for name in ("freihand", "onehand10k", "panoptic") if (data / "mmpose_hand_testdata" / name).is_dir()}
    out: dict[str, Any] = {}
    times: dict[str, list[float]] = {k: [] for k in kinds}
    cpu: dict[str, list[float]] = {k: [] for k in kinds}
    for r in range(rounds):
        for kind in kinds:
            det = _make(kind, 2, "static")
            n, t0, c0 = 0, time.perf_counter(), time.process_time()
            rows: dict[str, list] = {}
            for name, labelled in items.items():
                for item in labelled:
                    dets = det.detect(item.image)
                    n += 1
                    rows.setdefault(name, []).append((item, dets))
            times[kind].append((time.perf_counter() - t0) * 1000 / n)
            cpu[kind].append((time.process_time() - c0) * 1000 / n)
            det.close()
            if r:
                continue
            for name, pairs in rows.items():
                errors, sides = [], []
                for item, dets in pairs:
                    d = _best_detection(dets, item.keypoints)
                    extent = np.ptp(item.keypoints[item.visible], axis=0).max() if item.visible.any() else 0.0
                    if d is None or keypoint_error_px(d.keypoints_2d, item.keypoints, item.visible) > 0.5 * extent:
                        continue
                    errors.append(keypoint_error_px(d.keypoints_2d, item.keypoints, item.visible))
                    sides.append(d.handedness)
                out.setdefault(name, {})[kind] = {
                    "hands": len(pairs), "detected": len(errors),
                    "error_2d_px": round(float(np.mean(errors)), 3) if errors else None,
                    "handedness": sides,
                }
    for kind in kinds:
        out.setdefault("static_ms_per_image", {})[kind] = _timing(times[kind], cpu[kind])
    all_err = {k: [] for k in kinds}
    for name in items:
        for kind in kinds:
            row = out[name][kind]
            if row["error_2d_px"] is not None:
                all_err[kind] += [row["error_2d_px"]] * row["detected"]
    out["all_labelled"] = {k: {"hands": sum(len(v) for v in items.values()), "detected": len(e),
                               "error_2d_px": round(float(np.mean(e)), 3) if e else None} for k, e in all_err.items()}
    return out


def demo_clip(kinds: list[str], rounds: int) -> dict[str, Any]:
    with open_source("demo") as src:
        frames = list(src)
    truth = np.load(DEMO_CLIP_PATH.with_name("demo_groundtruth.npz"))["keypoints_2d"]
    out: dict[str, Any] = {}
    times: dict[str, list[float]] = {k: [] for k in kinds}
    cpu: dict[str, list[float]] = {k: [] for k in kinds}
    for r in range(rounds):
        for kind in kinds:
            det = _make(kind, 1, "video")
            det.detect(frames[0].image, -1.0)  # warm-up frame (a new stream follows)
            if kind != "legacy":
                det.reset()
            else:
                det.close()
                det = _make(kind, 1, "video")
            t0, c0 = time.perf_counter(), time.process_time()
            dets = [det.detect(f.image, f.timestamp_s) for f in frames]
            times[kind].append((time.perf_counter() - t0) * 1000 / len(frames))
            cpu[kind].append((time.process_time() - c0) * 1000 / len(frames))
            det.close()
            if r:
                continue
            errors = [keypoint_error_px(d[0].keypoints_2d, gt, np.ones(NUM_KEYPOINTS, bool))
                      for d, gt in zip(dets, truth) if d]
            out[kind] = {
                "frames": len(frames), "detected": len(errors),
                "detection_rate": round(len(errors) / len(frames), 4),
                "error_2d_px": round(float(np.mean(errors)), 3) if errors else None,
                "handedness_right": sum(1 for d in dets if d and d[0].handedness == "right"),
            }
    for kind in kinds:
        out[kind]["video_ms_per_frame"] = _timing(times[kind], cpu[kind])
    return out


def _timing(wall: list[float], cpu: list[float]) -> dict[str, Any]:
    """Wall ms (median and best round: other processes' load only adds) and this process's
    CPU ms (all its threads; what the detector itself costs), per image or frame."""
    return {"wall_median": round(float(np.median(wall)), 2), "wall_best": round(float(np.min(wall)), 2),
            "cpu_median": round(float(np.median(cpu)), 2), "wall_rounds": [round(t, 1) for t in wall]}


def _interhand(data: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, (21, 2) projected label) per valid hand of the InterHand2.6M samples."""
    from core.tools.evaluate_fit import INTERHAND_TO_MEDIAPIPE, _read_rgb

    folder = data / "mmpose_hand_testdata" / "interhand2.6m"
    if not folder.is_dir():
        return []
    doc = json.loads((folder / "test_interhand2.6m_data.json").read_text())
    cams = json.loads((folder / "test_interhand2.6m_camera.json").read_text())
    joints = json.loads((folder / "test_interhand2.6m_joint_3d.json").read_text())
    out = []
    for im in doc["images"]:
        cap, cam, frame = str(im["capture"]), im["camera"], str(im["frame_idx"])
        c = cams[cap]
        R, pos = np.asarray(c["camrot"][cam], np.float64), np.asarray(c["campos"][cam], np.float64)
        f, pp = c["focal"][cam], c["princpt"][cam]
        rec = joints[cap][frame]
        world = np.asarray(rec["world_coord"], np.float64)
        valid = np.asarray(rec["joint_valid"], bool).reshape(-1)
        xyz = (R @ (world - pos).T).T
        image = _read_rgb(folder / im["file_name"])
        for offset in (0, 21):
            idx = [offset + i for i in INTERHAND_TO_MEDIAPIPE]
            if valid[idx].all():
                p = xyz[idx]
                out.append((image, np.stack([f[0] * p[:, 0] / p[:, 2] + pp[0], f[1] * p[:, 1] / p[:, 2] + pp[1]], 1)))
    return out


def more_sets(kinds: list[str], data: Path, synthetic: int) -> dict[str, Any]:
    import cv2

    from core.tools.evaluate_fit import _read_rgb

    out: dict[str, Any] = {}
    every = np.ones(NUM_KEYPOINTS, bool)
    hands = _interhand(data)
    synth = []
    if synthetic:
        from core.synth import SynthSettings, default_layers, render_hand_sample

        rng, layers = np.random.default_rng(0), default_layers()
        synth = [render_hand_sample(rng, layers, SynthSettings(left_probability=0.3)) for _ in range(synthetic)]
    crops = sorted((data / "freihand_eval20_K").glob("*_img.jpg"))
    unipd = sorted((data / "unipd_handseg30" / "rgb").glob("*.jpg"))
    clip = data / "videos" / "nvgesture_clip" / "sk_color.avi"
    for kind in kinds:
        row: dict[str, Any] = {}
        det = _make(kind, 2, "static")
        errors = []
        for image, uv in hands:
            d = _best_detection(det.detect(image), uv)
            if d is not None and keypoint_error_px(d.keypoints_2d, uv, every) <= 40:
                errors.append(keypoint_error_px(d.keypoints_2d, uv, every))
        row["interhand"] = {"hands": len(hands), "detected": len(errors),
                            "error_2d_px": round(float(np.mean(errors)), 3) if errors else None}
        row["freihand_eval_crops"] = {"images": len(crops),
                                      "detected": sum(1 for c in crops if det.detect(_read_rgb(c)))}
        det.close()
        det = _make(kind, 1, "static")
        errors, sides = [], []
        for s in synth:
            d = det.detect(s.image)
            if d:
                errors.append(keypoint_error_px(d[0].keypoints_2d, s.keypoints_2d, every))
                sides.append(d[0].handedness == s.side)
        row["synthetic"] = {"images": len(synth), "detected": len(errors),
                            "error_2d_px": round(float(np.mean(errors)), 3) if errors else None,
                            "handedness_correct": int(sum(sides))}
        det.close()
        det = _make(kind, 4, "static")
        boxes = found = 0
        for path in unipd:
            gt = np.loadtxt(data / "unipd_handseg30" / "det" / f"{path.stem}.txt", ndmin=2)
            centres = [d.keypoints_2d.mean(0) for d in det.detect(_read_rgb(path))]
            boxes += len(gt)
            for x, y, w, h in gt:
                hit = next((i for i, c in enumerate(centres) if x <= c[0] <= x + w and y <= c[1] <= y + h), None)
                if hit is not None:
                    found += 1
                    centres.pop(hit)
        row["unipd_boxes"] = {"boxes": boxes, "found": found}
        det.close()
        if clip.is_file():
            det = _make(kind, 1, "video")
            cap = cv2.VideoCapture(str(clip))
            n = hit = 0
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                hit += bool(det.detect(np.ascontiguousarray(bgr[:, :, ::-1]), n / 30.0))
                n += 1
            cap.release()
            det.close()
            row["nvgesture_video"] = {"frames": n, "detected": hit}
        out[kind] = row
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-labelled", action="store_true")
    parser.add_argument("--more", action="store_true", help="also the other real sets (see the docstring)")
    parser.add_argument("--synthetic", type=int, default=0, help="with --more: this many rendered hands")
    args = parser.parse_args(argv)
    kinds = ["tasks"]
    try:
        from mediapipe.python.solutions import hands  # noqa: F401

        kinds.insert(0, "legacy")
    except ImportError:
        print("note: this MediaPipe has no legacy solutions API; measuring the Tasks detector only", file=sys.stderr)
    import mediapipe

    result: dict[str, Any] = {"mediapipe": mediapipe.__version__, "python": sys.version.split()[0]}
    if not args.skip_labelled and args.data.is_dir():
        result["labelled"] = labelled_sets(kinds, args.data, args.rounds)
    result["demo"] = demo_clip(kinds, args.rounds)
    if args.more and args.data.is_dir():
        result["more"] = more_sets(kinds, args.data, args.synthetic)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
