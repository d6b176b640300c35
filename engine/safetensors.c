#include "engine/safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/file_io.h"

#define PD_ST_MAX_HEADER (100u * 1000u * 1000u) /* the format's own limit */
#define PD_ST_MAX_INDEX (64u * 1024u * 1024u)

typedef struct pd_st_entry {
    char *name;
    pd_tensor t;        /* view into a file's data, or into `owned` */
    int file;           /* index into pd_st.files */
    int64_t begin, end; /* data_offsets, for the overlap check */
    void *owned;        /* aligned copy when the stored bytes are misaligned for the dtype */
} pd_st_entry;

typedef struct pd_st_file {
    char *path;
    void *map; /* whole file (munmap'd at close), or NULL for a caller's buffer */
    size_t map_len;
} pd_st_file;

struct pd_st {
    char *path;
    pd_st_file *files;
    int nfiles;
    pd_st_entry *entries; /* sorted by name */
    int count;
    json_t *meta; /* object of strings */
};

/* ---- helpers ---- */

static char *pd_st_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

static int pd_st_entry_by_name(const void *a, const void *b) {
    return strcmp(((const pd_st_entry *)a)->name, ((const pd_st_entry *)b)->name);
}

static int pd_st_entry_by_offset(const void *a, const void *b) {
    const pd_st_entry *x = *(const pd_st_entry *const *)a, *y = *(const pd_st_entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static void pd_st_shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t o = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (o < n) snprintf(buf + o, n - o, ")");
}

void pd_st_close(pd_st *st) {
    if (!st) return;
    for (int i = 0; i < st->count; i++) {
        free(st->entries[i].name);
        free(st->entries[i].owned);
    }
    free(st->entries);
    for (int i = 0; i < st->nfiles; i++) {
        if (st->files[i].map) munmap(st->files[i].map, st->files[i].map_len);
        free(st->files[i].path);
    }
    free(st->files);
    json_decref(st->meta);
    free(st->path);
    free(st);
}

static pd_st *pd_st_new(const char *path) {
    pd_st *st = calloc(1, sizeof *st);
    if (!st) return NULL;
    st->path = pd_st_strdup(path);
    st->meta = json_object();
    if (!st->path || !st->meta) {
        pd_st_close(st);
        return NULL;
    }
    return st;
}

static pd_status pd_st_nomem(void) { return pd_error_set(PD_ERR_NOMEM, "out of memory reading a checkpoint"); }

static pd_status pd_st_add_file(pd_st *st, const char *path, void *map, size_t map_len) {
    pd_st_file *f = realloc(st->files, (size_t)(st->nfiles + 1) * sizeof *f);
    if (!f) return pd_st_nomem();
    st->files = f;
    char *p = pd_st_strdup(path);
    if (!p) return pd_st_nomem();
    st->files[st->nfiles++] = (pd_st_file){.path = p, .map = map, .map_len = map_len};
    return PD_OK;
}

/* ---- one file ---- */

/* Validates one tensor entry of a header. data_len bounds the offsets. */
static pd_status pd_st_parse_entry(const char *file, const char *name, json_t *v, uint64_t data_len,
                                   pd_st_entry *e) {
#define PD_ST_BAD(st_, ...) pd_error_prefix(pd_error_set(st_, __VA_ARGS__), "%s: tensor '%s'", file, name)
    if (!json_is_object(v)) return PD_ST_BAD(PD_ERR_FORMAT, "entry is not a JSON object");
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
           *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd)) return PD_ST_BAD(PD_ERR_FORMAT, "missing or non-string \"dtype\"");
    if (!json_is_array(js)) return PD_ST_BAD(PD_ERR_FORMAT, "missing or non-array \"shape\"");
    if (!json_is_array(jo)) return PD_ST_BAD(PD_ERR_FORMAT, "missing or non-array \"data_offsets\"");
    pd_dtype dt;
    if (pd_dtype_parse(json_string_value(jd), &dt) != PD_OK)
        return PD_ST_BAD(PD_ERR_UNSUPPORTED, "dtype \"%s\" is not supported (F32, BF16, F16, I32, I64 are)",
                         json_string_value(jd));
    size_t nd = json_array_size(js);
    if (nd > PD_MAX_DIMS) return PD_ST_BAD(PD_ERR_FORMAT, "shape has %zu dims, at most %d supported", nd, PD_MAX_DIMS);
    int64_t shape[PD_MAX_DIMS] = {0};
    /* numel, and the product with zero dims taken as 1: strides are built from the latter. */
    int64_t numel = 1, span = (int64_t)pd_dtype_size(dt);
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(js, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return PD_ST_BAD(PD_ERR_FORMAT, "shape entry %zu is not a non-negative integer", i);
        shape[i] = json_integer_value(d);
        if (__builtin_mul_overflow(numel, shape[i], &numel) ||
            __builtin_mul_overflow(span, shape[i] ? shape[i] : 1, &span))
            return PD_ST_BAD(PD_ERR_FORMAT, "shape's element count overflows");
    }
    if (json_array_size(jo) != 2 || !json_is_integer(json_array_get(jo, 0)) ||
        !json_is_integer(json_array_get(jo, 1)))
        return PD_ST_BAD(PD_ERR_FORMAT, "\"data_offsets\" is not two integers");
    int64_t b = json_integer_value(json_array_get(jo, 0)), en = json_integer_value(json_array_get(jo, 1));
    if (b < 0 || en < 0 || b > en)
        return PD_ST_BAD(PD_ERR_FORMAT, "data_offsets [%lld, %lld] are not an ascending pair of offsets",
                         (long long)b, (long long)en);
    if ((uint64_t)en > data_len)
        return PD_ST_BAD(PD_ERR_FORMAT, "data_offsets [%lld, %lld] run past the %llu-byte data section",
                         (long long)b, (long long)en, (unsigned long long)data_len);
    int64_t need = numel * (int64_t)pd_dtype_size(dt); /* <= span: cannot overflow */
    if (en - b != need) {
        char sh[160];
        pd_st_shape_str(sh, sizeof sh, (int)nd, shape);
        return PD_ST_BAD(PD_ERR_FORMAT, "data_offsets [%lld, %lld] hold %lld bytes but %s %s needs %lld",
                         (long long)b, (long long)en, (long long)(en - b), pd_dtype_name(dt), sh,
                         (long long)need);
    }
    e->t = pd_tensor_view(NULL, dt, (int)nd, shape);
    e->begin = b;
    e->end = en;
    return PD_OK;
