"""The tailor's Gauss-Newton system in C: ``system(R, G, cam, beta) -> (H, g, cost)`` in one call.

:meth:`core.fit.solver.SideSolver.problem` builds the system of one Levenberg-Marquardt
iteration from about forty small NumPy operations; on the CPU that closure is dispatch-bound
(~0.3 ms for a few thousand flops) and is half of a hand's fit. :class:`FitSystem` computes
the same quantities, for the same batch, in one C call; the NumPy closure stays the reference
(the tests compare the two to float rounding) and the path where nothing compiles.

Per hand (B hands, S shape coefficients, P = 51 or 51 + S unknowns), with segments
``b_s = b0_s + bdirs_s beta`` (or the fixed ``segs0``), rotated segments ``r_s = G_a(s) b_s``,
keypoints ``kp_k = t + sum_{s on the path to k} r_s`` (t = cam in perspective, 0 in weak):

* 2D term, rows ``px_k - uv_k``: perspective ``px = (K kp)_xy / max(z, 1e-3)`` with
  ``d px / d kp = (K_xy - px e3^T) / z``; weak ``px = exp(cam_0) kp_xy + cam_12``. The rotation
  columns of joint a for keypoint k are ``d px / d kp (-skew(kp_k - P_a)) G_a``, the camera
  columns ``d px / d kp`` (perspective) or ``[exp(cam_0) kp_xy, I]`` (weak), the shape columns
  ``d px / d kp sum_s G_a(s) bdirs_s``. ``H = J^T J + h_dyn`` (the slowly refreshed blocks of the
  other terms, an input), ``g = J^T r``.
* the priors ``w_i vee(G_init^T G_d)`` (and ``w_t vee(G_prev^T G_d)``, ``w_tt (cam - prev_t)``
  with temporal data), the bone directions ``w_dir / |b0_s| r_s - w_obs_s``, the shape prior
  ``w_s beta``: their world-frame gradients per joint, carried to the local parameterization
  by subtree sums ``g_c = G_c^T sum_{d >= c} y_d``; the direction term's shape gradient.
* the joint-limit hinge ``w_l (angle - clamp(angle, lo, hi))`` on the anatomical angles, with
  its blocks ``w_l^2 f f^T`` on the joint's diagonal block and its gradient, where violated.
  The violations and where the hinge is on are an input, computed by the caller with the
  reference's own NumPy code (``SideSolver._hinge``: a state just projected onto the limits
  has its angles on them, where the switch depends on the last bit of atan2 / asin unless it
  has a margin, ``solver._LIMIT_EPS``).

``cost`` is the sum of all squared residuals, as the NumPy closure's.

:meth:`FitSystem.run` runs ``SideSolver.fit``'s whole Levenberg-Marquardt loop in one call
(``fit_loop_f64``), each hand on its own: the damped solve (Cholesky, LU where that fails),
the Cayley retraction, the projection onto the joint limits (the anatomical angles, computed
in C, with the same margin), the system above, the refresh of the slowly varying blocks, the
accept / reject / damping logic and the tolerance freeze. A fit through it matches the NumPy
loop to float rounding with a margin on the hinge's switch (the tests compare them); without
one, fits where a joint sits on its limit part by the last bit of the angles (a few mm on
single fits, the same accuracy over sets).

Built on first use by :class:`core.native.NativeLibrary` (system C compiler, cached).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

from core.native import NativeLibrary, address

__all__ = ["LIBRARY", "MAX_BETAS", "FitSystem", "Topology", "available"]

#: Most shape coefficients the kernel takes (the caller falls back to NumPy beyond).
MAX_BETAS = 32

_SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <string.h>

#define NK 21  /* keypoints */
#define NS 20  /* segments */
#define NJ 16  /* joints */
#define MAXS MAX_BETAS_VALUE
#define MAXP (51 + MAXS)

/* The rest segments (NS 3) of hand b: b0 + bdirs beta, or the fixed segs0. */
static void segments_of(int fit_shape, int64_t S, const double *b0, const double *bdirs,
                        const double *segs0, int64_t b, const double *beta, double *segs) {
    for (int s = 0; s < NS; ++s)
        for (int c = 0; c < 3; ++c) {
            double x;
            if (fit_shape) {
                x = b0[3 * s + c];
                const double *bd = bdirs + (3 * s + c) * S;
                for (int64_t q = 0; q < S; ++q) x += bd[q] * beta[q];
            } else {
                x = segs0[b * NS * 3 + 3 * s + c];
            }
            segs[3 * s + c] = x;
        }
}

/* The system of hand b at the state G (NJ 9), cam (3), beta (S), viol (2 15 3), with h_dyn hd
   (P P): H (P P), g (P), *cost_out. */
static void system_one(const int64_t *cfg, const double *const *cp, int64_t b, const double *G,
                       const double *cam, const double *beta, const double *viol, const double *hd,
                       double *H, double *g, double *cost_out) {
    const int64_t S = cfg[1], P = cfg[2];
    const int persp = (int)cfg[3], fit_shape = (int)cfg[4], has_world = (int)cfg[5];
    const int temporal = (int)cfg[6];
    const int64_t npairs = cfg[7];
    const int64_t *seg_par = cfg + 8, *seg_chd = seg_par + NS, *seg_joint = seg_chd + NS;
    const int64_t *parents = seg_joint + NS, *joint_kp = parents + NJ;
    const int64_t *pair_k = joint_kp + NJ, *pair_a = pair_k + npairs;
    const double *b0 = cp[0], *bdirs = cp[1], *segs0 = cp[2], *Ginit_all = cp[3];
    const double *wobs_all = cp[4], *wlen = cp[5], *prevG_all = cp[6], *wt_all = cp[7];
    const double *wtt_all = cp[8], *prevt_all = cp[9], *K_all = cp[10], *uv_all = cp[11];
    const double *Fp = cp[12], *wts = cp[13];
    const double wi = wts[0], ws = wts[1], wl = wts[2], wl2 = wl * wl;

    {
        const double *uv = uv_all + b * NK * 2;
        double segs[NS * 3], rot[NS * 3], rel[NK * 3];
        double gb[NS * 3 * MAXS], kb[NK * 3 * MAXS];
        double cost = 0.0;

        /* segments, rotated segments, keypoints relative to the wrist */
        segments_of(fit_shape, S, b0, bdirs, segs0, b, beta, segs);
        for (int s = 0; s < NS; ++s) {
            const double *Ga = G + 9 * seg_joint[s];
            for (int i = 0; i < 3; ++i)
                rot[3 * s + i] = Ga[3 * i] * segs[3 * s] + Ga[3 * i + 1] * segs[3 * s + 1]
                                 + Ga[3 * i + 2] * segs[3 * s + 2];
        }
        rel[0] = rel[1] = rel[2] = 0.0;
        for (int s = 0; s < NS; ++s)
            for (int i = 0; i < 3; ++i)
                rel[3 * seg_chd[s] + i] = rel[3 * seg_par[s] + i] + rot[3 * s + i];
        if (fit_shape) {
            /* gb_s = G_a(s) bdirs_s (3 x S); kb_k = its sum over the path to k */
            for (int s = 0; s < NS; ++s) {
                const double *Ga = G + 9 * seg_joint[s];
                const double *bd = bdirs + 3 * s * S;
                double *o = gb + 3 * s * S;
                for (int i = 0; i < 3; ++i)
                    for (int64_t q = 0; q < S; ++q)
                        o[i * S + q] = Ga[3 * i] * bd[q] + Ga[3 * i + 1] * bd[S + q]
                                       + Ga[3 * i + 2] * bd[2 * S + q];
            }
            for (int64_t q = 0; q < 3 * S; ++q) kb[q] = 0.0;
            for (int s = 0; s < NS; ++s) {
                double *o = kb + 3 * S * seg_chd[s];
                const double *p = kb + 3 * S * seg_par[s], *d = gb + 3 * S * s;
                for (int64_t q = 0; q < 3 * S; ++q) o[q] = p[q] + d[q];
            }
        }

        memcpy(H, hd, sizeof(double) * (size_t)(P * P));
        memset(g, 0, sizeof(double) * (size_t)P);

        /* the 2D term, per keypoint: its two Jacobian rows on the rotation columns of the joints
           above it (rr, in blocks of 3) and on the T = P - 48 trailing camera / shape columns
           (tt). The trailing block of J^T J and its rotation rows accumulate in TT and RT. */
        const int64_t T = P - 48;
        double TT[(MAXP - 48) * (MAXP - 48)], RT[48 * (MAXP - 48)];
        memset(TT, 0, sizeof(double) * (size_t)(T * T));
        memset(RT, 0, sizeof(double) * (size_t)(48 * T));
        int64_t p = 0;
        for (int k = 0; k < NK; ++k) {
            double kp[3], px[2], dp[6];
            for (int i = 0; i < 3; ++i) kp[i] = rel[3 * k + i] + (persp ? cam[i] : 0.0);
            if (persp) {
                const double *K = K_all + 9 * b;
                double z = kp[2] > 1e-3 ? kp[2] : 1e-3;
                double iz = 1.0 / z;
                for (int i = 0; i < 2; ++i) {
                    px[i] = (K[3 * i] * kp[0] + K[3 * i + 1] * kp[1] + K[3 * i + 2] * kp[2]) * iz;
                    for (int j = 0; j < 3; ++j)
                        dp[3 * i + j] = iz * (K[3 * i + j] - (j == 2 ? px[i] : 0.0));
                }
            } else {
                double sc = exp(cam[0]);
                px[0] = sc * kp[0] + cam[1];
                px[1] = sc * kp[1] + cam[2];
                dp[0] = sc; dp[1] = 0.0; dp[2] = 0.0;
                dp[3] = 0.0; dp[4] = sc; dp[5] = 0.0;
            }
            const double r0 = px[0] - uv[2 * k], r1 = px[1] - uv[2 * k + 1];
            cost += r0 * r0 + r1 * r1;
            int64_t joints[NJ];
            double rr0[3 * NJ], rr1[3 * NJ], tt0[MAXP - 48], tt1[MAXP - 48];
            int m = 0;
            for (; p < npairs && pair_k[p] == k; ++p, ++m) {
                const int64_t a = pair_a[p];
                const double *Ga = G + 9 * a, *Pa = rel + 3 * joint_kp[a];
                const double d[3] = {rel[3 * k] - Pa[0], rel[3 * k + 1] - Pa[1], rel[3 * k + 2] - Pa[2]};
                for (int i = 0; i < 2; ++i) {
                    const double *v = dp + 3 * i;
                    /* v^T (-skew(d)) = (d x v)^T */
                    const double m0 = d[1] * v[2] - d[2] * v[1];
                    const double m1 = d[2] * v[0] - d[0] * v[2];
                    const double m2 = d[0] * v[1] - d[1] * v[0];
                    double *row = (i ? rr1 : rr0) + 3 * m;
                    for (int j = 0; j < 3; ++j) row[j] = m0 * Ga[j] + m1 * Ga[3 + j] + m2 * Ga[6 + j];
                }
                joints[m] = a;
            }
            if (persp) {
                for (int j = 0; j < 3; ++j) { tt0[j] = dp[j]; tt1[j] = dp[3 + j]; }
            } else {
                const double sc = exp(cam[0]);
                tt0[0] = sc * kp[0]; tt0[1] = 1.0; tt0[2] = 0.0;
                tt1[0] = sc * kp[1]; tt1[1] = 0.0; tt1[2] = 1.0;
            }
            if (fit_shape) {
                const double *kk = kb + 3 * S * k;
                for (int64_t q = 0; q < S; ++q) {
                    tt0[3 + q] = dp[0] * kk[q] + dp[1] * kk[S + q] + dp[2] * kk[2 * S + q];
                    tt1[3 + q] = dp[3] * kk[q] + dp[4] * kk[S + q] + dp[5] * kk[2 * S + q];
                }
            }
            for (int64_t i = 0; i < T; ++i) {
                g[48 + i] += tt0[i] * r0 + tt1[i] * r1;
                double *o = TT + i * T;
                const double a0 = tt0[i], a1 = tt1[i];
                for (int64_t j = 0; j < T; ++j) o[j] += a0 * tt0[j] + a1 * tt1[j];
            }
            for (int u = 0; u < m; ++u) {
                const int64_t cu = 3 * joints[u];
                for (int i = 0; i < 3; ++i) {
                    const double a0 = rr0[3 * u + i], a1 = rr1[3 * u + i];
                    g[cu + i] += a0 * r0 + a1 * r1;
                    double *o = RT + (cu + i) * T;
                    for (int64_t j = 0; j < T; ++j) o[j] += a0 * tt0[j] + a1 * tt1[j];
                    /* rotation-rotation blocks (u, v >= u), mirrored */
                    for (int v = u; v < m; ++v) {
                        const int64_t cv = 3 * joints[v];
                        for (int j = (v == u ? i : 0); j < 3; ++j) {
                            const double x = a0 * rr0[3 * v + j] + a1 * rr1[3 * v + j];
                            H[(cu + i) * P + cv + j] += x;
                            if (cv + j != cu + i) H[(cv + j) * P + cu + i] += x;
                        }
                    }
                }
            }
        }
        for (int64_t i = 0; i < T; ++i)
            for (int64_t j = 0; j < T; ++j) H[(48 + i) * P + 48 + j] += TT[i * T + j];
        for (int64_t c = 0; c < 48; ++c)
            for (int64_t j = 0; j < T; ++j) {
                H[c * P + 48 + j] += RT[c * T + j];
                H[(48 + j) * P + c] += RT[c * T + j];
            }

        /* the rotation priors: world-frame gradients y_d = G_d x_d */
        double y[NJ * 3];
        const double *Gi = Ginit_all + b * NJ * 9;
        const double *Gp = temporal ? prevG_all + b * NJ * 9 : NULL;
        const double wt = temporal ? wt_all[b] : 0.0;
        for (int d = 0; d < NJ; ++d) {
            const double *Gd = G + 9 * d;
            double x[3];
            for (int t = 0; t < 1 + temporal; ++t) {
                const double *A0 = (t ? Gp : Gi) + 9 * d;
                double A[9];
                for (int i = 0; i < 3; ++i)
                    for (int j = 0; j < 3; ++j)
                        A[3 * i + j] = A0[i] * Gd[j] + A0[3 + i] * Gd[3 + j] + A0[6 + i] * Gd[6 + j];
                const double w = t ? wt : wi;
                double v0 = w * 0.5 * (A[7] - A[5]), v1 = w * 0.5 * (A[2] - A[6]), v2 = w * 0.5 * (A[3] - A[1]);
                cost += v0 * v0 + v1 * v1 + v2 * v2;
                if (t) { x[0] += w * v0; x[1] += w * v1; x[2] += w * v2; }
                else { x[0] = w * v0; x[1] = w * v1; x[2] = w * v2; }
            }
            for (int i = 0; i < 3; ++i) y[3 * d + i] = Gd[3 * i] * x[0] + Gd[3 * i + 1] * x[1] + Gd[3 * i + 2] * x[2];
        }
        if (temporal) {
            const double wtt = wtt_all[b];
            for (int c = 0; c < 3; ++c) {
                double r = wtt * (cam[c] - prevt_all[3 * b + c]);
                cost += r * r;
                g[48 + c] += wtt * r;
            }
        }
        if (has_world) {
            const double *wobs = wobs_all + b * NS * 3;
            for (int s = 0; s < NS; ++s) {
                const double *r = rot + 3 * s;
                double wr[3];
                for (int i = 0; i < 3; ++i) {
                    double rd = wlen[s] * r[i] - wobs[3 * s + i];
                    cost += rd * rd;
                    wr[i] = wlen[s] * rd;
                }
                double *ya = y + 3 * seg_joint[s];
                ya[0] += r[1] * wr[2] - r[2] * wr[1];
                ya[1] += r[2] * wr[0] - r[0] * wr[2];
                ya[2] += r[0] * wr[1] - r[1] * wr[0];
                if (fit_shape) {
                    const double *o = gb + 3 * S * s;
                    for (int64_t q = 0; q < S; ++q)
                        g[51 + q] += o[q] * wr[0] + o[S + q] * wr[1] + o[2 * S + q] * wr[2];
                }
            }
        }
        if (fit_shape)
            for (int64_t q = 0; q < S; ++q) {
                double r = ws * beta[q];
                cost += r * r;
                g[51 + q] += ws * r;
            }
        /* to the local parameterization: subtree sums, then G_c^T */
        for (int d = NJ - 1; d > 0; --d)
            for (int i = 0; i < 3; ++i) y[3 * parents[d] + i] += y[3 * d + i];
        for (int c = 0; c < NJ; ++c) {
            const double *Gc = G + 9 * c, *yc = y + 3 * c;
            for (int j = 0; j < 3; ++j) g[3 * c + j] += Gc[j] * yc[0] + Gc[3 + j] * yc[1] + Gc[6 + j] * yc[2];
        }

        /* the joint-limit hinge: violations (twist, bend, spread) and where the hinge is on
           (viol[45..89], nonzero: violated or on a limit) given, blocks w_l^2 f f^T where on,
           gradients where violated */
        for (int j = 0; j < NJ - 1; ++j) {
            const double *F = Fp + 9 * j;
            const int64_t c0 = 3 * (j + 1);
            for (int e = 0; e < 3; ++e) {
                const double v = viol[3 * j + e];
                if (v != 0.0) {
                    cost += wl2 * v * v;
                    for (int r = 0; r < 3; ++r) g[c0 + r] += wl2 * v * F[3 * r + e];
                }
                if (viol[45 + 3 * j + e] != 0.0)
                    for (int r = 0; r < 3; ++r)
                        for (int r2 = 0; r2 < 3; ++r2) H[(c0 + r) * P + c0 + r2] += wl2 * F[3 * r + e] * F[3 * r2 + e];
            }
        }
        *cost_out = cost;
    }
}

/* cfg: B, S, P, persp, fit_shape, has_world, temporal, npairs, then the topology:
   seg_parent[NS], seg_child[NS] (keypoints; parents first), seg_joint[NS], parents[NJ]
   (parents[d] < d), joint_kp[NJ], pair_k[npairs] (ascending), pair_a[npairs].
   cp: b0 (NS 3), bdirs (NS 3 S), segs0 (B NS 3) or NULL, G_init (B NJ 9), w_obs (B NS 3) or
   NULL, wlen (NS), prev_G (B NJ 9), wt (B), wtt (B), prev_t (B 3) or NULLs, K (B 9) or NULL,
   uv (B NK 2), Fp (15 3 3), weights (wi, ws, wl), the state: G (B NJ 9), cam (B 3),
   beta (B S), the joint-limit violations and where the hinge is on (B 2 15 3).
   h_dyn: (B P P) added to H. out: H (B P P), g (B P), cost (B). */
void fit_system_f64(const int64_t *cfg, const double *const *cp, const double *h_dyn, double *out) {
    const int64_t B = cfg[0], S = cfg[1], P = cfg[2];
    double *H_all = out, *g_all = out + B * P * P, *cost_all = g_all + B * P;
    const double *Gl = cp[14], *cam_all = Gl + B * NJ * 9, *beta_all = cam_all + 3 * B;
    const double *viol_all = beta_all + B * S;
    for (int64_t b = 0; b < B; ++b)
        system_one(cfg, cp, b, Gl + b * NJ * 9, cam_all + 3 * b, beta_all + b * S, viol_all + b * 90,
                   h_dyn + b * P * P, H_all + b * P * P, g_all + b * P, cost_all + b);
}

/* ------------------------------------------------------------------ the whole loop */

/* o = a b, o = a^T b (3 x 3, row-major; o distinct from a and b) */
static void mul3(const double *a, const double *b, double *o) {
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j)
            o[3 * i + j] = a[3 * i] * b[j] + a[3 * i + 1] * b[3 + j] + a[3 * i + 2] * b[6 + j];
}
static void mul3t(const double *a, const double *b, double *o) {
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j)
            o[3 * i + j] = a[i] * b[j] + a[3 + i] * b[3 + j] + a[6 + i] * b[6 + j];
}

/* G_0 = R_0, G_d = G_parent(d) R_d */
static void global_from_local(const int64_t *parents, const double *R, double *G) {
    memcpy(G, R, sizeof(double) * 9);
    for (int d = 1; d < NJ; ++d) mul3(G + 9 * parents[d], R + 9 * d, G + 9 * d);
}

/* anatomical angles (twist, bend, spread) of joints 1..15 of the local rotations R: from the
   five entries A21, A10, A22, A00, -A20 of A = F^T R F (Meul: 15 9 5) */
static void anatomical_angles(const double *Meul, const double *R, double *ang) {
    for (int j = 0; j < NJ - 1; ++j) {
        const double *r = R + 9 * (j + 1), *M = Meul + 45 * j;
        double a5[5];
        for (int e = 0; e < 5; ++e) {
            double x = 0.0;
            for (int i = 0; i < 9; ++i) x += r[i] * M[5 * i + e];
            a5[e] = x;
        }
        const double s = a5[4] < -1.0 ? -1.0 : (a5[4] > 1.0 ? 1.0 : a5[4]);
        ang[3 * j] = atan2(a5[0], a5[2]);
        ang[3 * j + 1] = atan2(a5[1], a5[3]);
        ang[3 * j + 2] = asin(s);
    }
}

static double clampd(double x, double lo, double hi) {
    x = x > lo ? x : lo;  /* NaN stays NaN through neither branch: as np.maximum, np.minimum */
    return x < hi ? x : hi;
}

/* the joint-limit violations angle - clamp(angle) (viol[0..44]) and where the hinge is on
   (viol[45..89]): outside the limits or within eps of one */
static void violations(const double *Meul, const double *lo, const double *hi, double eps,
                       const double *R, double *viol) {
    anatomical_angles(Meul, R, viol);
    for (int i = 0; i < 45; ++i) {
        const double a = viol[i];
        const int on = a < lo[i] + eps || a > hi[i] - eps;
        viol[i] = on ? a - clampd(a, lo[i], hi[i]) : 0.0;
        viol[45 + i] = on ? 1.0 : 0.0;
    }
}

/* clamp each joint's angles into the limits and rebuild F Rz(bend) Ry(spread) Rx(twist) F^T
   (every joint of the hand, as the reference does, where any angle was out) */
static void clamp_local(const double *Meul, const double *lo, const double *hi, const double *F,
                        double *R) {
    double ang[45], cl[45];
    int out = 0;
    anatomical_angles(Meul, R, ang);
    for (int i = 0; i < 45; ++i) {
        cl[i] = clampd(ang[i], lo[i], hi[i]);
        out |= cl[i] != ang[i];
    }
    if (!out) return;
    for (int j = 0; j < NJ - 1; ++j) {
        const double ct = cos(cl[3 * j]), st = sin(cl[3 * j]);
        const double cb = cos(cl[3 * j + 1]), sb = sin(cl[3 * j + 1]);
        const double cs = cos(cl[3 * j + 2]), ss = sin(cl[3 * j + 2]);
        const double rx[9] = {1.0, 0.0, 0.0, 0.0, ct, -st, 0.0, st, ct};
        const double rz[9] = {cb, -sb, 0.0, sb, cb, 0.0, 0.0, 0.0, 1.0};
        const double ry[9] = {cs, 0.0, ss, 0.0, 1.0, 0.0, -ss, 0.0, cs};
        const double *f = F + 9 * j;
        double a[9], m[9], fm[9];
        mul3(rz, ry, a);
        mul3(a, rx, m);
        mul3(f, m, fm);
        double *r = R + 9 * (j + 1);
        for (int i = 0; i < 3; ++i)  /* (F M) F^T */
            for (int k = 0; k < 3; ++k)
                r[3 * i + k] = fm[3 * i] * f[3 * k] + fm[3 * i + 1] * f[3 * k + 1] + fm[3 * i + 2] * f[3 * k + 2];
    }
}

/* R <- R cay(v): (I - W)^-1 (I + W) = I + s (W + W^2), W = skew(v / 2), s = 2 / (1 + |v|^2 / 4) */
static void retract(double *R, const double *v) {
    const double x = 0.5 * v[0], y = 0.5 * v[1], z = 0.5 * v[2];
    const double k[9] = {0.0, -z, y, z, 0.0, -x, -y, x, 0.0};
    const double s = 2.0 / (1.0 + (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]) * 0.25);
    double kk[9], c[9], o[9];
    mul3(k, k, kk);
    for (int i = 0; i < 9; ++i) c[i] = s * (k[i] + kk[i]);
    c[0] += 1.0; c[4] += 1.0; c[8] += 1.0;
    mul3(R, c, o);
    memcpy(R, o, sizeof(o));
}

/* solve A x = b (n x n, symmetric; A is overwritten): Cholesky, else LU with partial pivoting
   on the symmetric matrix rebuilt from its upper triangle. Returns 0, or -1 where singular. */
static int solve_sym(int64_t n, double *A, const double *b, double *x, double *lu) {
    memcpy(lu, A, sizeof(double) * (size_t)(n * n));
    int ok = 1;
    for (int64_t j = 0; j < n && ok; ++j) {  /* lower factor L in A's lower triangle */
        double d = A[j * n + j];
        for (int64_t k = 0; k < j; ++k) d -= A[j * n + k] * A[j * n + k];
        if (!(d > 0.0)) { ok = 0; break; }
        d = sqrt(d);
        A[j * n + j] = d;
        const double id = 1.0 / d;
        for (int64_t i = j + 1; i < n; ++i) {
            double s = A[j * n + i];  /* the upper triangle keeps A */
            for (int64_t k = 0; k < j; ++k) s -= A[i * n + k] * A[j * n + k];
            A[i * n + j] = s * id;
        }
    }
    if (ok) {
        for (int64_t i = 0; i < n; ++i) {
            double s = b[i];
            for (int64_t k = 0; k < i; ++k) s -= A[i * n + k] * x[k];
            x[i] = s / A[i * n + i];
        }
        for (int64_t i = n - 1; i >= 0; --i) {
            double s = x[i];
            for (int64_t k = i + 1; k < n; ++k) s -= A[k * n + i] * x[k];
            x[i] = s / A[i * n + i];
        }
        return 0;
    }
    /* LU with partial pivoting (as numpy.linalg.solve) */
    for (int64_t i = 0; i < n; ++i) x[i] = b[i];
    for (int64_t j = 0; j < n; ++j) {
        int64_t p = j;
        double best = fabs(lu[j * n + j]);
        for (int64_t i = j + 1; i < n; ++i)
            if (fabs(lu[i * n + j]) > best) { best = fabs(lu[i * n + j]); p = i; }
        if (!(best > 0.0)) return -1;
        if (p != j) {
            for (int64_t k = 0; k < n; ++k) { double t = lu[j * n + k]; lu[j * n + k] = lu[p * n + k]; lu[p * n + k] = t; }
            double t = x[j]; x[j] = x[p]; x[p] = t;
        }
        const double id = 1.0 / lu[j * n + j];
        for (int64_t i = j + 1; i < n; ++i) {
            const double f = lu[i * n + j] * id;
            if (f == 0.0) continue;
            for (int64_t k = j + 1; k < n; ++k) lu[i * n + k] -= f * lu[j * n + k];
            x[i] -= f * x[j];
        }
    }
    for (int64_t i = n - 1; i >= 0; --i) {
        double s = x[i];
        for (int64_t k = i + 1; k < n; ++k) s -= lu[i * n + k] * x[k];
        x[i] = s / lu[i * n + i];
    }
    return 0;
}

/* The slowly varying blocks of H at a state (the reference's refresh): h_const, plus the
   priors' and directions' rotation blocks G_c^T y_deep G_c' for joints c, c' on one chain,
   y_d = n_sub(d) w_rot I + sum over the segments below d of w^2/|b0|^2 skew(r)^T skew(r), plus
   the directions' rotation-shape coupling. */
static void refresh_one(const int64_t *cfg, const double *const *cp, int64_t b, const double *G,
                        const double *beta, const double *h_const, double w_rot, double *hnew) {
    const int64_t S = cfg[1], P = cfg[2];
    const int fit_shape = (int)cfg[4], has_world = (int)cfg[5];
    const int64_t *seg_joint = cfg + 8 + 2 * NS, *parents = seg_joint + NS;
    const double *b0 = cp[0], *bdirs = cp[1], *segs0 = cp[2], *wlen = cp[5];
    memcpy(hnew, h_const, sizeof(double) * (size_t)(P * P));
    int below[NJ][NJ];
    memset(below, 0, sizeof(below));
    for (int d = 0; d < NJ; ++d)
        for (int64_t p = d; p >= 0; p = p ? parents[p] : -1) below[p][d] = 1;
    double y[NJ * 9];
    for (int d = 0; d < NJ; ++d) {
        int n = 0;
        for (int e = 0; e < NJ; ++e) n += below[d][e];
        for (int i = 0; i < 9; ++i) y[9 * d + i] = (i % 4 == 0) ? n * w_rot : 0.0;
    }
    double rot[NS * 3], segs[NS * 3];
    segments_of(fit_shape, S, b0, bdirs, segs0, b, beta, segs);
    for (int s = 0; s < NS; ++s) {
        const double *sg = segs + 3 * s;
        const double *Ga = G + 9 * seg_joint[s];
        for (int i = 0; i < 3; ++i) rot[3 * s + i] = Ga[3 * i] * sg[0] + Ga[3 * i + 1] * sg[1] + Ga[3 * i + 2] * sg[2];
    }
    if (has_world)
        for (int s = 0; s < NS; ++s) {
            const double *r = rot + 3 * s, w2 = wlen[s] * wlen[s];
            const double rr = r[0] * r[0] + r[1] * r[1] + r[2] * r[2];
            double X[9];
            for (int i = 0; i < 3; ++i)
                for (int j = 0; j < 3; ++j) X[3 * i + j] = w2 * ((i == j ? rr : 0.0) - r[i] * r[j]);
            for (int64_t d = seg_joint[s]; d >= 0; d = d ? parents[d] : -1)
                for (int i = 0; i < 9; ++i) y[9 * d + i] += X[i];
        }
    for (int c1 = 0; c1 < NJ; ++c1)
        for (int c2 = 0; c2 < NJ; ++c2) {
            if (!below[c1][c2] && !below[c2][c1]) continue;
            const int deep = below[c1][c2] ? c2 : c1;
            double t[9], o[9];
            mul3t(G + 9 * c1, y + 9 * deep, t);
            mul3(t, G + 9 * c2, o);
            for (int i = 0; i < 3; ++i)
                for (int j = 0; j < 3; ++j) hnew[(3 * c1 + i) * P + 3 * c2 + j] += o[3 * i + j];
        }
    if (fit_shape && has_world) {
        double Z[NJ * 3 * MAXS];
        memset(Z, 0, sizeof(double) * (size_t)(NJ * 3 * S));
        for (int s = 0; s < NS; ++s) {
            const double *r = rot + 3 * s, *Ga = G + 9 * seg_joint[s], *bd = bdirs + 3 * s * S;
            const double w2 = wlen[s] * wlen[s];
            const double k[9] = {0.0, -r[2], r[1], r[2], 0.0, -r[0], -r[1], r[0], 0.0};
            double ks[9], W[3 * MAXS];
            mul3(k, Ga, ks);
            for (int i = 0; i < 3; ++i)
                for (int64_t q = 0; q < S; ++q)
                    W[i * S + q] = w2 * (ks[3 * i] * bd[q] + ks[3 * i + 1] * bd[S + q] + ks[3 * i + 2] * bd[2 * S + q]);
            for (int64_t d = seg_joint[s]; d >= 0; d = d ? parents[d] : -1)
                for (int64_t q = 0; q < 3 * S; ++q) Z[3 * S * d + q] += W[q];
        }
        for (int d = 0; d < NJ; ++d) {
            const double *Gd = G + 9 * d, *z = Z + 3 * S * d;
            for (int i = 0; i < 3; ++i)
                for (int64_t q = 0; q < S; ++q) {
                    const double c = Gd[i] * z[q] + Gd[3 + i] * z[S + q] + Gd[6 + i] * z[2 * S + q];
                    hnew[(3 * d + i) * P + 51 + q] += c;
                    hnew[(51 + q) * P + 3 * d + i] += c;
                }
        }
    }
}

/* Levenberg-Marquardt, each hand on its own (SideSolver.fit's loop).
   cfg, cp: as fit_system_f64 (its state buffer unused). lcfg: n_iter, project_every,
   refresh_every. lp: Meul (15 9 5), lo, hi (15 3), F (15 3 3), h_const (B P P), w_rot (B),
   scalars (lm_lambda, tolerance, max_beta, limit_eps). io: R, G (B NJ 9), cam (B 3), beta (B S),
   ran (B): the start in, the end out (R projected onto the limits, G from it).
   work: 6 P P doubles. */
void fit_loop_f64(const int64_t *cfg, const double *const *cp, const int64_t *lcfg,
                  const double *const *lp, double *io, double *work) {
    const int64_t B = cfg[0], S = cfg[1], P = cfg[2];
    const int fit_shape = (int)cfg[4];
    const int64_t *parents = cfg + 8 + 3 * NS;
    const int64_t n_iter = lcfg[0], every = lcfg[1], refresh_every = lcfg[2];
    const double *Meul = lp[0], *lo = lp[1], *hi = lp[2], *F = lp[3], *hconst_all = lp[4];
    const double *wrot_all = lp[5], *sc = lp[6];
    const double lam0 = sc[0], tol = sc[1], max_beta = sc[2], eps = sc[3];
    double *R_all = io, *G_all = R_all + B * NJ * 9, *cam_all = G_all + B * NJ * 9;
    double *beta_all = cam_all + 3 * B, *ran_all = beta_all + B * S;
    const size_t PP = (size_t)(P * P);
    double *H = work, *Hn = H + PP, *hdyn = Hn + PP, *hnew = hdyn + PP, *A = hnew + PP;
    double *LU = A + PP;

    for (int64_t b = 0; b < B; ++b) {
        double R[NJ * 9], G[NJ * 9], cam[3], beta[MAXS];
        double Rn[NJ * 9], Gn[NJ * 9], camn[3], betan[MAXS];
        double g[MAXP], gn[MAXP], rhs[MAXP], delta[MAXP], viol[90], cost, costn;
        const double *hconst = hconst_all + b * PP;
        memcpy(R, R_all + b * NJ * 9, sizeof(R));
        memcpy(G, G_all + b * NJ * 9, sizeof(G));
        memcpy(cam, cam_all + 3 * b, sizeof(cam));
        for (int64_t q = 0; q < S; ++q) beta[q] = beta_all[b * S + q];
        double lam = lam0;
        int converged = 0;
        int64_t ran = 0;
        refresh_one(cfg, cp, b, G, beta, hconst, wrot_all[b], hdyn);
        violations(Meul, lo, hi, eps, R, viol);
        system_one(cfg, cp, b, G, cam, beta, viol, hdyn, H, g, &cost);
        for (int64_t it = 0; it < n_iter; ++it) {
            if (tol > 0.0 && it >= every && converged) break;
            ++ran;
            if (it && it % refresh_every == 0) {
                refresh_one(cfg, cp, b, G, beta, hconst, wrot_all[b], hnew);
                for (size_t i = 0; i < PP; ++i) H[i] = H[i] + (hnew[i] - hdyn[i]);
                double *t = hdyn; hdyn = hnew; hnew = t;
            }
            memcpy(A, H, sizeof(double) * PP);
            for (int64_t i = 0; i < P; ++i) {
                A[i * P + i] = H[i * P + i] + (lam * H[i * P + i] + 1e-6);
                rhs[i] = -g[i];
            }
            int ok = solve_sym(P, A, rhs, delta, LU) == 0;
            if (ok) {
                memcpy(Rn, R, sizeof(R));
                for (int d = 0; d < NJ; ++d) retract(Rn + 9 * d, delta + 3 * d);
                if ((it + 1) % every == 0) clamp_local(Meul, lo, hi, F, Rn);
                global_from_local(parents, Rn, Gn);
                for (int i = 0; i < 3; ++i) camn[i] = cam[i] + delta[48 + i];
                for (int64_t q = 0; q < S; ++q)
                    betan[q] = fit_shape ? clampd(beta[q] + delta[51 + q], -max_beta, max_beta) : beta[q];
                violations(Meul, lo, hi, eps, Rn, viol);
                system_one(cfg, cp, b, Gn, camn, betan, viol, hdyn, Hn, gn, &costn);
                ok = costn < cost;
            }
            if (ok) {  /* keep a step only where it lowered the cost */
                converged = cost - costn < tol * cost;
                memcpy(R, Rn, sizeof(R)); memcpy(G, Gn, sizeof(G)); memcpy(cam, camn, sizeof(cam));
                for (int64_t q = 0; q < S; ++q) beta[q] = betan[q];
                double *t = H; H = Hn; Hn = t;
                memcpy(g, gn, sizeof(double) * (size_t)P);
                cost = costn;
                lam *= 0.5;
            } else {
                lam *= 4.0;
            }
        }
        clamp_local(Meul, lo, hi, F, R);
        global_from_local(parents, R, G);
        memcpy(R_all + b * NJ * 9, R, sizeof(R));
        memcpy(G_all + b * NJ * 9, G, sizeof(G));
        memcpy(cam_all + 3 * b, cam, sizeof(cam));
        for (int64_t q = 0; q < S; ++q) beta_all[b * S + q] = beta[q];
        ran_all[b] = (double)ran;
    }
}
"""


