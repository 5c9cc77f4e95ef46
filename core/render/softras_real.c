/* The soft rasterizer's C kernels, part 2: a template compiled once per float type.
   core/render/_native.py (_FLAVOURS) substitutes the C type, the function suffix and the
   math functions; follows softras.c. */
/* ------------------------------ REAL kernels (suffix SFX) ------------------------------ */

/* A face in the frames of its edges. Edge k runs from corner k (start a) to corner k + 1
   (end b), length len, unit direction u; n is the unit normal pointing into the face. For a
   pixel p: l = n.(p - a) (signed distance to the edge's line, >= 0 on the face's side),
   tau = u.(p - a) (position along the edge), and the squared distance to the edge is
   l^2 + e^2 with e = tau - clamp(tau, 0, len); p minus the closest point is l n + e u.
   l = nx x + ny y + nc and tau = ux x + uy y + uc are affine in the pixel. A zero-length edge
   gets n = (0, 1), u = (1, 0) (its distance is the distance to its corner) and no say in the
   inside test (like a zero cross product in the dense reference). */
typedef struct {
    REAL nx[3], ny[3], nc[3], ux[3], uy[3], uc[3], len[3], inv_len[3], inv_nx[3];
    REAL floor_l[3];     /* inside test: l >= floor_l for every edge (0, or -1e30 if len = 0) */
    int64_t corner[3];   /* vertex index b V + v of each corner */
    int64_t image;       /* offset of the face's image in the (B, H, stride) buffers */
    int y0, y1, x0, x1;  /* pixel box grown by r, clipped to the image */
    int drawn;           /* 0: behind the near plane, not finite, or off the image */
} Face_SFX;

/* What the threads of one call share. */
typedef struct Call_SFX {
    const REAL *uv;          /* (B, V, 2) projected vertices, pixels */
    const REAL *verts;       /* (B, V, 3) camera-frame vertices, metres (only z is read) */
    const int64_t *faces;    /* (F, 3) vertex indices */
    uint8_t *cover;          /* (B, H, stride) forward: 1 at pixel centres inside a face */
    const REAL *weight;      /* (B, H, stride) dL/dsil * prod (backward) */
    REAL *out;               /* forward: (B, H, stride) product; backward: (B F, 12) sums */
    Face_SFX *face;          /* (B F) */
    int64_t *band_start;     /* (bands + 1) forward: faces of band k are */
    int64_t *band_faces;     /*   band_faces[band_start[k]:band_start[k + 1]], in order */
    int64_t B, V, F, H, W, stride, bands;
    REAL z_near, inv_sigma, r2;
    void (*tasks)(struct Call_SFX *);  /* takes tasks until none is left */
    COUNTER next;            /* the next task: band (forward) or block of faces (backward) */
    COUNTER active;          /* threads inside tasks() */
    COUNTER refs;            /* threads still holding this (heap) struct */
} Call_SFX;

static int clip_SFX(double v, int hi) { return v < 0 ? 0 : (v > hi ? hi : (int)v); }

/* The edge frames and pixel box (grown by r) of face i = b F + f; f->drawn = 0 when the
   face is not drawn: a vertex at z <= z_near (or NaN), a non-finite corner, or a box off
   the image. */
