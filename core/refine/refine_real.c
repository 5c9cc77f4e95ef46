/* The refinement's C kernels (skinning, projection, regularizers, silhouette reduction): a
   template compiled once per float type. core/refine/_native.py (_FLAVOURS) substitutes the
   C type, the function suffix and the math functions; follows refine.h. */
/* ------------------------------ REAL kernels (suffix SFX) ------------------------------ */

/* per hand, the joint workspace: R (9), G_R (9), G_t (3), J rest (3) per joint */
#define JW 24
#define MAX_JOINTS 64

static void rodrigues_SFX(const REAL *v, REAL *R) {
    REAL a0 = v[0] + (REAL)1e-8, a1 = v[1] + (REAL)1e-8, a2 = v[2] + (REAL)1e-8;
    REAL th = SQRT(a0 * a0 + a1 * a1 + a2 * a2);
    REAL kx = v[0] / th, ky = v[1] / th, kz = v[2] / th;
    REAL s = SIN(th), c1 = 1 - COS(th);
    REAL K[9] = {0, -kz, ky, kz, 0, -kx, -ky, kx, 0};
    for (int a = 0; a < 3; ++a)
        for (int b = 0; b < 3; ++b) {
            REAL kk = 0;
            for (int m = 0; m < 3; ++m) kk += K[3 * a + m] * K[3 * m + b];
            R[3 * a + b] = (a == b) + s * K[3 * a + b] + c1 * kk;
        }
}

/* g_v += sum_ab gR[a][b] dR[a][b] / dv_i, the exact derivative of rodrigues_SFX */
static void rodrigues_grad_SFX(const REAL *v, const REAL *gR, REAL *gv) {
    REAL a0 = v[0] + (REAL)1e-8, a1 = v[1] + (REAL)1e-8, a2 = v[2] + (REAL)1e-8;
    REAL ap[3] = {a0, a1, a2};
    REAL th = SQRT(a0 * a0 + a1 * a1 + a2 * a2);
    REAL k[3] = {v[0] / th, v[1] / th, v[2] / th};
    REAL s = SIN(th), c = COS(th), c1 = 1 - c;
    REAL K[9] = {0, -k[2], k[1], k[2], 0, -k[0], -k[1], k[0], 0};
    REAL KK[9];
    for (int a = 0; a < 3; ++a)
        for (int b = 0; b < 3; ++b) {
            REAL t = 0;
            for (int m = 0; m < 3; ++m) t += K[3 * a + m] * K[3 * m + b];
            KK[3 * a + b] = t;
        }
    for (int i = 0; i < 3; ++i) {
        REAL dth = ap[i] / th;
        REAL dk[3];
        for (int m = 0; m < 3; ++m) dk[m] = ((m == i) - k[m] * dth) / th;
        REAL dK[9] = {0, -dk[2], dk[1], dk[2], 0, -dk[0], -dk[1], dk[0], 0};
        REAL acc = 0;
        for (int a = 0; a < 3; ++a)
            for (int b = 0; b < 3; ++b) {
                REAL dkk = 0;
                for (int m = 0; m < 3; ++m) dkk += dK[3 * a + m] * K[3 * m + b] + K[3 * a + m] * dK[3 * m + b];
                REAL d = c * dth * K[3 * a + b] + s * dK[3 * a + b] + s * dth * KK[3 * a + b] + c1 * dkk;
                acc += gR[3 * a + b] * d;
            }
        gv[i] += acc;
    }
}

/* verts (B, V, 3), joints (B, J, 3); work (B, J * JW + 3 V): per hand the joint workspace then
   the shaped (and pose-corrected) vertices. posedirs may be NULL. */
