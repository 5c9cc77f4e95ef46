"""Fast synthetic people for calibration tests and ``bench``: keypoints, not images.

A person is an off-template skeleton drawn by :func:`core.synth.people.sample_person_skeleton`
(segment lengths varying independently of overall size, palm width and length varied), turned
into a personal model (:func:`core.model.personal.personal_model`) and shown in natural
poses (:func:`core.synth.render.natural_pose`) facing the camera. A frame's observation is the
projected true keypoints with Gaussian pixel noise, MediaPipe-like world landmarks (true bone
directions, rotated by a small random error) and, optionally, the shape-free fit of
:class:`~core.fit.TailorFitter` as the starting pose, the way a calibration session starts.
The rendered, MediaPipe-detected benchmark lives beside it (:mod:`core.tools.bench_personalize`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.model import HandModel
from core.model.data import HandModelData
from core.model.personal import model_rest_keypoints, personal_model
from core.personalize.bundle import BundleFrame
from core.rotations import matrix_to_axis_angle


@dataclass(frozen=True)
class SyntheticPerson:
    """A person and their frames.

    Attributes:
        model: the person's personal model. skeleton: (21, 3) their rest keypoints, metres.
        frames: observations (start poses from the shape-free fit when ``fit_start``).
        keypoints_3d: (N, 21, 3) true camera-frame keypoints, metres. poses: (N, 48) true poses.
        K: (3, 3) the true intrinsics. image_size: (w, h).
    """

    model: HandModelData
    skeleton: np.ndarray
    frames: list[BundleFrame]
    keypoints_3d: np.ndarray
    poses: np.ndarray
    K: np.ndarray
    image_size: tuple[int, int]


def _random_rotation(rng: np.random.Generator, max_angle: float) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    v = torch.as_tensor(axis * max_angle * rng.random())
    from core.rotations import axis_angle_to_matrix

    return axis_angle_to_matrix(v).numpy()


def synthetic_person(base: HandModelData, rng: np.random.Generator, n_frames: int = 20, noise_px: float = 2.0,
                     world_noise_deg: float = 8.0, image_size: tuple[int, int] = (640, 480), fov_deg: float = 60.0,
                     fit_start: bool = True, known_intrinsics: bool = True,
                     betas: np.ndarray | None = None) -> SyntheticPerson:
    """One synthetic person with ``n_frames`` observed frames (see the module docstring)."""
    from core.camera import intrinsics_from_fov
    from core.synth.people import sample_person_skeleton
    from core.synth.render import SynthSettings, facing_rotation, natural_pose

    skeleton = sample_person_skeleton(model_rest_keypoints(base, betas), rng)
    model = personal_model(base, skeleton, betas=betas)
    layer = HandModel(model, dtype=torch.float64)
    base_layer = HandModel(base)
    cam = intrinsics_from_fov(fov_deg, *image_size)
    K = np.array([[cam.fx, 0, cam.cx], [0, cam.fy, cam.cy], [0, 0, 1]])
    settings = SynthSettings(max_tilt_deg=60.0, back_facing=0.4)
    poses, kps, uvs, worlds = [], [], [], []
    b = None if betas is None else torch.as_tensor(betas, dtype=torch.float64)[None]
    while len(poses) < n_frames:
        rot = facing_rotation(rng, settings, base.side)
        fingers = natural_pose(rng, base_layer)
        pose = np.concatenate([matrix_to_axis_angle(torch.as_tensor(rot)).numpy(), fingers])
        with torch.no_grad():
            kp = layer(torch.as_tensor(pose)[None], b).keypoints[0].numpy()
        depth = rng.uniform(0.35, 0.7)
        xy = rng.uniform(-0.25, 0.25, 2) * depth
        kp = kp - kp.mean(0) + np.array([xy[0], xy[1], depth])
        uv = kp[:, :2] / kp[:, 2:] * [cam.fx, cam.fy] + [cam.cx, cam.cy]
        if uv.min() < 0 or (uv[:, 0] > image_size[0]).any() or (uv[:, 1] > image_size[1]).any():
            continue
        poses.append(pose)
        kps.append(kp)
        uvs.append(uv + noise_px * rng.standard_normal(uv.shape))
        wl = (kp - kp.mean(0)) @ _random_rotation(rng, np.radians(world_noise_deg)).T
        worlds.append(wl)
    frames = []
    fitter = None
    if fit_start:
        from core.fit import HandObservation, TailorFitter
        from core.model import mirror_model

        other = mirror_model(base)
        fitter = TailorFitter(base if base.side == "right" else other, other if base.side == "right" else base)
    for i in range(n_frames):
        start = poses[i]
        if fitter is not None:
            obs = HandObservation(base.side, uvs[i].astype(np.float32), worlds[i].astype(np.float32),
                                  K.astype(np.float32) if known_intrinsics else None, image_size, 1.0)
            start = np.asarray(fitter.fit([obs], None, None, 40)[0].pose, dtype=np.float64)
        frames.append(BundleFrame(uvs[i], image_size, K if known_intrinsics else None, start, worlds[i]))
    return SyntheticPerson(model, skeleton, frames, np.stack(kps), np.stack(poses), K, image_size)


@dataclass(frozen=True)
class SurfacedPerson:
    """A :class:`SyntheticPerson` with a known surface and its frames' silhouettes.

    Attributes:
        person: the person (keypoints, poses and starts as :func:`synthetic_person` made them).
        offsets: (V, 3) the true surface offsets, metres, the person's rest frame
            (:func:`core.synth.people.sample_person_surface`).
        model: the person's personal model with that surface.
        transl: (N, 3) each frame's true translation, metres.
        masks: (N, H, W) bool silhouettes of the surfaced hand (hard rasterizer), cut at the
            wrist line of the true keypoints, as a segmentation would be.
    """

    person: SyntheticPerson
    offsets: np.ndarray
    model: HandModelData
    transl: np.ndarray
    masks: np.ndarray


def surfaced_person(base: HandModelData, rng: np.random.Generator, n_frames: int = 20,
                    **kwargs) -> SurfacedPerson:
    """:func:`synthetic_person` with a known surface (a per-finger and palm thickness change)
    and the silhouettes of its frames rendered by our hard rasterizer."""
    from core.render import RasterSettings, project_points, rasterize
    from core.segment import wrist_cut
    from core.synth.people import sample_person_surface

    person = synthetic_person(base, rng, n_frames, **kwargs)
    offsets = sample_person_surface(person.model, rng)
    model = personal_model(base, person.skeleton, offsets=offsets)
    plain, surfaced = HandModel(person.model, dtype=torch.float64), HandModel(model, dtype=torch.float64)
    w, h = person.image_size
    K = torch.as_tensor(person.K, dtype=torch.float32)[None]
    transl, masks = [], []
    for pose, kp in zip(person.poses, person.keypoints_3d):
        p = torch.as_tensor(pose, dtype=torch.float64)[None]
        with torch.no_grad():
            t = kp[0] - plain(p).keypoints[0, 0].numpy()
            verts = surfaced(p, None, torch.as_tensor(t)[None]).vertices.float()
        mask = (rasterize(verts, surfaced.faces, K, RasterSettings(image_size=(h, w))).pix_to_face[0] >= 0).numpy()
        masks.append(wrist_cut(mask, project_points(kp[None], person.K[None])[0]))
        transl.append(t)
    return SurfacedPerson(person, offsets, model, np.stack(transl), np.stack(masks))