static void face_setup_SFX(const Call_SFX *call, int64_t i, REAL r, Face_SFX *f) {
    int64_t b = i / call->F;
    const int64_t *corner = call->faces + 3 * (i - b * call->F);
    REAL t[6];
    f->drawn = 0;
    for (int k = 0; k < 3; ++k) {
        int64_t v = b * call->V + corner[k];
        if (!(call->verts[3 * v + 2] > call->z_near)) return;
        t[2 * k] = call->uv[2 * v];
        t[2 * k + 1] = call->uv[2 * v + 1];
        if (!isfinite(t[2 * k]) || !isfinite(t[2 * k + 1])) return;
        f->corner[k] = v;
    }
    /* orientation: inside is to the left of every edge for a counter-clockwise face */
    REAL area2 = (t[2] - t[0]) * (t[5] - t[1]) - (t[3] - t[1]) * (t[4] - t[0]);
    REAL o = area2 >= 0 ? (REAL)1 : (REAL)-1;
    REAL xlo = t[0], xhi = t[0], ylo = t[1], yhi = t[1];
    for (int k = 0; k < 3; ++k) {
        int n = k == 2 ? 0 : k + 1;
        REAL ax = t[2 * k], ay = t[2 * k + 1], ex = t[2 * n] - ax, ey = t[2 * n + 1] - ay;
        REAL l2 = ex * ex + ey * ey;
        REAL len = SQRT(l2), ux = 1, uy = 0, nx = 0, ny = 1;
        int ok = l2 > (REAL)1e-12;
        if (ok) {
            ux = ex / len;
            uy = ey / len;
            nx = -o * uy;
            ny = o * ux;
        } else {
            len = 0;
        }
        f->nx[k] = nx;
        f->ny[k] = ny;
        f->nc[k] = -(nx * ax + ny * ay);
        f->ux[k] = ux;
        f->uy[k] = uy;
        f->uc[k] = -(ux * ax + uy * ay);
        f->len[k] = len;
        f->inv_len[k] = ok ? (REAL)1 / len : (REAL)0;
        f->inv_nx[k] = nx != 0 ? (REAL)1 / nx : (REAL)0;
        f->floor_l[k] = ok ? (REAL)0 : (REAL)-1e30;
        xlo = ax < xlo ? ax : xlo;
        xhi = ax > xhi ? ax : xhi;
        ylo = ay < ylo ? ay : ylo;
        yhi = ay > yhi ? ay : yhi;
    }
    int H = (int)call->H, W = (int)call->W;
    double x0 = ceil((double)(xlo - r)), x1 = floor((double)(xhi + r));
    double y0 = ceil((double)(ylo - r)), y1 = floor((double)(yhi + r));
    if (x1 < 0 || y1 < 0 || x0 > W - 1 || y0 > H - 1) return;
    f->x0 = clip_SFX(x0, W - 1);
    f->x1 = clip_SFX(x1, W - 1);
    f->y0 = clip_SFX(y0, H - 1);
    f->y1 = clip_SFX(y1, H - 1);
    f->image = b * call->H * call->stride;
    f->drawn = f->x0 <= f->x1 && f->y0 <= f->y1;
}

/* Row y of a face: its edges' terms lr = ny y + nc (l = lr + nx x) and tr = uy y + uc
   (tau = tr + ux x), and the columns [*a, *b] where l >= -r for every edge, within the box: a
   superset of the pixels within r of the face (the face grown by a disc lies in every grown
   half-plane). Returns 0 when the row has no such column. */
static int face_row_SFX(const Face_SFX *f, int y, REAL r, int *a, int *b, REAL lr[3], REAL tr[3]) {
    REAL lo = (REAL)f->x0, hi = (REAL)f->x1;
    for (int k = 0; k < 3; ++k) {
        lr[k] = f->ny[k] * (REAL)y + f->nc[k];
        tr[k] = f->uy[k] * (REAL)y + f->uc[k];
        if (f->len[k] == 0) continue;
        REAL rest = lr[k] + r;  /* l + r = nx x + rest >= 0 */
        if (f->nx[k] > (REAL)1e-6) {
            REAL v = -rest * f->inv_nx[k];
            lo = v > lo ? v : lo;
        } else if (f->nx[k] < (REAL)-1e-6) {
            REAL v = -rest * f->inv_nx[k];
            hi = v < hi ? v : hi;
        } else if (rest < 0) {
            return 0;
        }
    }
    if (!(lo <= hi)) return 0;
    *a = (int)ceil((double)lo);
    *b = (int)floor((double)hi);
    return *a <= *b;
}

/* For the LANES pixels (x0 + j, y), j < LANES: per edge l, e, the clamped position c along
   the edge and d2 = l^2 + e^2; the nearest edge's d2 (best) and the inside flag. lr, tr: the
   row's terms ny y + nc and uy y + uc. */
#define EDGES_SFX(f, lr, tr, xf, j, l, e, c, d2s, best, inside)                              \
    do {                                                                                    \
        best = (REAL)1e30;                                                                  \
        inside = 1;                                                                         \
        for (int k = 0; k < 3; ++k) {                                                       \
            l[k] = lr[k] + (f).nx[k] * ((xf) + (REAL)(j));                                   \
            REAL tau = tr[k] + (f).ux[k] * ((xf) + (REAL)(j));                               \
            c[k] = tau < 0 ? (REAL)0 : (tau > (f).len[k] ? (f).len[k] : tau);              \
            e[k] = tau - c[k];                                                              \
            d2s[k] = l[k] * l[k] + e[k] * e[k];                                             \
            best = d2s[k] < best ? d2s[k] : best;                                           \
            inside &= l[k] >= (f).floor_l[k];                                               \
        }                                                                                   \
    } while (0)

/* prod *= q = 1 - D for the pixels of rows [ya, yb] of one face; cover = 1 at the pixel
   centres inside it (every edge's l >= 0: the dense reference's test up to rounding). */