void lbs_forward_SFX(const REAL *pose, const REAL *betas, const REAL *transl,
                     const REAL *v_template, const REAL *shapedirs, const REAL *j_template,
                     const REAL *j_shapedirs, const REAL *posedirs, const REAL *weights,
                     const int64_t *parents, int64_t B, int64_t V, int64_t J, int64_t S,
                     REAL *verts, REAL *joints, REAL *work) {
    for (int64_t b = 0; b < B; ++b) {
        const REAL *be = betas + b * S, *tr = transl + b * 3;
        REAL *w = work + b * (J * JW + 3 * V);
        REAL *vs = w + J * JW;
        for (int64_t i = 0; i < 3 * V; ++i) {
            REAL x = v_template[i];
            for (int64_t s = 0; s < S; ++s) x += be[s] * shapedirs[s * 3 * V + i];
            vs[i] = x;
        }
        for (int64_t j = 0; j < J; ++j) {
            REAL *jw = w + j * JW;
            rodrigues_SFX(pose + b * 3 * J + 3 * j, jw);
            for (int k = 0; k < 3; ++k) {
                REAL x = j_template[3 * j + k];
                for (int64_t s = 0; s < S; ++s) x += be[s] * j_shapedirs[s * 3 * J + 3 * j + k];
                jw[21 + k] = x;
            }
        }
        if (posedirs != NULL) {
            for (int64_t j = 1; j < J; ++j) {
                const REAL *R = w + j * JW;
                for (int m = 0; m < 9; ++m) {
                    REAL f = R[m] - (m % 4 == 0);
                    if (f == 0) continue;
                    const REAL *row = posedirs + ((j - 1) * 9 + m) * 3 * V;
                    for (int64_t i = 0; i < 3 * V; ++i) vs[i] += f * row[i];
                }
            }
        }
        for (int64_t j = 0; j < J; ++j) {
            REAL *jw = w + j * JW, *GR = jw + 9, *Gt = jw + 18, *Jr = jw + 21;
            if (j == 0) {
                for (int m = 0; m < 9; ++m) GR[m] = jw[m];
                for (int k = 0; k < 3; ++k) Gt[k] = Jr[k];
                continue;
            }
            const REAL *pw = w + parents[j] * JW, *PR = pw + 9, *Pt = pw + 18, *Pj = pw + 21;
            for (int a = 0; a < 3; ++a) {
                for (int c = 0; c < 3; ++c)
                    GR[3 * a + c] = PR[3 * a] * jw[c] + PR[3 * a + 1] * jw[3 + c] + PR[3 * a + 2] * jw[6 + c];
                Gt[a] = Pt[a];
                for (int m = 0; m < 3; ++m) Gt[a] += PR[3 * a + m] * (Jr[m] - Pj[m]);
            }
        }
        REAL Ab[MAX_JOINTS * 12];
        for (int64_t j = 0; j < J; ++j) {  /* x -> G_R x + (G_t - G_R J) */
            const REAL *jw = w + j * JW, *GR = jw + 9, *Gt = jw + 18, *Jr = jw + 21;
            for (int a = 0; a < 3; ++a) {
                for (int c = 0; c < 3; ++c) Ab[12 * j + 4 * a + c] = GR[3 * a + c];
                Ab[12 * j + 4 * a + 3] = Gt[a] - (GR[3 * a] * Jr[0] + GR[3 * a + 1] * Jr[1] + GR[3 * a + 2] * Jr[2]);
            }
            for (int k = 0; k < 3; ++k) joints[(b * J + j) * 3 + k] = Gt[k] + tr[k];
        }
        for (int64_t v = 0; v < V; ++v) {
            REAL M[12] = {0};
            const REAL *wv = weights + v * J;
            for (int64_t j = 0; j < J; ++j) {
                REAL wj = wv[j];
                if (wj == 0) continue;
                for (int m = 0; m < 12; ++m) M[m] += wj * Ab[12 * j + m];
            }
            const REAL *x = vs + 3 * v;
            REAL *out = verts + (b * V + v) * 3;
            for (int a = 0; a < 3; ++a)
                out[a] = M[4 * a] * x[0] + M[4 * a + 1] * x[1] + M[4 * a + 2] * x[2] + M[4 * a + 3] + tr[a];
        }
    }
}

/* gradients of sum(g_verts * verts) + sum(g_joints * joints) w.r.t. pose, betas, transl
   (outputs overwritten); work from lbs_forward_SFX with the same inputs */