#undef PD_ST_BAD
}

/* Parses and validates a safetensors image (data, size) named `file`, appending its tensors to st
 * (unsorted). `map` is handed to st (unmapped at close) even on failure. */
static pd_status pd_st_load_image(pd_st *st, const char *file, const unsigned char *data, size_t size,
                                  void *map) {
    int fi = st->nfiles;
    if (pd_st_add_file(st, file, map, map ? size : 0) != PD_OK) {
        if (map) munmap(map, size);
        return PD_ERR_NOMEM;
    }
    if (size < 8)
        return pd_error_set(PD_ERR_FORMAT, "%s: %zu bytes, too short for a safetensors file (8-byte header length)",
                            file, size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | data[i];
    if (hlen > PD_ST_MAX_HEADER)
        return pd_error_set(PD_ERR_FORMAT, "%s: header length %llu exceeds the %u-byte limit (not a safetensors file?)",
                            file, (unsigned long long)hlen, PD_ST_MAX_HEADER);
    if (hlen > size - 8)
        return pd_error_set(PD_ERR_FORMAT, "%s: header length %llu runs past the end of the %zu-byte file (truncated?)",
                            file, (unsigned long long)hlen, size);
    json_error_t jerr;
    json_t *root = json_loadb((const char *)data + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return pd_error_set(PD_ERR_FORMAT, "%s: header is not valid JSON: %s (line %d, column %d)", file,
                            jerr.text, jerr.line, jerr.column);
    pd_status rc = PD_OK;
    const unsigned char *base = data + 8 + hlen;
    uint64_t data_len = size - 8 - hlen;
    int first = st->count;
    pd_st_entry **order = NULL;
    if (!json_is_object(root)) {
        rc = pd_error_set(PD_ERR_FORMAT, "%s: header is JSON but not an object", file);
        goto done;
    }
    size_t n = json_object_size(root);
    pd_st_entry *ne = realloc(st->entries, (st->count + n + 1) * sizeof *ne);
    if (!ne) {
        rc = pd_st_nomem();
        goto done;
    }
    st->entries = ne;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "__metadata__")) {
            if (!json_is_object(v)) {
                rc = pd_error_set(PD_ERR_FORMAT, "%s: \"__metadata__\" is not a JSON object", file);
                goto done;
            }
            const char *mk;
            json_t *mv;
            json_object_foreach(v, mk, mv) {
                if (!json_is_string(mv)) {
                    rc = pd_error_set(PD_ERR_FORMAT, "%s: \"__metadata__\" entry '%s' is not a string", file, mk);
                    goto done;
                }
                if (!json_object_get(st->meta, mk) && json_object_set(st->meta, mk, mv)) {
                    rc = pd_st_nomem();
                    goto done;
                }
            }
            continue;
        }
        pd_st_entry e = {.file = fi};
        if ((rc = pd_st_parse_entry(file, key, v, data_len, &e)) != PD_OK) goto done;
        if (!(e.name = pd_st_strdup(key))) {
            rc = pd_st_nomem();
            goto done;
        }
        st->entries[st->count++] = e;
    }
    /* Overlaps: sort by begin; empty tensors overlap nothing. */
    int nt = st->count - first;
    order = malloc((size_t)(nt ? nt : 1) * sizeof *order);
    if (!order) {
        rc = pd_st_nomem();
        goto done;
    }
    for (int i = 0; i < nt; i++) order[i] = &st->entries[first + i];
    qsort(order, (size_t)nt, sizeof *order, pd_st_entry_by_offset);
    const pd_st_entry *prev = NULL;
    for (int i = 0; i < nt; i++) {
        const pd_st_entry *e = order[i];
        if (e->begin == e->end) continue;
        if (prev && e->begin < prev->end) {
            rc = pd_error_set(PD_ERR_FORMAT, "%s: tensor '%s': data_offsets [%lld, %lld] overlap tensor '%s' [%lld, %lld]",
                              file, e->name, (long long)e->begin, (long long)e->end, prev->name,
                              (long long)prev->begin, (long long)prev->end);
            goto done;
        }
        if (!prev || e->end > prev->end) prev = e;
    }
    /* Hand out pointers only now. Ops read elements through typed pointers, so misaligned data is
     * copied once into an aligned buffer; 0-byte tensors point at the (aligned) image start. */
    for (int i = first; i < st->count; i++) {
        pd_st_entry *e = &st->entries[i];
        size_t es = pd_dtype_size(e->t.dtype), nb = (size_t)(e->end - e->begin);
        const unsigned char *p = base + e->begin;
        if (nb == 0) {
            e->t.data = (void *)data;
        } else if ((uintptr_t)p % es) {
            if (!(e->owned = aligned_alloc(64, (nb + 63) & ~(size_t)63))) {
                rc = pd_st_nomem();
                goto done;
            }
            memcpy(e->owned, p, nb);
            e->t.data = e->owned;
        } else {
            e->t.data = (void *)p;
        }
    }
