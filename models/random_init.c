#include "models/random_init.h"

#include <math.h>
#include <stdlib.h>

static uint64_t pd_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t pd_name_key(uint64_t seed, const char *name) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) h = (h ^ *p) * 1099511628211ull;
    return pd_mix64(seed ^ pd_mix64(h));
}

/* Uniform in (0, 1), never 0, from the 53 high bits of a hash of (key, index). */
static double pd_unit(uint64_t key, uint64_t i) {
    return ((double)(pd_mix64(key + 0x9e3779b97f4a7c15ull * (i + 1)) >> 11) + 0.5) * 0x1.0p-53;
}

void pd_random_normal(float *dst, int64_t n, uint64_t seed, const char *name, float mean, float std) {
    uint64_t key = pd_name_key(seed, name);
    for (int64_t i = 0; i < n; i++) { /* Box-Muller, one value per element index */
        double u1 = pd_unit(key, 2 * (uint64_t)i), u2 = pd_unit(key, 2 * (uint64_t)i + 1);
        dst[i] = (float)(mean + std * sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
    }
}

void pd_random_uniform(float *dst, int64_t n, uint64_t seed, const char *name, float lo, float hi) {
    uint64_t key = pd_name_key(seed, name);
    for (int64_t i = 0; i < n; i++) dst[i] = (float)(lo + (hi - lo) * pd_unit(key, (uint64_t)i));
}

pd_status pd_random_tensor(pd_tensor *out, pd_dtype dt, int ndim, const int64_t *shape, uint64_t seed,
                           const char *name, float mean, float std) {
    PD_TRY(pd_tensor_alloc(out, dt, ndim, shape));
    int64_t n = pd_tensor_numel(out);
    float *tmp = malloc((size_t)(n ? n : 1) * sizeof *tmp);
    if (!tmp) {
        pd_tensor_free(out);
        return pd_error_set(PD_ERR_NOMEM, "out of memory making random tensor %s", name);
    }
    pd_random_normal(tmp, n, seed, name, mean, std);
    pd_convert_from_f32(out->data, dt, tmp, n);
    free(tmp);
    return PD_OK;
}

pd_status pd_random_tensor_write(pd_st_writer *w, const char *name, const char *key, pd_dtype dt, int ndim,
                                 const int64_t *shape, uint64_t seed, float mean, float std) {
    pd_tensor t;
    PD_TRY(pd_random_tensor(&t, dt, ndim, shape, seed, key, mean, std));
    pd_status st = pd_st_writer_add(w, name, &t);
    pd_tensor_free(&t);
    return st;
}