void lbs_backward_SFX(const REAL *pose, const REAL *shapedirs, const REAL *j_shapedirs,
                      const REAL *posedirs, const REAL *weights, const int64_t *parents,
                      int64_t B, int64_t V, int64_t J, int64_t S, const REAL *work,
                      const REAL *g_verts, const REAL *g_joints, REAL *g_pose, REAL *g_betas,
                      REAL *g_transl, REAL *scratch) {
    /* scratch: 3 V (g_vs) + J * 27 (gA 12, gG_R 9, gG_t 3, gJ 3) + J * 9 (gR) */
    for (int64_t b = 0; b < B; ++b) {
        const REAL *w = work + b * (J * JW + 3 * V);
        const REAL *vs = w + J * JW;
        const REAL *gv = g_verts + b * V * 3, *gj = g_joints + b * J * 3;
        REAL *gvs = scratch, *gA = scratch + 3 * V, *gGR = gA + 12 * J, *gGt = gGR + 9 * J;
        REAL *gJ = gGt + 3 * J, *gR = gJ + 3 * J;
        memset(scratch, 0, sizeof(REAL) * (3 * V + 39 * J));
        REAL gt[3] = {0, 0, 0};
        for (int64_t v = 0; v < V; ++v) {
            const REAL *g = gv + 3 * v, *x = vs + 3 * v, *wv = weights + v * J;
            gt[0] += g[0]; gt[1] += g[1]; gt[2] += g[2];
            REAL MR[9] = {0};
            for (int64_t j = 0; j < J; ++j) {
                REAL wj = wv[j];
                if (wj == 0) continue;
                const REAL *GR = w + j * JW + 9;
                REAL *a = gA + 12 * j;
                for (int r = 0; r < 3; ++r) {
                    REAL wg = wj * g[r];
                    a[4 * r] += wg * x[0]; a[4 * r + 1] += wg * x[1]; a[4 * r + 2] += wg * x[2];
                    a[4 * r + 3] += wg;
                }
                for (int m = 0; m < 9; ++m) MR[m] += wj * GR[m];
            }
            for (int c = 0; c < 3; ++c) gvs[3 * v + c] = MR[c] * g[0] + MR[3 + c] * g[1] + MR[6 + c] * g[2];
        }
        for (int64_t j = 0; j < J; ++j) {
            const REAL *jw = w + j * JW, *GR = jw + 9, *Jr = jw + 21;
            const REAL *a = gA + 12 * j;
            for (int r = 0; r < 3; ++r) {
                REAL gat = a[4 * r + 3];
                for (int c = 0; c < 3; ++c) gGR[9 * j + 3 * r + c] = a[4 * r + c] - gat * Jr[c];
                gGt[3 * j + r] = gat + gj[3 * j + r];
                gt[r] += gj[3 * j + r];
            }
            for (int c = 0; c < 3; ++c)  /* d/dJ of -G_R J */
                gJ[3 * j + c] = -(GR[c] * a[3] + GR[3 + c] * a[7] + GR[6 + c] * a[11]);
        }
        for (int64_t j = J - 1; j >= 1; --j) {
            const REAL *jw = w + j * JW, *Jr = jw + 21;
            int64_t p = parents[j];
            const REAL *pw = w + p * JW, *PR = pw + 9, *Pj = pw + 21;
            REAL *gg = gGR + 9 * j, *gp = gGR + 9 * p, *gtj = gGt + 3 * j;
            REAL rel[3] = {Jr[0] - Pj[0], Jr[1] - Pj[1], Jr[2] - Pj[2]};
            for (int a = 0; a < 3; ++a)
                for (int c = 0; c < 3; ++c)
                    gR[9 * j + 3 * a + c] += PR[a] * gg[c] + PR[3 + a] * gg[3 + c] + PR[6 + a] * gg[6 + c];
            for (int r = 0; r < 3; ++r)
                for (int a = 0; a < 3; ++a)
                    gp[3 * r + a] += gg[3 * r] * jw[3 * a] + gg[3 * r + 1] * jw[3 * a + 1]
                                     + gg[3 * r + 2] * jw[3 * a + 2] + gtj[r] * rel[a];
            for (int a = 0; a < 3; ++a) {
                REAL grel = PR[a] * gtj[0] + PR[3 + a] * gtj[1] + PR[6 + a] * gtj[2];
                gJ[3 * j + a] += grel;
                gJ[3 * p + a] -= grel;
                gGt[3 * p + a] += gtj[a];
            }
        }
        for (int m = 0; m < 9; ++m) gR[m] += gGR[m];
        for (int k = 0; k < 3; ++k) gJ[k] += gGt[k];
        if (posedirs != NULL) {
            for (int64_t j = 1; j < J; ++j)
                for (int m = 0; m < 9; ++m) {
                    const REAL *row = posedirs + ((j - 1) * 9 + m) * 3 * V;
                    REAL acc = 0;
                    for (int64_t i = 0; i < 3 * V; ++i) acc += row[i] * gvs[i];
                    gR[9 * j + m] += acc;
                }
        }
        REAL *gp = g_pose + b * 3 * J;
        for (int64_t i = 0; i < 3 * J; ++i) gp[i] = 0;
        for (int64_t j = 0; j < J; ++j) rodrigues_grad_SFX(pose + b * 3 * J + 3 * j, gR + 9 * j, gp + 3 * j);
        for (int64_t s = 0; s < S; ++s) {
            const REAL *row = shapedirs + s * 3 * V, *jrow = j_shapedirs + s * 3 * J;
            REAL acc = 0;
            for (int64_t i = 0; i < 3 * V; ++i) acc += row[i] * gvs[i];
            for (int64_t i = 0; i < 3 * J; ++i) acc += jrow[i] * gJ[i];
            g_betas[b * S + s] = acc;
        }
        for (int k = 0; k < 3; ++k) g_transl[b * 3 + k] = gt[k];
    }
}

