/* Safetensors checkpoints: reading (mmap, validated header, sharded sets) and writing.
 *
 * A file is an 8-byte little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}},
 * then the data; offsets are relative to the end of the header. pd_st_open() validates everything
 * before any tensor is handed out: header length within the file, JSON well formed, every dtype known,
 * end - begin == dtype size x product(shape), offsets inside the data section, no two tensors
 * overlapping, no duplicate names. Any violation returns PD_ERR_FORMAT (or PD_ERR_UNSUPPORTED for an
 * unknown dtype) with a message naming the file and the tensor.
 *
 * Tensors handed out are views into the read-only mapping: valid until pd_st_close(); never write
 * through them. (A tensor whose stored bytes are not aligned to its element size, which no common
 * writer produces, is copied once into an aligned buffer owned by the pd_st; a 0-byte tensor's data
 * is some valid pointer.) Dtypes read: F32, BF16, F16, I32 and I64 (token ids); any other is
 * PD_ERR_UNSUPPORTED. */
#ifndef PD_SAFETENSORS_H
#define PD_SAFETENSORS_H

#include "engine/tensor.h"

typedef struct pd_st pd_st;

/* Opens a checkpoint: a single `.safetensors` file, a sharded set through its
 * `*.safetensors.index.json` ({"weight_map": {"name": "shard file"}}; shards are resolved relative
 * to the index's folder and each is validated; every name in the map must exist in its shard), or a
 * directory holding exactly one of those (an index is preferred over a lone file).
 * Errors: PD_ERR_IO (missing/unreadable), PD_ERR_FORMAT, PD_ERR_UNSUPPORTED, PD_ERR_NOMEM. */
pd_status pd_st_open(const char *path, pd_st **out);
/* Opens a safetensors image already in memory (fuzzing, embedded models): the same validation as
 * pd_st_open. Nothing is copied: data must stay valid and unchanged until pd_st_close(). name is used
 * in messages and by pd_st_path ("<memory>" when NULL). */
pd_status pd_st_open_memory(const void *data, size_t size, const char *name, pd_st **out);
/* Releases the mapping and everything handed out. NULL is a no-op. */
void pd_st_close(pd_st *st);

/* Number of tensors and the name of tensor i (0 <= i < count), in a stable sorted order. */
int pd_st_count(const pd_st *st);
const char *pd_st_name(const pd_st *st, int i);
/* True when a tensor of that name exists. */
bool pd_st_has(const pd_st *st, const char *name);
/* A view of the named tensor. PD_ERR_NOT_FOUND (naming the checkpoint and tensor) if absent. */
pd_status pd_st_get(const pd_st *st, const char *name, pd_tensor *out);
/* Like pd_st_get, and also checks the shape: PD_ERR_FORMAT naming the tensor, the expected and the
 * found shape on mismatch. */
pd_status pd_st_get_shaped(const pd_st *st, const char *name, int ndim, const int64_t *shape, pd_tensor *out);
/* Value of a "__metadata__" string entry, or NULL. */
const char *pd_st_metadata(const pd_st *st, const char *key);
/* The file the checkpoint was opened from: the .safetensors file or the index (for a directory
 * argument, the one picked inside it). */
const char *pd_st_path(const pd_st *st);

/* ---- writing ---- */

typedef struct pd_st_writer pd_st_writer;

pd_status pd_st_writer_create(pd_st_writer **out);
/* Adds a tensor (copied now; any strides; stored in its own dtype). A duplicate name is
 * PD_ERR_INVALID. */
pd_status pd_st_writer_add(pd_st_writer *w, const char *name, const pd_tensor *t);
/* Adds (or replaces) a "__metadata__" string entry. */
pd_status pd_st_writer_metadata(pd_st_writer *w, const char *key, const char *value);
/* Writes the file atomically (a temporary name in the same folder, fsync, rename, fsync of the
 * folder): header keys in name order, padded with spaces so the data starts 8-byte aligned; tensors
 * back to back, widest dtype first then by name, so each starts aligned to its element size. On any
 * failure (PD_ERR_IO naming the path, e.g. a full disk) the temporary file is removed and an existing
 * file at path is left as it was. The writer may be saved again or freed. */
pd_status pd_st_writer_save(pd_st_writer *w, const char *path);
/* Frees the writer and its copies. NULL is a no-op. */
void pd_st_writer_free(pd_st_writer *w);

#endif
