/* The soft rasterizer's C kernels, part 1: what both float types share. Built by
   core/render/_native.py (source()) through core/native.py; the vector width comes from Python (LANES). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LANES @LANES@
#define MAX_THREADS 16
#define BAND 8         /* forward: rows per task */
#define FACE_BLOCK 64  /* backward: faces per task */
#define MIN_VECTORS_PER_HELPER 8192  /* about 0.3 ms of work: more than starting a thread */
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#define HAVE_PTHREAD 1
typedef atomic_llong COUNTER;
#define FETCH_ADD(p, n) atomic_fetch_add((p), (n)) /* sequentially consistent */
#define LOAD(p) atomic_load(p)
#else
#define HAVE_PTHREAD 0
typedef long long COUNTER;
static long long fetch_add(COUNTER *p, long long n) { long long v = *p; *p += n; return v; }
#define FETCH_ADD(p, n) fetch_add((p), (n))
#define LOAD(p) (*(p))
#endif

/* exp for float, branch-free so loops over it vectorize: relative error < 3e-7 for |x| < 87
   (Cody-Waite range reduction, degree-6 polynomial, exponent bits set directly). */
static inline float exp_f32(float x) {
    x = x < -87.0f ? -87.0f : (x > 87.0f ? 87.0f : x);
    float n = __builtin_roundf(x * 1.44269504088896341f);
    float r = x - n * 0.693145751953125f - n * 1.428606765330187045e-06f;
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (0.166666671633720398f
              + r * (0.041666645556688309f + r * (0.008333390764892101f
              + r * 0.001388599909842014f)))));
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, 4);
    return p * scale;
}

/* out = 1 where every pixel of the (2 radius + 1)^2 square around it is covered; pixels
   outside the image count as uncovered. cover, work, out: (B, H, stride) bytes. */
void softras_interior(const uint8_t *restrict cover, int64_t B, int64_t H, int64_t W,
                      int64_t stride, int64_t radius, uint8_t *restrict work,
                      uint8_t *restrict out) {
    int64_t side = 2 * radius + 1;
    for (int64_t b = 0; b < B; ++b) {
        int64_t image = b * H * stride;
        /* work(y, x) = 1 when columns x - r .. x + r of row y are all covered: the run of
           covered pixels ending at column x + r is at least 2 r + 1 long */
        for (int64_t y = 0; y < H; ++y) {
            int64_t run = 0, row = image + y * stride;
            for (int64_t x = -radius; x < W; ++x) {
                int64_t c = x + radius;
                run = (c < W && cover[row + c]) ? run + 1 : 0;
                if (x >= 0) work[row + x] = run >= side;
            }
        }
        /* the same along the columns of work */
        for (int64_t x = 0; x < W; ++x) {
            int64_t run = 0;
            for (int64_t y = -radius; y < H; ++y) {
                int64_t c = y + radius;
                run = (c < H && work[image + c * stride + x]) ? run + 1 : 0;
                if (y >= 0) out[image + y * stride + x] = run >= side;
            }
        }
    }
}
