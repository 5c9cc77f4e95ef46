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
(one rounding instead of two); the tests compare the two. Built by :class:`core.native.NativeLibrary`;
where nothing compiles the caller keeps the NumPy path.
"""

from __future__ import annotations

import ctypes

import numpy as np

from core.native import NativeLibrary, address

__all__ = ["LIBRARY", "available", "blend", "colour_gate", "face_stage", "keep", "place"]

_SOURCE = r"""
#include <math.h>
#include <stdint.h>

void texel_place(const int64_t *cand, int64_t nc, const int64_t *face_start,
                 const int64_t *counts, const float *b1, const float *b2,
                 const float *fx, const float *fy, const float *fz, int64_t F,
                 float x_off, float y_off, int64_t crop_w, int64_t crop_h,
                 int64_t *texels, float *col, float *row, float *depth, int32_t *cell,
                 float *zbuf) {
    const int64_t spare = crop_w * crop_h;
    const float hi_x = (float)crop_w - 0.5f, hi_y = (float)crop_h - 0.5f;
    int64_t m = 0;
    for (int64_t i = 0; i < nc; ++i) {
        const int64_t f = cand[i], s = face_start[f], n = counts[i];
        const float x0 = fx[f], y0 = fy[f], z0 = fz[f];
        const float dx1 = fx[F + f] - x0, dx2 = fx[2 * F + f] - x0;
        const float dy1 = fy[F + f] - y0, dy2 = fy[2 * F + f] - y0;
        const float dz1 = fz[F + f] - z0, dz2 = fz[2 * F + f] - z0;
        const float cx = x0 - x_off, cy = y0 - y_off;
        for (int64_t k = 0; k < n; ++k, ++m) {
            const int64_t t = s + k;
            float c = cx, r = cy, z = z0;
            c += b1[t] * dx1;
            c += b2[t] * dx2;
            r += b1[t] * dy1;
            r += b2[t] * dy2;
            z += b1[t] * dz1;
            z += b2[t] * dz2;
            texels[m] = t;
            col[m] = c;
            row[m] = r;
            depth[m] = z;
            int64_t q = spare;
            if (c > -0.5f && c < hi_x && r > -0.5f && r < hi_y)
                q = (int64_t)(r + 0.5f) * crop_w + (int64_t)(c + 0.5f);
            cell[m] = (int32_t)q;
            if (z < zbuf[q]) zbuf[q] = z;
        }
    }
}

/* The face stage: every face's projected corners (image pixels) and depths, its viewing
   cosine (normal against the direction from its centroid to the camera) and whether to sample
   it: turned toward the camera, in front of it, with texels, overlapping the bounds. Writes
   fx, fy, fz (3, F), cos (F), mz (F, 3 x the centroid's depth) and the candidates; returns
   their number and their corners' extent in ext (min x, max x, min y, max y). */
int64_t face_stage(const float *verts, const int64_t *faces_t, int64_t F, const uint8_t *has_texels,
                   float fxk, float fyk, float cxk, float cyk, float lo_x, float hi_x,
                   float lo_y, float hi_y, float *fx, float *fy, float *fz, float *cosv,
                   float *mzv, int64_t *cand, float *ext) {
    int64_t n = 0;
    float ex0 = 1e30f, ex1 = -1e30f, ey0 = 1e30f, ey1 = -1e30f;
    for (int64_t f = 0; f < F; ++f) {
        float X[3], Y[3], Z[3], PX[3], PY[3];
        for (int k = 0; k < 3; ++k) {
            const float *v = verts + 3 * faces_t[k * F + f];
            X[k] = v[0]; Y[k] = v[1]; Z[k] = v[2];
            const float zs = Z[k] > 1e-3f ? Z[k] : 1e-3f;
            PX[k] = X[k] / zs * fxk + cxk;
            PY[k] = Y[k] / zs * fyk + cyk;
            fx[k * F + f] = PX[k]; fy[k * F + f] = PY[k]; fz[k * F + f] = Z[k];
        }
        const float e1x = X[1] - X[0], e1y = Y[1] - Y[0], e1z = Z[1] - Z[0];
        const float e2x = X[2] - X[0], e2y = Y[2] - Y[0], e2z = Z[2] - Z[0];
        const float nx = e1y * e2z - e1z * e2y, ny = e1z * e2x - e1x * e2z, nz = e1x * e2y - e1y * e2x;
        const float mx = X[0] + X[1] + X[2], my = Y[0] + Y[1] + Y[2], mz = Z[0] + Z[1] + Z[2];
        float den = sqrtf((nx * nx + ny * ny + nz * nz) * (mx * mx + my * my + mz * mz));
        if (den < 1e-30f) den = 1e-30f;
        const float c = -(nx * mx + ny * my + nz * mz) / den;
        cosv[f] = c;
        mzv[f] = mz;
        float x0 = PX[0], x1 = PX[0], y0 = PY[0], y1 = PY[0], zmin = Z[0];
        for (int k = 1; k < 3; ++k) {
            x0 = PX[k] < x0 ? PX[k] : x0; x1 = PX[k] > x1 ? PX[k] : x1;
            y0 = PY[k] < y0 ? PY[k] : y0; y1 = PY[k] > y1 ? PY[k] : y1;
            zmin = Z[k] < zmin ? Z[k] : zmin;
        }
        if (c > 0.0f && zmin > 1e-3f && has_texels[f] && x1 >= lo_x && x0 <= hi_x && y1 >= lo_y
            && y0 <= hi_y) {
            cand[n++] = f;
            ex0 = x0 < ex0 ? x0 : ex0; ex1 = x1 > ex1 ? x1 : ex1;
            ey0 = y0 < ey0 ? y0 : ey0; ey1 = y1 > ey1 ? y1 : ey1;
        }
    }
    ext[0] = ex0; ext[1] = ex1; ext[2] = ey0; ext[3] = ey1;
    return n;
}

