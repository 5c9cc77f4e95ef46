"""Synthetic hands with exact ground truth, rendered by our own rasterizer.

A sample is the bundled hand in a natural pose (drawn within the anatomical joint limits),
with a random shape, turned so that its palm or its back faces the camera, placed so that it
fills part of the image, shaded (Lambert + ambient, per-pixel normals) with a procedural skin
texture over a procedural background, then anti-aliased by supersampling. Every quantity the
fit estimates (pose, shape, translation, 3D and 2D keypoints, mask) is known exactly, so the
real MediaPipe can run on it and every stage can be measured.

By default the hand looks like a real one to MediaPipe: a forearm continues it from the wrist
(sometimes in a sleeve), drawn in the same z-buffered pass (:func:`forearm_mesh`), and its skin
carries fingernails, knuckle wrinkles, flexion creases and palm lines (:func:`skin_detail`).
A floating hand with bare skin is read worse: on 80 seeds (256 px, half of them left hands)
MediaPipe found 65% of the bare hands and 76% with both; on five rendered clips of a right hand
(:func:`core.synth.sequences.render_clip` at 60/90/120 degrees, the ``moving`` and ``fast``
clips of :mod:`core.synth.motion`) it labelled 115 of 212 detected bare-hand frames right and
203 of 216 with both. The mask stays the hand's own pixels (the forearm is never part of it).
"""

from __future__ import annotations

import weakref
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from core.camera import intrinsics_from_fov
from core.keypoints import MANO_JOINT_TO_KEYPOINT
from core.mirror import mirror_axis_angle
from core.model import HandModel, load_model_data
from core.model.anatomy import CHILD_KEYPOINT, anatomical_to_axis_angle
from core.render import RasterSettings, interpolate_face_attributes, rasterize
from core.rotations import axis_angle_to_matrix, matrix_to_axis_angle


@dataclass(frozen=True)
class SynthSettings:
    """How samples are drawn.

    Attributes:
        image_size: (width, height) in pixels.
        fov_deg: range of the horizontal field of view, degrees.
        fill: range of the hand's length as a fraction of the image's smaller side.
        max_tilt_deg: largest tilt of the palm away from facing the camera.
        min_tilt_deg: smallest tilt (above 0: only oblique or edge-on views of the palm).
        back_facing: probability that the back of the hand faces the camera.
        supersample: render at this factor and average down (anti-aliasing).
        left_probability: probability of a left hand.
        shape_std: standard deviation of the shape coefficients (clipped at 2.5 SD).
        forearm: render a forearm continuing the hand from its wrist (:func:`forearm_mesh`).
        skin_detail: fingernails, knuckle and flexion creases and palm lines
            (:func:`skin_detail`).
        sleeve_probability: probability that the forearm wears a sleeve from some way up.
        forearm_length: the forearm's length from the wrist, metres.
    """

    image_size: tuple[int, int] = (256, 256)
    fov_deg: tuple[float, float] = (50.0, 70.0)
    fill: tuple[float, float] = (0.45, 0.7)
    max_tilt_deg: float = 35.0
    min_tilt_deg: float = 0.0
    back_facing: float = 0.4
    supersample: int = 2
    left_probability: float = 0.0
    shape_std: float = 1.0
    forearm: bool = True
    skin_detail: bool = True
    sleeve_probability: float = 0.35
    forearm_length: float = 0.25


@dataclass(frozen=True)
class Forearm:
    """A forearm continuing a rendered hand from its wrist (camera frame: OpenCV, metres).

    Attributes:
        vertices: (A, 3) float64. faces: (G, 3) int64 into ``vertices``, counter-clockwise
            seen from outside. uv: (A, 2) float64 texture coordinates (into the hand's skin
            texture). along: (A,) float64 distance from the wrist along the arm, metres
            (negative inside the hand, where the arm starts hidden). ventral: (A,) float32
            in [0, 1], how much a vertex is on the palm side (paler, like the palm).
        sleeve_from: distance from the wrist where a sleeve starts, metres (inf: bare arm).
        sleeve_rgb: (3,) float64 the sleeve's albedo, RGB.
    """

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray
    along: np.ndarray
    ventral: np.ndarray
    sleeve_from: float
    sleeve_rgb: np.ndarray


@dataclass(frozen=True)
class SynthSample:
    """One rendered hand and its ground truth (camera frame: OpenCV, metres).

    Attributes:
        image: (H, W, 3) uint8 RGB. mask: (H, W) bool, the hand's pixels.
        K: (3, 3) float64 intrinsics, pixels.
        side: "right" or "left". pose: (48,) axis-angle. betas: (10,). transl: (3,) smplx transl.
        keypoints_2d: (21, 2) float32 pixels. joints_3d: (21, 3) float32 metres, MediaPipe order.
        vertices: (V, 3) float32 metres.
        texture: (T, T, 3) uint8 the skin texture used (UV space, origin bottom-left).
        forearm: the forearm rendered with the hand (not part of ``mask``), or None.
        skin_detail: whether nails, creases and palm lines were drawn over ``texture``.
    """

    image: np.ndarray
    mask: np.ndarray
    K: np.ndarray
    side: str
    pose: np.ndarray
    betas: np.ndarray
    transl: np.ndarray
    keypoints_2d: np.ndarray
    joints_3d: np.ndarray
    vertices: np.ndarray
    texture: np.ndarray
    forearm: Forearm | None = None
    skin_detail: bool = False