done:
    free(order);
    json_decref(root);
    return rc;
}

static pd_status pd_st_map_file(pd_st *st, const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return pd_error_set(PD_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return pd_error_set(PD_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return pd_error_set(PD_ERR_IO, "%s: not a regular file", path);
    }
    size_t size = (size_t)sb.st_size;
    void *map = NULL;
    if (size > 0) {
        map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int e = errno;
            close(fd);
            return pd_error_set(e == ENOMEM ? PD_ERR_NOMEM : PD_ERR_IO, "%s: cannot mmap %zu bytes: %s", path,
                                size, strerror(e));
        }
    }
    close(fd);
    static const unsigned char empty[8];
    return pd_st_load_image(st, path, map ? map : empty, size, map);
}

/* Sorts the entries by name and rejects duplicates (possible only across shards). */
static pd_status pd_st_finish(pd_st *st) {
    if (st->count > 1) qsort(st->entries, (size_t)st->count, sizeof *st->entries, pd_st_entry_by_name);
    for (int i = 1; i < st->count; i++)
        if (!strcmp(st->entries[i - 1].name, st->entries[i].name))
            return pd_error_set(PD_ERR_FORMAT, "%s: tensor '%s' appears in both %s and %s", st->path,
                                st->entries[i].name, st->files[st->entries[i - 1].file].path,
                                st->files[st->entries[i].file].path);
    return PD_OK;
}