def source() -> str:
    """The complete C source."""
    return _SOURCE.replace("MAX_BETAS_VALUE", str(MAX_BETAS))


def _declare(lib: ctypes.CDLL) -> None:
    fn = lib.fit_system_f64
    fn.argtypes = [ctypes.c_void_p] * 4
    fn.restype = None
    fn = lib.fit_loop_f64
    fn.argtypes = [ctypes.c_void_p] * 6
    fn.restype = None


#: The kernel's library (built on first use).
LIBRARY = NativeLibrary("fit", source, _declare, hold_gil=True)  # ~10 us a call


def available() -> bool:
    """Whether the kernel built (builds it on the first call)."""
    return LIBRARY.get() is not None


def _f64(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float64)


@dataclass(frozen=True)
class Topology:
    """One hand model's constants the kernel reads (NumPy; built once per solver).

    Attributes:
        b0: (20, 3) rest segments, metres. bdirs: (20, 3, S) their shape directions.
        seg_parent, seg_child: (20,) int keypoints at each segment's ends (parents first).
        seg_joint: (20,) int joint turning each segment. parents: (16,) int MANO tree
            (parents[d] < d). joint_kp: (16,) int keypoint of each joint.
        pair_k, pair_a: (n,) int the (keypoint, joint above it) pairs, keypoints ascending.
        Fp: (15, 3, 3) each angle's axis (columns) in the joint's frame.
        Meul: (15, 9, 5) the anatomical angles' entries of ``F^T R F`` from ``R``'s.
        lo_p, hi_p: (15, 3) the joint limits (twist, bend, spread), radians.
        F: (15, 3, 3) the joints' rest frames (the loop's projection onto the limits).
    """

    b0: np.ndarray
    bdirs: np.ndarray
    seg_parent: np.ndarray
    seg_child: np.ndarray
    seg_joint: np.ndarray
    parents: np.ndarray
    joint_kp: np.ndarray
    pair_k: np.ndarray
    pair_a: np.ndarray
    Fp: np.ndarray
    Meul: np.ndarray
    lo_p: np.ndarray
    hi_p: np.ndarray
    F: np.ndarray

    def __post_init__(self) -> None:
        if not (np.all(np.diff(self.pair_k) >= 0) and np.all(self.parents[1:] < np.arange(1, 16))
                and np.all(self.seg_parent < self.seg_child)):
            raise ValueError("the kernel needs pairs sorted by keypoint and parents before children")


