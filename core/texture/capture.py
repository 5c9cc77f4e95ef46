"""Capturing the hand's skin texture from video frames (RealisticHands, paper 001, Sec. 3.2).

Every frame, the fitted mesh is projected into the image and each texel of the UV texture
that the camera sees takes the image colour at its projection; the texture is the
confidence-weighted exponential average of these observations over frames ("we average the
current texture with the previous"), which fights outliers and follows slow changes.

The paper rasterizes the mesh and maps each fragment's UV into the texture. Here the mapping
runs the other way (texture -> image), which leaves no holes when the texture has more texels
than the hand has pixels. The texel -> (face, barycentric) map is computed once per topology
(:mod:`core.texture.texels`); per frame, every texel of a face turned toward the camera is

1. **placed**: its pixel and depth are the barycentric mix of its face's projected corners
   (the UV map is affine per triangle, so this is exact up to the perspective division
   inside one small triangle, far below a pixel). Face values are spread to their texels
   with ``np.repeat`` (texels are stored sorted by face), which is several times cheaper
   than gathering per-texel corner indices;
2. **tested for visibility** against a z-buffer splatted from the same texels
   (``np.minimum.at``) and widened by a 3 x 3 minimum, so a texel counts as seen when
   nothing within a pixel lies more than ``depth_tolerance_m`` (plus a slope allowance)
   in front of it. This replaces a hard rasterization of the mesh (``core.render.rasterize``
   costs 10-60 ms per frame here), since the texels already sample every visible surface at
   about a pixel or finer;
3. **weighted**: confidence = viewing-angle term (0 at ``min_cos``, 1 head-on) x
   silhouette-edge term (0 outside the mesh's silhouette and the target mask, and within
   ``edge_margin_px`` of their edge, rising to 1 over ``edge_ramp_px``), since colours at
   grazing angles are smeared and colours at the edge mix in the background; the target
   mask (hand segmentation) keeps a misfitted mesh from painting background onto the hand;
4. **blended**: ``den <- (1 - w (1 - s)) den + w``, ``colour <- colour + (w / den)
   (sample - colour)``, with ``s`` the smoothing and ``w`` the confidence: the
   confidence-weighted mean of a texel's observations, each full-confidence frame
   multiplying the weight of the older ones by ``s``. The first observation sets the texel,
   the next ones average with it (noise drops quickly), and in the long run it is
   exponential smoothing with rate ``1 - s`` (a memory of about ``1 / (1 - s)`` frames), so
   the texture keeps following slow changes; a weak observation moves it proportionally
   less. Once a texel is trusted (accumulated weight 1), a sample far from it (by
   ``outlier_levels``) is down-weighted as a probable outlier: background seen through a
   misfitted mesh, which the paper's plain average would let in. Samples whose colour lies
   far outside the colour distribution of the frame's samples (``colour_gate_sigma``) lose
   their confidence before blending, which keeps background out even of texels never seen
   as skin.

The average lives on a capture grid of ``capture_size`` texels (default 512), and
:meth:`TextureCapture.texture` resamples it to the texture ``size`` (default 1024). A hand
filling a 480 x 360 frame shows about 20K pixels and a 512 grid samples it with about 24K
texels (a 1024 grid with 4 times as many, for no more image detail), which keeps an update
near its 5 ms budget (``core.tools.bench_texture``); pass ``capture_size=1024`` for close-ups from
high-resolution cameras. Since the texels must about cover the pixels they land on, a frame
where the hand's box holds more than ``CaptureSettings.max_pixels_per_texel`` pixels per
covered texel (a 1920 or 3840 px frame) is sampled from a crop around the hand resampled to
that density (without it the splatted z-buffer and silhouette fall apart into single pixels,
and the coverage dropped to 4% at 1920 px and 0% at 3840 px).

The face stage, the texel stage (steps 1-3 around OpenCV's morphology), the colour gate and
the blend run as C kernels (:mod:`core.texture._native`, 7-8 -> 3.3-4.5 ms per update on the
demo); the NumPy code here is their reference and the fallback where no C compiler exists.

Never-seen texels are filled on demand (:mod:`core.texture.fill`). An optional base texture
(a profile's texture from an earlier session) starts the average, so a session keeps
improving it instead of starting over.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import cv2
import numpy as np

from core.texture import _native
from core.texture.fill import fill_texture
from core.texture.texels import TexelMap, texel_map

__all__ = [
    "DEFAULT_CAPTURE_SIZE",
    "DEFAULT_TEXTURE_SIZE",
    "CaptureSettings",
    "FrameSamples",
    "LIVE_CAPTURE",
    "SkinColour",
    "TextureCapture",
    "TextureUpdate",
    "sample_frame",
]

log = logging.getLogger(__name__)

#: Side of the exported texture, texels.
DEFAULT_TEXTURE_SIZE = 1024
#: Side of the grid the observations are averaged on, texels (see the module docstring).
DEFAULT_CAPTURE_SIZE = 512

#: cv2.remap handles images below 32767 columns: samples are laid out in rows of this width.
_REMAP_WIDTH = 4096
_CROSS = np.ones((3, 3), dtype=np.uint8)
#: Samples the colour gate estimates the frame's skin colours from (every k-th sample).
_GATE_SAMPLES = 1024


@dataclass(frozen=True)
class CaptureSettings:
    """Which texels a frame may update, and how much.

    Attributes:
        min_cos: smallest cosine between the face normal and the direction to the camera
            (0.25: up to about 75 degrees from head-on); more oblique texels are skipped.
        depth_tolerance_m: a texel is hidden when the z-buffer within a pixel of it is this
            much nearer (plus a slope allowance of 1.5 pixels' depth change), metres.
        edge_margin_px: pixels closer than this to the mask's edge are skipped, pixels.
        edge_ramp_px: beyond the margin, confidence grows linearly to 1 over this distance,
            pixels.
        base_confidence: weight of a base texture, in full-confidence frames.
        outlier_levels: a sample this far (RMS over RGB, 8-bit levels) from a texel's
            trusted estimate counts half; farther ones less (Cauchy weight). Background seen
            through a misfitted mesh is thus kept out once the skin has been seen. 0: off.
        colour_gate_sigma: samples further than this (Mahalanobis distance) from the colour
            distribution of the frame's samples lose confidence (a Gaussian fall-off beyond
            it): background colours that leak into the samples are dropped even where the
            skin was never seen. 0: off.
        colour_gate_cut: samples beyond ``colour_gate_sigma + colour_gate_cut`` are dropped
            outright (a faint sample would otherwise set a texel no better sample ever
            reaches: the skin behind an object held in every frame).
        skin_memory: the hand's skin colour model (the gate's mean and covariance) follows the
            frames' robust colour statistics as an exponential average with this memory per
            frame; a frame whose statistics lie beyond ``colour_gate_sigma`` of the model (an
            object filling the view) leaves it unchanged. 0: each frame's own statistics.
        min_texel_weight: a texel counts as known in :meth:`TextureCapture.texture` once its
            accumulated confidence reaches this (full-confidence frames); texels seen only
            faintly are filled from the skin around them instead.
        skin_pixel_sigma: once the skin's colour is known, pixels further than this from it
            (Mahalanobis) count as outside the hand's mask, so the texels near them (an
            object's edge, where colours mix) are ramped down like those at the mask's edge.
            Wider than the gate: the model's own tails must not be cut (it would narrow from
            frame to frame). 0: off.
        texture_gate_sigma: a texel whose average lies further than this (Mahalanobis) from
            the skin colour model is filled too (the texture carries only skin). 0: off.
        max_pixels_per_texel: a frame whose hand box holds more pixels than this times the
            covered texels of the grid is sampled from a crop around the hand resampled to
            that density (the texels must about cover the pixels they land on; a 1920 or
            3840 px frame would otherwise leave holes that read as "unseen").
        min_view_change: a frame whose mesh, relative to its centroid, differs from the last
            blended frame's by less than this (RMS over the vertices, camera frame, over their
            RMS distance from the centroid: about the angle in radians the hand turned or bent
            through) shows the hand as that frame did: the same texels facing the camera, and
            they are fixed to the surface, so they see the same colours however far the hand
            slid. It adds little coverage, mostly one more sample of colours the average holds,
            and :meth:`TextureCapture.update` skips it (at most ``max_skipped_frames`` in a row,
            so the average keeps following changes of light). 0: every frame is blended. Live
            tracking uses :data:`LIVE_CAPTURE`.
        max_skipped_frames: most frames skipped in a row by ``min_view_change``.
    """

    min_cos: float = 0.25
    depth_tolerance_m: float = 0.003
    edge_margin_px: float = 1.5
    edge_ramp_px: float = 5.0
    base_confidence: float = 3.0
    outlier_levels: float = 30.0
    colour_gate_sigma: float = 3.5
    colour_gate_cut: float = 1.0
    skin_memory: float = 0.8
    min_texel_weight: float = 0.3
    skin_pixel_sigma: float = 6.0
    texture_gate_sigma: float = 4.5
    max_pixels_per_texel: float = 2.0
    min_view_change: float = 0.0
    max_skipped_frames: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_cos < 1.0:
            raise ValueError(f"min_cos must be in [0, 1), got {self.min_cos}")
        if self.depth_tolerance_m <= 0 or self.edge_margin_px < 0 or self.edge_ramp_px <= 0:
            raise ValueError("depth_tolerance_m and edge_ramp_px must be > 0, edge_margin_px >= 0")
        if self.base_confidence <= 0:
            raise ValueError(f"base_confidence must be > 0, got {self.base_confidence}")
        if self.outlier_levels < 0 or self.colour_gate_sigma < 0 or self.texture_gate_sigma < 0:
            raise ValueError("outlier_levels, colour_gate_sigma and texture_gate_sigma must be >= 0")
        if (self.colour_gate_cut < 0 or self.min_texel_weight < 0 or self.skin_pixel_sigma < 0
                or not 0.0 <= self.skin_memory < 1.0):
            raise ValueError("colour_gate_cut and min_texel_weight must be >= 0, skin_memory in [0, 1)")
        if not self.max_pixels_per_texel > 0:
            raise ValueError(f"max_pixels_per_texel must be > 0, got {self.max_pixels_per_texel}")
        if self.min_view_change < 0 or self.max_skipped_frames < 0:
            raise ValueError("min_view_change and max_skipped_frames must be >= 0")


#: The live pipeline's capture (the GUI, ``bench``'s whole frame): a frame whose hand turned or
#: bent by less than about 7 degrees (``min_view_change`` 0.1) since the last blended frame is
#: skipped, at most every other frame: the texture is still blended at least 15 times a second
#: at 30 fps, and every frame while the hand turns fast. On the demo clip 8 of 24 frames are
#: skipped; the texture keeps its coverage (0.379 against 0.380 blending every frame) and
#: differs from blending every frame by 0.9 levels (mean absolute, 8-bit).
LIVE_CAPTURE = CaptureSettings(min_view_change=0.1, max_skipped_frames=1)


@dataclass(frozen=True)
class FrameSamples:
    """What one frame shows of the texture.

    Attributes:
        texels: (M,) int64 indices into the :class:`TexelMap`'s covered texels, increasing.
        colors: (3, M) float32 RGB in [0, 255] (channel first), sampled bilinearly at the
            texels' projections.
        confidence: (M,) float32 in (0, 1].
        skin: the skin colour model the colour gate used (the prior updated with this frame),
            or None when there was no gate.
    """

    texels: np.ndarray
    colors: np.ndarray
    confidence: np.ndarray
    skin: SkinColour | None = None

    @staticmethod
    def empty(skin: SkinColour | None = None) -> FrameSamples:
        return FrameSamples(np.zeros(0, np.int64), np.zeros((3, 0), np.float32), np.zeros(0, np.float32), skin)


@dataclass(frozen=True)
class SkinColour:
    """The hand's skin colour distribution: a Gaussian over RGB.

    Attributes:
        mean: (3,) float64 RGB in [0, 255]. cov: (3, 3) float64 covariance, levels^2 (floored
            at 5 levels of spread). frames: frames it was estimated from.
    """

    mean: np.ndarray
    cov: np.ndarray
    frames: int = 1

    @cached_property
    def inverse(self) -> np.ndarray:
        """(3, 3) float64 inverse covariance (computed once per model: the gate, the skin
        pixels and the next frame's update all use it)."""
        return _inverse3(self.cov)

    def distance(self, colors: np.ndarray) -> np.ndarray:
        """(M,) Mahalanobis distances of colours (3, M) from the model."""
        diff = np.asarray(colors, np.float64) - self.mean[:, None]
        return np.sqrt(np.maximum(np.einsum("cm,cm->m", diff, self.inverse @ diff), 0.0))

    def updated(self, frame: SkinColour, memory: float, sigma: float) -> SkinColour:
        """This model followed by one frame's statistics (an exponential average with
        ``memory``); unchanged when the frame's mean lies beyond ``sigma`` of the model (the
        frame shows mostly something else: an object in the hand, a misfit)."""
        if float(self.distance(frame.mean[:, None])[0]) > sigma:
            return self
        a = 1.0 - memory
        return SkinColour(self.mean + a * (frame.mean - self.mean), self.cov + a * (frame.cov - self.cov),
                          self.frames + 1)


@dataclass(frozen=True)
class TextureUpdate:
    """The result of :meth:`TextureCapture.update`.

    Attributes:
        texels_updated: capture-grid texels this frame updated.
        coverage: fraction of the covered texels seen so far in this session, in [0, 1].
        mean_confidence: mean confidence of this frame's texels (0 when none).
        time_ms: wall time of the update, milliseconds.
        skipped: the frame showed nothing new (``CaptureSettings.min_view_change_px``) and
            was not sampled.
    """

    texels_updated: int
    coverage: float
    mean_confidence: float
    time_ms: float
    skipped: bool = False


def _face_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenate the integer ranges ``starts[i] : starts[i] + counts[i]`` (int64)."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.cumsum(counts) - counts  # where each range begins in the output
    return np.arange(total, dtype=np.int64) + np.repeat(starts - offsets, counts)


def _edge_weight(mask: np.ndarray, margin_px: float, ramp_px: float) -> np.ndarray:
    """(H, W) float32 in [0, 1]: 0 outside ``mask`` and within ``margin_px`` of its edge,
    rising linearly to 1 over ``ramp_px``."""
    dist = cv2.distanceTransform(np.ascontiguousarray(mask).view(np.uint8), cv2.DIST_L2, 3)
    return np.clip((dist - margin_px) * (1.0 / ramp_px), 0.0, 1.0)


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(3, M) float32 bilinear samples of an (H, W, 3) image at pixel coordinates (x, y)."""
    count = x.size
    rows = -(-count // _REMAP_WIDTH)
    map_x = np.empty(rows * _REMAP_WIDTH, dtype=np.float32)
    map_y = np.empty(rows * _REMAP_WIDTH, dtype=np.float32)
    map_x[:count], map_y[:count] = x, y
    map_x[count:] = 0.0
    map_y[count:] = 0.0
    out = cv2.remap(image, map_x.reshape(rows, -1), map_y.reshape(rows, -1), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(out.reshape(-1, 3)[:count].T, dtype=np.float32)


def _face_stage(verts: np.ndarray, faces_t: np.ndarray, has_texels: np.ndarray, K: np.ndarray,
                bounds: tuple[float, float, float, float]):
    """NumPy reference of :func:`core.texture._native.face_stage` (same arguments and results)."""
    x, y, z = verts.T
    zs = np.maximum(z, np.float32(1e-3))
    px = x / zs * np.float32(K[0, 0]) + np.float32(K[0, 2])
    py = y / zs * np.float32(K[1, 1]) + np.float32(K[1, 2])
    cx = [np.take(x, f) for f in faces_t]  # corner k of every face
    cy = [np.take(y, f) for f in faces_t]
    cz = [np.take(z, f) for f in faces_t]
    e1 = (cx[1] - cx[0], cy[1] - cy[0], cz[1] - cz[0])
    e2 = (cx[2] - cx[0], cy[2] - cy[0], cz[2] - cz[0])
    nx = e1[1] * e2[2] - e1[2] * e2[1]
    ny = e1[2] * e2[0] - e1[0] * e2[2]
    nz = e1[0] * e2[1] - e1[1] * e2[0]
    mx, my, mz = cx[0] + cx[1] + cx[2], cy[0] + cy[1] + cy[2], cz[0] + cz[1] + cz[2]  # 3 x centroid
    cos = -(nx * mx + ny * my + nz * mz) / np.maximum(
        np.sqrt((nx * nx + ny * ny + nz * nz) * (mx * mx + my * my + mz * mz)), np.float32(1e-30)
    )
    fx = np.stack([np.take(px, f) for f in faces_t])  # (3, F)
    fy = np.stack([np.take(py, f) for f in faces_t])
    fz = np.stack(cz)
    fx_min, fx_max, fy_min, fy_max = fx.min(0), fx.max(0), fy.min(0), fy.max(0)
    lo_x, hi_x, lo_y, hi_y = bounds
    front = (
        (cos > 0.0) & (fz.min(0) > 1e-3) & has_texels
        & (fx_max >= lo_x) & (fx_min <= hi_x) & (fy_max >= lo_y) & (fy_min <= hi_y)
    )
    cand = np.flatnonzero(front)
    ext = (np.array([fx_min[cand].min(), fx_max[cand].max(), fy_min[cand].min(), fy_max[cand].max()], np.float32)
           if cand.size else np.zeros(4, np.float32))
    return fx, fy, fz, cos, mz, cand, ext


def _place_texels(tmap: TexelMap, cand: np.ndarray, counts: np.ndarray, fx: np.ndarray, fy: np.ndarray,
                  fz: np.ndarray, x0: int, y0: int, crop_w: int, crop_h: int):
    """NumPy reference of :func:`core.texture._native.place` (same arguments and results)."""
    texels = _face_ranges(tmap.face_start[cand], counts)
    b1 = np.take(tmap.bary_t[1], texels)
    b2 = np.take(tmap.bary_t[2], texels)

    def spread(corners, offset: float = 0.0) -> np.ndarray:
        """(3, F) per-corner values -> (M,) values at the candidate faces' texels."""
        c0, c1, c2 = corners[0][cand], corners[1][cand], corners[2][cand]
        out = np.repeat(c0 - np.float32(offset), counts)
        out += b1 * np.repeat(c1 - c0, counts)
        out += b2 * np.repeat(c2 - c0, counts)
        return out

    col = spread(fx, x0)
    row = spread(fy, y0)
    depth = spread(fz)
    inside = (col > -0.5) & (col < crop_w - 0.5) & (row > -0.5) & (row < crop_h - 0.5)
    # Nearest pixel (truncation is rounding for the coordinates inside); others -> a spare cell.
    flat = (row + np.float32(0.5)).astype(np.int32) * crop_w + (col + np.float32(0.5)).astype(np.int32)
    spare = crop_h * crop_w
    flat[~inside] = spare
    zbuf = np.full(spare + 1, np.inf, dtype=np.float32)
    np.minimum.at(zbuf, flat, depth)
    return texels, col, row, depth, flat, zbuf


def _working_image(tmap: TexelMap, image: np.ndarray, verts: np.ndarray, K: np.ndarray, mask: np.ndarray | None,
                   settings: CaptureSettings) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """The frame at the working resolution of the texel grid: ``(image, mask, K)`` unchanged
    when the hand's box holds at most ``settings.max_pixels_per_texel`` pixels per covered
    texel, else a crop around the hand resampled (area filter) to that density, with its mask
    (nearest) and the intrinsics of the crop (pixel centres at integers, as in
    :meth:`core.camera.Intrinsics.scaled`)."""
    height, width = image.shape[:2]
    z = verts[:, 2]
    front = z > 1e-3
    if not front.any():
        return image, mask, K
    u = verts[front, 0] / z[front] * K[0, 0] + K[0, 2]
    v = verts[front, 1] / z[front] * K[1, 1] + K[1, 2]
    x0, x1 = max(float(u.min()), -0.5), min(float(u.max()), width - 0.5)
    y0, y1 = max(float(v.min()), -0.5), min(float(v.max()), height - 0.5)
    if x1 <= x0 or y1 <= y0:
        return image, mask, K
    budget = settings.max_pixels_per_texel * tmap.num_texels
    scale = float(np.sqrt(budget / max((x1 - x0) * (y1 - y0), 1.0)))
    if scale >= 1.0:
        return image, mask, K
    pad = (settings.edge_margin_px + settings.edge_ramp_px + 4.0) / scale
    cx0, cy0 = max(int(np.floor(x0 - pad)), 0), max(int(np.floor(y0 - pad)), 0)
    cx1, cy1 = min(int(np.ceil(x1 + pad)) + 1, width), min(int(np.ceil(y1 + pad)) + 1, height)
    crop_w, crop_h = cx1 - cx0, cy1 - cy0
    new_w, new_h = max(int(round(crop_w * scale)), 1), max(int(round(crop_h * scale)), 1)
    sx, sy = new_w / crop_w, new_h / crop_h
    small = cv2.resize(image[cy0:cy1, cx0:cx1], (new_w, new_h), interpolation=cv2.INTER_AREA)
    if mask is not None:
        crop = np.ascontiguousarray(mask[cy0:cy1, cx0:cx1]).view(np.uint8)
        mask = cv2.resize(crop, (new_w, new_h), interpolation=cv2.INTER_NEAREST).view(bool)
    K2 = np.array([[K[0, 0] * sx, K[0, 1] * sx, (K[0, 2] - cx0 + 0.5) * sx - 0.5],
                   [0.0, K[1, 1] * sy, (K[1, 2] - cy0 + 0.5) * sy - 0.5],
                   [0.0, 0.0, 1.0]])
    return np.ascontiguousarray(small), mask, K2


def sample_frame(
    tmap: TexelMap,
    image: np.ndarray,
    vertices: np.ndarray,
    K: np.ndarray,
    mask: np.ndarray | None = None,
    settings: CaptureSettings = CaptureSettings(),
    backend: str = "auto",
    skin: SkinColour | None = None,
) -> FrameSamples:
    """The texels one frame sees, their colours and confidences (pure function).

    Args:
        tmap: the mesh's texel map (its faces must be the ones ``vertices`` belong to).
        image: (H, W, 3) uint8 RGB.
        vertices: (V, 3) float, metres, camera frame (OpenCV), the fitted mesh.
        K: (3, 3) float intrinsics, pixels.
        mask: (H, W) bool target mask of this hand (segmentation), or None to rely on the
            mesh's own silhouette alone.
        settings: thresholds and weights.
        backend: "auto" (the C kernels of :mod:`core.texture._native` where they build, else
            NumPy), "native" or "numpy" (the reference).
        skin: the hand's skin colour model so far (the colour gate follows it with this frame's
            statistics, ``CaptureSettings.skin_memory``), or None: this frame's alone.

    Returns:
        The :class:`FrameSamples` (empty when nothing is seen), with the updated skin model.
    """
    if backend not in ("auto", "native", "numpy"):
        raise ValueError(f"unknown texture backend {backend!r}")
    native = backend != "numpy" and _native.available()
    if backend == "native" and not native:
        raise RuntimeError(f"the texture's C kernels are unavailable: {_native.LIBRARY.error}")
    height, width = image.shape[:2]
    verts = np.asarray(vertices, dtype=np.float32)
    if verts.shape != (tmap.num_vertices, 3):
        raise ValueError(f"vertices must be ({tmap.num_vertices}, 3), got {verts.shape}")
    if mask is not None and mask.shape != (height, width):
        raise ValueError(f"mask must be {(height, width)}, got {mask.shape}")
    K = np.asarray(K, dtype=np.float64)
    # Large frames: the texels must be about as dense as the pixels they land on (the
    # z-buffer and the silhouette are splatted from them), so a hand that covers many more
    # pixels than the grid has texels is sampled from a resampled crop around it.
    image, mask, K = _working_image(tmap, image, verts, K, mask, settings)
    height, width = image.shape[:2]

    # Face stage: projected corners, viewing cosine, the faces to sample (in the mask's box).
    bounds = (-0.5, width - 0.5, -0.5, height - 0.5)
    if mask is not None:
        bx, by, bw, bh = cv2.boundingRect(np.ascontiguousarray(mask).view(np.uint8))
        if bw == 0 or bh == 0:
            return FrameSamples.empty()
        bounds = (max(bounds[0], bx - 1.0), min(bounds[1], bx + bw), max(bounds[2], by - 1.0), min(bounds[3], by + bh))
    stage = _native.face_stage if native else _face_stage
    fx, fy, fz, cos, mz, cand, ext = stage(verts, tmap.faces_t, tmap.has_texels, K, bounds)
    if cand.size == 0:
        return FrameSamples.empty()

    # The crop of the image the candidates fall in (plus room for the edge distances).
    pad = int(np.ceil(settings.edge_margin_px + settings.edge_ramp_px)) + 2
    x0 = max(int(np.floor(ext[0])) - pad, 0)
    x1 = min(int(np.ceil(ext[1])) + pad + 1, width)
    y0 = max(int(np.floor(ext[2])) - pad, 0)
    y1 = min(int(np.ceil(ext[3])) + pad + 1, height)
    if x1 <= x0 or y1 <= y0:
        return FrameSamples.empty()
    crop_w, crop_h = x1 - x0, y1 - y0

    # Texel stage: place every texel of the candidate faces (face values spread by repeat).
    counts = tmap.face_count[cand]
    spare = crop_h * crop_w
    if native:
        texels, col, row, depth, flat, zbuf = _native.place(
            cand, tmap.face_start, counts, tmap.bary_t, fx, fy, fz, x0, y0, crop_w, crop_h)
    else:
        texels, col, row, depth, flat, zbuf = _place_texels(tmap, cand, counts, fx, fy, fz, x0, y0, crop_w, crop_h)
    # Visibility: the splatted z-buffer, widened by a 3 x 3 minimum (fills 1-pixel gaps).
    zmin = np.empty_like(zbuf)
    zmin[spare] = -np.inf  # a texel outside the crop is never visible
    zmin[:spare] = cv2.erode(zbuf[:spare].reshape(crop_h, crop_w), _CROSS, borderType=cv2.BORDER_CONSTANT,
                             borderValue=np.inf).reshape(-1)
    # Slope allowance: 1.5 pixels' worth of depth change across the face (z / f tan(angle)).
    cos_c = np.clip(cos[cand], 1e-3, 1.0)
    pixel_m = mz[cand] * np.float32(1.0 / (3.0 * K[0, 0]))
    tolerance = settings.depth_tolerance_m + 1.5 * pixel_m * np.sqrt(1.0 - cos_c * cos_c) / cos_c

    # Confidence: viewing angle x distance to the edge of the mesh's silhouette (the closed
    # splat coverage) intersected with the target mask and, once the skin's colour is known,
    # with the pixels of skin colour: near an object in the hand the segmentation is not
    # trusted, so its edge (where colours mix) paints nothing either.
    hit = np.isfinite(zbuf[:spare]).reshape(crop_h, crop_w).view(np.uint8)
    crop_mask = cv2.morphologyEx(hit, cv2.MORPH_CLOSE, _CROSS)
    if mask is not None:
        crop_mask &= np.ascontiguousarray(mask[y0:y1, x0:x1]).view(np.uint8)
    if skin is not None and settings.skin_pixel_sigma > 0:
        crop_mask &= skin_pixels(image[y0:y1, x0:x1], skin, settings.skin_pixel_sigma)
    edge = np.zeros(spare + 1, dtype=np.float32)
    edge[:spare] = _edge_weight(crop_mask, settings.edge_margin_px, settings.edge_ramp_px).reshape(-1)
    angle = np.clip((cos_c - settings.min_cos) * (1.0 / (1.0 - settings.min_cos)), 0.0, 1.0)
    if native:
        texels, xs, ys, confidence = _native.keep(counts, texels, col, row, depth, flat, zmin, edge,
                                                  tolerance, angle, x0, y0)
    else:
        visible = depth <= np.take(zmin, flat) + np.repeat(tolerance.astype(np.float32), counts)
        confidence = np.repeat(angle.astype(np.float32), counts)
        confidence *= np.take(edge, flat)
        confidence *= visible
        keep = np.flatnonzero(confidence > 1e-3)
        xs, ys = np.take(col, keep) + np.float32(x0), np.take(row, keep) + np.float32(y0)
        confidence, texels = np.take(confidence, keep), np.take(texels, keep)
    if texels.size == 0:
        return FrameSamples.empty(skin)
    colors = _bilinear(image, xs, ys)
    if settings.colour_gate_sigma > 0 and texels.size >= 16:
        frame_skin = _colour_stats(colors, confidence)
        if frame_skin is not None:
            skin = frame_skin if skin is None or settings.skin_memory == 0 else \
                skin.updated(frame_skin, settings.skin_memory, settings.colour_gate_sigma)
        if skin is not None:
            stats = (skin.mean.astype(np.float32), skin.inverse.astype(np.float32))
            if native:
                texels, colors, confidence = _native.colour_gate(texels, colors, confidence, *stats,
                                                                 settings.colour_gate_sigma, settings.colour_gate_cut)
            else:
                confidence *= _colour_gate(colors, *stats, settings.colour_gate_sigma, settings.colour_gate_cut)
                strong = np.flatnonzero(confidence > 1e-3)
                if strong.size < texels.size:
                    texels, colors, confidence = texels[strong], colors[:, strong], confidence[strong]
    return FrameSamples(texels, np.ascontiguousarray(colors), confidence, skin)


def skin_pixels(image: np.ndarray, skin: SkinColour, sigma: float) -> np.ndarray:
    """(H, W) uint8 1 where an (H, W, 3) uint8 RGB image's colour lies within ``sigma``
    (Mahalanobis) of the skin colour model.

    With ``inv = L L^T`` (Cholesky), the distance is ``|L^T (x - mean)|``: one affine transform
    of the pixels, squared and summed over channels (OpenCV calls, about 0.2 ms on a hand's
    crop)."""
    lt = _cholesky3(skin.inverse).T  # d2 = |lt (x - mean)|^2
    if not np.isfinite(lt).all():
        return np.ones(image.shape[:2], np.uint8)
    affine = np.concatenate([lt, -(lt @ skin.mean)[:, None]], 1).astype(np.float32)
    t = cv2.transform(image.astype(np.float32), affine)
    d2 = cv2.transform(cv2.multiply(t, t), np.ones((1, 3), np.float32))
    return (d2 <= np.float32(sigma * sigma)).astype(np.uint8).reshape(image.shape[:2])


def _colour_stats(colors: np.ndarray, weights: np.ndarray) -> SkinColour | None:
    """The frame's skin colour distribution, or None when no sample has weight.

    The samples of one frame are mostly the hand. Its colour distribution is estimated
    robustly: the samples within 6 robust deviations (MAD) of the per-channel median in every
    channel give the weighted mean and covariance (floored at 5 levels of spread), so a
    few percent of background cannot widen it.
    """
    step = max(1, colors.shape[1] // _GATE_SAMPLES)  # the statistics need only a subset
    sub, sub_w = colors[:, ::step], weights[::step]
    median = np.median(sub, axis=1)
    spread = np.maximum(1.4826 * np.median(np.abs(sub - median[:, None]), axis=1), 3.0)
    inlier = (np.abs(sub - median[:, None]) < 6.0 * spread[:, None]).all(axis=0)
    w = sub_w * inlier
    total = float(w.sum())
    if total <= 0:
        return None
    mean = (sub * w).sum(axis=1) / total  # (3,)
    sub_diff = sub - mean[:, None]
    cov = (sub_diff * w) @ sub_diff.T / total + 25.0 * np.eye(3)
    return SkinColour(mean.astype(np.float64), cov.astype(np.float64))


def _cholesky3(a: np.ndarray) -> np.ndarray:
    """(3, 3) lower Cholesky factor of a symmetric positive definite matrix, written out (not
    ``np.linalg.cholesky``: LAPACK wakes OpenBLAS's busy-waiting workers, see :func:`_inverse3`)."""
    a = np.asarray(a, dtype=np.float64)
    L = np.zeros((3, 3))
    for i in range(3):
        for j in range(i + 1):
            v = a[i, j] - L[i, :j] @ L[j, :j]
            L[i, j] = np.sqrt(max(v, 1e-12)) if i == j else v / L[j, j]
    return L


def _inverse3(m: np.ndarray) -> np.ndarray:
    """(3, 3) inverse by cofactors. Not ``np.linalg.inv``: LAPACK wakes OpenBLAS's worker
    threads, which then busy-wait for milliseconds after every frame (see :mod:`core.threads`;
    measured: a second core spinning for 4 ms per texture update, outside an open engine)."""
    a = np.asarray(m, dtype=np.float64)
    cof = np.cross(a[[1, 2, 0]], a[[2, 0, 1]])  # rows: a1 x a2, a2 x a0, a0 x a1
    return cof.T / np.dot(a[0], cof[0])


def _colour_gate(colors: np.ndarray, mean: np.ndarray, inv: np.ndarray, sigma: float,
                 cut: float = np.inf) -> np.ndarray:
    """(M,) float32 in [0, 1]: 1 for samples within ``sigma`` (Mahalanobis, :func:`_colour_stats`)
    of the skin colours, falling as a Gaussian beyond (0.61 at sigma + 1), 0 beyond ``sigma +
    cut``: a sample far outside is background seen through a misfitted mesh, a segmentation
    leak or an object in the hand."""
    diff = colors - mean[:, None]
    d2 = np.einsum("cm,cm->m", diff, inv @ diff)
    excess = np.sqrt(np.maximum(d2, 0.0, out=d2), out=d2)
    excess -= np.float32(sigma)
    np.maximum(excess, 0.0, out=excess)
    beyond = excess > cut
    excess *= excess
    excess *= np.float32(-0.5)
    out = np.exp(excess, out=excess)
    out[beyond] = 0.0
    return out


def _view_change(mesh: np.ndarray, last: np.ndarray) -> float:
    """How much a mesh (V, 3) turned or bent between two frames: the RMS displacement of its
    vertices about their centroid (a slide or a change of depth moves every vertex alike and
    counts nothing), over their RMS distance from the centroid; for a rigid turn by a small
    angle, about the angle (radians) times the share of the hand off the turning axis."""
    a = mesh - mesh.mean(axis=0)
    d = a - (last - last.mean(axis=0))
    return float(np.sqrt(np.sum(d * d) / max(float(np.sum(a * a)), 1e-18)))


def _as_model_data(model: Any) -> Any:
    """A HandModelData from a HandModelData or a HandModel (which holds one in ``.data``)."""
    return getattr(model, "data", model)


@dataclass
class _State:
    """The running average on the capture grid (channel first, N covered texels)."""

    colour: np.ndarray  # (3, N) float32 RGB in [0, 255]
    weight: np.ndarray  # (N,) float32 accumulated confidence
    seen: np.ndarray  # (N,) bool, observed in this session
    known: np.ndarray  # (N,) bool, observed or given by the base texture
    frames: int = 0
    cache: dict[bool, np.ndarray] = field(default_factory=dict)
    skin: SkinColour | None = None  # the hand's skin colour model so far
    base: np.ndarray | None = None  # (N,) bool, given by the base texture


class TextureCapture:
    """Accumulates one hand's UV texture over frames (thin state over :func:`sample_frame`).

    Args:
        model: the hand's :class:`~core.model.HandModelData` (or a ``HandModel``, which
            holds one in ``.data``): its ``uv``, ``uv_faces`` and ``faces`` define the
            layout. Mirroring keeps the UV layout, so one texture serves both sides; pass
            the model of the side whose vertices :meth:`update` gets.
        size: texels per side of the texture :meth:`texture` returns.
        base: (H, W, 3) uint8 RGB texture to start from (UV origin bottom-left; resampled as
            needed), e.g. the profile's texture, or None.
        smoothing: weight of the previous texture against one full-confidence frame, in
            [0, 1): 0 keeps only the latest frame, 0.9 averages over about 10 frames.
        settings: visibility thresholds and confidence weights.
        capture_size: side of the grid observations are averaged on (default
            ``min(size, 512)``; see the module docstring).
        backend: "auto" (the C kernels of :mod:`core.texture._native` where they build, else
            NumPy), "native" or "numpy" (the reference).

    Raises:
        ValueError: the model has no UV coordinates, or bad arguments.
    """

    def __init__(
        self,
        model: Any,
        size: int = DEFAULT_TEXTURE_SIZE,
        base: np.ndarray | None = None,
        smoothing: float = 0.9,
        settings: CaptureSettings = CaptureSettings(),
        capture_size: int | None = None,
        backend: str = "auto",
    ) -> None:
        data = _as_model_data(model)
        if backend not in ("auto", "native", "numpy"):
            raise ValueError(f"unknown texture backend {backend!r}")
        self.backend = backend
        if getattr(data, "uv", None) is None or getattr(data, "uv_faces", None) is None:
            raise ValueError("this hand model has no UV coordinates: its texture cannot be captured")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        if int(size) < 8:
            raise ValueError(f"texture size must be at least 8, got {size}")
        self.size = int(size)
        self.capture_size = min(self.size, DEFAULT_CAPTURE_SIZE) if capture_size is None else int(capture_size)
        self.smoothing = float(smoothing)
        self.settings = settings
        self.texel_map: TexelMap = texel_map(data.uv, data.uv_faces, data.faces, self.capture_size)
        self.reset(base)

    # ----------------------------------------------------------------- state

    def reset(self, base: np.ndarray | None = None) -> None:
        """Forget every observation; start again from ``base`` (or from nothing)."""
        n = self.texel_map.num_texels
        colour = np.zeros((3, n), dtype=np.float32)
        weight = np.zeros(n, dtype=np.float32)
        known = np.zeros(n, dtype=bool)
        if base is not None:
            base = np.asarray(base)
            if base.ndim != 3 or base.shape[2] != 3 or base.dtype != np.uint8:
                raise ValueError(f"base texture must be (H, W, 3) uint8, got {base.shape} {base.dtype}")
            grid = _resize(base, self.capture_size)
            colour[:] = self.texel_map.from_image(grid).T
            weight[:] = self.settings.base_confidence
            known[:] = True
        self._state = _State(colour, weight, np.zeros(n, dtype=bool), known, base=known.copy())
        self._last_view: np.ndarray | None = None  # (V, 3) the last blended frame's mesh
        self._skipped = 0  # frames skipped since then

    @property
    def coverage(self) -> float:
        """Fraction of the covered texels observed in this session, in [0, 1]."""
        return float(np.count_nonzero(self._state.seen)) / max(self.texel_map.num_texels, 1)

    @property
    def frames(self) -> int:
        """Frames that updated at least one texel."""
        return self._state.frames

    def seen_mask(self) -> np.ndarray:
        """(size, size) bool: texels observed in this session (nearest capture-grid texel)."""
        grid = self.texel_map.to_image(self._state.seen, False)
        return _resize(grid.astype(np.uint8), self.size, nearest=True) > 0

    # ----------------------------------------------------------------- updates

    def update(
        self,
        image: np.ndarray,
        vertices: np.ndarray,
        K: np.ndarray,
        mask: np.ndarray | None = None,
    ) -> TextureUpdate:
        """Blend one frame into the texture.

        Args:
            image: (H, W, 3) uint8 RGB frame.
            vertices: (V, 3) float, metres, camera frame (OpenCV): the fitted (refined) mesh
                of this hand.
            K: (3, 3) intrinsics, pixels (for a weak-perspective fit, the nominal camera the
                fit was placed in).
            mask: (H, W) bool target mask of this hand (segmentation), or None to use the
                mesh's own silhouette.
        """
        t0 = time.perf_counter()
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        view = None
        if self.settings.min_view_change > 0:
            view = np.array(vertices, dtype=np.float64)
            last = self._last_view
            if (last is not None and self._skipped < self.settings.max_skipped_frames and last.shape == view.shape
                    and _view_change(view, last) < self.settings.min_view_change):
                self._skipped += 1
                return TextureUpdate(0, self.coverage, 0.0, (time.perf_counter() - t0) * 1000.0, skipped=True)
        samples = sample_frame(self.texel_map, image, vertices, K, mask, self.settings, self.backend,
                               self._state.skin)
        self.blend(samples)
        self._last_view, self._skipped = view, 0
        count = int(samples.texels.size)
        return TextureUpdate(
            texels_updated=count,
            coverage=self.coverage,
            mean_confidence=float(samples.confidence.mean()) if count else 0.0,
            time_ms=(time.perf_counter() - t0) * 1000.0,
        )

    def blend(self, samples: FrameSamples) -> None:
        """Blend one frame's samples into the running average (see the module docstring)."""
        st = self._state
        if samples.skin is not None and samples.skin is not st.skin:
            st.skin = samples.skin
            st.cache.clear()
        if samples.texels.size == 0:
            return
        if self.backend != "numpy" and _native.available():
            _native.blend(samples.texels, samples.colors, samples.confidence, st.colour, st.weight,
                          st.seen, st.known, self.smoothing, self.settings.outlier_levels)
        else:
            self._blend_numpy(samples)
        st.frames += 1
        st.cache.clear()

    def _blend_numpy(self, samples: FrameSamples) -> None:
        """NumPy reference of :func:`core.texture._native.blend`."""
        st = self._state
        idx, w = samples.texels, samples.confidence
        old_weight = np.take(st.weight, idx)
        current = [np.take(st.colour[channel], idx) for channel in range(3)]
        if self.settings.outlier_levels > 0:
            # A sample far from a trusted estimate is probably background or a misfit:
            # Cauchy weight 1 / (1 + (d / t)^2), applied in proportion to the trust (weight).
            dist2 = sum((samples.colors[c] - current[c]) ** 2 for c in range(3)) * np.float32(1.0 / 3.0)
            robust = 1.0 / (1.0 + dist2 * np.float32(1.0 / self.settings.outlier_levels**2))
            trust = np.minimum(old_weight, np.float32(1.0))
            w = w * (1.0 - trust + trust * robust)
        weight = old_weight * (1.0 - w * np.float32(1.0 - self.smoothing))
        weight += w
        rate = w / weight
        for channel in range(3):
            values = current[channel]
            values += rate * (samples.colors[channel] - values)
            st.colour[channel][idx] = values
        st.weight[idx] = weight
        st.seen[idx] = True
        st.known[idx] = True

    # ----------------------------------------------------------------- results

    def texture(self, filled: bool = True) -> np.ndarray:
        """(size, size, 3) uint8 RGB texture, UV origin bottom-left, top row first.

        Args:
            filled: fill never-seen texels from the seen ones (over the mesh surface, across
                UV seams) and pad outside the UV islands, so the hand has no holes or seams
                (:func:`~core.texture.fill.fill_texture`). False leaves them black.
        """
        st = self._state
        if filled not in st.cache:
            if filled:
                grid = fill_texture(self.texel_map, st.colour.T, self.skin_texels())
                st.cache[filled] = _resize(grid, self.size)
            else:
                values = np.where(st.known[:, None], np.clip(np.rint(st.colour.T), 0, 255), 0)
                grid = self.texel_map.to_image(values.astype(np.uint8), 0)
                st.cache[filled] = _resize(grid, self.size, nearest=True)
        return st.cache[filled].copy()

    @property
    def skin(self) -> SkinColour | None:
        """The hand's skin colour model so far (None before the first gated frame)."""
        return self._state.skin

    def skin_texels(self) -> np.ndarray:
        """(N,) bool: the known texels the texture keeps: confident enough
        (``min_texel_weight``) and, with a skin model, within ``texture_gate_sigma`` of it (the
        rest are filled from the skin around them). A base texture's texels are kept as they
        are (it may be another session's light; its samples passed their own gates)."""
        st, s = self._state, self.settings
        base = st.base if st.base is not None else np.zeros_like(st.known)
        keep = st.known & ((st.weight >= np.float32(s.min_texel_weight)) | base)
        if st.skin is not None and s.texture_gate_sigma > 0 and (keep & ~base).any():
            idx = np.flatnonzero(keep & ~base)
            keep[idx[st.skin.distance(st.colour[:, idx]) > s.texture_gate_sigma]] = False
        return keep

    def texel_colours(self) -> tuple[np.ndarray, np.ndarray]:
        """The raw average on the capture grid: ((N, 3) float32 RGB, (N,) bool known)."""
        return self._state.colour.T.copy(), self._state.known.copy()


def _resize(image: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    """Resample a square (or not) image to size x size (area when shrinking, else linear)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    if nearest:
        interpolation = cv2.INTER_NEAREST
    elif image.shape[0] > size:
        interpolation = cv2.INTER_AREA
    else:
        interpolation = cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)
