/* The live refinement's whole evaluation and loop in one call: a template compiled once per
   float type after the soft rasterizer's and the refinement's kernels and the argument
   tables' indices, which core/refine/_fused_native.py generates from its name lists. */
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
