/* Activation arenas: a bump allocator of tensors on a backend's device, reset to a mark between
 * steps so a forward pass allocates nothing once the arena has grown to its working size.
 *
 * The arena grows in chunks when a request does not fit (the first forward pays for it); reset keeps
 * the chunks. Tensors from an arena are views: never pass them to pd_tensor_free. */
#ifndef PD_ARENA_H
#define PD_ARENA_H

#include "engine/backend.h"

typedef struct pd_arena pd_arena;

/* chunk_bytes is the minimum size of each chunk (requests larger than it get a chunk of their own). */
pd_status pd_arena_create(pd_backend *be, size_t chunk_bytes, pd_arena **out);
void pd_arena_free(pd_arena *a);
/* A 64-byte aligned contiguous tensor whose contents are undefined. */
pd_status pd_arena_tensor(pd_arena *a, pd_tensor *out, pd_dtype dt, int ndim, const int64_t *shape);
/* The current position; pd_arena_reset(a, mark) releases everything allocated after it. */
size_t pd_arena_mark(const pd_arena *a);
void pd_arena_reset(pd_arena *a, size_t mark);
/* Bytes reserved from the device so far (all chunks). */
size_t pd_arena_reserved(const pd_arena *a);

#endif