/* The face edges (corner k to k + 1) of H (e) and M (r) for the face with corners c, and
   M's face normal n = r0 x (-r2) = (M1 - M0) x (M2 - M0), not normalized. */
static inline void face_edges_SFX(const REAL *h, const REAL *m, const int64_t *c, REAL e[3][3],
                                  REAL r[3][3], REAL n[3]) {
    for (int k = 0; k < 3; ++k) {
        int64_t i0 = c[k], i1 = c[k == 2 ? 0 : k + 1];
        for (int x = 0; x < 3; ++x) {
            e[k][x] = h[3 * i1 + x] - h[3 * i0 + x];
            r[k][x] = m[3 * i1 + x] - m[3 * i0 + x];
        }
    }
    n[0] = -(r[0][1] * r[2][2] - r[0][2] * r[2][1]);
    n[1] = -(r[0][2] * r[2][0] - r[0][0] * r[2][2]);
    n[2] = -(r[0][0] * r[2][1] - r[0][1] * r[2][0]);
}

/* Faces per block of edge_normal: its per-face values live on the stack (EN_VALUES per face). */
#define EN_BLOCK 128
#define EN_VALUES 24

/* edge_normal's per-face values for faces f0 .. f0 + n - 1 of one hand, component-major
   (value v of block face i at out[v EN_BLOCK + i]): v 0-2 each edge's t^2, 3-5 its cos^2;
   with grad also 6-14 de (edge k, axis x at 6 + 3 k + x: what H's corner k + 1 gains and
   corner k loses), 15-17 2 dE/dr2 of each edge (M's corners gain and lose it times the edge),
   18-20 da and 21-23 db (what M's corners 1 and 2 gain and corner 0 loses). Faces are
   independent, so this loop vectorizes; edge_normal adds the values up face after face, in
   the order (and with the rounding) of a single loop over the faces. */