static void forward_rows_SFX(const Call_SFX *call, const Face_SFX *face, int ya, int yb) {
    const Face_SFX f = *face;  /* a local copy: its fields stay in registers */
    REAL r = SQRT(call->r2), inv_sigma = call->inv_sigma;
    for (int y = ya; y <= yb; ++y) {
        int a, b;
        REAL lr[3], tr[3];
        if (!face_row_SFX(&f, y, r, &a, &b, lr, tr)) continue;
        for (int xs = a; xs <= b; xs += LANES) {
            int64_t at = f.image + (int64_t)y * call->stride + xs;
            REAL *restrict out = call->out + at;
            int count = b - xs + 1, covered = 0;
            REAL xf = (REAL)xs;
            for (int j = 0; j < LANES; ++j) {
                REAL l[3], e[3], c[3], d2s[3], best;
                int inside;
                EDGES_SFX(f, lr, tr, xf, j, l, e, c, d2s, best, inside);
                REAL q = (REAL)1 / ((REAL)1 + EXP((inside ? best : -best) * inv_sigma));
                /* every pixel in the row range counts, also those a little beyond r (their
                   D < eps; keeping them costs nothing and brings the dense result closer) */
                out[j] *= j < count ? q : (REAL)1;
                covered |= (inside & (j < count)) << j;
            }
            if (covered)
                for (int j = 0; j < LANES; ++j) call->cover[at + j] |= (covered >> j) & 1;
        }
    }
}

/* Forward tasks: bands of BAND rows; within a band the faces come in index order, so every
   pixel's product is formed in the same order whatever the number of threads. */
static void forward_tasks_SFX(Call_SFX *call) {
    int64_t per_image = (call->H + BAND - 1) / BAND;
    for (;;) {
        int64_t band = FETCH_ADD(&call->next, 1);
        if (band >= call->bands) break;
        int ya = (int)((band % per_image) * BAND), yb = ya + BAND - 1;
        for (int64_t m = call->band_start[band]; m < call->band_start[band + 1]; ++m) {
            const Face_SFX *f = &call->face[call->band_faces[m]];
            forward_rows_SFX(call, f, f->y0 > ya ? f->y0 : ya, f->y1 < yb ? f->y1 : yb);
        }
    }
}

/* sums[12] = per edge k: sums over the face's pixels of gd (1 - t) l, gd (1 - t) e, gd t l,
   gd t e, with gd = -2 dL/dd2 and t = c / len (the closest point's fraction of the edge). */
static void backward_face_SFX(const Call_SFX *call, const Face_SFX *face, REAL *sums) {
    const Face_SFX f = *face;
    REAL r = SQRT(call->r2), inv_sigma = call->inv_sigma;
    REAL acc[3][4][LANES];
    for (int k = 0; k < 3; ++k)
        for (int m = 0; m < 4; ++m)
            for (int j = 0; j < LANES; ++j) acc[k][m][j] = 0;
    for (int y = f.y0; y <= f.y1; ++y) {
        int a, b;
        REAL lr[3], tr[3];
        if (!face_row_SFX(&f, y, r, &a, &b, lr, tr)) continue;
        for (int xs = a; xs <= b; xs += LANES) {
            /* vectors of 8 pixels without gradient (e.g. a saturated interior) are skipped */
            const REAL *restrict w = call->weight + (f.image + (int64_t)y * call->stride + xs);
            REAL size = 0;
            for (int j = 0; j < LANES; ++j) size += FABS(w[j]);
            if (size == 0) continue;
            int count = b - xs + 1;
            REAL xf = (REAL)xs;
            for (int j = 0; j < LANES; ++j) {
                REAL l[3], e[3], c[3], d2s[3], best;
                int inside;
                EDGES_SFX(f, lr, tr, xf, j, l, e, c, d2s, best, inside);
                REAL xv = (inside ? best : -best) * inv_sigma;
                REAL D = (REAL)1 / ((REAL)1 + EXP(-xv));
                /* dL/dx = w D, dL/dd2 = dL/dx (+-1 / sigma); gd = -2 dL/dd2 */
                REAL gd = j < count ? w[j] * D * (inside ? -2 * inv_sigma : 2 * inv_sigma) : 0;
                /* only the nearest edge (the first one on ties) gets the gradient */
                int n0 = d2s[0] == best, n1 = !n0 & (d2s[1] == best), n2 = !(n0 | n1);
                REAL g[3] = {n0 ? gd : (REAL)0, n1 ? gd : (REAL)0, n2 ? gd : (REAL)0};
                for (int k = 0; k < 3; ++k) {
                    REAL gt = g[k] * c[k] * f.inv_len[k], gs = g[k] - gt;
                    acc[k][0][j] += gs * l[k];
                    acc[k][1][j] += gs * e[k];
                    acc[k][2][j] += gt * l[k];
                    acc[k][3][j] += gt * e[k];
                }
            }
        }
    }
    for (int k = 0; k < 3; ++k)
        for (int m = 0; m < 4; ++m) {
            REAL total = 0;
            for (int j = 0; j < LANES; ++j) total += acc[k][m][j];
            sums[4 * k + m] = total;
        }
}

