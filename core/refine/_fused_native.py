"""The live refinement's whole evaluation (loss and gradient) in one C call.

:func:`core.refine.fused.loss_and_grad` chains about twenty C kernels (skinning, projection,
soft rasterizer, silhouette reduction, regularizers and their backward passes) with a few
dozen NumPy operations of glue. In a stream that glue costs more than the kernels it joins
(about 1.5 ms of a 4 ms evaluation on the demo), and every call in and out of C competes for
the GIL with the detector's and the texture's threads. :class:`NativeEvaluation` does the same
arithmetic in one C function, built from the same kernels (their sources are compiled into
this library with it) and run with the GIL released: the other threads keep both cores busy
while it runs.

It computes exactly what :func:`core.refine.fused.loss_and_grad` computes (the NumPy glue
stays the reference, and the fallback where this library does not build); the tests check
values and gradients against it and against ``Refiner._evaluate`` + autograd.

Arguments travel as one table of pointers, one of sizes and one of scalars, laid out by the
name lists below (the C source's indices are generated from them): a call sets the
evaluation's outputs and offsets in a table whose fixed entries (model, crop, topology) were
filled once per refinement call.
"""

from __future__ import annotations

import ctypes

import numpy as np

from core.native import NativeLibrary, address
from core.refine import _native as _refine_kernels
from core.render import _native as _raster_kernels

__all__ = ["LIBRARY", "NativeEvaluation", "available"]

#: Entries of the pointer table, in order (C: ``P(name)``). Model, crop, topology, offsets,
#: then the outputs. ``posedirs``, ``pose_mean``, ``keypoints``, ``slack`` and the gradients
#: may be NULL.
POINTERS = (
    "v_template", "shapedirs", "j_template", "j_shapedirs", "posedirs", "weights", "parents",
    "pose_mean", "tip_ids", "mp_order",
    "pose0", "betas0", "transl0", "t_scale", "edge0", "K", "affine", "target", "weight", "area",
    "keypoints", "faces", "topo_faces", "adj_ptr", "adj_nbr", "inv_deg",
    "dp", "ds", "du", "dt", "df", "slack",
    "loss", "iou", "verts", "base", "keypoints_3d", "K_img",
    "g_pose", "g_shape", "g_vertices", "g_translation", "g_focal",
    "theta", "lr", "best_theta", "best_loss", "best_iteration", "best_iou", "iou_before",
)
#: Entries of the size table (C: ``N(name)``): hands, vertices, joints, shape coefficients,
#: drawn faces, all faces, crop height and width, rasterizer threads, flags (FLAG_*).
SIZES = ("B", "V", "J", "S", "F", "FT", "H", "W", "threads", "flags")
#: Entries of the scalar table (C: ``X(name)``), doubles.
SCALARS = ("z_near", "inv_sigma", "r2", "w_silhouette", "w_keypoints", "w_vertex", "w_laplacian",
           "w_edge", "w_normal", "w_pose", "w_shape", "keypoint_scale_px", "slack_tolerance_px")
FLAG_GRAD, FLAG_FREE_FOCAL, FLAG_USE_SLACK, FLAG_SLACK_GIVEN, FLAG_KEYPOINTS = 1, 2, 4, 8, 16
_THREADS, _FLAGS = SIZES.index("threads"), SIZES.index("flags")
_INDEX = {name: i for i, name in enumerate(POINTERS)}
_WEIGHTS = ("silhouette", "keypoints", "vertex", "laplacian", "edge", "normal", "pose", "shape")