static void edge_normal_block_SFX(const REAL *h, const REAL *m, const int64_t *faces, int64_t f0, int64_t n,
                                  REAL we, REAL wn, int grad, REAL *restrict out) {
    for (int64_t i = 0; i < n; ++i) {
        const int64_t *c = faces + 3 * (f0 + i);
        REAL e[3][3], r[3][3], nv[3];
        face_edges_SFX(h, m, c, e, r, nv);
        REAL nn = nv[0] * nv[0] + nv[1] * nv[1] + nv[2] * nv[2];
        REAL gnv[3] = {0, 0, 0};  /* d/dn of this face's normal terms */
#pragma GCC unroll 3
        for (int k = 0; k < 3; ++k) {
            REAL l2 = e[k][0] * e[k][0] + e[k][1] * e[k][1] + e[k][2] * e[k][2];
            REAL r2raw = r[k][0] * r[k][0] + r[k][1] * r[k][1] + r[k][2] * r[k][2];
            int r2clamped = r2raw < (REAL)1e-16;
            REAL r2 = r2clamped ? (REAL)1e-16 : r2raw;
            REAL t = (l2 - r2) / r2;
            out[k * EN_BLOCK + i] = t * t;
            REAL dot = e[k][0] * nv[0] + e[k][1] * nv[1] + e[k][2] * nv[2];
            REAL qraw = l2 * nn;
            int qclamped = qraw < (REAL)1e-30;
            REAL q = qclamped ? (REAL)1e-30 : qraw;
            REAL cos2 = dot * dot / q;
            out[(3 + k) * EN_BLOCK + i] = cos2;
            if (!grad) continue;
            /* edge: dE/dl2 = 2 t / r2, dE/dr2 = -2 t l2 / r2^2 */
            REAL d_l2 = we * 2 * t / r2;
            REAL d_r2 = r2clamped ? 0 : -we * 2 * t * l2 / (r2 * r2);
            /* normal: d/ddot = 2 dot / q, d/dl2 = -cos2 / l2, d/dnn = -cos2 / nn */
            REAL d_dot = wn * 2 * dot / q;
            REAL d_l2n = qclamped ? 0 : -wn * cos2 / l2;
            REAL d_nn = qclamped ? 0 : -wn * cos2 / nn;
            d_l2 += d_l2n;
#pragma GCC unroll 3
            for (int x = 0; x < 3; ++x) gnv[x] += 2 * d_nn * nv[x];
#pragma GCC unroll 3
            for (int x = 0; x < 3; ++x) gnv[x] += d_dot * e[k][x];
#pragma GCC unroll 3
            for (int x = 0; x < 3; ++x)
                out[(6 + 3 * k + x) * EN_BLOCK + i] = 2 * d_l2 * e[k][x] + d_dot * nv[x];
            out[(15 + k) * EN_BLOCK + i] = 2 * d_r2;
        }
        if (!grad) continue;
        /* n = a x b, a = M1 - M0, b = M2 - M0: d/da = b x g, d/db = g x a */
        REAL a[3] = {r[0][0], r[0][1], r[0][2]}, bb[3] = {-r[2][0], -r[2][1], -r[2][2]};
        out[18 * EN_BLOCK + i] = bb[1] * gnv[2] - bb[2] * gnv[1];
        out[19 * EN_BLOCK + i] = bb[2] * gnv[0] - bb[0] * gnv[2];
        out[20 * EN_BLOCK + i] = bb[0] * gnv[1] - bb[1] * gnv[0];
        out[21 * EN_BLOCK + i] = gnv[1] * a[2] - gnv[2] * a[1];
        out[22 * EN_BLOCK + i] = gnv[2] * a[0] - gnv[0] * a[2];
        out[23 * EN_BLOCK + i] = gnv[0] * a[1] - gnv[1] * a[0];
    }
}

/* Edge and normal-consistency terms of H against M (core.refine.mesh), per hand:
     edge = mean_{f,k} ((|e|^2 - |r|^2) / |r|^2)^2,  normal = mean_{f,k} <e, n>^2 / (|e|^2 |n|^2)
   with e, r the face edges (corner k to k + 1) of H and M and n = (M1 - M0) x (M2 - M0).
   With gH != NULL, also adds ge[b] d(edge)/dH + gn[b] d(normal)/dH to gH, likewise gM.
   The faces' values come from edge_normal_block, a block of faces at a time; the sums and the
   gradients are formed here in face order. */