/* Backward tasks: blocks of FACE_BLOCK faces; each face's sums are formed by one thread in
   row order, whatever the number of threads. */
static void backward_tasks_SFX(Call_SFX *call) {
    int64_t faces = call->B * call->F;
    for (;;) {
        int64_t first = FETCH_ADD(&call->next, FACE_BLOCK);
        if (first >= faces) break;
        int64_t stop = first + FACE_BLOCK < faces ? first + FACE_BLOCK : faces;
        for (int64_t i = first; i < stop; ++i)
            if (call->face[i].drawn) backward_face_SFX(call, &call->face[i], call->out + 12 * i);
    }
}

static void release_SFX(Call_SFX *call) {
    if (FETCH_ADD(&call->refs, -1) == 1) free(call);
}

#if HAVE_PTHREAD
static void *helper_SFX(void *arg) {
    Call_SFX *call = (Call_SFX *)arg;
    FETCH_ADD(&call->active, 1);  /* before taking a task: see run_tasks */
    call->tasks(call);
    FETCH_ADD(&call->active, -1);
    release_SFX(call);
    return NULL;
}
#endif

/* Runs call->tasks on the calling thread and threads - 1 detached helpers; returns when every
   task is done. The caller never waits for a helper that has not started (on a busy machine
   it may start late): a helper counts itself active before taking a task, so once the tasks
   are exhausted, active == 0 means no task is in progress. A late helper finds no task left,
   and the last thread to let go of call frees it: call must come from malloc, and the caller
   must not touch it after this returns. */
static void run_tasks_SFX(Call_SFX *call, int64_t threads) {
    call->refs = 1;
    call->active = 0;
    call->next = 0;
#if HAVE_PTHREAD
    /* a helper only pays off with enough work: count the vectors of the faces' boxes */
    int64_t work = 0;
    for (int64_t i = 0; i < call->B * call->F; ++i) {
        const Face_SFX *f = &call->face[i];
        if (f->drawn) work += (int64_t)(f->y1 - f->y0 + 1) * ((f->x1 - f->x0 + LANES) / LANES);
    }
    int64_t n = threads < 1 ? 1 : (threads > MAX_THREADS ? MAX_THREADS : threads);
    if (n > 1 + work / MIN_VECTORS_PER_HELPER) n = 1 + work / MIN_VECTORS_PER_HELPER;
    pthread_attr_t attr;
    int detached = n > 1 && pthread_attr_init(&attr) == 0;
    if (detached && pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) != 0) {
        pthread_attr_destroy(&attr);
        detached = 0;
    }
    for (int64_t t = 1; t < n && detached; ++t) {
        pthread_t tid;
        FETCH_ADD(&call->refs, 1);
        if (pthread_create(&tid, &attr, helper_SFX, call) != 0) FETCH_ADD(&call->refs, -1);
    }
    if (detached) pthread_attr_destroy(&attr);
    call->tasks(call);
    while (LOAD(&call->active) > 0) sched_yield();
#else
    (void)threads;
    call->tasks(call);
#endif
    release_SFX(call);
}

/* Size of the workspace of softras_forward / softras_backward: one Face per face. */
int64_t softras_face_bytes_SFX(void) { return (int64_t)sizeof(Face_SFX); }

/* prod (B, H, stride), preset to 1: multiplied by q = 1 - D of every face-pixel pair;
   cover (B, H, stride), preset to 0: set to 1 at pixel centres inside a drawn face;
   workspace (B F softras_face_bytes()): filled for softras_backward. Returns 0, or -1 when
   out of memory. */
