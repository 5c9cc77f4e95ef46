/* The texture capture's C kernels, built by core/texture/_native.py through core/native.py. */
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
