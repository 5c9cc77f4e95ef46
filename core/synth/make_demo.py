"""Make the bundled demo clip: ``python -m core.synth.make_demo``.

A right hand of fixed shape moves smoothly through natural poses (open, relaxed, fist, point,
victory, pinch, spread) while the wrist turns and sways, over a fixed procedural background.
Written next to it: the exact intrinsics (``demo_intrinsics.json``) and per-frame ground truth
(``demo_groundtruth.npz``: pose, betas, transl, K, keypoints_2d, joints_3d). Deterministic.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch

from core.camera import intrinsics_from_fov, rgb_to_bgr
from core.model.anatomy import anatomical_to_axis_angle
from core.outputs import atomic_path
from core.rotations import axis_angle_to_matrix
from core.synth.render import (
    PALM_TO_CAMERA,
    SynthSettings,
    default_layers,
    procedural_background,
    procedural_skin_texture,
    render_hand_sample,
)

log = logging.getLogger("make_demo")

OUT_DIR = Path(__file__).resolve().parents[2] / "resources" / "demo"

# Rows of the (15, 3) anatomical angle array (twist, spread, bend) per finger.
INDEX, MIDDLE, PINKY, RING, THUMB = (0, 1, 2), (3, 4, 5), (6, 7, 8), (9, 10, 11), (12, 13, 14)
FINGERS = (INDEX, MIDDLE, RING, PINKY)


def _curl(ang: np.ndarray, finger: tuple[int, int, int], amount: float) -> None:
    mcp, pip, dip = finger
    ang[mcp, 2] = 1.45 * amount
    ang[pip, 2] = 1.6 * amount
    ang[dip, 2] = 1.0 * amount


def _spread(ang: np.ndarray, frames: np.ndarray, mano_joints: np.ndarray, amount: float) -> None:
    """Fan the fingers apart (positive) or together, as the natural-pose sampler does."""
    middle = mano_joints[4]
    for finger in FINGERS:
        j = finger[0] + 1  # MANO joint index of the MCP
        away = mano_joints[j] - middle
        side = -np.sign(away @ frames[j][:, 2]) * min(1.0, np.linalg.norm(away) / 0.02)
        ang[finger[0], 1] = 0.3 * side * amount


def keyframes(frames: np.ndarray, mano_joints: np.ndarray) -> list[np.ndarray]:
    """Anatomical angles (15, 3) of the demo's key poses, in order."""
    poses = []
    open_hand = np.zeros((15, 3))
    poses.append(open_hand)
    relaxed = np.zeros((15, 3))
    for f in FINGERS:
        _curl(relaxed, f, 0.2)
    relaxed[THUMB[2], 2] = 0.2
    poses.append(relaxed)
    fist = np.zeros((15, 3))
    for f in FINGERS:
        _curl(fist, f, 1.0)
    fist[THUMB[0], 2], fist[THUMB[1], 2], fist[THUMB[2], 2] = 0.5, 0.7, 0.9
    poses.append(fist)
    point = fist.copy()
    _curl(point, INDEX, 0.0)
    poses.append(point)
    victory = point.copy()
    _curl(victory, MIDDLE, 0.0)
    _spread(victory, frames, mano_joints, 0.8)
    poses.append(victory)
    pinch = relaxed.copy()
    _curl(pinch, INDEX, 0.55)
    pinch[THUMB[0], 1], pinch[THUMB[0], 2], pinch[THUMB[1], 2], pinch[THUMB[2], 2] = 0.4, 0.5, 0.4, 0.5
    poses.append(pinch)
    spread = np.zeros((15, 3))
    _spread(spread, frames, mano_joints, 1.0)
    poses.append(spread)
    poses.append(open_hand)
    return poses


def smoothstep(t: np.ndarray) -> np.ndarray:
    return t * t * (3 - 2 * t)


