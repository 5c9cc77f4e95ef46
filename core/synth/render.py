"""Synthetic hands with exact ground truth, rendered by our own rasterizer.

A sample is the bundled hand in a natural pose (drawn within the anatomical joint limits),
with a random shape, turned so that its palm or its back faces the camera, placed so that it
fills part of the image, shaded (Lambert + ambient, per-pixel normals) with a procedural skin
texture over a procedural background, then anti-aliased by supersampling. Every quantity the
fit estimates (pose, shape, translation, 3D and 2D keypoints, mask) is known exactly, so the
real MediaPipe can run on it and every stage can be measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.camera import intrinsics_from_fov
from core.mirror import mirror_axis_angle
from core.model import HandModel, load_model_data
from core.model.anatomy import anatomical_to_axis_angle
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
) -> tuple[np.ndarray, np.ndarray]:
    """Textured Lambert rendering of one mesh. Returns (H, W, 3) float RGB in [0, 255], mask.

    ``vertex_tint`` (V,) in [0, 1] lightens and desaturates the albedo where it is 1 (the palm
    side of a hand is paler than its back).
    """
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
    n = normals[ys, xs]
    # Normals face away from the camera on the far side; light comes from the camera side.
    lambert = np.clip(-(n @ light_dir), 0.0, 1.0)
    colour = albedo * (ambient + (1 - ambient) * lambert[:, None]) * light_rgb
    img = np.zeros((h, w, 3), np.float32)
    img[ys, xs] = colour
    return img, mask


_PALM_TINT: dict[int, np.ndarray] = {}


def palm_tint(layer: HandModel) -> np.ndarray:
    """(V,) how much each vertex is on the palm side (rest normal toward -y), in [0, 1]."""
    key = id(layer)
    if key not in _PALM_TINT:
        with torch.no_grad():
            rest = layer.rest().vertices
        n = vertex_normals(rest, layer.faces)[0].numpy()
        _PALM_TINT[key] = np.clip((-n[:, 1] - 0.2) / 0.6, 0.0, 1.0).astype(np.float32)
    return _PALM_TINT[key]


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
    light, ambient, light_rgb = lighting
    img_ss, mask_ss = shade(verts, layer.data.faces, layer.data.uv, layer.data.uv_faces, tex, K_ss,
                            (w * ss, h * ss), np.asarray(light, dtype=np.float64), ambient, np.asarray(light_rgb),
                            palm_tint(layer))
    img = cv2.resize(img_ss, (w, h), interpolation=cv2.INTER_AREA)
    cover = cv2.resize(mask_ss.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    bg = procedural_background(rng, w, h) if background is None else background
    comp = img + bg.astype(np.float32) * (1.0 - cover[..., None])
    comp += rng.normal(0, 2.0, comp.shape)
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
    )


def default_layers(model: str | None = None) -> dict[str, HandModel]:
    """Right and left hand layers of the model in use."""
    return {side: HandModel(load_model_data(model, side)) for side in ("right", "left")}