# ----------------------------------------------------------------------------- textures


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1]: random values on a coarse grid, bicubically upsampled."""
    import cv2

    coarse = rng.random((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)


#: Skin base colours (RGB), light to dark.
SKIN_TONES = np.array(
    [[236, 200, 178], [224, 176, 148], [205, 150, 120], [176, 120, 90], [141, 92, 64], [98, 64, 45]],
    dtype=np.float32,
)


def procedural_skin_texture(rng: np.random.Generator, size: int = 512) -> np.ndarray:
    """A plausible skin texture in UV space: a base tone with blotchy low-frequency variation,
    fine grain and a few darker lines. (size, size, 3) uint8 RGB."""
    t = rng.uniform(0, len(SKIN_TONES) - 1)
    lo = int(np.floor(t))
    base = SKIN_TONES[lo] * (1 - (t - lo)) + SKIN_TONES[min(lo + 1, len(SKIN_TONES) - 1)] * (t - lo)
    tex = np.ones((size, size, 3), np.float32) * base
    blotch = _smooth_noise(rng, size, size, 6) - 0.5
    redness = _smooth_noise(rng, size, size, 10) - 0.5
    tex *= 1.0 + 0.12 * blotch[..., None]
    tex[..., 0] += 12.0 * redness
    tex *= 1.0 + 0.04 * (rng.random((size, size, 1)).astype(np.float32) - 0.5)
    import cv2

    for _ in range(25):  # creases
        p0 = rng.integers(0, size, 2)
        p1 = p0 + rng.integers(-size // 10, size // 10, 2)
        cv2.line(tex, tuple(int(v) for v in p0), tuple(int(v) for v in p1), (base * 0.8).tolist(), 1, cv2.LINE_AA)
    return np.clip(tex, 0, 255).astype(np.uint8)


def procedural_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A non-skin background: a colour gradient, soft blobs and rectangles, fine noise."""
    import cv2

    hues = rng.uniform(0, 1, 2)

    def colour(h: float, s: float, v: float) -> np.ndarray:
        hsv = np.uint8([[[int(h * 179), int(s * 255), int(v * 255)]]])
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)

    # Avoid skin hues (orange-red, roughly 0-0.12 of the circle) with enough saturation.
    hues = np.where((hues < 0.12) | (hues > 0.95), hues + 0.3, hues) % 1.0
    c0 = colour(hues[0], rng.uniform(0.2, 0.7), rng.uniform(0.2, 0.9))
    c1 = colour(hues[1], rng.uniform(0.1, 0.6), rng.uniform(0.2, 0.9))
    ramp = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    if rng.random() < 0.5:
        ramp = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    img = c0 * (1 - ramp) + c1 * ramp
    img = np.broadcast_to(img, (height, width, 3)).copy()
    for _ in range(rng.integers(2, 7)):
        c = colour((hues[0] + rng.uniform(0.2, 0.8)) % 1.0, rng.uniform(0.1, 0.6), rng.uniform(0.2, 0.9))
        if rng.random() < 0.5:
            center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            axes = (int(rng.integers(width // 10, width // 3)), int(rng.integers(height // 10, height // 3)))
            cv2.ellipse(img, center, axes, float(rng.uniform(0, 180)), 0, 360, c.tolist(), -1)
        else:
            p0 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.rectangle(img, p0, p1, c.tolist(), -1)
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(1.0, 6.0))
    img += rng.normal(0, 3, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def textured_background(rng: np.random.Generator, width: int, height: int,
                        feature_px: float | None = None) -> np.ndarray:
    """A cluttered non-skin background with corners everywhere (what background tracking
    needs; :func:`procedural_background` is smooth): that background under small rectangles,
    ellipses and lines in non-skin colours (sizes 0.3-2 ``feature_px``, default 3% of the
    larger side; about two per ``feature_px`` square), lightly blurred."""
    import cv2

    img = procedural_background(rng, width, height).astype(np.float32)
    feature = float(feature_px) if feature_px is not None else 0.03 * max(width, height)
    for _ in range(int(2.0 * width * height / feature ** 2)):
        hue = rng.uniform(0.15, 0.9)  # clear of skin's orange-red
        hsv = np.uint8([[[int(hue * 179), int(rng.uniform(0.1, 0.8) * 255), int(rng.uniform(0.1, 0.95) * 255)]]])
        c = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(float).tolist()
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = max(int(rng.uniform(0.3, 2.0) * feature), 2)
        kind = rng.integers(0, 3)
        if kind == 0:
            cv2.rectangle(img, (x, y), (x + r, y + int(rng.uniform(0.3, 1.5) * r)), c, -1)
        elif kind == 1:
            cv2.ellipse(img, (x, y), (r, max(int(rng.uniform(0.3, 1.0) * r), 1)), float(rng.uniform(0, 180)),
                        0, 360, c, -1)
        else:
            a = rng.uniform(0, np.pi)
            cv2.line(img, (x, y), (int(x + 2 * r * np.cos(a)), int(y + 2 * r * np.sin(a))), c,
                     int(rng.integers(1, 4)))
    img = cv2.GaussianBlur(img, (0, 0), 0.8)
    return np.clip(img, 0, 255).astype(np.uint8)


def turned_view(panorama: np.ndarray, K_panorama: np.ndarray, K: np.ndarray, rotation: np.ndarray,
                size: tuple[int, int]) -> np.ndarray:
    """What a camera ``K`` turned by ``rotation`` (3, 3: reference-camera directions to this
    camera's) sees of a distant scene imaged by the reference camera ``K_panorama`` as
    ``panorama`` (a wide canvas): the panorama warped by ``K R K_panorama^-1``, exact for a
    camera rotating about its centre. ``size``: (width, height)."""
    import cv2

    H = np.asarray(K, np.float64) @ np.asarray(rotation, np.float64) @ np.linalg.inv(np.asarray(K_panorama,
                                                                                               np.float64))
    return cv2.warpPerspective(panorama, H, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def table_view(texture: np.ndarray, K_texture: np.ndarray, K: np.ndarray, rotation: np.ndarray,
               translation: np.ndarray, height_m: float, size: tuple[int, int],
               max_distance_m: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """What a moved camera ``K`` sees of a horizontal table ``height_m`` below the reference
    camera (the plane ``y = height_m`` of the reference camera's frame, OpenCV axes), textured
    as the reference camera ``K_texture`` images it in ``texture``: the texture warped by the
    plane's homography ``K (R + t n^T / d) K_texture^-1`` (exact for a plane), where this
    camera's points are ``X = R X_ref + t``. Returns (image (h, w, 3), mask (h, w) bool: the
    pixels whose ray meets the table within ``max_distance_m``). ``size``: (width, height)."""
    import cv2

    R = np.asarray(rotation, np.float64)
    t = np.asarray(translation, np.float64)
    n = np.array([0.0, 1.0, 0.0])  # n . X_ref = height_m on the table
    H = np.asarray(K, np.float64) @ (R + np.outer(t, n) / height_m) @ np.linalg.inv(np.asarray(K_texture, np.float64))
    image = cv2.warpPerspective(texture, H, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    w, h = size
    v, u = np.mgrid[0:h, 0:w]
    Kinv = np.linalg.inv(np.asarray(K, np.float64))
    rays = np.stack([u, v, np.ones_like(u)], axis=-1).astype(np.float64) @ Kinv.T
    rn = R @ n  # the ray lam * r meets the table where lam (R n) . r = height + (R n) . t
    a = rays @ rn
    depth = np.where(a > 1e-9, (height_m + rn @ t) / np.maximum(a, 1e-9), np.inf)
    return image, depth * np.linalg.norm(rays, axis=-1) < max_distance_m


# ----------------------------------------------------------------------------- poses


def natural_pose(rng: np.random.Generator, layer: HandModel) -> np.ndarray:
    """(45,) axis-angle of a natural hand pose within the joint limits of ``layer``'s model."""
    from core.model.build_open_hand import sample_natural_poses

    d = layer.data
    mano_joints = d.j_regressor.astype(np.float64) @ d.v_template
    ang = sample_natural_poses(d.rest_frames, d.joint_limits, mano_joints, 1, rng)
    pose = anatomical_to_axis_angle(torch.as_tensor(ang, dtype=torch.float32), torch.as_tensor(d.rest_frames[1:]))
    return pose.reshape(45).numpy()


#: Global rotation showing the palm of a right hand to the camera, fingers up: model +x -> image
#: up (-y), model -y (palm normal) -> toward the camera (-z).
PALM_TO_CAMERA = np.array([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def facing_rotation(rng: np.random.Generator, settings: SynthSettings, side: str) -> np.ndarray:
    """(3, 3) a global rotation with the palm (or back) toward the camera, tilted and rolled."""
    base = PALM_TO_CAMERA.copy()
    if side == "left":
        # The left model is the right one mirrored in its x; mirror the view in the camera's x.
        mirror = np.diag([-1.0, 1.0, 1.0])
        base = mirror @ base @ mirror
    if rng.random() < settings.back_facing:
        base = np.diag([-1.0, 1.0, -1.0]) @ base  # half a turn about the image's vertical axis
    lo, hi = np.radians(settings.min_tilt_deg), np.radians(settings.max_tilt_deg)
    tilt = lo + (hi - lo) * np.sqrt(rng.random())
    axis = rng.normal(size=2)
    axis = np.array([*axis / np.linalg.norm(axis), 0.0])
    roll = rng.uniform(-np.radians(60), np.radians(60))
    r = (axis_angle_to_matrix(torch.as_tensor(axis * tilt))
         @ axis_angle_to_matrix(torch.tensor([0.0, 0.0, roll], dtype=torch.float64)))
    return r.numpy() @ base


# ----------------------------------------------------------------------------- rendering

#: A per-pixel surface: (face index (M,), barycentrics (M, 3), albedo (M, 3) RGB) -> (albedo
#: (M, 3), gloss (M,) in [0, 1] or None).
Surface = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, "np.ndarray | None"]]


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(B, V, 3) unit area-weighted vertex normals."""
    tri = vertices[:, faces]
    n = torch.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)
    out = torch.zeros_like(vertices)
    out.index_add_(1, faces.reshape(-1), n.repeat_interleave(3, dim=1))
    return out / out.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def shade(
    vertices: np.ndarray,
    faces: np.ndarray,
    uv: np.ndarray,
    uv_faces: np.ndarray,
    texture: np.ndarray,
    K: np.ndarray,
    size: tuple[int, int],
    light_dir: np.ndarray,
    ambient: float,
    light_rgb: np.ndarray,
    vertex_tint: np.ndarray | None = None,
    surface: Surface | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Textured Lambert rendering of one mesh. Returns (H, W, 3) float RGB in [0, 255], mask.

    ``vertex_tint`` (V,) in [0, 1] lightens and desaturates the albedo where it is 1 (the palm
    side of a hand is paler than its back). ``surface`` changes the albedo per pixel and adds a
    glossy highlight (Blinn-Phong) where it returns gloss (nails).
    """
    img, pix = _shade(vertices, faces, uv, uv_faces, texture, K, size, light_dir, ambient, light_rgb,
                      vertex_tint, surface)
    return img, pix >= 0


def _shade(vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray, uv_faces: np.ndarray, texture: np.ndarray,
           K: np.ndarray, size: tuple[int, int], light_dir: np.ndarray, ambient: float, light_rgb: np.ndarray,
           vertex_tint: np.ndarray | None, surface: Surface | None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`shade`, returning each pixel's nearest face (-1: none) instead of the mask."""
    w, h = size
    v = torch.as_tensor(vertices, dtype=torch.float32)[None]
    f = torch.as_tensor(faces, dtype=torch.long)
    frags = rasterize(v, f, torch.as_tensor(K, dtype=torch.float32)[None], RasterSettings(image_size=(h, w)))
    mask = (frags.pix_to_face[0] >= 0).numpy()
    normals = interpolate_face_attributes(frags, f, vertex_normals(v, f))[0].numpy()
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True).clip(1e-9)
    # UVs have their own faces: interpolate per face corner.
    pix = frags.pix_to_face[0].numpy()
    bary = frags.bary_coords[0].numpy()
    ys, xs = np.nonzero(mask)
    corner_uv = uv[uv_faces[pix[ys, xs]]]  # (M, 3, 2)
    uvp = (corner_uv * bary[ys, xs][..., None]).sum(1)
    tsz = texture.shape[0]
    tx = np.clip((uvp[:, 0] * (tsz - 1)).round().astype(int), 0, tsz - 1)
    ty = np.clip(((1.0 - uvp[:, 1]) * (tsz - 1)).round().astype(int), 0, tsz - 1)
    albedo = texture[ty, tx].astype(np.float32)
    if vertex_tint is not None:
        tint = (vertex_tint[faces[pix[ys, xs]]] * bary[ys, xs]).sum(1)[:, None]
        grey = albedo.mean(1, keepdims=True)
        albedo = albedo + tint * (0.35 * (grey - albedo) + 0.22 * (255.0 - albedo) * 0.5)
    gloss = None
    if surface is not None:
        albedo, gloss = surface(pix[ys, xs], bary[ys, xs], albedo)
    n = normals[ys, xs]
    # Normals face away from the camera on the far side; light comes from the camera side.
    lambert = np.clip(-(n @ light_dir), 0.0, 1.0)
    colour = albedo * (ambient + (1 - ambient) * lambert[:, None]) * light_rgb
    if gloss is not None:
        points = (vertices[faces[pix[ys, xs]]] * bary[ys, xs][..., None]).sum(1)
        half = -points / np.linalg.norm(points, axis=1, keepdims=True).clip(1e-9) - light_dir
        half /= np.linalg.norm(half, axis=1, keepdims=True).clip(1e-9)
        spec = np.clip((n * half).sum(1), 0.0, 1.0) ** 40
        colour = colour + (255.0 * (1 - ambient) * gloss * spec)[:, None] * light_rgb
    img = np.zeros((h, w, 3), np.float32)
    img[ys, xs] = colour
    return img, pix


#: Per-layer caches, keyed by the layer itself and dropped with it: synthetic people make a
#: layer per person, and an ``id()`` key could be reused by a later layer of another shape.
_PALM_TINT: weakref.WeakKeyDictionary[HandModel, np.ndarray] = weakref.WeakKeyDictionary()


def palm_tint(layer: HandModel) -> np.ndarray:
    """(V,) how much each vertex is on the palm side (rest normal toward -y), in [0, 1]."""
    if layer not in _PALM_TINT:
        with torch.no_grad():
            rest = layer.rest().vertices
        n = vertex_normals(rest, layer.faces)[0].numpy()
        _PALM_TINT[layer] = np.clip((-n[:, 1] - 0.2) / 0.6, 0.0, 1.0).astype(np.float32)
    return _PALM_TINT[layer]


# ----------------------------------------------------------------------------- skin detail


@dataclass(frozen=True)
class _HandGeometry:
    """What skin detail and the forearm need of one model's flat rest mesh (model frame, metres).

    rest: (V, 3) vertices. keypoints: (21, 3). frames: (16, 3, 3) anatomical joint frames
    (columns: along the bone, toward the palm, flexion axis). origin: (16,) keypoint of each
    joint; length: (16,) its bone's length; radius: (16,) the finger's radius around it.
    """

    rest: np.ndarray
    keypoints: np.ndarray
    frames: np.ndarray
    origin: np.ndarray
    length: np.ndarray
    radius: np.ndarray


_GEOMETRY: weakref.WeakKeyDictionary[HandModel, _HandGeometry] = weakref.WeakKeyDictionary()


def _hand_geometry(layer: HandModel) -> _HandGeometry:
    if layer not in _GEOMETRY:
        with torch.no_grad():
            out = layer.rest()
        rest = out.vertices[0].numpy().astype(np.float64)
        kp = out.keypoints[0].numpy().astype(np.float64)
        frames = np.asarray(layer.data.rest_frames, dtype=np.float64)
        origin = np.array(MANO_JOINT_TO_KEYPOINT)
        length = np.linalg.norm(kp[list(CHILD_KEYPOINT)] - kp[origin], axis=1)
        owner = np.asarray(layer.data.weights).argmax(1)
        radius = np.zeros(len(origin))
        for j in range(len(origin)):
            q = (rest[owner == j] - kp[origin[j]]) @ frames[j]
            radius[j] = float(np.median(np.hypot(q[:, 1], q[:, 2]))) if len(q) else 0.0
        _GEOMETRY[layer] = _HandGeometry(rest, kp, frames, origin, length, radius)
    return _GEOMETRY[layer]


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    """0 at ``e0``, 1 at ``e1`` (either order), smooth in between."""
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _lines(x: np.ndarray, centres: tuple[float, ...], width: float) -> np.ndarray:
    """Gaussian line profiles at ``centres`` (same units as ``x``), their maximum."""
    return np.max([np.exp(-(((x - c) / width) ** 2)) for c in centres], axis=0)


#: Palm lines (heart, head, life) as quadratic Bezier curves in palm coordinates: (along the
#: palm from the wrist toward the middle finger's base, in palm lengths; across from the middle
#: of the index and little fingers' bases toward the index, in palm widths), and their depth.
PALM_LINES = (
    (((0.72, -0.62), (0.74, -0.05), (0.90, 0.26)), 0.33),  # heart
    (((0.62, 0.58), (0.55, 0.10), (0.44, -0.40)), 0.30),  # head
    (((0.62, 0.60), (0.30, 0.26), (0.06, 0.32)), 0.33),  # life, around the ball of the thumb
)
_MCP = (5, 9, 13, 17)
_FLEXING = (2, 3, 6, 7, 10, 11, 14, 15, 18, 19)  # thumb MCP, IP; PIPs, DIPs
_PIP = (6, 10, 14, 18)
_TIPS = (4, 8, 12, 16, 20)


def skin_detail(layer: HandModel, rest_points: np.ndarray, palm: np.ndarray,
                albedo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fingernails, knuckle wrinkles, flexion creases and palm lines over a hand's skin.

    Everything is placed on the model's own flat rest mesh, so it follows the hand through
    skinning and mirrors with the left model: each finger segment's anatomical frame gives
    the nail's side (away from the palm), the joints give the creases, the palm's keypoints
    give the three palm lines.

    Args:
        rest_points: (M, 3) points on the rest mesh (a pixel's barycentric mix of rest vertices).
        palm: (M,) in [0, 1], how much each point is on the palm side (:func:`palm_tint`).
        albedo: (M, 3) float RGB, the skin's colour there.

    Returns:
        (M, 3) float albedo with the detail, and (M,) gloss in [0, 1] (the nails).
    """
    g = _hand_geometry(layer)
    kp = g.keypoints
    palm_len = float(np.linalg.norm(kp[9] - kp[0]))
    crease_w = 0.00045 * palm_len / 0.1  # line half-width, metres, for a palm 10 cm long
    m = len(rest_points)
    dark, nail, free_edge, knuckle = np.zeros(m), np.zeros(m), np.zeros(m), np.zeros(m)
    for j in range(1, len(g.origin)):
        o = int(g.origin[j])
        q = (rest_points - kp[o]) @ g.frames[j]  # along the bone, toward the palm, across
        idx = np.flatnonzero(np.hypot(q[:, 1], q[:, 2]) < 1.6 * g.radius[j])
        if not len(idx):
            continue
        q = q[idx]
        theta = np.abs(np.arctan2(q[:, 2], -q[:, 1]))  # 0: the back of the finger, pi: its pad
        along, L, r = q[:, 0], g.length[j], g.radius[j]
        d = np.zeros(len(idx))
        if CHILD_KEYPOINT[j] in _TIPS:  # the nail: the distal half of the segment's back
            cuticle = L * (0.42 + 0.14 * (theta / 0.95) ** 2)
            inside = _smoothstep(0.95, 0.85, theta) * _smoothstep(cuticle - 0.0004, cuticle + 0.0004, along)
            nail[idx] = np.maximum(nail[idx], inside)
            free_edge[idx] = np.maximum(free_edge[idx], inside * _smoothstep(0.9 * L, 0.97 * L, along))
            fold = np.exp(-(((along - cuticle) / (0.6 * crease_w)) ** 2)) * _smoothstep(1.05, 0.9, theta)
            d = np.maximum(d, 0.22 * fold)
        if o in _MCP:  # the palmar digital crease, a little way up the proximal phalanx
            d = np.maximum(d, 0.3 * _lines(along, (0.36 * L,), 1.2 * crease_w) * _smoothstep(1.9, 2.5, theta))
        elif o in _FLEXING:  # wrinkles over the knuckle's back, creases across the pad
            back = _smoothstep(1.2, 0.6, theta) * _smoothstep(1.6 * r, 0.6 * r, np.abs(along))
            wrinkles = _lines(along, (-0.6 * r, -0.2 * r, 0.2 * r, 0.6 * r), 0.8 * crease_w)
            d = np.maximum(d, 0.2 * back * wrinkles)
            knuckle[idx] = np.maximum(knuckle[idx], back)
            pad = _lines(along, (-0.12 * r, 0.12 * r) if o in _PIP else (0.0,), 1.2 * crease_w)
            d = np.maximum(d, 0.32 * pad * _smoothstep(1.9, 2.4, theta) * (np.abs(along) < 0.6 * r))
        dark[idx] = np.maximum(dark[idx], d)
    # Palm lines, on the palm side only.
    u = (kp[9] - kp[0]) / palm_len
    v = kp[5] - kp[17]
    v = v - (v @ u) * u
    width = float(np.linalg.norm(kp[5] - kp[17]))
    v /= np.linalg.norm(v)
    rel = rest_points - kp[0]
    pu = rel @ u
    pv = rel @ v - ((kp[5] + kp[17]) / 2 - kp[0]) @ v
    idx = np.flatnonzero((np.abs(pv) < 0.8 * width) & (pu > -0.01) & (pu < 1.02 * palm_len) & (palm > 0.4))
    pu, pv = pu[idx], pv[idx]
    side = _smoothstep(0.4, 0.8, palm[idx])
    t = np.linspace(0.0, 1.0, 48)[:, None]
    for (a, b, c), depth in PALM_LINES:
        curve = (1 - t) ** 2 * np.array(a) + 2 * t * (1 - t) * np.array(b) + t ** 2 * np.array(c)
        d2 = (pu[:, None] - curve[None, :, 0] * palm_len) ** 2 + (pv[:, None] - curve[None, :, 1] * width) ** 2
        k = d2.argmin(1)
        fade = np.clip(np.minimum(k, len(t) - 1 - k) / 6.0, 0.0, 1.0)  # the ends fade out
        line = depth * fade * np.exp(-d2[np.arange(len(idx)), k] / (1.3 * crease_w) ** 2)
        dark[idx] = np.maximum(dark[idx], line * side)
    out = albedo.astype(np.float32) * (1.0 - dark[:, None] * np.array([0.75, 1.0, 1.0], np.float32))
    out *= 1.0 - 0.07 * knuckle[:, None] * np.array([0.4, 1.0, 1.0], np.float32)
    nail_rgb = 0.45 * albedo + 0.55 * np.array([236.0, 196.0, 192.0])
    nail_rgb = nail_rgb * (1 - free_edge[:, None]) + np.array([246.0, 238.0, 228.0]) * free_edge[:, None]
    out = out * (1 - nail[:, None]) + nail_rgb * nail[:, None]
    return out.astype(np.float32), 0.45 * nail


# ----------------------------------------------------------------------------- forearm


def _arm_rng(texture: np.ndarray) -> np.random.Generator:
    """The forearm's own random draws, fixed by the skin texture (the same person in a clip keeps
    their sleeve) and leaving the caller's generator untouched (renders with and without the
    forearm of a seed show the same hand)."""
    return np.random.default_rng(zlib.crc32(np.ascontiguousarray(texture[::5, ::5]).tobytes()))


def forearm_mesh(layer: HandModel, vertices: np.ndarray, rotation: np.ndarray, rng: np.random.Generator,
                 length: float = 0.25, sleeve_probability: float = 0.35, segments: int = 32) -> Forearm:
    """A forearm continuing a posed hand from its wrist.

    A tapered tube with a rounded cross-section: it starts inside the hand's wrist end (so the
    join never shows), as wide and thick as that end, and widens toward the elbow (about
    +20% wide, +50% thick over 20 cm, as forearms do); the wrist bends it a little (flexion and
    deviation drawn from ``rng``). With ``sleeve_probability`` a sleeve of a random non-skin
    colour covers it from some way up. It stops before it could reach the camera.

    Args:
        vertices: (V, 3) the posed hand, camera frame, metres. rotation: (3, 3) the hand's
            global rotation (the model's rest frame to the camera frame).
    """
    import cv2

    g = _hand_geometry(layer)
    kp = g.keypoints
    a_rest = kp[0] - kp[9]
    a_rest /= np.linalg.norm(a_rest)
    s = (g.rest - kp[0]) @ a_rest
    end = s > s.max() - 0.012  # the hand's last 12 mm toward the elbow
    t_rest = np.array([0.0, 1.0, 0.0]) - a_rest[1] * a_rest  # the back of the hand (palm: -y)
    t_rest /= np.linalg.norm(t_rest)
    R = np.asarray(rotation, dtype=np.float64)
    a, t = R @ a_rest, R @ t_rest
    b = np.cross(a, t)
    P = np.asarray(vertices, dtype=np.float64)[end]
    c = P.mean(0)
    c = c + a * ((P - c) @ a).max()
    half_w, half_t = np.abs((P - c) @ b).max(), np.abs((P - c) @ t).max()
    flex = float(np.clip(rng.normal(0.0, 0.2), -0.45, 0.45))
    dev = float(np.clip(rng.normal(0.0, 0.1), -0.25, 0.25))
    if layer.data.side == "left":
        dev = -dev  # b = a x t flips with the mirror: the left arm is the right one's mirror image
    bend = (axis_angle_to_matrix(torch.as_tensor(b * flex)) @ axis_angle_to_matrix(torch.as_tensor(t * dev))).numpy()
    a2, t2, b2 = bend @ a, bend @ t, bend @ b
    if a2[2] < 0:  # toward the camera: stop at half the wrist's depth
        length = min(length, 0.5 * c[2] / -a2[2])
    sleeve = rng.random() < sleeve_probability
    sleeve_from = float(rng.uniform(0.03, 0.15)) if sleeve else float("inf")
    hue = (rng.uniform(0.15, 0.95) + (0.0 if rng.random() < 0.5 else 0.5)) % 1.0
    hsv = np.uint8([[[int(hue * 179), int(rng.uniform(0.15, 0.8) * 255), int(rng.uniform(0.15, 0.9) * 255)]]])
    sleeve_rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64)
    stations = [-0.02, -0.008, 0.0, 0.01, 0.025, 0.045, 0.07, 0.1, 0.14, 0.19, length]
    stations = sorted({float(x) for x in stations if x <= length})
    if sleeve and sleeve_from < length:
        stations = sorted({*stations, sleeve_from - 1e-4, sleeve_from})
    ang = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
    cos, sin = np.cos(ang), np.sin(ang)
    cx = np.sign(cos) * np.abs(cos) ** 0.8  # a superellipse: a little flatter than an ellipse
    sy = np.sign(sin) * np.abs(sin) ** 0.8
    rings, along = [], []
    for d in stations:
        grow = min(max(d, 0.0) / 0.2, 1.0)
        k = 0.96 if d < 0 else 1.02
        if d >= sleeve_from:
            k += 0.12
        if d <= 0:
            centre, bw, bt = c + a * d, b, t
        else:
            centre, bw, bt = c + a2 * d, b2, t2
        w_, t_ = half_w * k * (1 + 0.2 * grow), half_t * k * (1 + 0.5 * grow)
        rings.append(centre + np.outer(cx * w_, bw) + np.outer(sy * t_, bt))
        along.append(np.full(segments, d))
    verts = np.concatenate(rings + [(c + a2 * stations[-1])[None]])
    along_v = np.concatenate(along + [np.array([stations[-1]])])
    n = segments
    faces = []
    for i in range(len(stations) - 1):
        for j in range(n):
            j2 = (j + 1) % n
            faces += [[i * n + j, i * n + j2, (i + 1) * n + j2], [i * n + j, (i + 1) * n + j2, (i + 1) * n + j]]
    cap = len(verts) - 1
    last = (len(stations) - 1) * n
    faces += [[last + j, cap, last + (j + 1) % n] for j in range(n)]
    faces = np.asarray(faces, dtype=np.int64)
    # Outward winding: the first side face's normal points away from the axis.
    tri = verts[faces[0]]
    normal = np.cross(tri[1] - tri[0], tri[2] - tri[0])
    if normal @ (tri.mean(0) - c - a * stations[0]) < 0:
        faces = faces[:, ::-1].copy()
    around = np.concatenate([np.tile(ang / (2 * np.pi), len(stations)), [0.5]])
    uv = np.stack([0.25 + 0.5 * around, 0.25 + 0.5 * np.clip(along_v / max(length, 1e-6), 0, 1)], 1)
    ventral = np.concatenate([np.tile(np.clip((-sy - 0.2) / 0.6, 0.0, 1.0), len(stations)), [0.0]])
    return Forearm(verts, faces, uv.astype(np.float64), along_v, ventral.astype(np.float32), sleeve_from,
                   sleeve_rgb)


def render_scene(layer: HandModel, vertices: np.ndarray, texture: np.ndarray, K: np.ndarray,
                 size: tuple[int, int], lighting: tuple[np.ndarray, float, np.ndarray],
                 forearm: Forearm | None = None, detail: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shade a posed hand, with its forearm and skin detail, in one z-buffered pass.

    Args:
        vertices: (V, 3) the posed hand, camera frame, metres (``forearm`` in the same frame).
        K: (3, 3) intrinsics for ``size`` (width, height).
        lighting: (light direction (3,), ambient fraction, light colour (3,)).

    Returns:
        (H, W, 3) float RGB in [0, 255]; (H, W) bool the hand's pixels (the hand nearest);
        (H, W) bool every drawn pixel (hand or forearm).
    """
    d = layer.data
    faces, uv, uv_faces, tint = d.faces, d.uv, d.uv_faces, palm_tint(layer)
    verts = np.asarray(vertices, dtype=np.float64)
    nf = len(faces)
    if forearm is not None:
        faces = np.concatenate([faces, forearm.faces + len(verts)])
        uv_faces = np.concatenate([uv_faces, forearm.faces + len(uv)])
        uv = np.concatenate([uv, forearm.uv])
        tint = np.concatenate([tint, forearm.ventral])
        verts = np.concatenate([verts, forearm.vertices])
    surface = None
    if forearm is not None or detail:
        rest, fa = _hand_geometry(layer).rest, forearm

        def surface(pix: np.ndarray, bary: np.ndarray, albedo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            albedo = albedo.copy()
            gloss = np.zeros(len(pix))
            hand = pix < nf
            if detail and hand.any():
                fh, bh = faces[pix[hand]], bary[hand][..., None]
                albedo[hand], gloss[hand] = skin_detail(layer, (rest[fh] * bh).sum(1),
                                                        (tint[fh] * bh[..., 0]).sum(1), albedo[hand])
            if fa is not None and (~hand).any():
                along = (fa.along[faces[pix[~hand]] - len(rest)] * bary[~hand]).sum(1)
                skin = albedo[~hand]
                lum = skin.mean(1, keepdims=True)
                cloth = fa.sleeve_rgb * np.clip(lum / max(float(lum.mean()), 1.0), 0.8, 1.2)
                shadow = 1.0 - 0.35 * np.exp(-(((along - fa.sleeve_from) / 0.003) ** 2))[:, None]
                albedo[~hand] = np.where((along >= fa.sleeve_from)[:, None], cloth, skin * shadow)
            return albedo, gloss

    light, ambient, light_rgb = lighting
    img, pix = _shade(verts, faces, uv, uv_faces, texture, K, size, np.asarray(light, dtype=np.float64),
                      ambient, np.asarray(light_rgb), tint, surface)
    return img, (pix >= 0) & (pix < nf), pix >= 0


def render_hand_sample(
    rng: np.random.Generator,
    layers: dict[str, HandModel],
    settings: SynthSettings = SynthSettings(),
    betas: np.ndarray | None = None,
    pose: np.ndarray | None = None,
    texture: np.ndarray | None = None,
    background: np.ndarray | None = None,
    global_rotation: np.ndarray | None = None,
    K: np.ndarray | None = None,
    transl_jitter: float = 0.15,
    lighting: tuple[np.ndarray, float, np.ndarray] | None = None,
    centre_px: tuple[float, float] | None = None,
) -> SynthSample:
    """Render one synthetic hand. Anything not given is drawn from ``rng``.

    Args:
        layers: {"right": HandModel, "left": HandModel}.
        betas: (10,) shape; pose: (45,) finger pose (right-hand convention; mirrored for left);
        texture, background: images to reuse (e.g. a fixed background for a clip);
        global_rotation: (3, 3) instead of a random facing rotation; K: intrinsics.
        lighting: (light direction (3,), ambient fraction, light colour (3,)) to keep fixed.
        centre_px: (u, v) where the hand's centre is placed, pixels, instead of the image's
            centre moved by a random ``transl_jitter`` (a clip's hand path).
    """
    import cv2

    w, h = settings.image_size
    side = "left" if rng.random() < settings.left_probability else "right"
    layer = layers[side]
    if betas is None:
        betas = np.clip(rng.normal(0, settings.shape_std, layer.num_betas), -2.5, 2.5)
    if pose is None:
        pose = natural_pose(rng, layers["right"])
    finger_pose = np.asarray(pose, dtype=np.float32)
    rot = facing_rotation(rng, settings, side) if global_rotation is None else np.asarray(global_rotation)
    full = np.concatenate([matrix_to_axis_angle(torch.as_tensor(rot, dtype=torch.float64)).numpy(),
                           finger_pose]).astype(np.float32)
    if side == "left":
        full[3:] = mirror_axis_angle(full[3:])
    if K is None:
        K = intrinsics_from_fov(rng.uniform(*settings.fov_deg), w, h).K
    with torch.no_grad():
        out = layer(torch.as_tensor(full)[None], torch.as_tensor(betas, dtype=torch.float32)[None])
    verts = out.vertices[0].numpy().astype(np.float64)
    kp = out.keypoints[0].numpy().astype(np.float64)
    # Place: the hand's length spans `fill` of the smaller image side, centred with jitter.
    length = float(np.ptp(verts, axis=0).max())
    depth = K[0, 0] * length / (rng.uniform(*settings.fill) * min(w, h))
    centre = verts.mean(0)
    jitter = rng.uniform(-transl_jitter, transl_jitter, 2) * np.array([w, h]) / K[0, 0] * depth
    cu, cv = ((w - 1) / 2, (h - 1) / 2) if centre_px is None else centre_px
    if centre_px is not None:
        jitter = np.zeros(2)
    target = np.array([((cu - K[0, 2]) / K[0, 0]) * depth + jitter[0],
                       ((cv - K[1, 2]) / K[1, 1]) * depth + jitter[1], depth])
    shift = target - centre
    verts += shift
    kp += shift
    transl = shift.astype(np.float32)

    ss = max(1, int(settings.supersample))
    K_ss = K.copy()
    K_ss[:2] *= ss
    K_ss[0, 2] += (ss - 1) / 2.0
    K_ss[1, 2] += (ss - 1) / 2.0
    tex = procedural_skin_texture(rng) if texture is None else texture
    if lighting is None:
        light = rng.normal(size=3)
        light[2] = abs(light[2]) + 1.0  # from the camera's side
        light /= np.linalg.norm(light)
        lighting = (light, float(rng.uniform(0.35, 0.6)), np.clip(rng.normal(1.0, 0.06, 3), 0.85, 1.15))
    bg = procedural_background(rng, w, h) if background is None else background
    noise = rng.normal(0, 2.0, (h, w, 3))
    # The forearm draws from its own generator: `rng` is left where the hand-only render leaves it.
    arm = (forearm_mesh(layer, verts, rot, _arm_rng(tex), settings.forearm_length,
                        settings.sleeve_probability) if settings.forearm else None)
    img_ss, mask_ss, drawn_ss = render_scene(layer, verts, tex, K_ss, (w * ss, h * ss), lighting, arm,
                                             settings.skin_detail)
    img = cv2.resize(img_ss, (w, h), interpolation=cv2.INTER_AREA)
    cover = cv2.resize(mask_ss.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    drawn = cv2.resize(drawn_ss.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    comp = img + bg.astype(np.float32) * (1.0 - drawn[..., None])
    comp += noise
    uv = (K @ kp.T).T
    uv = uv[:, :2] / uv[:, 2:]
    smplx_transl = transl  # the layer had no translation: posing then shifting
    return SynthSample(
        image=np.clip(comp, 0, 255).astype(np.uint8),
        mask=cover > 0.5,
        K=K.astype(np.float64),
        side=side,
        pose=full,
        betas=np.asarray(betas, dtype=np.float32),
        transl=smplx_transl,
        keypoints_2d=uv.astype(np.float32),
        joints_3d=kp.astype(np.float32),
        vertices=verts.astype(np.float32),
        texture=tex,
        forearm=arm,
        skin_detail=settings.skin_detail,
    )


def default_layers(model: str | None = None) -> dict[str, HandModel]:
    """Right and left hand layers of the model in use."""
    return {side: HandModel(load_model_data(model, side)) for side in ("right", "left")}
