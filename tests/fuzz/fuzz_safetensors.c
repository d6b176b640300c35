/* libFuzzer target: arbitrary bytes as a safetensors image. Opening must either fail cleanly with a
 * message or hand out tensors whose every byte can be read, and whose shapes fit their data. */
#include <stdint.h>
#include <string.h>

#include "engine/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    pd_st *st = NULL;
    pd_status rc = pd_st_open_memory(data, size, "fuzz.safetensors", &st);
    if (rc != PD_OK) {
        PD_ASSERT(st == NULL && pd_error_msg()[0]);
        return 0;
    }
    unsigned sum = 0;
    const char *prev = NULL;
    for (int i = 0; i < pd_st_count(st); i++) {
        const char *name = pd_st_name(st, i);
        PD_ASSERT(!prev || strcmp(prev, name) < 0);
        prev = name;
        pd_tensor t;
        PD_ASSERT(pd_st_get(st, name, &t) == PD_OK && pd_st_has(st, name));
        PD_ASSERT(t.ndim >= 0 && t.ndim <= PD_MAX_DIMS && pd_tensor_is_contiguous(&t));
        PD_ASSERT((uintptr_t)t.data % pd_dtype_size(t.dtype) == 0 || pd_tensor_numel(&t) == 0);
        size_t nb = pd_tensor_nbytes(&t);
        PD_ASSERT(nb <= size);
        const unsigned char *p = t.data;
        for (size_t k = 0; k < nb; k++) sum += p[k];
        PD_ASSERT(pd_st_get_shaped(st, name, t.ndim, t.shape, &t) == PD_OK);
    }
    (void)pd_st_metadata(st, "format");
    /* Keeps the reads above from being optimised away. */
    volatile unsigned sink = sum;
    (void)sink;
    pd_tensor t;
    PD_ASSERT(pd_st_get(st, "\x01 not a name", &t) == PD_ERR_NOT_FOUND);
    pd_st_close(st);
    return 0;
}
