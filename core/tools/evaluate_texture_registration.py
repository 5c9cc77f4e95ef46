"""Registration error of the captured texture, in texels (``python -m core.tools.evaluate_texture_registration``).

A hand is rendered by :mod:`core.synth.render` with a known, high-frequency texture (a skin
tone whose brightness follows band-limited noise with features of about 8 texels), flat
lighting (the image shows the albedo), a known pose, shape and camera, in a few views
(palm, back, tilted). The frames are captured into a texture twice:

* ``oracle``: with the rendered mesh, camera and mask (validates the measure: about 0);
* ``weak_best``: the true mesh and mask through the least-squares weak camera of the view
  (:func:`best_weak_camera`): the cost of the weak projection itself;
* ``engine``: with the engine's own hands (:class:`core.engine.HandResult`: vertices, camera,
  segmentation mask) through :meth:`core.texture.session.SessionCapture.add_hands`, the
  path the GUI, ``track`` and ``export`` take. The engine fits the true projected keypoints
  given as detections (no MediaPipe noise: what is left is the fit's own error), with the
  frame's camera (``perspective``) or without one (``weak``: the weak-perspective fit, refined
  and its texture sampled in its own weak camera's pinhole form,
  :meth:`core.camera.HandCamera.pinhole`), refinement off or on (3 iterations, the live setting).

What limits the weak cases is the weak projection itself, not how the texture is sampled: on
frames that are themselves weak perspective (a 2 degree lens, the hand about 10 m away) the
weak hands register as well as the perspective ones (0.26-0.31 texels against 0.25-0.34);
the closer and wider the view, the further the weak projection of any hand-shaped mesh is from
the image (``weak_best``: 0.12 texels at 2 degrees, 0.55 at 10, 1.8 at 30, 3.8-4.2 at 60), and
the weak fit (which bends its pose to its keypoints) follows it (0.56, 1.36, 2.7-3.3).

Registration error: the captured texture is cut into patches (``PATCH`` texels, every
``STRIDE``) wholly on seen texels; each patch is matched against the known texture (what the
renderer draws at every texel, :func:`reference_grid`) by normalized cross-correlation over
shifts of up to ``SEARCH`` texels, with a parabolic sub-texel peak. A patch's shift is where
its content really lies in the known texture; the error is ``|shift|`` in texels of the
capture grid (``size``, 512 by default: the grid :class:`~core.texture.TextureCapture`
averages on; the exported 1024 texture is that grid resampled, so its texels are half as
large and the same error reads twice as many of them). Reported per case: the median and the
90th percentile of ``|shift|``, the mean shift vector, the patches used, and the median
correlation peak (how well the patches matched at all).
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.tools.evaluate_texture import FLAT_LIGHTING

__all__ = [
    "RegistrationView",
    "capture_oracle",
    "evaluate_registration",
    "mesh_error_px",
    "patch_shifts",
    "reference_grid",
    "registration_error",
    "registration_pattern",
    "render_views",
]

log = logging.getLogger(__name__)

#: Capture grid and known texture side, texels.
SIZE = 512
#: Patch side, the spacing of patches and the largest shift searched, texels.
PATCH = 24
STRIDE = 16
SEARCH = 8
#: Patches whose best correlation is below this are not counted (nothing matched).
MIN_PEAK = 0.5


def registration_pattern(rng: np.random.Generator, size: int = SIZE, cell: int = 8) -> np.ndarray:
    """A skin-toned texture for registration: one skin tone whose brightness follows smooth
    noise with features of about ``cell`` texels (+-35%), so every patch has structure to
    correlate and the capture's skin-colour gate keeps it. (size, size, 3) uint8 RGB."""
    import cv2

    from core.synth.render import SKIN_TONES

    coarse = rng.random((size // cell, size // cell)).astype(np.float32)
    noise = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    tex = SKIN_TONES[2][None, None, :] * (0.65 + 0.7 * noise[..., None])
    return np.clip(tex, 0, 255).astype(np.uint8)


def reference_grid(texture: np.ndarray, size: int) -> np.ndarray:
    """(size, size) float32 grey: the known texture at the centre of every texel of a ``size``
    grid, as the renderer places it (:func:`core.synth.render.shade` draws texture pixel
    ``(i, j)`` around ``u = j / (T - 1)``, ``v = 1 - i / (T - 1)``), interpolated bilinearly:
    a nearest lookup would itself misplace texels by up to half a texture pixel (0.25 px
    median on the oracle against 0.05 px)."""
    import cv2

    from core.texture.texels import texel_uv

    u, v = texel_uv(size)
    tsz = texture.shape[0]
    grey = np.ascontiguousarray(texture.astype(np.float32).mean(axis=2))
    return cv2.remap(grey, (u * (tsz - 1)).astype(np.float32), ((1.0 - v) * (tsz - 1)).astype(np.float32),
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _peak_offset(a: float, b: float, c: float) -> float:
    """Sub-sample offset of a parabola's vertex through (-1, a), (0, b), (1, c)."""
    d = a - 2.0 * b + c
    return 0.0 if d >= 0 else float(np.clip(0.5 * (a - c) / d, -0.5, 0.5))


def patch_shifts(texture: np.ndarray, seen: np.ndarray, reference: np.ndarray, patch: int = PATCH,
                 stride: int = STRIDE, search: int = SEARCH) -> tuple[np.ndarray, np.ndarray]:
    """Per patch of the captured ``texture`` wholly on ``seen`` texels, the shift (dx, dy) in
    texels at which it best matches ``reference`` (normalized cross-correlation), and the peak.

    Args:
        texture: (S, S, 3) uint8 captured texture. seen: (S, S) bool seen texels.
        reference: (S, S) float32 grey known texture (:func:`reference_grid`).

    Returns:
        (M, 2) float64 shifts (the patch's content lies that far right/down in the known
        texture) and (M,) float64 correlation peaks, for the M patches with structure.
    """
    import cv2

    grey = texture.astype(np.float32).mean(axis=2)
    ref = reference.astype(np.float32)
    s = grey.shape[0]
    shifts, peaks = [], []
    for y in range(search, s - patch - search + 1, stride):
        for x in range(search, s - patch - search + 1, stride):
            if not seen[y:y + patch, x:x + patch].all():
                continue
            tpl = grey[y:y + patch, x:x + patch]
            if tpl.std() < 2.0:
                continue
            region = ref[y - search:y + patch + search, x - search:x + patch + search]
            score = cv2.matchTemplate(region, tpl, cv2.TM_CCOEFF_NORMED)
            iy, ix = np.unravel_index(int(np.argmax(score)), score.shape)
            dx = dy = 0.0
            if 0 < ix < score.shape[1] - 1:
                dx = _peak_offset(score[iy, ix - 1], score[iy, ix], score[iy, ix + 1])
            if 0 < iy < score.shape[0] - 1:
                dy = _peak_offset(score[iy - 1, ix], score[iy, ix], score[iy + 1, ix])
            shifts.append((ix - search + dx, iy - search + dy))
            peaks.append(float(score[iy, ix]))
    return np.asarray(shifts, np.float64).reshape(-1, 2), np.asarray(peaks, np.float64)


def registration_error(texture: np.ndarray, seen: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """The registration error of a captured texture against the known one (module docstring):
    ``median_px``, ``p90_px`` of ``|shift|`` (texels), ``mean_shift_px`` (dx, dy), ``patches``,
    ``peak`` (median correlation), over the patches whose peak reaches :data:`MIN_PEAK`."""
    shifts, peaks = patch_shifts(texture, seen, reference)
    good = peaks >= MIN_PEAK
    if not good.any():
        return {"median_px": float("nan"), "p90_px": float("nan"), "mean_shift_px": [float("nan")] * 2,
                "patches": 0, "peak": float("nan")}
    mag = np.linalg.norm(shifts[good], axis=1)
    return {
        "median_px": round(float(np.median(mag)), 3),
        "p90_px": round(float(np.percentile(mag, 90)), 3),
        "mean_shift_px": np.round(shifts[good].mean(axis=0), 3).tolist(),
        "patches": int(good.sum()),
        "peak": round(float(np.median(peaks[good])), 3),
    }


@dataclass(frozen=True)
class RegistrationView:
    """One rendered view and its truth: image (H, W, 3) uint8 RGB, mask (H, W) bool, K (3, 3)
    float64, side, vertices (V, 3) float32 metres (camera frame), keypoints_2d (21, 2) float32
    pixels, joints_3d (21, 3) float32 metres."""

    image: np.ndarray
    mask: np.ndarray
    K: np.ndarray
    side: str
    vertices: np.ndarray
    keypoints_2d: np.ndarray
    joints_3d: np.ndarray


def render_views(side: str, texture: np.ndarray, views: int = 3, seed: int = 0,
                 image_size: tuple[int, int] = (640, 480), fov_deg: float = 60.0) -> list[RegistrationView]:
    """``views`` renders of one hand (fixed shape and finger pose) of ``side``: palm to the
    camera, back to the camera, then palm views tilted by a seeded random rotation."""
    from scipy.spatial.transform import Rotation

    from core.camera import intrinsics_from_fov
    from core.synth.render import PALM_TO_CAMERA, SynthSettings, natural_pose, render_hand_sample

    rng = np.random.default_rng(seed)
    layers = _layers()
    # No skin detail: the texture is then the rendered albedo exactly (the registration's oracle).
    settings = SynthSettings(image_size=image_size, fill=(0.7, 0.7), supersample=2,
                             left_probability=1.0 if side == "left" else 0.0, skin_detail=False)
    K = intrinsics_from_fov(fov_deg, *image_size).K
    betas = np.clip(rng.normal(0, 0.8, layers["right"].num_betas), -2, 2).astype(np.float32)
    pose = 0.4 * natural_pose(rng, layers["right"])
    out = []
    for i in range(views):
        if i == 0:
            turn = np.eye(3)
        elif i == 1:
            turn = Rotation.from_euler("y", np.pi).as_matrix()
        else:
            turn = Rotation.from_euler("yx", rng.uniform(-0.5, 0.5, 2)).as_matrix()
        s = render_hand_sample(rng, layers, settings, betas=betas, pose=pose, texture=texture,
                               global_rotation=turn @ PALM_TO_CAMERA, K=K, transl_jitter=0.0, lighting=FLAT_LIGHTING)
        out.append(RegistrationView(s.image, s.mask, s.K, s.side, s.vertices, s.keypoints_2d, s.joints_3d))
    return out


_LAYERS: dict[str, Any] = {}


def _layers() -> dict[str, Any]:
    from core.synth.render import default_layers

    if not _LAYERS:
        _LAYERS.update(default_layers())
    return _LAYERS


def capture_oracle(views: list[RegistrationView], size: int = SIZE, camera_shift_px: tuple[float, float] = (0.0, 0.0)
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The texture captured from ``views`` with the true mesh, mask and camera (its principal
    point moved by ``camera_shift_px``: a deliberately misregistered camera). Returns the
    (size, size, 3) uint8 texture (unfilled) and its (size, size) bool seen mask."""
    from core.texture.capture import TextureCapture

    capture = TextureCapture(_layers()[views[0].side].data, size, capture_size=size)
    for v in views:
        K = v.K.copy()
        K[0, 2] += camera_shift_px[0]
        K[1, 2] += camera_shift_px[1]
        capture.update(v.image, v.vertices, K, v.mask)
    return capture.texture(filled=False), capture.seen_mask()


def _front_facing(view: RegistrationView) -> np.ndarray:
    """(V,) bool: the true mesh's vertices whose normal faces the camera."""
    import torch

    from core.synth.render import vertex_normals

    true = view.vertices.astype(np.float64)
    faces = torch.as_tensor(_layers()[view.side].data.faces, dtype=torch.long)
    normals = vertex_normals(torch.as_tensor(true, dtype=torch.float32)[None], faces)[0].numpy()
    return (normals * true).sum(axis=1) < 0


def mesh_error_px(view: RegistrationView, camera: Any, vertices: np.ndarray) -> float:
    """Median image distance, pixels, between where ``camera`` (a :class:`core.camera.HandCamera`)
    puts ``vertices`` and where the true mesh's vertices are, over the vertices facing the
    camera (the ones the texture is sampled at): the geometry's own misregistration, which the
    texture's shift follows (about 1.5 to 2 texels of the 512 grid per pixel on these views)."""
    from core.camera import project

    front = _front_facing(view)
    err = np.linalg.norm(camera.project(vertices) - project(view.vertices.astype(np.float64), view.K), axis=1)
    return round(float(np.median(err[front])), 3)


def best_weak_camera(view: RegistrationView) -> Any:
    """The weak-perspective camera (:class:`core.camera.HandCamera`) closest to the view's true
    projection of its mesh's camera-facing vertices, in the least-squares sense (scale about
    their centroid): what the weak projection alone costs on the visible skin, the true mesh
    given. It minimizes the RMS, not the median: on a close view a fit anchored on the joints
    can have a smaller median error (fingers reaching toward the lens pull the RMS fit)."""
    from core.camera import HandCamera, intrinsics_from_matrix, project

    h, w = view.image.shape[:2]
    pts = view.vertices.astype(np.float64)[_front_facing(view)]
    px = project(pts, view.K)
    centre, centre_px = pts.mean(0), px.mean(0)
    d, e = pts[:, :2] - centre[:2], px - centre_px
    scale = float((d * e).sum() / (d * d).sum())
    return HandCamera.weak(intrinsics_from_matrix(view.K, w, h), scale, centre, centre_px)


def capture_best_weak(views: list[RegistrationView], size: int = SIZE) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """The texture captured with the true mesh and mask seen through :func:`best_weak_camera`
    (sampled through its pinhole form, as the engine's weak hands are): the floor of the
    weak-perspective cases, what the projection model alone costs. Also returns each view's
    :func:`mesh_error_px`."""
    from core.texture.capture import TextureCapture

    capture = TextureCapture(_layers()[views[0].side].data, size, capture_size=size)
    mesh_px = []
    for v in views:
        camera = best_weak_camera(v)
        mesh_px.append(mesh_error_px(v, camera, v.vertices))
        verts, K = camera.pinhole(v.vertices)
        capture.update(v.image, verts, K, v.mask)
    return capture.texture(filled=False), capture.seen_mask(), mesh_px


def _detection(view: RegistrationView) -> Any:
    """A MediaPipe-style detection of the view's hand from its true keypoints."""
    from core.synth.sequences import SequenceFrame, detections

    h, w = view.image.shape[:2]
    frame = SequenceFrame((view.side,), view.keypoints_2d[None], view.joints_3d[None], view.K, (w, h))
    return detections(frame)[0]


def capture_engine(views: list[RegistrationView], weak: bool, refine_iterations: int, size: int = SIZE
                   ) -> tuple[np.ndarray, np.ndarray, list[float], list[float], list[bool]]:
    """The texture captured from ``views`` with the engine's hands (see the module docstring).
    Returns the texture (unfilled), its seen mask, each view's keypoint reprojection error and
    its :func:`mesh_error_px` (pixels), and whether its refinement fell back to the fit (the
    keypoint guard; False without refinement)."""
    from core.camera import intrinsics_from_matrix
    from core.capture.frame import Frame
    from core.engine import Engine, EngineSettings
    from core.texture.session import SessionCapture

    settings = EngineSettings(max_hands=1, detector_mode="static", device="cpu", segment=True,
                              refine_iterations=refine_iterations, detector_process=False)
    layers = _layers()
    session = SessionCapture({s: layers[s].data for s in ("right", "left")}, size, capture_size=size)
    errors, mesh_px, fell_back = [], [], []
    with Engine(settings) as engine:
        for i, v in enumerate(views):
            h, w = v.image.shape[:2]
            intr = None if weak else intrinsics_from_matrix(v.K, w, h)
            frame = Frame(i, i / 15.0, v.image, intr, "synthetic", "none" if weak else "given")
            result = engine.process_detections(frame, [_detection(v)])
            hands = [hand for hand in result.hands if hand.fit.side == v.side]
            if not hands:
                log.warning("view %d: no %s hand fitted", i, v.side)
                continue
            errors.append(round(hands[0].reprojection_error_px, 3))
            mesh_px.append(mesh_error_px(v, hands[0].camera, hands[0].vertices))
            fell_back.append(hands[0].refined is not None and hands[0].refined.fell_back)
            session.add_hands(v.image, i, frame.timestamp_s, hands[:1])
    capture = session.captures[views[0].side]
    return capture.texture(filled=False), capture.seen_mask(), errors, mesh_px, fell_back


def evaluate_registration(sides: tuple[str, ...] = ("right", "left"), views: int = 3, seed: int = 0,
                          size: int = SIZE, refine: tuple[int, ...] = (0, 3), engine: bool = True,
                          fov_deg: float = 60.0, projections: tuple[str, ...] = ("perspective", "weak")
                          ) -> dict[str, Any]:
    """Registration error per case (module docstring), the hand rendered with a ``fov_deg``
    lens at the distance where its length fills 0.7 of the image's height (a long lens, a
    couple of degrees, makes the frames themselves weak perspective: the hand several metres
    away, its depth a fraction of a percent of its distance).

    Returns:
        ``{"size", "views", "seed", "fov_deg", side: {case: row}}`` with cases ``oracle``
        (true mesh and camera), ``weak_best`` (true mesh, :func:`best_weak_camera`), and
        ``{projection}_refine{N}`` (the engine's hands) for each of ``projections``; a row is
        :func:`registration_error`'s plus ``coverage`` (seen share of the grid) and, for the
        engine's cases, ``reprojection_px`` (the hands' keypoint reprojection errors per view)
        and ``fell_back`` (per view, refinement replaced by the fit), and, for ``weak_best``
        and the engine's cases, ``mesh_px`` (:func:`mesh_error_px` per view).
    """
    rng = np.random.default_rng(seed + 17)
    texture = registration_pattern(rng, size)
    reference = reference_grid(texture, size)
    out: dict[str, Any] = {"size": size, "views": views, "seed": seed, "fov_deg": fov_deg}

    def row(tex: np.ndarray, seen: np.ndarray, **extra: Any) -> dict[str, Any]:
        return {**registration_error(tex, seen, reference), "coverage": round(float(seen.mean()), 3), **extra}

    for side in sides:
        rendered = render_views(side, texture, views, seed, fov_deg=fov_deg)
        tex, seen, mesh_px = capture_best_weak(rendered, size)
        rows: dict[str, Any] = {"oracle": row(*capture_oracle(rendered, size)),
                                "weak_best": row(tex, seen, mesh_px=mesh_px)}
        if engine:
            for projection in projections:
                for n in refine:
                    tex, seen, errors, mesh_px, fell_back = capture_engine(rendered, projection == "weak", n, size)
                    rows[f"{projection}_refine{n}"] = row(tex, seen, reprojection_px=errors, mesh_px=mesh_px,
                                                          fell_back=fell_back)
        out[side] = rows
    return out


def _format(results: dict[str, Any]) -> str:
    lines = [f"texture registration, {results['views']} views per hand, {results['fov_deg']} deg lens, capture grid "
             f"{results['size']} (|shift| in texels of that grid; x2 for the exported 1024 texture)"]
    for side in ("right", "left"):
        for case, row in results.get(side, {}).items():
            lines.append(f"{side:5s} {case:20s} median {row['median_px']:6.3f}  p90 {row['p90_px']:6.3f}  "
                         f"mean shift {row['mean_shift_px']}  patches {row['patches']:4d}  peak {row['peak']}  "
                         f"coverage {row['coverage']}"
                         + (f"  mesh px {row['mesh_px']}" if "mesh_px" in row else "")
                         + (f"  keypoints px {row['reprojection_px']}" if "reprojection_px" in row else "")
                         + (f"  fell back {sum(row['fell_back'])}/{len(row['fell_back'])}" if "fell_back" in row
                            else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.tools.evaluate_texture_registration",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=SIZE)
    parser.add_argument("--fov", type=float, default=60.0, help="the render's horizontal field of view, degrees")
    parser.add_argument("--oracle-only", action="store_true", help="the true geometry only (no engine)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    results = evaluate_registration(views=args.views, seed=args.seed, size=args.size, engine=not args.oracle_only,
                                    fov_deg=args.fov)
    print(json.dumps(results, indent=2) if args.json else _format(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