int softras_forward_SFX(const REAL *uv, const REAL *verts, const int64_t *faces, int64_t B,
                        int64_t V, int64_t F, int64_t H, int64_t W, int64_t stride,
                        REAL z_near, REAL inv_sigma, REAL r2, int64_t threads, REAL *prod,
                        uint8_t *cover, void *workspace) {
    int64_t per_image = (H + BAND - 1) / BAND, count = B * F, bands = B * per_image;
    Face_SFX *face = (Face_SFX *)workspace;
    REAL r = SQRT(r2);
    Call_SFX setup = {uv, verts, faces, NULL, NULL, NULL, NULL, NULL, NULL, B, V, F, H, W,
                      stride, bands, z_near, inv_sigma, r2, NULL, 0, 0, 0};
    for (int64_t i = 0; i < count; ++i) face_setup_SFX(&setup, i, r, &face[i]);
    /* the faces of each band, in index order (counting sort) */
    int64_t *start = (int64_t *)calloc((size_t)bands + 1, sizeof(int64_t));
    if (start == NULL) return -1;
    for (int64_t i = 0; i < count; ++i) {
        if (!face[i].drawn) continue;
        int64_t base = (i / F) * per_image;
        for (int64_t k = face[i].y0 / BAND; k <= face[i].y1 / BAND; ++k) ++start[base + k + 1];
    }
    for (int64_t k = 0; k < bands; ++k) start[k + 1] += start[k];
    int64_t *list = (int64_t *)malloc((size_t)(start[bands] > 0 ? start[bands] : 1) * sizeof(int64_t));
    int64_t *fill = (int64_t *)malloc((size_t)bands * sizeof(int64_t));
    Call_SFX *call = (Call_SFX *)malloc(sizeof(Call_SFX));
    if (list == NULL || fill == NULL || call == NULL) {
        free(start);
        free(list);
        free(fill);
        free(call);
        return -1;
    }
    memcpy(fill, start, (size_t)bands * sizeof(int64_t));
    for (int64_t i = 0; i < count; ++i) {
        if (!face[i].drawn) continue;
        int64_t base = (i / F) * per_image;
        for (int64_t k = face[i].y0 / BAND; k <= face[i].y1 / BAND; ++k) list[fill[base + k]++] = i;
    }
    free(fill);
    memcpy(call, &setup, sizeof(Call_SFX));  /* (no struct assignment: it has atomics) */
    call->cover = cover;
    call->out = prod;
    call->face = face;
    call->band_start = start;
    call->band_faces = list;
    call->tasks = forward_tasks_SFX;
    run_tasks_SFX(call, threads);
    free(start);
    free(list);
    return 0;
}

/* grad (B, V, 2) += dL/d(uv), from weight (B, H, stride) = dL/dsil * prod (zero in the
   padding columns) and the workspace of softras_forward. Returns 0, or -1 when out of
   memory. */
int softras_backward_SFX(const REAL *uv, const REAL *verts, const int64_t *faces, int64_t B,
                         int64_t V, int64_t F, int64_t H, int64_t W, int64_t stride,
                         REAL z_near, REAL inv_sigma, REAL r2, const REAL *weight,
                         int64_t threads, REAL *grad, const void *workspace) {
    int64_t count = B * F;
    const Face_SFX *face = (const Face_SFX *)workspace;
    REAL *sums = (REAL *)malloc((size_t)(count > 0 ? count : 1) * 12 * sizeof(REAL));
    Call_SFX *call = (Call_SFX *)malloc(sizeof(Call_SFX));
    if (sums == NULL || call == NULL) {
        free(sums);
        free(call);
        return -1;
    }
    Call_SFX init = {uv, verts, faces, NULL, weight, sums, (Face_SFX *)face, NULL, NULL, B, V,
                     F, H, W, stride, 0, z_near, inv_sigma, r2, backward_tasks_SFX, 0, 0, 0};
    memcpy(call, &init, sizeof(Call_SFX));
    run_tasks_SFX(call, threads);
    /* d(d2)/d(start) = -2 (1 - t) (l n + e u), d(d2)/d(end) = -2 t (l n + e u); added to the
       vertices in face order */
    for (int64_t i = 0; i < count; ++i) {
        const Face_SFX *f = &face[i];
        if (!f->drawn) continue;
        const REAL *s = sums + 12 * i;
        for (int k = 0; k < 3; ++k, s += 4) {
            int64_t a = f->corner[k], b = f->corner[k == 2 ? 0 : k + 1];
            grad[2 * a] += s[0] * f->nx[k] + s[1] * f->ux[k];
            grad[2 * a + 1] += s[0] * f->ny[k] + s[1] * f->uy[k];
            grad[2 * b] += s[2] * f->nx[k] + s[3] * f->ux[k];
            grad[2 * b + 1] += s[2] * f->ny[k] + s[3] * f->uy[k];
        }
    }
    free(sums);
    return 0;
}
