#include "models/sampler/sampler_impl.h"

void pd_euler_step(pd_sampler *s, float *x, const float *v, int i) {
    const float dt = (float)(s->sigmas[i + 1] - s->sigmas[i]);
    for (int64_t j = 0; j < s->n; j++) x[j] += dt * v[j];
}
