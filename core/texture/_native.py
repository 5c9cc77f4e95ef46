"""C kernels of the texture's per-frame texel stage (:func:`core.texture.capture.sample_frame`).

The texel stage walks every texel of the faces turned toward the camera (about 45K at the
default 512 capture grid): it places each one in the image crop, splats a z-buffer, then keeps
the visible, confident ones. In NumPy that is a dozen passes over arrays of that size (spreading
face values with ``np.repeat``, ``np.minimum.at`` for the z-buffer, gathers, masks and
compactions); here it is two loops. The morphology between them (3 x 3 minimum, closing,
distance transform) stays in OpenCV.

:func:`place` -- for candidate face i (texels ``face_start[f] .. + counts[i]``, f =
``cand[i]``) and each of its texels t with barycentrics (1 - b1 - b2, b1, b2)::

    col = (x0_f - x_off) + b1 (x1_f - x0_f) + b2 (x2_f - x0_f)     (crop pixels; row, depth alike)
    cell = round(row) * crop_w + round(col)   if the texel falls inside the crop, else spare
    zbuf[cell] = min(zbuf[cell], depth)

:func:`keep` -- per texel, ``confidence = angle_i * edge[cell] * (depth <= zmin[cell] + tol_i)``;
returns the texels whose confidence exceeds 1e-3, with their image coordinates.

Same arithmetic as the NumPy path (float32), up to the compiler contracting a multiply-add
(one rounding instead of two); the tests compare the two. The C source is ``texture.c``, built by
:class:`core.native.NativeLibrary`; where nothing compiles the caller keeps the NumPy path.
"""

from __future__ import annotations

import ctypes

import numpy as np

from core.native import NativeLibrary, address, kernel_source

__all__ = ["LIBRARY", "available", "blend", "colour_gate", "face_stage", "keep", "place", "source"]


def source() -> str:
    """The complete C source."""
    return kernel_source(__file__, "texture.c")


def _declare(lib: ctypes.CDLL) -> None:
    p, i64, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
    lib.texel_place.argtypes = [p, i64, p, p, p, p, p, p, p, i64, f32, f32, i64, i64, p, p, p, p, p, p]
    lib.texel_place.restype = None
    lib.texel_keep.argtypes = [p, i64, p, p, p, p, p, p, p, p, p, f32, f32, p, p, p, p]
    lib.texel_keep.restype = i64
    lib.face_stage.argtypes = [p, p, i64, p] + [f32] * 8 + [p] * 7
    lib.face_stage.restype = i64
    lib.colour_gate.argtypes = [i64, p, p, p, p, p, f32, f32]
    lib.colour_gate.restype = i64
    lib.blend.argtypes = [i64, p, p, p, i64, p, p, p, p, f32, f32]
    lib.blend.restype = None


#: The kernels' library (built on first use).
LIBRARY = NativeLibrary("texture", source, _declare)


def available() -> bool:
    """Whether the kernels are built (building them on the first call)."""
    return LIBRARY.get() is not None


def _c(a: np.ndarray, dtype) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=dtype)