static const pd_st_entry *pd_st_find(const pd_st *st, const char *name) {
    int lo = 0, hi = st->count - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(st->entries[mid].name, name);
        if (!c) return &st->entries[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

/* ---- sharded sets ---- */

static int pd_st_cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static pd_status pd_st_read_small(const char *path, size_t limit, char **out, size_t *len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return pd_error_set(PD_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || (uint64_t)sb.st_size > limit) {
        close(fd);
        return pd_error_set(PD_ERR_FORMAT, "%s: not a regular file of at most %zu bytes", path, limit);
    }
    size_t n = (size_t)sb.st_size, got = 0;
    char *buf = malloc(n ? n : 1);
    if (!buf) {
        close(fd);
        return pd_st_nomem();
    }
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EIO;
            free(buf);
            close(fd);
            return pd_error_set(PD_ERR_IO, "%s: read failed: %s", path, strerror(e));
        }
        got += (size_t)r;
    }
    close(fd);
    *out = buf;
    *len = n;
    return PD_OK;
}

static pd_status pd_st_open_index(pd_st *st, const char *path) {
    char *text = NULL;
    size_t len = 0;
    PD_TRY(pd_st_read_small(path, PD_ST_MAX_INDEX, &text, &len));
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root)
        return pd_error_set(PD_ERR_FORMAT, "%s: not valid JSON: %s (line %d, column %d)", path, jerr.text,
                            jerr.line, jerr.column);
    pd_status rc = PD_OK;
    const char **shards = NULL;
    char *full = NULL;
    json_t *map = json_object_get(root, "weight_map");
    if (!json_is_object(map)) {
        rc = pd_error_set(PD_ERR_FORMAT, "%s: no \"weight_map\" object", path);
        goto done;
    }
    size_t n = json_object_size(map), ns = 0;
    shards = malloc((n ? n : 1) * sizeof *shards);
    if (!shards) {
        rc = pd_st_nomem();
        goto done;
    }
    const char *key;
    json_t *v;
    json_object_foreach(map, key, v) {
        const char *s = json_string_value(v);
        if (!s) {
            rc = pd_error_set(PD_ERR_FORMAT, "%s: tensor '%s': weight_map value is not a string", path, key);
            goto done;
        }
        if (!*s || strchr(s, '/') || !strcmp(s, ".") || !strcmp(s, "..")) {
            rc = pd_error_set(PD_ERR_FORMAT, "%s: tensor '%s': shard \"%s\" is not a plain file name in the index's folder",
                              path, key, s);
            goto done;
        }
        shards[ns++] = s;
    }
    qsort(shards, ns, sizeof *shards, pd_st_cmp_str);
    const char *slash = strrchr(path, '/');
    size_t dlen = slash ? (size_t)(slash - path) + 1 : 0;
    for (size_t i = 0; i < ns; i++) {
        if (i && !strcmp(shards[i], shards[i - 1])) continue;
        free(full);
        size_t sl = strlen(shards[i]);
        if (!(full = malloc(dlen + sl + 1))) {
            rc = pd_st_nomem();
            goto done;
        }
        memcpy(full, path, dlen);
        memcpy(full + dlen, shards[i], sl + 1);
        if ((rc = pd_st_map_file(st, full)) != PD_OK) {
            pd_error_prefix(rc, "%s", path);
            goto done;
        }
    }
    if ((rc = pd_st_finish(st)) != PD_OK) goto done;
    json_object_foreach(map, key, v) {
        const pd_st_entry *e = pd_st_find(st, key);
        const char *want = json_string_value(v), *f = e ? st->files[e->file].path : NULL;
        const char *base = f ? (strrchr(f, '/') ? strrchr(f, '/') + 1 : f) : NULL;
        if (!e || strcmp(base, want)) {
            rc = pd_error_set(PD_ERR_FORMAT, "%s: tensor '%s': listed in shard %s, which does not hold it", path,
                              key, want);
            goto done;
        }
    }