/* The colour gate's weights applied (see capture._colour_gate): for each sample,
   confidence *= exp(-max(|c - mean|_inv - sigma, 0)^2 / 2), and 0 beyond sigma + cut; then the
   samples whose confidence stays above 1e-3 are compacted in place (texels, colours (3, M)
   rows, confidence). Returns how many remain. */
int64_t colour_gate(int64_t M, int64_t *texels, float *colors, float *conf, const float *mean,
                    const float *inv, float sigma, float cut) {
    int64_t m = 0;
    for (int64_t i = 0; i < M; ++i) {
        const float d0 = colors[i] - mean[0], d1 = colors[M + i] - mean[1], d2 = colors[2 * M + i] - mean[2];
        float q = d0 * (inv[0] * d0 + inv[1] * d1 + inv[2] * d2)
                + d1 * (inv[3] * d0 + inv[4] * d1 + inv[5] * d2)
                + d2 * (inv[6] * d0 + inv[7] * d1 + inv[8] * d2);
        float e = sqrtf(q > 0.0f ? q : 0.0f) - sigma;
        e = e > 0.0f ? e : 0.0f;
        const float c = e > cut ? 0.0f : conf[i] * expf(-0.5f * e * e);
        if (c > 1e-3f) {
            texels[m] = texels[i];
            colors[m] = colors[i];
            colors[M + m] = colors[M + i];
            colors[2 * M + m] = colors[2 * M + i];
            conf[m] = c;
            ++m;
        }
    }
    return m;
}

/* TextureCapture.blend: the confidence-weighted running average (see the module docstring of
   core.texture.capture), outlier-damped where a texel is already trusted. */
void blend(int64_t M, const int64_t *idx, const float *colors, const float *conf, int64_t N,
           float *colour, float *weight, uint8_t *seen, uint8_t *known, float smoothing,
           float outlier_levels) {
    const float inv_o2 = outlier_levels > 0 ? 1.0f / (outlier_levels * outlier_levels) : 0.0f;
    for (int64_t j = 0; j < M; ++j) {
        const int64_t i = idx[j];
        const float old = weight[i];
        float w = conf[j];
        float cur[3], smp[3];
        for (int c = 0; c < 3; ++c) { cur[c] = colour[c * N + i]; smp[c] = colors[c * M + j]; }
        if (outlier_levels > 0) {
            float d2 = 0.0f;
            for (int c = 0; c < 3; ++c) d2 += (smp[c] - cur[c]) * (smp[c] - cur[c]);
            d2 *= 1.0f / 3.0f;
            const float robust = 1.0f / (1.0f + d2 * inv_o2);
            const float trust = old < 1.0f ? old : 1.0f;
            w = w * (1.0f - trust + trust * robust);
        }
        float nw = old * (1.0f - w * (1.0f - smoothing));
        nw += w;
        const float rate = w / nw;
        for (int c = 0; c < 3; ++c) colour[c * N + i] = cur[c] + rate * (smp[c] - cur[c]);
        weight[i] = nw;
        seen[i] = 1;
        known[i] = 1;
    }
}

int64_t texel_keep(const int64_t *counts, int64_t nc, const int64_t *texels, const float *col,
                   const float *row, const float *depth, const int32_t *cell, const float *zmin,
                   const float *edge, const float *tol, const float *angle, float x_off,
                   float y_off, int64_t *out_texels, float *out_x, float *out_y,
                   float *out_conf) {
    int64_t t = 0, m = 0;
    for (int64_t i = 0; i < nc; ++i) {
        const float a = angle[i], limit = tol[i];
        for (int64_t k = 0; k < counts[i]; ++k, ++t) {
            const int32_t q = cell[t];
            float c = a * edge[q];
            if (!(depth[t] <= zmin[q] + limit)) c = 0.0f;
            if (c > 1e-3f) {
                out_texels[m] = texels[t];
                out_x[m] = col[t] + x_off;
                out_y[m] = row[t] + y_off;
                out_conf[m] = c;
                ++m;
            }
        }
    }
    return m;
}
"""


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
LIBRARY = NativeLibrary("texture", lambda: _SOURCE, _declare)


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
