#include "comm/shm.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Fixed layout shared by producer and consumer; 64 bytes before the data keeps it cache-line aligned. */
typedef struct shm_header {
    uint32_t magic, version;
    int32_t dtype, ndim;
    int64_t shape[PD_MAX_DIMS];
    uint64_t nbytes;
    uint8_t pad[64 - 16 - 8 * PD_MAX_DIMS - 8];
} shm_header;
_Static_assert(sizeof(shm_header) == 64, "shm header must stay 64 bytes");

void pd_shm_job_name(char *out, int pid, unsigned instance, uint64_t job_seq, const char *what) {
    snprintf(out, PD_SHM_NAME_MAX, "/pd-%d-%u-%" PRIu64 "-%s", pid, instance, job_seq, what);
}

int pd_shm_sweep_stale(int pid, unsigned instance) {
    DIR *d = opendir("/dev/shm");
    if (!d) return 0;
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        int p = 0, end = 0;
        unsigned inst = 0;
        uint64_t seq = 0;
        /* exactly "pd-<pid>-<instance>-<seq>-<what>" */
        if (sscanf(e->d_name, "pd-%d-%u-%" SCNu64 "-%*[a-z_]%n", &p, &inst, &seq, &end) != 3 || end == 0 ||
            e->d_name[end] != '\0' || p <= 0)
            continue;
        const bool ours = p == pid && inst == instance, dead = p != pid && kill(p, 0) != 0 && errno == ESRCH;
        if (!ours && !dead) continue;
        char name[PD_SHM_NAME_MAX + 1];
        if ((size_t)snprintf(name, sizeof name, "/%s", e->d_name) >= sizeof name) continue;
        if (shm_unlink(name) == 0) removed++;
    }
    closedir(d);
    return removed;
}

/* A segment name: '/' followed by 1 to max - 2 bytes (under max with its NUL) with no other '/'. */
static pd_status check_name(const char *name, size_t max) {
    size_t n = name ? strlen(name) : 0;
    if (n < 2 || n >= max || name[0] != '/' || strchr(name + 1, '/'))
        return pd_error_set(PD_ERR_INVALID, "shm: bad segment name '%s' (want '/name', under %zu bytes)",
                            name ? name : "(null)", max);
    return PD_OK;
}

/* Element count and bytes of a shape, or an error naming what is wrong. */
static pd_status shape_bytes(const char *name, pd_dtype dt, int ndim, const int64_t *shape, uint64_t *bytes) {
    if (dt < 0 || dt >= PD_DTYPE_COUNT) return pd_error_set(PD_ERR_FORMAT, "shm %s: unknown dtype %d", name, (int)dt);
    if (ndim < 0 || ndim > PD_MAX_DIMS) return pd_error_set(PD_ERR_FORMAT, "shm %s: %d dims (max %d)", name, ndim, PD_MAX_DIMS);
    uint64_t n = pd_dtype_size(dt);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return pd_error_set(PD_ERR_FORMAT, "shm %s: dim %d is negative", name, i);
        if (shape[i] && n > PD_SHM_MAX_BYTES / (uint64_t)shape[i])
            return pd_error_set(PD_ERR_FORMAT, "shm %s: tensor over the %llu-byte limit", name,
                                (unsigned long long)PD_SHM_MAX_BYTES);
        n *= (uint64_t)shape[i];
    }
    *bytes = n;
    return PD_OK;
}

static void fill_view(pd_shm *s, const shm_header *h) {
    s->tensor = pd_tensor_view((uint8_t *)s->base + sizeof(shm_header), (pd_dtype)h->dtype, h->ndim, h->shape);
}

/* pd_shm_map_new for a name already checked. */
static pd_status map_new(const char *name, size_t bytes, void **base) {
    *base = NULL;
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return pd_error_set(PD_ERR_IO, "shm %s: create: %s", name, strerror(errno));
    if (ftruncate(fd, (off_t)bytes) != 0) {
        int e = errno;
        close(fd);
        shm_unlink(name);
        return pd_error_set(PD_ERR_IO, "shm %s: size %zu bytes: %s", name, bytes, strerror(e));
    }
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED) {
        shm_unlink(name);
        return pd_error_set(PD_ERR_IO, "shm %s: map %zu bytes: %s", name, bytes, strerror(e));
    }
    *base = p;
    return PD_OK;
}

