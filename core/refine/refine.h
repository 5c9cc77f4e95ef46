/* The refinement's C kernels: the includes of refine_real.c (core/refine/_native.py). */
#include <math.h>
#include <stdint.h>
#include <string.h>