done:
    free(full);
    free(shards);
    json_decref(root);
    return rc;
}

static bool pd_st_ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* Picks the checkpoint inside a directory: its index, else its only .safetensors file. */
static pd_status pd_st_pick_in_dir(const char *dir, char **out) {
    DIR *d = opendir(dir);
    if (!d) return pd_error_set(PD_ERR_IO, "%s: cannot open directory: %s", dir, strerror(errno));
    char *index = NULL, *single = NULL;
    int nindex = 0, nsingle = 0;
    pd_status rc = PD_OK;
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *nm = de->d_name;
        if (nm[0] == '.') continue;
        char **slot;
        if (pd_st_ends_with(nm, ".safetensors.index.json")) {
            slot = &index;
            nindex++;
        } else if (pd_st_ends_with(nm, ".safetensors")) {
            slot = &single;
            nsingle++;
        } else {
            continue;
        }
        if (!*slot || strcmp(nm, *slot) < 0) { /* keep the first by name, for a stable message */
            free(*slot);
            if (!(*slot = pd_st_strdup(nm))) rc = pd_st_nomem();
        }
    }
    closedir(d);
    const char *pick = NULL;
    if (rc == PD_OK) {
        if (nindex > 1)
            rc = pd_error_set(PD_ERR_FORMAT, "%s: holds %d *.safetensors.index.json files; name one", dir, nindex);
        else if (nindex == 1)
            pick = index;
        else if (nsingle > 1)
            rc = pd_error_set(PD_ERR_FORMAT, "%s: holds %d .safetensors files and no index; name one", dir, nsingle);
        else if (nsingle == 1)
            pick = single;
        else
            rc = pd_error_set(PD_ERR_IO, "%s: holds no .safetensors file or index", dir);
    }
    if (pick) {
        size_t dl = strlen(dir), pl = strlen(pick);
        char *p = malloc(dl + pl + 2);
        if (!p) {
            rc = pd_st_nomem();
        } else {
            memcpy(p, dir, dl);
            size_t o = dl;
            if (!dl || dir[dl - 1] != '/') p[o++] = '/';
            memcpy(p + o, pick, pl + 1);
            *out = p;
        }
    }
    free(index);
    free(single);
    return rc;
}

/* ---- public reading API ---- */

pd_status pd_st_open(const char *path, pd_st **out) {
    *out = NULL;
    if (!path || !*path) return pd_error_set(PD_ERR_INVALID, "pd_st_open: empty path");
    struct stat sb;
    if (stat(path, &sb) != 0) return pd_error_set(PD_ERR_IO, "%s: %s", path, strerror(errno));
    char *picked = NULL;
    if (S_ISDIR(sb.st_mode)) PD_TRY(pd_st_pick_in_dir(path, &picked));
    const char *file = picked ? picked : path;
    pd_st *st = pd_st_new(file);
    if (!st) {
        free(picked);
        return pd_st_nomem();
    }
    pd_status rc;
    if (pd_st_ends_with(file, ".json"))
        rc = pd_st_open_index(st, file);
    else if ((rc = pd_st_map_file(st, file)) == PD_OK)
        rc = pd_st_finish(st);
    free(picked);
    if (rc != PD_OK) {
        pd_st_close(st);
        return rc;
    }
    *out = st;
    return PD_OK;
}

pd_status pd_st_open_memory(const void *data, size_t size, const char *name, pd_st **out) {
    *out = NULL;
    if (!data && size) return pd_error_set(PD_ERR_INVALID, "pd_st_open_memory: NULL data");
    if (!name) name = "<memory>";
    pd_st *st = pd_st_new(name);
    if (!st) return pd_st_nomem();
    static const unsigned char empty[8];
    pd_status rc = pd_st_load_image(st, name, data ? data : empty, size, NULL);
    if (rc == PD_OK) rc = pd_st_finish(st);
    if (rc != PD_OK) {
        pd_st_close(st);
        return rc;
    }
    *out = st;
    return PD_OK;
}