void edge_normal_SFX(const REAL *H, const REAL *M, const int64_t *faces, int64_t B, int64_t V,
                     int64_t F, REAL *edge, REAL *normal, const REAL *ge, const REAL *gn,
                     REAL *gH, REAL *gM) {
    const REAL inv = (REAL)1 / (REAL)(3 * F);
    REAL block[EN_VALUES * EN_BLOCK];
    for (int64_t b = 0; b < B; ++b) {
        const REAL *h = H + b * V * 3, *m = M + b * V * 3;
        double se = 0, sn = 0;
        REAL we = gH ? ge[b] * inv : 0, wn = gH ? gn[b] * inv : 0;
        REAL *gh = gH ? gH + b * V * 3 : NULL, *gm = gM ? gM + b * V * 3 : NULL;
        for (int64_t f0 = 0; f0 < F; f0 += EN_BLOCK) {
            int64_t n = F - f0 < EN_BLOCK ? F - f0 : EN_BLOCK;
            edge_normal_block_SFX(h, m, faces, f0, n, we, wn, gh != NULL, block);
            for (int64_t i = 0; i < n; ++i) {
                const int64_t *c = faces + 3 * (f0 + i);
                for (int k = 0; k < 3; ++k) {
                    se += block[k * EN_BLOCK + i];
                    sn += block[(3 + k) * EN_BLOCK + i];
                    if (gh == NULL) continue;
                    int64_t i0 = c[k], i1 = c[k == 2 ? 0 : k + 1];
                    REAL d_r2 = block[(15 + k) * EN_BLOCK + i];
                    for (int x = 0; x < 3; ++x) {
                        REAL de = block[(6 + 3 * k + x) * EN_BLOCK + i];
                        REAL dr = d_r2 * (m[3 * i1 + x] - m[3 * i0 + x]);
                        gh[3 * i1 + x] += de;
                        gh[3 * i0 + x] -= de;
                        gm[3 * i1 + x] += dr;
                        gm[3 * i0 + x] -= dr;
                    }
                }
                if (gh == NULL) continue;
                for (int x = 0; x < 3; ++x) {
                    REAL da = block[(18 + x) * EN_BLOCK + i], db = block[(21 + x) * EN_BLOCK + i];
                    gm[3 * c[1] + x] += da;
                    gm[3 * c[2] + x] += db;
                    gm[3 * c[0] + x] -= da + db;
                }
            }
        }
        edge[b] = (REAL)(se * inv);
        normal[b] = (REAL)(sn * inv);
    }
}

/* Paper 004's plausibility errors of H against M (core.refine.mesh.plausibility), per hand:
     edge = mean_{f,k} | |e| - |r| |,  normal = mean_{f,k} |<e / |e|, n / |n|>| */
void plausibility_SFX(const REAL *H, const REAL *M, const int64_t *faces, int64_t B, int64_t V,
                      int64_t F, REAL *edge, REAL *normal) {
    for (int64_t b = 0; b < B; ++b) {
        const REAL *h = H + b * V * 3, *m = M + b * V * 3;
        double se = 0, sn = 0;
        for (int64_t f = 0; f < F; ++f) {
            const int64_t *c = faces + 3 * f;
            REAL e[3][3], r[3][3], n[3];
            face_edges_SFX(h, m, c, e, r, n);
            REAL nl = SQRT(n[0] * n[0] + n[1] * n[1] + n[2] * n[2]);
            nl = nl > (REAL)1e-12 ? nl : (REAL)1e-12;
            for (int k = 0; k < 3; ++k) {
                REAL le = SQRT(e[k][0] * e[k][0] + e[k][1] * e[k][1] + e[k][2] * e[k][2]);
                REAL lr = SQRT(r[k][0] * r[k][0] + r[k][1] * r[k][1] + r[k][2] * r[k][2]);
                se += FABS(le - lr);
                REAL dot = e[k][0] * n[0] + e[k][1] * n[1] + e[k][2] * n[2];
                sn += FABS(dot) / (nl * (le > (REAL)1e-12 ? le : (REAL)1e-12));
            }
        }
        edge[b] = (REAL)(se / (3.0 * F));
        normal[b] = (REAL)(sn / (3.0 * F));
    }
}