pd_status pd_shm_map_new(const char *name, size_t bytes, void **base) {
    *base = NULL;
    PD_TRY(check_name(name, 256)); /* names up to 255 bytes (shm.h) */
    return map_new(name, bytes, base);
}

pd_status pd_shm_create(const char *name, pd_dtype dt, int ndim, const int64_t *shape, pd_shm *out) {
    memset(out, 0, sizeof *out);
    PD_TRY(check_name(name, PD_SHM_NAME_MAX));
    uint64_t nbytes;
    pd_status st = shape_bytes(name, dt, ndim, shape, &nbytes);
    if (st) return PD_ERR_INVALID; /* the message is already set; a bad shape here is the caller's */
    size_t map = sizeof(shm_header) + (size_t)nbytes;
    void *base;
    PD_TRY(map_new(name, map, &base));
    shm_header *h = base;
    h->magic = PD_SHM_MAGIC;
    h->version = PD_SHM_VERSION;
    h->dtype = dt;
    h->ndim = ndim;
    for (int i = 0; i < ndim; i++) h->shape[i] = shape[i];
    h->nbytes = nbytes;
    snprintf(out->name, sizeof out->name, "%s", name);
    out->base = base;
    out->map_bytes = map;
    fill_view(out, h);
    return PD_OK;
}

pd_status pd_shm_create_from(const char *name, const pd_tensor *src, pd_shm *out) {
    PD_TRY(pd_shm_create(name, src->dtype, src->ndim, src->shape, out));
    pd_status st = pd_tensor_copy(&out->tensor, src);
    if (st) {
        pd_shm_close(out);
        pd_shm_unlink(name);
        return pd_error_prefix(st, "shm %s", name);
    }
    return PD_OK;
}

pd_status pd_shm_open(const char *name, pd_shm *out) {
    memset(out, 0, sizeof *out);
    PD_TRY(check_name(name, PD_SHM_NAME_MAX));
    int fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) {
        int e = errno;
        return pd_error_set(e == ENOENT ? PD_ERR_NOT_FOUND : PD_ERR_IO, "shm %s: open: %s", name, strerror(e));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return pd_error_set(PD_ERR_IO, "shm %s: stat: %s", name, strerror(e));
    }
    if (sb.st_size < (off_t)sizeof(shm_header)) {
        close(fd);
        return pd_error_set(PD_ERR_FORMAT, "shm %s: %lld bytes, smaller than its header", name, (long long)sb.st_size);
    }
    size_t map = (size_t)sb.st_size;
    void *base = mmap(NULL, map, PROT_READ, MAP_SHARED, fd, 0);
    int e = errno;
    close(fd);
    if (base == MAP_FAILED) return pd_error_set(PD_ERR_IO, "shm %s: map: %s", name, strerror(e));
    shm_header h;
    memcpy(&h, base, sizeof h); /* one snapshot: a writer cannot change it between check and use */
    pd_status st = PD_OK;
    uint64_t nbytes = 0;
    if (h.magic != PD_SHM_MAGIC)
        st = pd_error_set(PD_ERR_FORMAT, "shm %s: bad magic 0x%08x", name, h.magic);
    else if (h.version != PD_SHM_VERSION)
        st = pd_error_set(PD_ERR_FORMAT, "shm %s: version %u (this build reads %u)", name, h.version, PD_SHM_VERSION);
    else if ((st = shape_bytes(name, (pd_dtype)h.dtype, h.ndim, h.shape, &nbytes)) != PD_OK)
        ;
    else if (nbytes != h.nbytes)
        st = pd_error_set(PD_ERR_FORMAT, "shm %s: header says %llu bytes, shape needs %llu", name,
                          (unsigned long long)h.nbytes, (unsigned long long)nbytes);
    else if (nbytes > map - sizeof(shm_header))
        st = pd_error_set(PD_ERR_FORMAT, "shm %s: %llu data bytes but the segment holds %zu", name,
                          (unsigned long long)nbytes, map - sizeof(shm_header));
    if (st) {
        munmap(base, map);
        return st;
    }
    snprintf(out->name, sizeof out->name, "%s", name);
    out->base = base;
    out->map_bytes = map;
    fill_view(out, &h);
    return PD_OK;
}

void pd_shm_close(pd_shm *s) {
    if (s->base) munmap(s->base, s->map_bytes);
    memset(s, 0, sizeof *s);
}

void pd_shm_unlink(const char *name) {
    if (name && name[0]) shm_unlink(name);
}
