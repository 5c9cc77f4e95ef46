"""Synthetic calibration subjects with known shapes, for training and benchmarking.

A subject is either a shape drawn from the model's shape distribution (beta ~ N(0, I), clipped
at 2.5 SD) or, with ``people=True``, a synthetic *person*: a skeleton whose segment lengths and
palm proportions differ from the template beyond the shape space (:mod:`core.synth.people`,
rendered through its personal model, :func:`core.model.personal.personal_model`); and a skin
texture; each of its frames is rendered by :mod:`core.synth.render` in a
random natural pose and view (palm or back, tilted up to 60 degrees), random lighting and
background, then degraded at random: Gaussian or motion blur, occluders over the hand, noise,
exposure (``conditions="clean"``: mostly mildly, :func:`degrade`), or with each frame's capture
conditions drawn as a webcam session's (``conditions="webcam"``, :mod:`core.synth.webcam`: the
hand far away, edge-on or cut by the border, motion blur, dim light, occluders, JPEG).
MediaPipe (static-image mode) detects the hand as it would in the app.

The expensive part (rendering + MediaPipe) is cached per data set in an ``.npz`` under
:func:`cache_dir`: detections, the 96 px crops, image sizes, intrinsics and the true shape,
so changing the fit or the features does not re-render anything.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.outputs import atomic_path

log = logging.getLogger(__name__)

#: How a set's frames are degraded (:func:`generate`).
CONDITIONS = ("clean", "webcam")
#: Bump when rendering or degradation changes (invalidates caches).
#: 5: detected by the Tasks API HandLandmarker (core.detect); 6: the re-derived default skeleton;
#: 7: hands rendered with a forearm (sometimes sleeved), fingernails, creases and palm lines
#: (core.synth.render): MediaPipe finds more of them and reads their sides right more often.
DATA_VERSION = 7


def cache_dir() -> Path:
    """``$HANDTWIN_CACHE/personalize`` or ``<tmp>/handtwin-cache/personalize``."""
    base = os.environ.get("HANDTWIN_CACHE")
    root = Path(base) if base else Path(tempfile.gettempdir()) / "handtwin-cache"
    return root / "personalize"


@dataclass(frozen=True)
class SynthFrames:
    """Detected synthetic frames of several subjects (arrays over N detected frames).

    Attributes:
        subject: (N,) int subject id. true_betas: (N, S) float32 the subject's shape.
        true_skeleton: (N, 21, 3) float32 the subject's rest keypoints (model frame, metres,
            MediaPipe order): its personal skeleton, or the shape's rest keypoints.
        frame: (N,) int frame number within the subject.
        keypoints_2d: (N, 21, 2) detected px. keypoints_z: (N, 21). world: (N, 21, 3) m.
        score: (N,) detector score. handedness: (N,) str.
        crops: (N, 96, 96, 3) uint8 hand crops. image_size: (N, 2) (w, h). K: (N, 3, 3).
        true_pose: (N, 48). true_keypoints_2d: (N, 21, 2) px and true_keypoints_3d: (N, 21, 3)
            camera frame, metres: the rendered hand's exact keypoints. degradation: (N, 3) blur sigma
            px, occluded fraction, noise std.
        rendered: frames rendered in total (detected or not).
        conditions: (N, C) float32 each frame's webcam conditions
            (:data:`core.synth.webcam.CONDITION_NAMES`), for ``conditions="webcam"`` sets; else None.
    """

    subject: np.ndarray
    true_betas: np.ndarray
    true_skeleton: np.ndarray
    frame: np.ndarray
    keypoints_2d: np.ndarray
    keypoints_z: np.ndarray
    world: np.ndarray
    score: np.ndarray
    handedness: np.ndarray
    crops: np.ndarray
    image_size: np.ndarray
    K: np.ndarray
    true_pose: np.ndarray
    true_keypoints_2d: np.ndarray
    true_keypoints_3d: np.ndarray
    degradation: np.ndarray
    rendered: int
    conditions: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.subject)


def degrade(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray,
            strength: float) -> tuple[np.ndarray, np.ndarray]:
    """Blur, occlude, add noise and change exposure, each at random (more at higher strength).

    Returns the image and (blur sigma px, occluded fraction of the hand, noise std).
    """
    import cv2

    from core.synth.webcam import motion_kernel, paint_occluders

    img = image.astype(np.float32)
    blur = 0.0
    occluded = 0.0
    if rng.random() < 0.6 * strength + 0.1:
        blur = float(rng.uniform(0.5, 4.0) * strength + 0.3)
        if rng.random() < 0.5:
            img = cv2.GaussianBlur(img, (0, 0), blur)
        else:  # motion blur along a random direction
            img = cv2.filter2D(img, -1, motion_kernel(int(2 * blur + 1), float(rng.uniform(0, 180))))
    if rng.random() < 0.5 * strength and mask.any():
        occluded = paint_occluders(rng, img, mask, int(rng.integers(1, 3)))
    gain = float(rng.uniform(1 - 0.4 * strength, 1 + 0.3 * strength))
    noise = float(rng.uniform(0, 10) * strength)
    img = img * gain + rng.normal(0, noise + 1e-6, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8), np.array([blur, occluded, noise], np.float32)


def generate(n_subjects: int, frames_per_subject: int, seed: int, image_size: tuple[int, int] = (256, 256),
             model: str | None = None, progress: bool = False, max_render_factor: int = 4,
             people: bool = False, conditions: str = "clean") -> SynthFrames:
    """Render, degrade and detect right hands until each of ``n_subjects`` subjects has
    ``frames_per_subject`` detected frames (at most ``max_render_factor`` times as many renders).
    ``people``: subjects are synthetic people (off-template skeletons, mean shape) instead of
    shapes of the model's shape space. ``conditions``: ``"clean"``, the renders degraded by
    :func:`degrade` (mostly mildly), or ``"webcam"``, each frame's capture conditions drawn as a
    webcam session's (:mod:`core.synth.webcam`: far away, edge-on, cut by the border, motion
    blur, dim light, occluders, JPEG)."""
    import torch

    from core.detect import HandDetector
    from core.model.personal import model_rest_keypoints
    from core.personalize.features import hand_crop
    from core.synth.people import person_layers, sample_person_skeleton
    from core.synth.render import SynthSettings, default_layers, procedural_skin_texture, render_hand_sample
    from core.synth.webcam import apply_conditions, render_settings, sample_conditions

    torch.set_num_threads(1)
    base_layers = default_layers(model)
    settings = SynthSettings(image_size=image_size, fill=(0.35, 0.75), max_tilt_deg=60.0, back_facing=0.4,
                             supersample=1, left_probability=0.0)
    if conditions not in CONDITIONS:
        raise ValueError(f"conditions must be one of {CONDITIONS}, got {conditions!r}")
    webcam = conditions == "webcam"
    if webcam:  # far, cut and blurred hands are found less often (about a third of the renders)
        max_render_factor = max(max_render_factor, 6)
    rows: dict[str, list] = {k: [] for k in ("conditions", "subject", "true_betas", "true_skeleton", "frame",
                                              "keypoints_2d", "keypoints_z", "world", "score", "handedness", "crops",
                                              "image_size", "K", "true_pose", "true_keypoints_2d", "true_keypoints_3d",
                                              "degradation")}
    rendered = 0
    with HandDetector(max_hands=1, mode="static") as det:
        for s in range(n_subjects):
            rng = np.random.default_rng([seed, s])
            base = base_layers["right"].data
            if people:
                betas = np.zeros(base.num_betas, np.float32)
                skeleton = sample_person_skeleton(model_rest_keypoints(base), rng)
                layers = person_layers(base, skeleton)
            else:
                betas = np.clip(rng.normal(0, 1, base.num_betas), -2.5, 2.5).astype(np.float32)
                skeleton = model_rest_keypoints(base, betas)
                layers = base_layers
            texture = procedural_skin_texture(rng, 256)
            found_here = 0
            for f in range(max_render_factor * frames_per_subject):
                if found_here >= frames_per_subject:
                    break
                if webcam:
                    cond = sample_conditions(rng, image_size)
                    sample = render_hand_sample(rng, layers, render_settings(settings, cond), betas=betas,
                                                texture=texture, centre_px=cond.centre_px)
                    image, occluded = apply_conditions(rng, sample.image, sample.mask, cond)
                    deg = np.array([max(cond.motion_px / 2.0, cond.defocus_sigma), occluded, cond.noise_std],
                                   np.float32)
                else:
                    sample = render_hand_sample(rng, layers, settings, betas=betas, texture=texture)
                    strength = float(rng.uniform(0, 1) ** 1.5)
                    image, deg = degrade(rng, sample.image, sample.mask, strength)
                rendered += 1
                found = det.detect(image)
                if not found:
                    continue
                d = found[0]
                found_here += 1
                h, w = image.shape[:2]
                rows["subject"].append(s)
                rows["true_betas"].append(betas)
                rows["true_skeleton"].append(skeleton.astype(np.float32))
                rows["frame"].append(f)
                rows["keypoints_2d"].append(d.keypoints_2d)
                rows["keypoints_z"].append(d.keypoints_z)
                rows["world"].append(d.world_landmarks)
                rows["score"].append(d.score)
                rows["handedness"].append(d.handedness)
                rows["crops"].append(hand_crop(image, d.keypoints_2d))
                rows["image_size"].append((w, h))
                rows["K"].append(sample.K)
                rows["true_pose"].append(sample.pose)
                rows["true_keypoints_2d"].append(sample.keypoints_2d)
                rows["true_keypoints_3d"].append(sample.joints_3d)
                rows["degradation"].append(deg)
                if webcam:
                    rows["conditions"].append(cond.record(float(deg[1])))
            if progress:
                log.info("subject %d/%d: %d frames detected so far of %d", s + 1, n_subjects, len(rows["subject"]),
                         rendered)
    arrays = {k: np.asarray(v) for k, v in rows.items()}
    if not webcam:
        arrays["conditions"] = None
    return SynthFrames(rendered=rendered, **arrays)


def load_or_generate(name: str, n_subjects: int, frames_per_subject: int, seed: int,
                     model: str | None = None, progress: bool = False, people: bool = False,
                     conditions: str = "clean") -> SynthFrames:
    """:func:`generate`, cached under :func:`cache_dir` by its arguments and :data:`DATA_VERSION`."""
    args = (DATA_VERSION, n_subjects, frames_per_subject, seed, model, people)
    if conditions != "clean":  # (clean sets keep the keys they had)
        args += (conditions,)
    key = hashlib.sha256(repr(args).encode()).hexdigest()[:12]
    path = cache_dir() / f"{name}-{key}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                return SynthFrames(rendered=int(z["rendered"]), **{k: z[k] for k in z.files if k != "rendered"})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the unreadable cache %s (%s)", path, exc)
    data = generate(n_subjects, frames_per_subject, seed, model=model, progress=progress, people=people,
                    conditions=conditions)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: getattr(data, k) for k in data.__dataclass_fields__
              if k != "rendered" and getattr(data, k) is not None}
    with atomic_path(path, ".part.npz") as tmp:
        np.savez_compressed(tmp, rendered=np.int64(data.rendered), **arrays)
    return data


class _Det:
    """A detection record from cached arrays (duck-types :class:`core.detect.Detection`)."""

    def __init__(self, data: SynthFrames, i: int) -> None:
        self.handedness = str(data.handedness[i])
        self.score = float(data.score[i])
        self.keypoints_2d = data.keypoints_2d[i]
        self.keypoints_z = data.keypoints_z[i]
        self.world_landmarks = data.world[i]


def candidates(session, data: SynthFrames, indices: np.ndarray | list[int] | None = None) -> list:
    """Evaluate cached frames as calibration candidates of ``session`` (free-shape refit,
    features, confidence). Returns one CalibrationFrame or None per index."""
    from core.fit import HandObservation

    idx = range(len(data)) if indices is None else indices
    out = []
    for i in idx:
        det = _Det(data, int(i))
        det.handedness = session.side  # synthetic subjects are right hands; trust the truth
        w, h = (int(v) for v in data.image_size[i])
        obs = HandObservation(det.handedness, det.keypoints_2d, det.world_landmarks,
                              data.K[i].astype(np.float32), (w, h), det.score)
        fit = session.fitter.fit([obs], None, None, session.fit_iterations)[0]
        image = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (h, w, 3))
        out.append(session._candidate(image, det, fit, "synthetic", int(data.frame[i]), 0.0, crop=data.crops[i],
                                      K=data.K[i]))
    return out