def place(cand: np.ndarray, face_start: np.ndarray, counts: np.ndarray, bary_t: np.ndarray,
          fx: np.ndarray, fy: np.ndarray, fz: np.ndarray, x_off: float, y_off: float,
          crop_w: int, crop_h: int
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Place the candidate faces' texels in the crop and splat their z-buffer.

    Args:
        cand: (C,) int64 candidate faces. face_start: the texel map's (F + 1,) int64 offsets.
            counts: (C,) int64 texels of each candidate (the map's ``face_count[cand]``, which
            the caller has). bary_t: (3, N) float32 barycentrics of every texel.
        fx, fy, fz: (3, F) float32 projected x, y (image pixels) and camera depth (metres) of
            every face's corners. x_off, y_off: the crop's origin, pixels.
        crop_w, crop_h: the crop's size, pixels.

    Returns:
        texels (M,) int64, col, row (M,) float32 crop pixels, depth (M,) float32 metres,
        cell (M,) int32 crop cell (``crop_w * crop_h``: outside), zbuf (crop_h * crop_w + 1,)
        float32 (inf where nothing landed), M = sum of the candidates' texel counts.
    """
    lib = LIBRARY.require()
    cand = _c(cand, np.int64)
    counts = _c(counts, np.int64)
    total = int(counts.sum())
    texels = np.empty(total, np.int64)
    col, row, depth = (np.empty(total, np.float32) for _ in range(3))
    cell = np.empty(total, np.int32)
    zbuf = np.full(crop_w * crop_h + 1, np.inf, np.float32)
    fx, fy, fz = _c(fx, np.float32), _c(fy, np.float32), _c(fz, np.float32)
    lib.texel_place(address(cand), cand.size, address(face_start), address(counts), address(bary_t[1]),
                    address(bary_t[2]), address(fx), address(fy), address(fz), fx.shape[1], float(x_off),
                    float(y_off), crop_w, crop_h, address(texels), address(col), address(row), address(depth),
                    address(cell), address(zbuf))
    return texels, col, row, depth, cell, zbuf


def keep(counts: np.ndarray, texels: np.ndarray, col: np.ndarray, row: np.ndarray, depth: np.ndarray,
         cell: np.ndarray, zmin: np.ndarray, edge: np.ndarray, tol: np.ndarray, angle: np.ndarray,
         x_off: float, y_off: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The visible, confident texels of :func:`place`'s output.

    Args:
        counts: (C,) int64 texels of each candidate face. texels, col, row, depth, cell: from
            :func:`place`. zmin: (cells + 1,) float32 widened z-buffer (-inf at the spare cell).
        edge: (cells + 1,) float32 edge weight (0 at the spare cell). tol, angle: (C,) float32
            per-face depth tolerance (metres) and viewing-angle weight.
        x_off, y_off: the crop's origin (added back to the coordinates).

    Returns:
        texels (K,) int64, x, y (K,) float32 image pixels, confidence (K,) float32.
    """
    lib = LIBRARY.require()
    n = texels.size
    out_t = np.empty(n, np.int64)
    out_x, out_y, out_c = (np.empty(n, np.float32) for _ in range(3))
    counts, tol, angle = _c(counts, np.int64), _c(tol, np.float32), _c(angle, np.float32)
    zmin, edge = _c(zmin, np.float32), _c(edge, np.float32)
    m = lib.texel_keep(address(counts), counts.size, address(texels), address(col), address(row), address(depth),
                       address(cell), address(zmin), address(edge), address(tol), address(angle), float(x_off),
                       float(y_off), address(out_t), address(out_x), address(out_y), address(out_c))
    return out_t[:m], out_x[:m], out_y[:m], out_c[:m]


def face_stage(verts: np.ndarray, faces_t: np.ndarray, has_texels: np.ndarray, K: np.ndarray,
               bounds: tuple[float, float, float, float]):
    """Project every face and pick the candidates (the face stage of ``sample_frame``).

    Args:
        verts: (V, 3) float32 camera frame, metres. faces_t: (3, F) int64. has_texels: (F,) bool.
        K: (3, 3) intrinsics. bounds: (lo_x, hi_x, lo_y, hi_y) image pixels a face must overlap.

    Returns:
        fx, fy, fz (3, F) float32 corners' pixels and depths; cos (F,) float32 viewing cosine;
        mz (F,) float32 three times the centroid's depth; cand (C,) int64 candidate faces;
        ext (4,) float32 the candidates' extent (min x, max x, min y, max y).
    """
    lib = LIBRARY.require()
    verts, faces_t = _c(verts, np.float32), _c(faces_t, np.int64)
    has = _c(has_texels, np.uint8)
    F = faces_t.shape[1]
    fx, fy, fz = (np.empty((3, F), np.float32) for _ in range(3))
    cos, mz = np.empty(F, np.float32), np.empty(F, np.float32)
    cand = np.empty(F, np.int64)
    ext = np.empty(4, np.float32)
    n = lib.face_stage(address(verts), address(faces_t), F, address(has), float(K[0, 0]), float(K[1, 1]),
                       float(K[0, 2]), float(K[1, 2]), *map(float, bounds), address(fx), address(fy), address(fz),
                       address(cos), address(mz), address(cand), address(ext))
    return fx, fy, fz, cos, mz, cand[:n], ext


def colour_gate(texels: np.ndarray, colors: np.ndarray, confidence: np.ndarray, mean: np.ndarray,
                inv: np.ndarray, sigma: float, cut: float = np.inf) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply the colour gate (mean (3,), inverse covariance (3, 3); nothing kept beyond
    ``sigma + cut``) and drop the samples it silences; returns the kept (texels (K,), colours
    (3, K), confidence (K,)), fresh arrays."""
    lib = LIBRARY.require()
    texels, colors, conf = (np.array(texels, np.int64), np.array(colors, np.float32, order="C"),
                            np.array(confidence, np.float32))
    m = colors.shape[1]
    k = lib.colour_gate(m, address(texels), address(colors), address(conf), address(_c(mean, np.float32)),
                        address(_c(inv, np.float32)), float(sigma), float(min(cut, 3.0e38)))
    return texels[:k], np.ascontiguousarray(colors[:, :k]), conf[:k]


def blend(idx: np.ndarray, colors: np.ndarray, confidence: np.ndarray, colour: np.ndarray,
          weight: np.ndarray, seen: np.ndarray, known: np.ndarray, smoothing: float,
          outlier_levels: float) -> None:
    """``TextureCapture.blend`` in place on the state arrays (colour (3, N) float32, weight (N,)
    float32, seen/known (N,) bool, all C-contiguous) for samples at unique texels ``idx``."""
    lib = LIBRARY.require()
    for a, dt in ((colour, np.float32), (weight, np.float32), (seen, np.bool_), (known, np.bool_)):
        if a.dtype != dt or not a.flags.c_contiguous:
            raise ValueError("the texture state must be C-contiguous float32 / bool arrays")
    idx, colors, conf = _c(idx, np.int64), _c(colors, np.float32), _c(confidence, np.float32)
    lib.blend(idx.size, address(idx), address(colors), address(conf), weight.size, address(colour), address(weight),
              address(seen), address(known), float(smoothing), float(outlier_levels))