int pd_st_count(const pd_st *st) { return st->count; }

const char *pd_st_name(const pd_st *st, int i) {
    PD_ASSERT(i >= 0 && i < st->count);
    return st->entries[i].name;
}

bool pd_st_has(const pd_st *st, const char *name) { return pd_st_find(st, name) != NULL; }

pd_status pd_st_get(const pd_st *st, const char *name, pd_tensor *out) {
    const pd_st_entry *e = pd_st_find(st, name);
    if (!e) return pd_error_set(PD_ERR_NOT_FOUND, "%s: no tensor '%s'", st->path, name);
    *out = e->t;
    return PD_OK;
}

pd_status pd_st_get_shaped(const pd_st *st, const char *name, int ndim, const int64_t *shape, pd_tensor *out) {
    pd_tensor t;
    PD_TRY(pd_st_get(st, name, &t));
    bool same = t.ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t.shape[i] == shape[i];
    if (!same) {
        char want[160], got[160];
        pd_st_shape_str(want, sizeof want, ndim, shape);
        pd_st_shape_str(got, sizeof got, t.ndim, t.shape);
        return pd_error_set(PD_ERR_FORMAT, "%s: tensor '%s': expected shape %s, found %s %s", st->path, name, want,
                            got, pd_dtype_name(t.dtype));
    }
    *out = t;
    return PD_OK;
}

const char *pd_st_metadata(const pd_st *st, const char *key) {
    return json_string_value(json_object_get(st->meta, key));
}

const char *pd_st_path(const pd_st *st) { return st->path; }

/* ---- writing ---- */

typedef struct pd_st_wentry {
    char *name;
    pd_tensor t; /* owned, contiguous */
} pd_st_wentry;

struct pd_st_writer {
    pd_st_wentry *e; /* sorted by name */
    int n, cap;
    json_t *meta;
};

pd_status pd_st_writer_create(pd_st_writer **out) {
    pd_st_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->meta = json_object())) {
        free(w);
        return pd_error_set(PD_ERR_NOMEM, "out of memory creating a safetensors writer");
    }
    *out = w;
    return PD_OK;
}

void pd_st_writer_free(pd_st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) {
        free(w->e[i].name);
        pd_tensor_free(&w->e[i].t);
    }
    free(w->e);
    json_decref(w->meta);
    free(w);
}

pd_status pd_st_writer_add(pd_st_writer *w, const char *name, const pd_tensor *t) {
    if (!name || !*name || !strcmp(name, "__metadata__"))
        return pd_error_set(PD_ERR_INVALID, "safetensors writer: tensor name '%s' is reserved or empty", name ? name : "");
    if (t->device != PD_DEVICE_CPU || t->dtype < 0 || t->dtype >= PD_DTYPE_COUNT)
        return pd_error_set(PD_ERR_INVALID, "safetensors writer: tensor '%s' is not a host tensor of a known dtype", name);
    int lo = 0, hi = w->n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(w->e[mid].name, name);
        if (!c) return pd_error_set(PD_ERR_INVALID, "safetensors writer: tensor '%s' added twice", name);
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 16;
        pd_st_wentry *ne = realloc(w->e, (size_t)cap * sizeof *ne);
        if (!ne) return pd_error_set(PD_ERR_NOMEM, "out of memory adding tensor '%s'", name);
        w->e = ne;
        w->cap = cap;
    }
    pd_st_wentry e = {.name = pd_st_strdup(name)};
    if (!e.name) return pd_error_set(PD_ERR_NOMEM, "out of memory adding tensor '%s'", name);
    pd_status rc = pd_tensor_alloc(&e.t, t->dtype, t->ndim, t->shape);
    if (rc == PD_OK && pd_tensor_is_contiguous(t)) {
        if (pd_tensor_nbytes(t)) memcpy(e.t.data, t->data, pd_tensor_nbytes(t)); /* the common case, fast */
    } else if (rc == PD_OK) {
        rc = pd_tensor_copy(&e.t, t);
    }
    if (rc != PD_OK) {
        free(e.name);
        pd_tensor_free(&e.t);
        return pd_error_prefix(rc, "safetensors writer: tensor '%s'", name);
    }
    memmove(&w->e[lo + 1], &w->e[lo], (size_t)(w->n - lo) * sizeof *w->e);
    w->e[lo] = e;
    w->n++;
    return PD_OK;
}

