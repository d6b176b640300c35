#include "engine/arena.h"

#include <string.h>

typedef struct pd_arena_chunk {
    pd_tensor mem; /* (size) of bytes, i32 elements for alignment */
    size_t size, used;
} pd_arena_chunk;

struct pd_arena {
    pd_backend *be;
    size_t chunk_bytes;
    pd_arena_chunk *chunks;
    int n_chunks, cap_chunks, cur;
};

pd_status pd_arena_create(pd_backend *be, size_t chunk_bytes, pd_arena **out) {
    pd_arena *a = calloc(1, sizeof *a);
    if (!a) return pd_error_set(PD_ERR_NOMEM, "out of memory creating an arena");
    a->be = be;
    a->chunk_bytes = chunk_bytes ? chunk_bytes : (size_t)64 << 20;
    *out = a;
    return PD_OK;
}

void pd_arena_free(pd_arena *a) {
    if (!a) return;
    for (int i = 0; i < a->n_chunks; i++) pd_backend_tensor_free(a->be, &a->chunks[i].mem);
    free(a->chunks);
    free(a);
}

static pd_status pd_arena_add_chunk(pd_arena *a, size_t min_bytes) {
    if (a->n_chunks == a->cap_chunks) {
        int cap = a->cap_chunks ? a->cap_chunks * 2 : 8;
        pd_arena_chunk *c = realloc(a->chunks, (size_t)cap * sizeof *c);
        if (!c) return pd_error_set(PD_ERR_NOMEM, "out of memory growing an arena");
        a->chunks = c;
        a->cap_chunks = cap;
    }
    size_t size = min_bytes > a->chunk_bytes ? min_bytes : a->chunk_bytes;
    size = (size + 63) & ~(size_t)63;
    int64_t shape[1] = {(int64_t)(size / 4)};
    pd_arena_chunk *c = &a->chunks[a->n_chunks];
    memset(c, 0, sizeof *c);
    PD_TRY(pd_backend_tensor_alloc(a->be, &c->mem, PD_DTYPE_I32, 1, shape));
    c->size = size;
    a->n_chunks++;
    return PD_OK;
}

pd_status pd_arena_tensor(pd_arena *a, pd_tensor *out, pd_dtype dt, int ndim, const int64_t *shape) {
    pd_tensor t = pd_tensor_view(NULL, dt, ndim, shape);
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0) return pd_error_set(PD_ERR_INVALID, "negative tensor dim %lld", (long long)shape[i]);
    size_t bytes = (pd_tensor_nbytes(&t) + 63) & ~(size_t)63;
    while (a->cur < a->n_chunks && a->chunks[a->cur].used + bytes > a->chunks[a->cur].size) a->cur++;
    if (a->cur == a->n_chunks) PD_TRY(pd_arena_add_chunk(a, bytes));
    pd_arena_chunk *c = &a->chunks[a->cur];
    t.data = (char *)c->mem.data + c->used;
    t.device = c->mem.device;
    t.device_index = c->mem.device_index;
    c->used += bytes;
    *out = t;
    return PD_OK;
}

size_t pd_arena_mark(const pd_arena *a) {
    size_t pos = 0;
    for (int i = 0; i < a->cur && i < a->n_chunks; i++) pos += a->chunks[i].size;
    if (a->cur < a->n_chunks) pos += a->chunks[a->cur].used;
    return pos;
}

void pd_arena_reset(pd_arena *a, size_t mark) {
    size_t pos = 0;
    int i = 0;
    while (i < a->n_chunks && pos + a->chunks[i].size < mark) pos += a->chunks[i++].size;
    if (i == a->n_chunks) return; /* mark at or past the end: nothing allocated after it */
    a->cur = i;
    a->chunks[i].used = mark - pos;
    for (int j = i + 1; j < a->n_chunks; j++) a->chunks[j].used = 0;
}

size_t pd_arena_reserved(const pd_arena *a) {
    size_t s = 0;
    for (int i = 0; i < a->n_chunks; i++) s += a->chunks[i].size;
    return s;
}
