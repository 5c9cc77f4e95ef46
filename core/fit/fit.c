/* The fitting's C kernel, built by core/fit/_native.py through core/native.py;
   the most shape coefficients comes from Python (MAX_BETAS). */
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