/* Offset regularizers (core.refine.mesh.offset_losses), per hand, with the uniform Laplacian
   (L u)_v = u_v - inv_deg_v sum_{k in N(v)} u_k (adjacency in CSR: nbr[ptr[v]:ptr[v + 1]]):
     vertex = sum |u|^2 / V,  laplacian = sum |L u|^2 / V;  lu (B, V, 3) receives L u. */
void offset_losses_SFX(const REAL *u, const int64_t *ptr, const int64_t *nbr,
                       const REAL *inv_deg, int64_t B, int64_t V, REAL *vertex, REAL *lap,
                       REAL *lu) {
    for (int64_t b = 0; b < B; ++b) {
        const REAL *x = u + b * V * 3;
        REAL *y = lu + b * V * 3;
        double sv = 0, sl = 0;
        for (int64_t v = 0; v < V; ++v) {
            REAL s[3] = {0, 0, 0};
            for (int64_t m = ptr[v]; m < ptr[v + 1]; ++m)
                for (int c = 0; c < 3; ++c) s[c] += x[3 * nbr[m] + c];
            for (int c = 0; c < 3; ++c) {
                REAL xv = x[3 * v + c], yv = xv - inv_deg[v] * s[c];
                y[3 * v + c] = yv;
                sv += xv * xv;
                sl += yv * yv;
            }
        }
        vertex[b] = (REAL)(sv / V);
        lap[b] = (REAL)(sl / V);
    }
}

/* grad = 2 / V (g_vertex u + g_lap L^T lu), (L^T y)_k = y_k - sum_{v in N(k)} inv_deg_v y_v */
void offset_grad_SFX(const REAL *u, const REAL *lu, const int64_t *ptr, const int64_t *nbr,
                     const REAL *inv_deg, int64_t B, int64_t V, const REAL *g_vertex,
                     const REAL *g_lap, REAL *grad) {
    for (int64_t b = 0; b < B; ++b) {
        const REAL *x = u + b * V * 3, *y = lu + b * V * 3;
        REAL *g = grad + b * V * 3;
        REAL gv = 2 * g_vertex[b] / V, gl = 2 * g_lap[b] / V;
        for (int64_t k = 0; k < V; ++k) {
            REAL s[3] = {0, 0, 0};
            for (int64_t m = ptr[k]; m < ptr[k + 1]; ++m) {
                int64_t v = nbr[m];
                for (int c = 0; c < 3; ++c) s[c] += inv_deg[v] * y[3 * v + c];
            }
            for (int c = 0; c < 3; ++c)
                g[3 * k + c] = gv * x[3 * k + c] + gl * (y[3 * k + c] - s[c]);
        }
    }
}

/* keep[f] = 1 where face f faces the camera in at least one of the B meshes (B, V, 3):
   (n . (c0 + c1 + c2)) < 0 with n = (c1 - c0) x (c2 - c0), the normal against the view ray.
   Returns the number of faces kept. */
int64_t front_faces_SFX(const REAL *verts, const int64_t *faces, int64_t B, int64_t V, int64_t F,
                        uint8_t *keep) {
    int64_t count = 0;
    for (int64_t f = 0; f < F; ++f) {
        const int64_t *c = faces + 3 * f;
        int front = 0;
        for (int64_t b = 0; b < B && !front; ++b) {
            const REAL *p0 = verts + (b * V + c[0]) * 3, *p1 = verts + (b * V + c[1]) * 3;
            const REAL *p2 = verts + (b * V + c[2]) * 3;
            REAL a[3] = {p1[0] - p0[0], p1[1] - p0[1], p1[2] - p0[2]};
            REAL e[3] = {p2[0] - p0[0], p2[1] - p0[1], p2[2] - p0[2]};
            REAL n[3] = {a[1] * e[2] - a[2] * e[1], a[2] * e[0] - a[0] * e[2], a[0] * e[1] - a[1] * e[0]};
            REAL s = n[0] * (p0[0] + p1[0] + p2[0]) + n[1] * (p0[1] + p1[1] + p2[1]) + n[2] * (p0[2] + p1[2] + p2[2]);
            front = s < 0;
        }
        keep[f] = (uint8_t)front;
        count += front;
    }
    return count;
}

