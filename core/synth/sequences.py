"""Synthetic keypoint sequences with exact ground truth, for tracking and camera tests.

No rendering: the hands are posed with the model and projected, and :func:`detections`
turns a frame into MediaPipe-style :class:`~core.detect.Detection` objects whose labels can be
corrupted the way MediaPipe corrupts them (:func:`corrupt_labels`: runs of swapped labels,
both hands given the same label, single-frame flips, shuffled order).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.detect import Detection
from core.mirror import mirror_axis_angle
from core.model import HandModel
from core.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from core.synth.render import PALM_TO_CAMERA, SynthSample, SynthSettings, natural_pose


@dataclass(frozen=True)
class SequenceFrame:
    """One frame of a synthetic sequence (camera frame: OpenCV, metres).

    Attributes:
        sides: the hands' true sides, one per hand (hand i is the same hand in every frame).
        keypoints_2d: (H, 21, 2) float32 pixels. joints_3d: (H, 21, 3) float32 metres.
        K: (3, 3) float64 intrinsics. image_size: (width, height) pixels.
    """

    sides: tuple[str, ...]
    keypoints_2d: np.ndarray
    joints_3d: np.ndarray
    K: np.ndarray
    image_size: tuple[int, int]


def _posed_keypoints(layer: HandModel, side: str, rotation: np.ndarray, finger_pose: np.ndarray,
                     betas: np.ndarray) -> np.ndarray:
    """(21, 3) keypoints of a hand posed at the origin (model units, metres)."""
    full = np.concatenate([matrix_to_axis_angle(torch.as_tensor(rotation, dtype=torch.float64)).numpy(),
                           np.asarray(finger_pose, dtype=np.float64)]).astype(np.float32)
    if side == "left":
        full[3:] = mirror_axis_angle(full[3:])
    with torch.no_grad():
        out = layer(torch.as_tensor(full)[None], torch.as_tensor(betas, dtype=torch.float32)[None])
    return out.keypoints[0].numpy().astype(np.float64)


def two_hand_sequence(layers: dict[str, HandModel], frames: int, K: np.ndarray, image_size: tuple[int, int],
                      seed: int = 0, depth_m: float = 0.5, crossing: bool = True) -> list[SequenceFrame]:
    """A right and a left hand moving and posing smoothly; with ``crossing`` they swap places
    in the image half-way (passing a little above and below each other).

    Hand 0 is the right hand, hand 1 the left. Each hand turns, tilts (palm or back to the
    camera) and blends between natural finger poses.
    """
    rng = np.random.default_rng(seed)
    w, h = image_size
    mirror = np.diag([-1.0, 1.0, 1.0])
    hands = []
    for side in ("right", "left"):
        base = PALM_TO_CAMERA if side == "right" else mirror @ PALM_TO_CAMERA @ mirror
        if rng.random() < 0.5:
            base = np.diag([-1.0, 1.0, -1.0]) @ base  # the back toward the camera
        poses = [natural_pose(rng, layers["right"]) for _ in range(3)]
        hands.append((side, base, poses, np.clip(rng.normal(0, 0.8, layers[side].num_betas), -2, 2),
                      rng.uniform(0, 2 * np.pi, 3)))
    out = []
    for i in range(frames):
        s = i / max(frames - 1, 1)
        kp2, kp3 = [], []
        for j, (side, base, poses, betas, phase) in enumerate(hands):
            a = 0.5 - 0.5 * np.cos(np.pi * (2 * s % 1.0))
            k = 0 if s < 0.5 else 1
            finger = (1 - a) * poses[k] + a * poses[k + 1]
            turn = axis_angle_to_matrix(torch.tensor(
                [0.35 * np.sin(2 * np.pi * s + phase[0]), 0.5 * np.sin(2 * np.pi * s + phase[1]),
                 0.4 * np.sin(2 * np.pi * s + phase[2])], dtype=torch.float64)).numpy()
            kp = _posed_keypoints(layers[side], side, turn @ base, finger, betas)
            # Image-x position: the right hand (the subject's) starts on the image's left.
            x0 = -0.22 if j == 0 else 0.22
            x = x0 * (1 - 2 * s) if crossing else x0 + 0.04 * np.sin(2 * np.pi * s)
            y = (-0.06 if j == 0 else 0.06) + 0.03 * np.sin(4 * np.pi * s + j)
            z = depth_m + 0.08 * np.sin(2 * np.pi * s + j)
            u, v = w / 2 + x * w, h / 2 + y * h  # the hand's centre in the image, pixels
            centre = np.array([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z])
            kp = kp - kp.mean(0) + centre
            uv = (K @ kp.T).T
            kp2.append(uv[:, :2] / uv[:, 2:])
            kp3.append(kp)
        out.append(SequenceFrame(("right", "left"), np.asarray(kp2, np.float32), np.asarray(kp3, np.float32),
                                 np.asarray(K, np.float64), (int(w), int(h))))
    return out


def detections(frame: SequenceFrame, labels: tuple[str, ...] | None = None, scores: tuple[float, ...] | None = None,
               order: tuple[int, ...] | None = None, noise_px: float = 0.0,
               rng: np.random.Generator | None = None) -> tuple[Detection, ...]:
    """MediaPipe-style detections of a frame's hands.

    Args:
        labels: per hand, the label to give (default: the true side).
        scores: per hand, the label's score (default 0.95).
        order: the hands' order in the output (default 0, 1, ...).
        noise_px: standard deviation of Gaussian noise on the 2D keypoints.
    """
    n = len(frame.sides)
    labels = frame.sides if labels is None else labels
    scores = (0.95,) * n if scores is None else scores
    order = tuple(range(n)) if order is None else order
    rng = rng or np.random.default_rng(0)
    out = []
    for i in order:
        kp = frame.keypoints_2d[i] + (rng.normal(0, noise_px, (21, 2)) if noise_px > 0 else 0.0)
        world = frame.joints_3d[i] - frame.joints_3d[i][[0, 5, 9, 13, 17]].mean(0)
        z = (frame.joints_3d[i][:, 2] - frame.joints_3d[i][0, 2]) * frame.K[0, 0] / frame.image_size[0]
        out.append(Detection(labels[i], float(scores[i]), kp.astype(np.float32), z.astype(np.float32),
                             world.astype(np.float32), frame.image_size))
    return tuple(out)


def corrupt_labels(sides: tuple[str, ...], frames: int, seed: int = 0, swap_runs: int = 3, duplicate_runs: int = 3,
                   run_length: tuple[int, int] = (5, 15), flip_rate: float = 0.05) -> list[tuple[str, ...]]:
    """Per frame, MediaPipe-style wrong labels for hands whose true sides are ``sides``.

    Runs of frames where the labels are swapped, runs where every hand gets the same label
    (chosen per run), and single-frame flips of one hand's label at ``flip_rate``.
    """
    rng = np.random.default_rng(seed)
    other = {"right": "left", "left": "right"}
    labels = [list(sides) for _ in range(frames)]
    for kind, runs in (("swap", swap_runs), ("dup", duplicate_runs)):
        for _ in range(runs):
            length = int(rng.integers(*run_length))
            start = int(rng.integers(0, max(frames - length, 1)))
            same = str(rng.choice(["right", "left"]))
            for f in range(start, min(start + length, frames)):
                labels[f] = [other[s] for s in sides] if kind == "swap" else [same] * len(sides)
    for f in range(frames):
        for j in range(len(sides)):
            if rng.random() < flip_rate:
                labels[f][j] = other[labels[f][j]]
    return [tuple(x) for x in labels]


def camera_turn(i: int, frames: int, amplitude_deg: float) -> np.ndarray:
    """The (3, 3) rotation of :func:`render_clip`'s turning camera at frame ``i`` of ``frames``
    (reference-camera directions to this frame's camera)."""
    phase = 2 * np.pi * i / frames
    a = np.radians(amplitude_deg)
    w = np.array([0.6 * a * np.sin(phase + 1.0), a * np.sin(phase), 0.2 * a * np.sin(2 * phase)])
    return axis_angle_to_matrix(torch.as_tensor(w, dtype=torch.float64)).numpy()


def render_clip(layers: dict[str, HandModel], fov_deg: float, frames: int = 40,
                image_size: tuple[int, int] = (640, 480),
                seed: int = 0, fill: float = 0.5, camera_turn_deg: float = 0.0, lever_m: float = 0.0,
                table_m: float | None = None) -> list[SynthSample]:
    """A rendered clip of one right hand seen by a pinhole camera of ``fov_deg`` (horizontal).

    The demo clip's motion (:mod:`core.synth.make_demo`: natural key poses, the wrist turning
    and swaying), while the hand's centre circles a third of the way out from the image's
    centre, where a wide-angle camera's perspective shows most; its length spans ``fill`` of
    the image's smaller side (so a wider camera sees it closer). Deterministic for a seed.

    ``camera_turn_deg`` > 0: the camera also turns about its centre, as a head-mounted one
    does (over the clip, yaw ``sin`` of that amplitude, pitch 0.6 of it, roll 0.2), seeing a
    distant textured scene wider than the view (:func:`camera_turn`,
    :func:`core.synth.render.textured_background`, :func:`core.synth.render.turned_view`); the
    hand moves with the camera (its placement in the camera's frame is the same as without).
    0 (the default): the still camera and smooth background of before, unchanged. With
    ``lever_m`` the camera turns about a point that far behind it (a head about the neck), so
    it also moves; with ``table_m`` a textured horizontal table lies that far below the
    camera's starting place, out to 3 m (:func:`core.synth.render.table_view`): the view has
    parallax (the distant scene does not).
    """
    from core.camera import intrinsics_from_fov
    from core.model.anatomy import anatomical_to_axis_angle
    from core.synth.make_demo import keyframes, smoothstep
    from core.synth.render import (
        procedural_background,
        procedural_skin_texture,
        render_hand_sample,
        table_view,
        textured_background,
        turned_view,
    )

    rng = np.random.default_rng(seed)
    w, h = image_size
    d = layers["right"].data
    keys = keyframes(d.rest_frames, d.j_regressor.astype(np.float64) @ d.v_template)
    settings = SynthSettings(image_size=image_size, supersample=2, fill=(fill, fill), back_facing=0.0)
    K = intrinsics_from_fov(fov_deg, w, h).K
    betas = np.clip(rng.normal(0, 0.7, d.num_betas), -2, 2).astype(np.float32)
    texture = procedural_skin_texture(rng)
    background = procedural_background(rng, w, h)
    frames_t = torch.as_tensor(d.rest_frames[1:])
    lighting = (np.array([0.3, -0.4, 0.87]) / np.linalg.norm([0.3, -0.4, 0.87]), 0.45, np.array([1.0, 0.98, 0.95]))
    if camera_turn_deg > 0:  # a scene three views wide and high, seen by the reference camera K_pan
        panorama = textured_background(np.random.default_rng(seed + 7919), 3 * w, 3 * h, feature_px=0.03 * w)
        K_pan = K + np.array([[0.0, 0.0, w], [0.0, 0.0, h], [0.0, 0.0, 0.0]])
        if table_m is not None:
            table = textured_background(np.random.default_rng(seed + 7920), 3 * w, 3 * h, feature_px=0.03 * w)
    out = []
    for i in range(frames):
        if camera_turn_deg > 0:
            R = camera_turn(i, frames, camera_turn_deg)
            background = turned_view(panorama, K_pan, K, R, (w, h))
            if table_m is not None:
                pivot = np.array([0.0, 0.0, -lever_m])
                near, on_table = table_view(table, K_pan, K, R, pivot - R @ pivot, table_m, (w, h))
                background[on_table] = near[on_table]
        t = i / max(frames - 1, 1) * (len(keys) - 1)
        k = min(int(t), len(keys) - 2)
        a = smoothstep(np.array(t - k))
        ang = (1 - a) * keys[k] + a * keys[k + 1]
        finger = anatomical_to_axis_angle(torch.as_tensor(ang, dtype=torch.float32), frames_t).reshape(45).numpy()
        phase = 2 * np.pi * i / frames
        turn = axis_angle_to_matrix(torch.tensor([0.25 * np.sin(phase), 0.45 * np.sin(2 * phase + 0.5),
                                                  0.2 * np.sin(3 * phase)], dtype=torch.float64)).numpy()
        centre = ((w - 1) / 2 + 0.3 * w * np.cos(phase), (h - 1) / 2 + 0.25 * h * np.sin(phase))
        out.append(render_hand_sample(np.random.default_rng(seed * 1000 + i), layers, settings, betas=betas,
                                      pose=finger, texture=texture, background=background,
                                      global_rotation=turn @ PALM_TO_CAMERA, K=K, lighting=lighting,
                                      centre_px=centre))
    return out