def make_demo(out_dir: Path = OUT_DIR, seconds: float = 10.0, fps: int = 15, size: tuple[int, int] = (480, 360),
              seed: int = 7) -> dict:
    """Render and write the clip; returns a summary."""
    import cv2

    rng = np.random.default_rng(seed)
    layers = default_layers()
    d = layers["right"].data
    mano_joints = d.j_regressor.astype(np.float64) @ d.v_template
    keys = keyframes(d.rest_frames, mano_joints)
    n = int(seconds * fps)
    # The bundled demo was rendered before forearms and skin detail: rebuilding it gives the same clip.
    settings = SynthSettings(image_size=size, supersample=2, fill=(0.55, 0.55), back_facing=0.0, forearm=False,
                             skin_detail=False)
    K = intrinsics_from_fov(60.0, *size).K
    betas = np.array([0.4, -0.3, 0.2] + [0.0] * 7, dtype=np.float32)
    texture = procedural_skin_texture(rng)
    background = procedural_background(rng, *size)
    frames_t = torch.as_tensor(d.rest_frames[1:])
    lighting = (np.array([0.3, -0.4, 0.87]) / np.linalg.norm([0.3, -0.4, 0.87]), 0.45, np.array([1.0, 0.98, 0.95]))
    gt = {k: [] for k in ("pose", "betas", "transl", "K", "keypoints_2d", "joints_3d")}
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "demo.mp4", ".mp4") as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        try:
            for i in range(n):
                t = i / (n - 1) * (len(keys) - 1)
                k = min(int(t), len(keys) - 2)
                a = smoothstep(np.array(t - k))
                ang = (1 - a) * keys[k] + a * keys[k + 1]
                finger_pose = anatomical_to_axis_angle(torch.as_tensor(ang, dtype=torch.float32),
                                                       frames_t).reshape(45).numpy()
                phase = 2 * np.pi * i / n
                turn = axis_angle_to_matrix(torch.tensor(
                    [0.25 * np.sin(phase), 0.45 * np.sin(2 * phase + 0.5), 0.2 * np.sin(3 * phase)],
                    dtype=torch.float64)).numpy()
                sample_rng = np.random.default_rng(seed * 1000 + i)
                s = render_hand_sample(
                    sample_rng, layers, settings, betas=betas, pose=finger_pose, texture=texture,
                    background=background, global_rotation=turn @ PALM_TO_CAMERA, K=K, transl_jitter=0.0,
                    lighting=lighting,
                )
                writer.write(rgb_to_bgr(s.image))
                for key, value in (("pose", s.pose), ("betas", s.betas), ("transl", s.transl), ("K", s.K),
                                   ("keypoints_2d", s.keypoints_2d), ("joints_3d", s.joints_3d)):
                    gt[key].append(value)
        finally:
            writer.release()
    intr = {"fx": float(K[0, 0]), "fy": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2]),
            "width": size[0], "height": size[1]}
    (out_dir / "demo_intrinsics.json").write_text(json.dumps(intr, indent=2) + "\n")
    np.savez_compressed(out_dir / "demo_groundtruth.npz", **{k: np.stack(v) for k, v in gt.items()}, fps=fps)
    return {"frames": n, "fps": fps, "size": size, "bytes": (out_dir / "demo.mp4").stat().st_size}


def detection_rate(path: Path = OUT_DIR / "demo.mp4") -> float:
    """Fraction of the clip's frames in which MediaPipe (video mode) finds a hand."""
    from core.capture import open_source
    from core.detect import HandDetector

    found = total = 0
    with open_source(str(path)) as src, HandDetector(max_hands=1, mode="video") as det:
        for frame in src:
            total += 1
            found += bool(det.detect(frame.image, frame.timestamp_s))
    return found / max(total, 1)


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - a build step
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    info = make_demo(args.out, args.seconds)
    info["mediapipe_detection_rate"] = round(detection_rate(args.out / "demo.mp4"), 3)
    log.info("%s", info)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