/* Pinhole projection of B x N camera-frame points p with per-batch intrinsics Kc (3 x 3):
   uv = (fx x / z + cx, fy y / z + cy). */
void project_SFX(const REAL *p, const REAL *Kc, int64_t B, int64_t N, REAL *uv) {
    for (int64_t b = 0; b < B; ++b) {
        const REAL *k = Kc + 9 * b;
        const REAL fx = k[0], fy = k[4], cx = k[2], cy = k[5];
        for (int64_t n = 0; n < N; ++n) {
            const REAL *q = p + 3 * (b * N + n);
            uv[2 * (b * N + n)] = fx * q[0] / q[2] + cx;
            uv[2 * (b * N + n) + 1] = fy * q[1] / q[2] + cy;
        }
    }
}

/* Its backward: g_p (B, N, 3) from g_uv (B, N, 2) at the projections uv, and per batch
   g_focal = sum g_u (u - cx) + g_v (v - cy) (the gradient w.r.t. a log scale of fx and fy). */
void project_backward_SFX(const REAL *g_uv, const REAL *uv, const REAL *p, const REAL *Kc,
                          int64_t B, int64_t N, REAL *g_p, REAL *g_focal) {
    for (int64_t b = 0; b < B; ++b) {
        const REAL *k = Kc + 9 * b;
        const REAL fx = k[0], fy = k[4], cx = k[2], cy = k[5];
        double acc = 0;
        for (int64_t n = 0; n < N; ++n) {
            const int64_t i = b * N + n;
            const REAL z = p[3 * i + 2], gu = g_uv[2 * i], gv = g_uv[2 * i + 1];
            const REAL t = gu * (uv[2 * i] - cx) + gv * (uv[2 * i + 1] - cy);
            g_p[3 * i] = gu * fx / z;
            g_p[3 * i + 1] = gv * fy / z;
            g_p[3 * i + 2] = -t / z;
            acc += t;
        }
        g_focal[b] = (REAL)acc;
    }
}

/* The silhouette term of B crops H x W. prod (B, H, Wp): the rasterizer's product of
   (1 - coverage), rows padded to Wp >= W; target, weight (B, H, W); area (B,).
   sil = 1 - prod, r = (sil - target) weight:  loss_b = w_sil sum r^2 / area_b;
   iou_b = |sil > 0.5 and target > 0.5| / |either|, both inside weight > 0 (1 when empty);
   with g (B, H, Wp, zero padding), the input the rasterizer's backward takes:
   dloss/dsil * prod = 2 w_sil r weight / area * prod. */
void silhouette_loss_SFX(const REAL *prod, const REAL *target, const REAL *weight,
                         const REAL *area, int64_t B, int64_t H, int64_t W, int64_t Wp,
                         REAL w_sil, REAL *loss, REAL *iou, REAL *g) {
    for (int64_t b = 0; b < B; ++b) {
        double acc = 0;
        int64_t inter = 0, uni = 0;
        REAL k = 2 * w_sil / area[b];
        for (int64_t y = 0; y < H; ++y) {
            const REAL *p = prod + (b * H + y) * Wp;
            const REAL *t = target + (b * H + y) * W, *w = weight + (b * H + y) * W;
            REAL *gr = g ? g + (b * H + y) * Wp : 0;
            for (int64_t x = 0; x < W; ++x) {
                REAL sil = 1 - p[x], r = (sil - t[x]) * w[x];
                acc += (double)r * r;
                int in = (sil > (REAL)0.5) && (w[x] > 0), tin = (t[x] > (REAL)0.5) && (w[x] > 0);
                inter += in && tin;
                uni += in || tin;
                if (gr) gr[x] = k * r * w[x] * p[x];
            }
            if (gr)
                for (int64_t x = W; x < Wp; ++x) gr[x] = 0;
        }
        loss[b] = (REAL)(w_sil * acc / area[b]);
        iou[b] = uni > 0 ? (REAL)((double)inter / (double)uni) : (REAL)1;
    }
}