_EVAL = r"""
/* ---------------------- the whole evaluation (suffix SFX, type REAL) ---------------------- */

#define P(name) (p[P_##name])
#define N(name) (n[N_##name])
#define X(name) ((REAL)x[X_##name])

static void *take_SFX(void **list, int *count, size_t bytes, int zero) {
    void *q = zero ? calloc(bytes > 0 ? bytes : 1, 1) : malloc(bytes > 0 ? bytes : 1);
    list[(*count)++] = q;
    return q;
}

/* core.refine.fused.loss_and_grad, step for step. Returns 0, or -1 when out of memory. */
int refine_eval_SFX(void *const *p, const int64_t *n, const double *x) {
    const int64_t B = N(B), V = N(V), J = N(J), S = N(S), F = N(F), FT = N(FT), H = N(H), W = N(W);
    const int64_t flags = N(flags), stride = W + LANES, NK = 21, PJ = 3 * J;
    const int grad = (flags & FLAG_GRAD) != 0, free_focal = (flags & FLAG_FREE_FOCAL) != 0;
    const int use_slack = (flags & FLAG_USE_SLACK) != 0, slack_given = (flags & FLAG_SLACK_GIVEN) != 0;
    const int has_kp = (flags & FLAG_KEYPOINTS) != 0;
    const REAL wv = X(w_vertex), wl = X(w_laplacian), we = X(w_edge), wn = X(w_normal);
    const REAL *dp = (const REAL *)P(dp), *ds = (const REAL *)P(ds), *du = (const REAL *)P(du);
    const REAL *dt = (const REAL *)P(dt), *df = (const REAL *)P(df);
    const REAL *edge0 = (const REAL *)P(edge0), *t_scale = (const REAL *)P(t_scale);
    const REAL *pose_mean = (const REAL *)P(pose_mean);
    const int64_t *mp_order = (const int64_t *)P(mp_order), *tip_ids = (const int64_t *)P(tip_ids);
    REAL *loss = (REAL *)P(loss), *verts = (REAL *)P(verts), *base = (REAL *)P(base);
    REAL *kp3 = (REAL *)P(keypoints_3d), *K_img = (REAL *)P(K_img), *slack = (REAL *)P(slack);
    void *mem[32];
    int used = 0, status = -1;
#define TAKE(type, count, zero) ((type *)take_SFX(mem, &used, sizeof(type) * (size_t)(count), zero))
    REAL *pose = TAKE(REAL, B * PJ, 0), *betas = TAKE(REAL, B * S, 0), *transl = TAKE(REAL, B * 3, 0);
    REAL *joints = TAKE(REAL, B * J * 3, 0), *work = TAKE(REAL, B * (J * JW + 3 * V), 0);
    REAL *Kc = TAKE(REAL, B * 9, 0), *uv = TAKE(REAL, B * V * 2, 0);
    REAL *prod = TAKE(REAL, B * H * stride, 0);
    uint8_t *cover = TAKE(uint8_t, B * H * stride, 1);
    void *ws = TAKE(uint8_t, B * F * softras_face_bytes_SFX(), 0);
    REAL *g_sil = grad ? TAKE(REAL, B * H * stride, 0) : NULL;
    REAL *kuv = TAKE(REAL, B * NK * 2, 0), *g_kuv = TAKE(REAL, B * NK * 2, 1);
    REAL *lu = TAKE(REAL, B * V * 3, 0), *scal = TAKE(REAL, 6 * B, 0);
    REAL *gv_en = grad ? TAKE(REAL, B * V * 3, 1) : NULL, *gb_en = grad ? TAKE(REAL, B * V * 3, 1) : NULL;
    for (int i = 0; i < used; ++i)
        if (mem[i] == NULL) goto done;
    REAL *vtx = scal, *lap = scal + B, *edge = scal + 2 * B, *normal = scal + 3 * B;
    REAL *ge = scal + 4 * B, *gn = scal + 5 * B;

    /* the model at the offsets: pose (+ the model's mean), shape, translation (crop px) */
    for (int64_t b = 0; b < B; ++b) {
        for (int64_t i = 0; i < PJ; ++i) {
            REAL v = ((const REAL *)P(pose0))[b * PJ + i] + dp[b * PJ + i];
            pose[b * PJ + i] = pose_mean ? v + pose_mean[i] : v;
        }
        for (int64_t i = 0; i < S; ++i) betas[b * S + i] = ((const REAL *)P(betas0))[b * S + i] + ds[b * S + i];
        for (int k = 0; k < 3; ++k)
            transl[b * 3 + k] = ((const REAL *)P(transl0))[b * 3 + k] + dt[b * 3 + k] * t_scale[b * 3 + k];
    }
    lbs_forward_SFX(pose, betas, transl, P(v_template), P(shapedirs), P(j_template), P(j_shapedirs),
                    P(posedirs), P(weights), P(parents), B, V, J, S, base, joints, work);
    for (int64_t b = 0; b < B; ++b) {
        for (int64_t k = 0; k < NK; ++k) {  /* keypoints: joints and fingertip vertices, MediaPipe order */
            int64_t src = mp_order[k];
            const REAL *q = src < J ? joints + (b * J + src) * 3 : base + (b * V + tip_ids[src - J]) * 3;
            for (int c = 0; c < 3; ++c) kp3[(b * NK + k) * 3 + c] = q[c];
        }
        for (int64_t i = 0; i < V * 3; ++i) verts[b * V * 3 + i] = base[b * V * 3 + i] + du[b * V * 3 + i] * edge0[b];
        REAL s = free_focal ? (REAL)EXP(df[b]) : (REAL)1;
        const REAL *K = (const REAL *)P(K) + 9 * b, *A = (const REAL *)P(affine) + 9 * b;
        REAL *Ki = K_img + 9 * b;
        for (int r = 0; r < 3; ++r)
            for (int c = 0; c < 3; ++c) Ki[3 * r + c] = c < 2 ? K[3 * r + c] * s : K[3 * r + c];
        for (int r = 0; r < 3; ++r)
            for (int c = 0; c < 3; ++c)
                Kc[9 * b + 3 * r + c] = A[3 * r] * Ki[c] + A[3 * r + 1] * Ki[3 + c] + A[3 * r + 2] * Ki[6 + c];
    }

    /* silhouette: the soft rasterizer and the term's reduction */
    project_SFX(verts, Kc, B, V, uv);
    for (int64_t i = 0; i < B * H * stride; ++i) prod[i] = 1;
    if (softras_forward_SFX(uv, verts, (const int64_t *)P(faces), B, V, F, H, W, stride, X(z_near),
                            X(inv_sigma), X(r2), N(threads), prod, cover, ws) != 0) goto done;
    silhouette_loss_SFX(prod, P(target), P(weight), P(area), B, H, W, stride, X(w_silhouette), loss,
                        (REAL *)P(iou), g_sil);

    /* keypoints: distance to MediaPipe's beyond the slack */
    if (has_kp) {
        const REAL *target_kp = (const REAL *)P(keypoints);
        const REAL unit = X(w_keypoints) / (NK * X(keypoint_scale_px) * X(keypoint_scale_px));
        const double tol = x[X_slack_tolerance_px];
        project_SFX(kp3, Kc, B, NK, kuv);
        for (int64_t b = 0; b < B; ++b) {
            REAL sum = 0;
            for (int64_t k = 0; k < NK; ++k) {
                int64_t i = b * NK + k;
                REAL dx = kuv[2 * i] - target_kp[2 * i], dy = kuv[2 * i + 1] - target_kp[2 * i + 1];
                REAL dist = SQRT(dx * dx + dy * dy), excess = dist;
                if (use_slack) {
                    if (!slack_given) slack[i] = tol >= 0 && dist > (REAL)tol ? (REAL)tol : dist;
                    excess = dist - slack[i] > 0 ? dist - slack[i] : 0;
                }
                sum += excess * excess;
                REAL gk = 2 * unit * (excess / (dist > (REAL)1e-12 ? dist : (REAL)1e-12));
                g_kuv[2 * i] = gk * dx;
                g_kuv[2 * i + 1] = gk * dy;
            }
            loss[b] += unit * sum;
        }
    }

    /* regularizers of the vertex offsets and of the mesh against the parametric one */
    const int64_t *adj_ptr = (const int64_t *)P(adj_ptr), *adj_nbr = (const int64_t *)P(adj_nbr);
    if (wv != 0 || wl != 0) {
        offset_losses_SFX(du, adj_ptr, adj_nbr, P(inv_deg), B, V, vtx, lap, lu);
        for (int64_t b = 0; b < B; ++b) loss[b] += wv * vtx[b] + wl * lap[b];
    }
    int en = we != 0 || wn != 0;
    if (en) {
        for (int64_t b = 0; b < B; ++b) { ge[b] = we; gn[b] = wn; }
        edge_normal_SFX(verts, base, (const int64_t *)P(topo_faces), B, V, FT, edge, normal, ge, gn, gv_en, gb_en);
        for (int64_t b = 0; b < B; ++b) loss[b] += we * edge[b] + wn * normal[b];
    }
    for (int64_t b = 0; b < B; ++b) {
        if (X(w_pose) != 0) {
            REAL acc = 0;
            for (int64_t i = 0; i < PJ; ++i) acc += dp[b * PJ + i] * dp[b * PJ + i];
            loss[b] += X(w_pose) * (acc / PJ);
        }
        if (X(w_shape) != 0) {
            REAL acc = 0;
            for (int64_t i = 0; i < S; ++i) acc += ds[b * S + i] * ds[b * S + i];
            loss[b] += X(w_shape) * (acc / S);
        }
    }
    if (!grad) { status = 0; goto done; }

    /* ---- backward */
    {
        REAL *g_uv = TAKE(REAL, B * V * 2, 1), *g_verts = TAKE(REAL, B * V * 3, 0);
        REAL *g_base = TAKE(REAL, B * V * 3, 0), *g_focal = TAKE(REAL, 2 * B, 0);
        REAL *g_off = TAKE(REAL, B * V * 3, 0), *g_joints = TAKE(REAL, B * J * 3, 1);
        REAL *g_kp = TAKE(REAL, B * NK * 3, 0), *g_tr = TAKE(REAL, B * 3, 0);
        REAL *scratch = TAKE(REAL, 3 * V + 39 * J, 0), *ones = TAKE(REAL, 2 * B, 0);
        for (int i = used - 10; i < used; ++i)
            if (mem[i] == NULL) goto done;
        REAL *g_kfocal = g_focal + B;
        if (softras_backward_SFX(uv, verts, (const int64_t *)P(faces), B, V, F, H, W, stride, X(z_near),
                                 X(inv_sigma), X(r2), g_sil, N(threads), g_uv, ws) != 0) goto done;
        project_backward_SFX(g_uv, uv, verts, Kc, B, V, g_verts, g_focal);
        for (int64_t i = 0; i < B * V * 3; ++i) {
            if (en) g_verts[i] += gv_en[i];
            g_base[i] = en ? g_verts[i] + gb_en[i] : g_verts[i];
        }
        REAL *g_du = (REAL *)P(g_vertices);
        for (int64_t b = 0; b < B; ++b)
            for (int64_t i = 0; i < V * 3; ++i) g_du[b * V * 3 + i] = g_verts[b * V * 3 + i] * edge0[b];
        if (wv != 0 || wl != 0) {
            for (int64_t b = 0; b < B; ++b) { ones[b] = wv; ones[B + b] = wl; }
            offset_grad_SFX(du, lu, adj_ptr, adj_nbr, P(inv_deg), B, V, ones, ones + B, g_off);
            for (int64_t i = 0; i < B * V * 3; ++i) g_du[i] += g_off[i];
        }
        if (has_kp) {
            project_backward_SFX(g_kuv, kuv, kp3, Kc, B, NK, g_kp, g_kfocal);
            for (int64_t b = 0; b < B; ++b) {
                g_focal[b] += g_kfocal[b];
                for (int64_t k = 0; k < NK; ++k) {  /* back to joints and fingertip vertices */
                    int64_t src = mp_order[k];
                    const REAL *q = g_kp + (b * NK + k) * 3;
                    if (src < J)
                        for (int c = 0; c < 3; ++c) g_joints[(b * J + src) * 3 + c] = q[c];
                    else
                        for (int c = 0; c < 3; ++c) g_base[(b * V + tip_ids[src - J]) * 3 + c] += q[c];
                }
            }
        }
        REAL *g_pose = (REAL *)P(g_pose), *g_betas = (REAL *)P(g_shape);
        lbs_backward_SFX(pose, P(shapedirs), P(j_shapedirs), P(posedirs), P(weights), P(parents), B, V, J, S,
                         work, g_base, g_joints, g_pose, g_betas, g_tr, scratch);
        REAL kp_ = 2 * X(w_pose) / PJ, ks = 2 * X(w_shape) / S;
        REAL *g_t = (REAL *)P(g_translation), *g_f = (REAL *)P(g_focal);
        for (int64_t b = 0; b < B; ++b) {
            if (X(w_pose) != 0)
                for (int64_t i = 0; i < PJ; ++i) g_pose[b * PJ + i] += kp_ * dp[b * PJ + i];
            if (X(w_shape) != 0)
                for (int64_t i = 0; i < S; ++i) g_betas[b * S + i] += ks * ds[b * S + i];
            for (int k = 0; k < 3; ++k) g_t[b * 3 + k] = g_tr[b * 3 + k] * t_scale[b * 3 + k];
            g_f[b] = free_focal ? g_focal[b] : 0;
        }
    }
    status = 0;
done:
    for (int i = 0; i < used; ++i) free(mem[i]);
#undef TAKE
    return status;
}

/* Refiner._optimize's loop for one group: evaluate, keep each hand's best iterate, step Adam (betas
   0.9, 0.99, eps 1e-8; core.refine.refiner._Adam) on the offsets theta (B P, laid out as the
   offset blocks pose, shape, vertices, translation, focal; stepped in place) with per-entry
   step sizes lr; n_iter steps, n_iter + 1 evaluations (the last without gradient). Writes,
   per hand, the kept iterate's offsets best_theta (B, P: the hand's row of every block), its
   loss, iteration, IoU and meshes (the evaluation outputs verts, base, keypoints_3d, K_img),
   and the start's IoU. Returns 0, or -1 when out of memory. */
int refine_run_SFX(void *const *p, const int64_t *n, const double *x, int64_t n_iter, int64_t keep_best) {
    const int64_t B = N(B), V = N(V), J = N(J), S = N(S), NK = 21;
    const int64_t block[5] = {3 * J, S, 3 * V, 3, 1}, row = 3 * J + S + 3 * V + 4, total = B * row;
    REAL *theta = (REAL *)P(theta);
    const REAL *lr = (const REAL *)P(lr);
    void *q[P_COUNT];
    int64_t nn[N_COUNT];
    memcpy(q, p, sizeof(q));
    memcpy(nn, n, sizeof(nn));
    REAL *grad = (REAL *)malloc(sizeof(REAL) * (size_t)(3 * total + 2 * B + B * (2 * V * 3 + NK * 3 + 9)));
    if (grad == NULL) return -1;
    REAL *m = grad + total, *v = m + total, *loss = v + total, *iou = loss + B;
    REAL *verts = iou + B, *base = verts + B * V * 3, *kp3 = base + B * V * 3, *K_img = kp3 + B * NK * 3;
    memset(m, 0, sizeof(REAL) * (size_t)(2 * total));
    int64_t start[5];
    for (int k = 0, o = 0; k < 5; o += (int)(B * block[k]), ++k) start[k] = o;
    q[P_dp] = theta + start[0]; q[P_ds] = theta + start[1]; q[P_du] = theta + start[2];
    q[P_dt] = theta + start[3]; q[P_df] = theta + start[4];
    q[P_g_pose] = grad + start[0]; q[P_g_shape] = grad + start[1]; q[P_g_vertices] = grad + start[2];
    q[P_g_translation] = grad + start[3]; q[P_g_focal] = grad + start[4];
    q[P_loss] = loss; q[P_iou] = iou; q[P_verts] = verts; q[P_base] = base;
    q[P_keypoints_3d] = kp3; q[P_K_img] = K_img;
    int adam = 0;
    for (int64_t i = 0; i < total && n_iter > 0; ++i) adam |= lr[i] > 0;
    REAL *best_theta = (REAL *)P(best_theta), *best_loss = (REAL *)P(best_loss);
    REAL *best_it = (REAL *)P(best_iteration), *best_iou = (REAL *)P(best_iou);
    REAL *out_verts = (REAL *)P(verts), *out_base = (REAL *)P(base), *out_kp = (REAL *)P(keypoints_3d);
    REAL *out_K = (REAL *)P(K_img);
    const double b1 = 0.9, b2 = 0.99, eps = 1e-8;
    int status = 0;
    for (int64_t it = 0; it <= n_iter; ++it) {
        int final = it == n_iter || !adam;
        nn[N_flags] = final ? (n[N_flags] & ~FLAG_GRAD) : (n[N_flags] | FLAG_GRAD);
        if (it > 0 && (n[N_flags] & FLAG_USE_SLACK)) nn[N_flags] |= FLAG_SLACK_GIVEN;  /* the start's */
        if ((status = refine_eval_SFX(q, nn, x)) != 0) break;
        for (int64_t b = 0; b < B; ++b) {
            if (it == 0) ((REAL *)P(iou_before))[b] = iou[b];
            if (it > 0 && keep_best && !(loss[b] < best_loss[b])) continue;
            best_loss[b] = loss[b];
            best_it[b] = (REAL)it;
            best_iou[b] = iou[b];
            for (int k = 0, col = 0; k < 5; col += (int)block[k], ++k)
                memcpy(best_theta + b * row + col, theta + start[k] + b * block[k], sizeof(REAL) * (size_t)block[k]);
            memcpy(out_verts + b * V * 3, verts + b * V * 3, sizeof(REAL) * (size_t)(V * 3));
            memcpy(out_base + b * V * 3, base + b * V * 3, sizeof(REAL) * (size_t)(V * 3));
            memcpy(out_kp + b * NK * 3, kp3 + b * NK * 3, sizeof(REAL) * (size_t)(NK * 3));
            memcpy(out_K + b * 9, K_img + b * 9, sizeof(REAL) * 9);
        }
        if (final) break;
        const REAL c1 = (REAL)(1 - b1), c2 = (REAL)(1 - b2);
        const REAL bc2 = (REAL)(1 - pow(b2, (double)(it + 1))), step = (REAL)(-1 / (1 - pow(b1, (double)(it + 1))));
        for (int64_t i = 0; i < total; ++i) {
            REAL g = grad[i];
            m[i] = m[i] * (REAL)b1 + c1 * g;
            v[i] = v[i] * (REAL)b2 + c2 * g * g;
            REAL denom = SQRT(v[i] / bc2) + (REAL)eps;
            theta[i] += step * ((m[i] * lr[i]) / denom);
        }
    }
    free(grad);
    return status;
}
#undef P
#undef N
#undef X
"""

