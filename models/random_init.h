/* Deterministic random weights for the tiny preset and for tests: the values of a tensor depend only
 * on (seed, tensor name, element index), never on the order tensors are made in or on threads. */
#ifndef PD_MODELS_RANDOM_INIT_H
#define PD_MODELS_RANDOM_INIT_H

#include <stdint.h>

#include "engine/safetensors.h"
#include "engine/tensor.h"

/* Fills n floats with normal(mean, std) values keyed by (seed, name). */
void pd_random_normal(float *dst, int64_t n, uint64_t seed, const char *name, float mean, float std);
/* Fills n floats with uniform [lo, hi) values keyed by (seed, name). */
void pd_random_uniform(float *dst, int64_t n, uint64_t seed, const char *name, float lo, float hi);

/* Allocates a host tensor of dtype dt (F32, BF16 or F16) and fills it with normal(mean, std) values
 * keyed by (seed, name), rounded to dt. The caller frees it with pd_tensor_free. */
pd_status pd_random_tensor(pd_tensor *out, pd_dtype dt, int ndim, const int64_t *shape, uint64_t seed,
                           const char *name, float mean, float std);

/* Adds tensor `name` to a checkpoint writer with normal(mean, std) values keyed by (seed, key), stored as
 * dt. key is usually name; writers of two name layouts pass one key so both get the same values. */
pd_status pd_random_tensor_write(pd_st_writer *w, const char *name, const char *key, pd_dtype dt, int ndim,
                                 const int64_t *shape, uint64_t seed, float mean, float std);

#endif