class FitSystem:
    """``system(G, cam, beta, viol, h_dyn) -> (H, g, cost)`` of one fit (one batch) in C.

    Args (NumPy float64; B hands):
        top: the model's :class:`Topology`. fit_shape: shape columns (P = 51 + S) or not (51).
        uv: (B, 21, 2) pixels. K: (B, 3, 3) or None (weak perspective). G_init: (B, 16, 3, 3)
        the identity prior's rotations. wlen: (20,) w_dir / |b0_s|. w_obs: (B, 20, 3) weighted
        observed directions, or None (no direction term). segs0: (B, 20, 3) the segments when
        the shape is fixed. prev_G: (B, 16, 3, 3), wt, wtt: (B,) weights (0 where a hand has no
        previous frame), prev_t: (B, 3), or all None (no temporal term). wi, ws, wl: identity,
        shape and limit weights. h_const: (B, P, P) the constant part of ``h_dyn`` and
        w_rot: (B,) the priors' weight on each rotation, squared (identity + temporal), both
        needed by :meth:`run` only.
    """

    def __init__(self, top: Topology, fit_shape: bool, uv, K, G_init, wlen, w_obs, segs0,
                 prev_G, wt, wtt, prev_t, wi: float, ws: float, wl: float,
                 h_const=None, w_rot=None) -> None:
        self._top = top
        self._loop_keep = None if h_const is None else [
            _f64(top.Meul), _f64(top.lo_p), _f64(top.hi_p), _f64(top.F), _f64(h_const),
            _f64(np.reshape(w_rot, -1))]
        lib = LIBRARY.require()
        self._fn = lib.fit_system_f64
        self.B = b = uv.shape[0]
        S = top.bdirs.shape[-1]
        if S > MAX_BETAS:
            raise ValueError(f"the kernel takes at most {MAX_BETAS} shape coefficients, not {S}")
        self.P = 51 + (S if fit_shape else 0)
        temporal = prev_G is not None
        ints = [b, S, self.P, K is not None, fit_shape, w_obs is not None, temporal, len(top.pair_k),
                *top.seg_parent, *top.seg_child, *top.seg_joint, *top.parents, *top.joint_kp,
                *top.pair_k, *top.pair_a]
        self._cfg = np.asarray(ints, dtype=np.int64)
        # The state is copied into one buffer per call (cheaper than looking up four addresses).
        self._state = np.zeros(b * (144 + 3 + S + 90))
        n = b * 144
        self._G = self._state[:n].reshape(b, 16, 3, 3)
        self._cam = self._state[n:n + 3 * b].reshape(b, 3)
        self._beta = self._state[n + 3 * b:n + 3 * b + b * S].reshape(b, S)
        self._viol = self._state[n + 3 * b + b * S:].reshape(b, 2, 15, 3)
        self._fit_shape = fit_shape
        arrays = [top.b0, top.bdirs, None if fit_shape else segs0, G_init, w_obs, wlen,
                  prev_G, None if wt is None else np.reshape(wt, b), None if wtt is None else np.reshape(wtt, b),
                  prev_t, K, uv, top.Fp, np.array([wi, ws, wl]), self._state]
        self._keep = [None if a is None else _f64(a) for a in arrays]
        self._cp = np.asarray([0 if a is None else address(a) for a in self._keep], dtype=np.int64)
        self._cfg_ptr, self._cp_ptr = address(self._cfg), address(self._cp)
        self._h = self._h_ptr = None
        self._h_shape = (b, self.P, self.P)

    def __call__(self, G: np.ndarray, cam: np.ndarray, beta: np.ndarray | None, viol: np.ndarray,
                 h_dyn: np.ndarray, on: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """H (B, P, P), g (B, P), cost (B,) at a state: G (B, 16, 3, 3) global rotations,
        cam (B, 3), beta (B, S) (read only when fitting the shape), viol (B, 15, 3) the
        anatomical angles' violations of the joint limits (twist, bend, spread; 0 inside),
        h_dyn (B, P, P), on (B, 15, 3) bool where the hinge's blocks enter H (default: where
        violated). Not reentrant (one state buffer): one call at a time."""
        b, P = self.B, self.P
        self._G[...] = G
        self._viol[:, 0] = viol
        self._viol[:, 1] = viol != 0 if on is None else on
        self._cam[...] = cam
        if self._fit_shape:
            self._beta[...] = beta
        if h_dyn is not self._h:  # h_dyn changes every few iterations: keep its address
            h = _f64(h_dyn)
            if h.shape != self._h_shape:
                raise ValueError(f"h_dyn is {h.shape}, not {self._h_shape}")
            self._h, self._h_ptr, self._h_keep = h_dyn, address(h), h
        out = np.empty(b * (P * P + P + 1))  # one allocation: H, then g, then cost
        self._fn(self._cfg_ptr, self._cp_ptr, self._h_ptr, address(out))
        n = b * P * P
        H = out[:n].reshape(b, P, P)
        g = out[n:n + b * P].reshape(b, P)
        cost = out[n + b * P:]
        return H, g, cost

    def run(self, R: np.ndarray, G: np.ndarray, cam: np.ndarray, beta: np.ndarray, *, n_iter: int,
            project_every: int, refresh_every: int, lm_lambda: float, tolerance: float,
            max_beta: float, limit_eps: float = 0.0):
        """The whole Levenberg-Marquardt loop of :meth:`core.fit.solver.SideSolver.fit` in one
        C call, each hand on its own: the damped solve (Cholesky, else LU), the Cayley
        retraction, the projection onto the limits every ``project_every`` iterations, the
        system, the refresh of ``h_dyn`` every ``refresh_every`` iterations, the accept / reject
        and damping logic and the tolerance freeze; then the final projection.

        Args:
            R, G: (B, 16, 3, 3) the start's local and global rotations; cam (B, 3); beta (B, S).
            limit_eps: the hinge's blocks enter H where an angle is outside its limits or
                within this (radians) of one (:func:`core.fit.solver.SideSolver._hinge`).

        Returns:
            R, G (projected onto the limits), cam, beta, ran: (B,) int64 iterations run.
        """
        if self._loop_keep is None:
            raise ValueError("this FitSystem was built without h_const / w_rot")
        b, P, S = self.B, self.P, self._beta.shape[1]
        io = np.concatenate([np.reshape(R, -1), np.reshape(G, -1), np.reshape(cam, -1),
                             np.reshape(beta, -1), np.zeros(b)]).astype(np.float64, copy=False)
        scalars = np.array([lm_lambda, tolerance, max_beta, limit_eps], dtype=np.float64)
        lp = np.asarray([address(a) for a in (*self._loop_keep, scalars)], dtype=np.int64)
        lcfg = np.array([n_iter, max(1, project_every), max(1, refresh_every)], dtype=np.int64)
        work = np.empty(6 * P * P)
        LIBRARY.require().fit_loop_f64(self._cfg_ptr, self._cp_ptr, address(lcfg), address(lp),
                                       address(io), address(work))
        n = b * 144
        R = io[:n].reshape(b, 16, 3, 3)
        G = io[n:2 * n].reshape(b, 16, 3, 3)
        cam = io[2 * n:2 * n + 3 * b].reshape(b, 3)
        beta_out = io[2 * n + 3 * b:2 * n + 3 * b + b * S].reshape(b, S)
        ran = io[2 * n + 3 * b + b * S:].astype(np.int64)
        return R, G, cam, beta_out, ran