_FLAVOURS = (("float", "f32", "exp_f32", "sqrtf"), ("double", "f64", "exp", "sqrt"))


def source() -> str:
    """The C source: the rasterizer's and the refinement's kernels, then the evaluation."""
    tables = "".join(f"#define {prefix}_{name} {i}\n"
                     for prefix, names in (("P", POINTERS), ("N", SIZES), ("X", SCALARS))
                     for i, name in enumerate(names))
    tables += f"#define P_COUNT {len(POINTERS)}\n#define N_COUNT {len(SIZES)}\n"
    flags = "".join(f"#define {k} {v}\n" for k, v in (
        ("FLAG_GRAD", FLAG_GRAD), ("FLAG_FREE_FOCAL", FLAG_FREE_FOCAL), ("FLAG_USE_SLACK", FLAG_USE_SLACK),
        ("FLAG_SLACK_GIVEN", FLAG_SLACK_GIVEN), ("FLAG_KEYPOINTS", FLAG_KEYPOINTS)))
    text = _raster_kernels.source() + _refine_kernels.source() + tables + flags
    for real, suffix, exp, sqrt in _FLAVOURS:
        text += _EVAL.replace("REAL", real).replace("SFX", suffix).replace("EXP", exp).replace("SQRT", sqrt)
    return text