pd_status pd_st_writer_metadata(pd_st_writer *w, const char *key, const char *value) {
    json_t *s = json_string(value);
    if (!s) return pd_error_set(PD_ERR_INVALID, "safetensors writer: metadata '%s' is not valid UTF-8", key);
    if (json_object_set_new(w->meta, key, s))
        return pd_error_set(PD_ERR_INVALID, "safetensors writer: metadata key '%s' is not valid UTF-8", key);
    return PD_OK;
}

/* Data order: widest element first, then name, so every tensor starts aligned to its element size
 * while tensors stay back to back (other readers reject gaps). */
static int pd_st_wentry_layout(const void *a, const void *b) {
    const pd_st_wentry *x = *(const pd_st_wentry *const *)a, *y = *(const pd_st_wentry *const *)b;
    size_t sx = pd_dtype_size(x->t.dtype), sy = pd_dtype_size(y->t.dtype);
    if (sx != sy) return sx > sy ? -1 : 1;
    return strcmp(x->name, y->name);
}

pd_status pd_st_writer_save(pd_st_writer *w, const char *path) {
    pd_status rc = PD_OK;
    json_t *hdr = json_object();
    const pd_st_wentry **order = malloc((size_t)(w->n ? w->n : 1) * sizeof *order);
    char *text = NULL;
    pd_file_atomic file = {.fd = -1};
    if (!hdr || !order) {
        rc = pd_error_set(PD_ERR_NOMEM, "out of memory saving %s", path);
        goto done;
    }
    for (int i = 0; i < w->n; i++) order[i] = &w->e[i];
    qsort(order, (size_t)w->n, sizeof *order, pd_st_wentry_layout);
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        const pd_tensor *t = &order[i]->t;
        json_t *shape = json_array(), *ent = json_object();
        for (int d = 0; d < t->ndim; d++) json_array_append_new(shape, json_integer(t->shape[d]));
        uint64_t nb = pd_tensor_nbytes(t);
        json_object_set_new(ent, "dtype", json_string(pd_dtype_name(t->dtype)));
        json_object_set_new(ent, "shape", shape);
        json_object_set_new(ent, "data_offsets", json_pack("[II]", (json_int_t)off, (json_int_t)(off + nb)));
        if (json_object_set_new(hdr, order[i]->name, ent)) {
            rc = pd_error_set(PD_ERR_INVALID, "saving %s: tensor name '%s' is not valid UTF-8", path, order[i]->name);
            goto done;
        }
        off += nb;
    }
    if (json_object_size(w->meta)) json_object_set(hdr, "__metadata__", w->meta);
    text = json_dumps(hdr, JSON_COMPACT | JSON_SORT_KEYS);
    if (!text) {
        rc = pd_error_set(PD_ERR_NOMEM, "out of memory saving %s", path);
        goto done;
    }
    size_t tl = strlen(text), hl = (tl + 7) & ~(size_t)7;
    if (hl > PD_ST_MAX_HEADER) {
        rc = pd_error_set(PD_ERR_INVALID, "saving %s: header of %zu bytes exceeds the format's limit", path, hl);
        goto done;
    }
    unsigned char lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    static const char spaces[8] = "        ";

    if ((rc = pd_file_atomic_open(&file, path))) goto done;
    rc = pd_file_write_all(file.fd, lenbuf, 8, path);
    if (!rc) rc = pd_file_write_all(file.fd, text, tl, path);
    if (!rc) rc = pd_file_write_all(file.fd, spaces, hl - tl, path);
    for (int i = 0; !rc && i < w->n; i++) rc = pd_file_write_all(file.fd, order[i]->t.data, pd_tensor_nbytes(&order[i]->t), path);
    if (!rc) rc = pd_file_atomic_commit(&file, 0644);
done:
    pd_file_atomic_abort(&file);
    free(text);
    free(order);
    json_decref(hdr);
    return rc;
}