def _declare(lib: ctypes.CDLL) -> None:
    for _, suffix, *_ in _FLAVOURS:
        f = getattr(lib, f"refine_eval_{suffix}")
        f.argtypes = [ctypes.c_void_p] * 3
        f.restype = ctypes.c_int
        run = getattr(lib, f"refine_run_{suffix}")
        run.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 2
        run.restype = ctypes.c_int


#: The library (built on first use). The evaluation runs for milliseconds: the GIL is released.
LIBRARY = NativeLibrary("refine-eval", source, _declare)


def available(dtype) -> bool:
    """Whether :class:`NativeEvaluation` can run for arrays of this dtype (builds on first call)."""
    return np.dtype(dtype) in (np.float32, np.float64) and LIBRARY.get() is not None


class NativeEvaluation:
    """:func:`core.refine.fused.loss_and_grad` for one group, in one C call per evaluation.

    Made once per refinement call: the fixed entries of the argument tables (model, crop,
    topology) are filled here, each call fills the offsets and fresh outputs.

    Args:
        lean: the side's skinning (:meth:`~core.refine.lbs.LeanHand.arrays`).
        view: the group's fixed data as :func:`core.refine.fused.numpy_view` gives it (its
            arrays must stay alive as long as this object).
        soft: the crop's :class:`~core.render.SoftRasterSettings`.
        keypoint_scale_px: the keypoint term's unit, crop px.
    """

    def __init__(self, lean, view, soft, keypoint_scale_px: float) -> None:
        m = lean.arrays()
        self.view, self.model = view, m  # keep the arrays the table points into alive
        self.dtype = view.pose0.dtype
        suffix = "f32" if self.dtype == np.float32 else "f64"
        self.fn = getattr(LIBRARY.require(), f"refine_eval_{suffix}")
        self.fn_run = getattr(LIBRARY.require(), f"refine_run_{suffix}")
        b = view.pose0.shape[0]
        self.shapes = {"b": b, "v": m.v_template.shape[0], "j": m.weights.shape[1], "s": view.betas0.shape[1]}
        self.pointers = (ctypes.c_void_p * len(POINTERS))()
        fixed = {"v_template": m.v_template, "shapedirs": m.shapedirs_flat, "j_template": m.j_template,
                 "j_shapedirs": m.j_shapedirs, "posedirs": m.posedirs, "weights": m.weights,
                 "parents": m.parents_all, "pose_mean": m.pose_mean, "tip_ids": m.tip_ids, "mp_order": m.mp_order,
                 "pose0": view.pose0, "betas0": view.betas0, "transl0": view.transl0, "t_scale": view.t_scale,
                 "edge0": view.edge0, "K": view.K, "affine": view.affine, "target": view.target,
                 "weight": view.weight, "area": view.area, "keypoints": view.keypoints, "faces": view.faces,
                 "topo_faces": view.topo.faces, "adj_ptr": view.topo.adj_ptr, "adj_nbr": view.topo.adj_nbr,
                 "inv_deg": view.topo.inv_deg}
        for name, arr in fixed.items():
            if arr is not None and not arr.flags.c_contiguous:
                raise ValueError(f"{name} must be C-contiguous")
            self.pointers[_INDEX[name]] = address(arr)
        h, w = soft.image_size
        self.sizes = np.array([b, self.shapes["v"], self.shapes["j"], self.shapes["s"], view.faces.shape[0],
                               view.topo.faces.shape[0], h, w, 1, 0], np.int64)
        self.scalars = np.zeros(len(SCALARS), np.float64)
        for name, value in (("z_near", soft.z_near), ("inv_sigma", 1.0 / soft.sigma),
                            ("r2", soft.cull_radius ** 2), ("keypoint_scale_px", keypoint_scale_px)):
            self.scalars[SCALARS.index(name)] = value

    def _prepare(self, weights: dict[str, float], slack: np.ndarray | None, use_slack: bool,
                 slack_tolerance_px: float | None, need_grad: bool, threads: int) -> np.ndarray | None:
        """Fill the call's flags, weights and keypoint slack; returns the slack array in use
        (``slack`` itself, or a new one the kernel fills at the first evaluation), or None."""
        has_kp = self.view.keypoints is not None and weights["keypoints"] > 0
        slack_given = slack is not None
        if use_slack and has_kp:
            slack = (np.empty((self.shapes["b"], 21), self.dtype) if slack is None
                     else np.ascontiguousarray(slack, self.dtype))
        self.pointers[_INDEX["slack"]] = address(slack) if use_slack and has_kp else None
        self.sizes[_THREADS] = max(1, int(threads))
        self.sizes[_FLAGS] = ((FLAG_GRAD if need_grad else 0) | (FLAG_FREE_FOCAL if self.view.free_focal else 0)
                              | (FLAG_USE_SLACK if use_slack else 0) | (FLAG_SLACK_GIVEN if slack_given else 0)
                              | (FLAG_KEYPOINTS if has_kp else 0))
        for key in _WEIGHTS:
            self.scalars[SCALARS.index("w_" + key)] = weights[key]
        self.scalars[SCALARS.index("slack_tolerance_px")] = (
            -1.0 if slack_tolerance_px is None else float(slack_tolerance_px))
        return slack

    def __call__(self, params: dict[str, np.ndarray], weights: dict[str, float], slack: np.ndarray | None,
                 use_slack: bool, slack_tolerance_px: float | None, need_grad: bool, threads: int = 1):
        """One evaluation; arguments and result as :func:`core.refine.fused.loss_and_grad`'s."""
        from core.refine.fused import FusedOutput

        dt, sh = self.dtype, self.shapes
        b, v = sh["b"], sh["v"]
        out = {"loss": np.empty(b, dt), "iou": np.empty(b, dt), "verts": np.empty((b, v, 3), dt),
               "base": np.empty((b, v, 3), dt), "keypoints_3d": np.empty((b, 21, 3), dt),
               "K_img": np.empty((b, 3, 3), dt)}
        grads = None
        if need_grad:
            grads = {"pose": np.empty((b, 3 * sh["j"]), dt), "shape": np.empty((b, sh["s"]), dt),
                     "vertices": np.empty((b, v, 3), dt), "translation": np.empty((b, 3), dt),
                     "focal": np.empty((b, 1), dt)}
        ptr, idx = self.pointers, _INDEX
        for name, key in (("dp", "pose"), ("ds", "shape"), ("du", "vertices"), ("dt", "translation"),
                          ("df", "focal")):
            a = params[key]
            if not a.flags.c_contiguous or a.dtype != dt:
                raise ValueError(f"the {key} offsets must be C-contiguous {dt}")
            ptr[idx[name]] = address(a)
        for name, a in out.items():
            ptr[idx[name]] = address(a)
        for name in ("pose", "shape", "vertices", "translation", "focal"):
            ptr[idx["g_" + name]] = None if grads is None else address(grads[name])
        slack = self._prepare(weights, slack, use_slack, slack_tolerance_px, need_grad, threads)
        if self.fn(ctypes.addressof(ptr), address(self.sizes), address(self.scalars)) != 0:
            raise MemoryError("refinement evaluation: out of memory")
        return FusedOutput(out["loss"], out["iou"], out["verts"], out["base"], out["keypoints_3d"],
                           out["K_img"], slack, grads)

    def run(self, theta: np.ndarray, lr: np.ndarray, n_iter: int, keep_best: bool, weights: dict[str, float],
            slack: np.ndarray | None, use_slack: bool, slack_tolerance_px: float | None,
            threads: int = 1) -> dict[str, np.ndarray]:
        """The whole refinement of this group in one C call (``Refiner._optimize``'s loop, for
        ``Refiner._refine_native``). Not reentrant (the argument tables are shared).

        Args:
            theta: the group's flat offsets (all zero at the start), the blocks pose (B, 3J),
                shape (B, S), vertices (B, V, 3), translation (B, 3), focal (B, 1) one after
                the other; stepped in place (it ends at the last iterate).
            lr: per-entry step sizes, same layout (0 freezes an entry).
            n_iter: Adam steps (``n_iter + 1`` evaluations). keep_best: keep each hand's
                lowest-loss iterate, else the last.
            weights, slack, use_slack, slack_tolerance_px, threads: as :meth:`__call__`.

        Returns:
            Per hand, the kept iterate: ``theta`` (B, P) its offsets (the hand's row of every
            block), ``loss``, ``iteration``, ``iou`` (B,), ``verts``, ``base`` (B, V, 3),
            ``keypoints`` (B, 21, 3), ``K`` (B, 3, 3); ``iou_before`` (B,) the start's IoU;
            ``slack`` (B, 21) the keypoint slack in use (None without one).
        """
        dt, sh = self.dtype, self.shapes
        b, v = sh["b"], sh["v"]
        size = b * (3 * sh["j"] + sh["s"] + 3 * v + 4)
        for name, a in (("theta", theta), ("lr", lr)):
            if a.dtype != dt or not a.flags.c_contiguous or a.size != size:
                raise ValueError(f"{name} must be a C-contiguous {dt} vector of {size} values")
        out = {"theta": np.empty((b, size // b), dt), "loss": np.empty(b, dt), "iteration": np.empty(b, dt),
               "iou": np.empty(b, dt), "iou_before": np.empty(b, dt), "verts": np.empty((b, v, 3), dt),
               "base": np.empty((b, v, 3), dt), "keypoints": np.empty((b, 21, 3), dt), "K": np.empty((b, 3, 3), dt)}
        ptr, idx = self.pointers, _INDEX
        for name, key in (("best_loss", "loss"), ("best_iteration", "iteration"), ("best_iou", "iou"),
                          ("iou_before", "iou_before"), ("best_theta", "theta"), ("verts", "verts"),
                          ("base", "base"), ("keypoints_3d", "keypoints"), ("K_img", "K")):
            ptr[idx[name]] = address(out[key])
        ptr[idx["theta"]] = address(theta)
        ptr[idx["lr"]] = address(lr)
        slack = self._prepare(weights, slack, use_slack, slack_tolerance_px, False, threads)
        if self.fn_run(ctypes.addressof(ptr), address(self.sizes), address(self.scalars), int(n_iter),
                       int(bool(keep_best))) != 0:
            raise MemoryError("refinement: out of memory")
        out["slack"] = slack
        return out
