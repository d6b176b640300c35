/* Safetensors: writer/reader round trips, sharded sets, directories, atomic saves, and hostile files
 * that must fail with the right status and a message naming the file and the tensor. */
#include <dirent.h>
#include <jansson.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/safetensors.h"
#include "tests/unit/test.h"

static char tmpdir[256];

static const char *tpath(const char *name) {
    static char buf[4][512];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, 512, "%s/%s", tmpdir, name);
    return p;
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    PD_CHECK(f != NULL);
    if (!f) return;
    if (n) PD_CHECK(fwrite(data, 1, n, f) == n);
    fclose(f);
}

static void write_text(const char *path, const char *text) { write_bytes(path, text, strlen(text)); }

/* A hand-made safetensors file: 8-byte little-endian length, the header as given, data_len bytes. */
static void write_st(const char *path, uint64_t hlen, const char *header, size_t data_len) {
    size_t hl = strlen(header), n = 8 + hl + data_len;
    unsigned char *buf = calloc(1, n);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(hlen >> (8 * i));
    memcpy(buf + 8, header, hl);
    for (size_t i = 0; i < data_len; i++) buf[8 + hl + i] = (unsigned char)(i * 7 + 1);
    write_bytes(path, buf, n);
    free(buf);
}

static void write_st_auto(const char *path, const char *header, size_t data_len) {
    write_st(path, strlen(header), header, data_len);
}

static bool msg_has(const char *s) { return s && strstr(pd_error_msg(), s) != NULL; }

/* Opening path must fail with `want`, and the message must name the file and (if given) the tensor
 * and another expected fragment. */
static void expect_open_fail(const char *path, pd_status want, const char *tensor, const char *fragment) {
    pd_st *st = (pd_st *)0x1;
    PD_CHECK_ERR(pd_st_open(path, &st), want);
    PD_CHECK(st == NULL);
    if (getenv("PD_TEST_VERBOSE")) printf("  %s\n", pd_error_msg());
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    PD_CHECK_MSG(msg_has(base), "message does not name %s: %s", base, pd_error_msg());
    if (tensor) {
        char q[256];
        snprintf(q, sizeof q, "'%s'", tensor);
        PD_CHECK_MSG(msg_has(q) || msg_has(tensor), "message does not name %s: %s", tensor, pd_error_msg());
    }
    if (fragment) PD_CHECK_MSG(msg_has(fragment), "message lacks \"%s\": %s", fragment, pd_error_msg());
    pd_st_close(st == (pd_st *)0x1 ? NULL : st);
}

/* ---- round trip ---- */

static void test_round_trip(void) {
    pd_st_writer *w;
    PD_CHECK_OK(pd_st_writer_create(&w));
    float f32v[6] = {1.5f, -2.0f, 3.25f, 0.0f, -0.125f, 1e20f};
    pd_tensor a = pd_tensor_view(f32v, PD_DTYPE_F32, 2, (int64_t[]){2, 3});
    uint16_t bf[12], hf[5];
    for (int i = 0; i < 12; i++) bf[i] = pd_f32_to_bf16((float)i - 5.5f);
    for (int i = 0; i < 5; i++) hf[i] = pd_f32_to_f16(0.25f * (float)i);
    pd_tensor b = pd_tensor_view(bf, PD_DTYPE_BF16, 2, (int64_t[]){3, 4});
    pd_tensor c = pd_tensor_view(hf, PD_DTYPE_F16, 1, (int64_t[]){5});
    int32_t ids[3] = {7, -1, 2147483647};
    pd_tensor d = pd_tensor_view(ids, PD_DTYPE_I32, 1, (int64_t[]){3});
    int64_t lids[2] = {INT64_MIN, 42};
    pd_tensor l = pd_tensor_view(lids, PD_DTYPE_I64, 2, (int64_t[]){1, 2});
    float sc = 6.5f;
    pd_tensor s = pd_tensor_view(&sc, PD_DTYPE_F32, 0, NULL);
    pd_tensor e = pd_tensor_view(f32v, PD_DTYPE_F32, 2, (int64_t[]){0, 3});
    /* Strided: columns 1..3 of a (4, 6) matrix whose element (r, c) = 10r + c. */
    float big[24];
    for (int i = 0; i < 24; i++) big[i] = (float)(10 * (i / 6) + i % 6);
    pd_tensor full = pd_tensor_view(big, PD_DTYPE_F32, 2, (int64_t[]){4, 6});
    pd_tensor strided = pd_tensor_slice(&full, 1, 1, 3); // (4, 3)
    PD_CHECK(!pd_tensor_is_contiguous(&strided));

    PD_CHECK_OK(pd_st_writer_add(w, "z.f32", &a));
    PD_CHECK_OK(pd_st_writer_add(w, "b.bf16", &b));
    PD_CHECK_OK(pd_st_writer_add(w, "c.f16", &c));
    PD_CHECK_OK(pd_st_writer_add(w, "ids", &d));
    PD_CHECK_OK(pd_st_writer_add(w, "ids64", &l));
    PD_CHECK_OK(pd_st_writer_add(w, "scalar", &s));
    PD_CHECK_OK(pd_st_writer_add(w, "empty", &e));
    PD_CHECK_OK(pd_st_writer_add(w, "strided", &strided));
    PD_CHECK_ERR(pd_st_writer_add(w, "ids", &d), PD_ERR_INVALID);
    PD_CHECK_ERR(pd_st_writer_add(w, "__metadata__", &d), PD_ERR_INVALID);
    PD_CHECK_OK(pd_st_writer_metadata(w, "format", "pt"));
    /* Copied at add time: later changes to the source do not reach the file. */
    big[7] = -999.0f;
    const char *path = tpath("rt.safetensors");
    PD_CHECK_OK(pd_st_writer_save(w, path));
    pd_st_writer_free(w);

    /* The raw layout, read without the reader: aligned header, sorted keys, back-to-back data. */
    FILE *f = fopen(path, "rb");
    PD_CHECK(f != NULL);
    unsigned char raw[4096];
    size_t n = f ? fread(raw, 1, sizeof raw, f) : 0;
    if (f) fclose(f);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | raw[i];
    PD_CHECK(hl % 8 == 0 && 8 + hl <= n);
    json_t *hdr = json_loadb((const char *)raw + 8, hl, 0, NULL);
    PD_CHECK(json_is_object(hdr));
    const char *key;
    json_t *v;
    size_t total = 0;
    int ntensors = 0;
    const char *p = (const char *)raw + 8;
    const char *pos_prev = p;
    json_object_foreach(hdr, key, v) {
        if (!strcmp(key, "__metadata__")) continue;
        ntensors++;
        json_t *o = json_object_get(v, "data_offsets");
        size_t bgn = (size_t)json_integer_value(json_array_get(o, 0)), end = (size_t)json_integer_value(json_array_get(o, 1));
        total += end - bgn;
        pd_dtype dt = PD_DTYPE_F32;
        PD_CHECK_OK(pd_dtype_parse(json_string_value(json_object_get(v, "dtype")), &dt));
        PD_CHECK_MSG(bgn % pd_dtype_size(dt) == 0, "%s at %zu", key, bgn);
        /* keys appear in the header text in sorted order */
        char q[64];
        snprintf(q, sizeof q, "\"%s\":", key);
        const char *at = strstr(p, q);
        PD_CHECK_MSG(at && at >= pos_prev, "key %s out of order", key);
        if (at) pos_prev = at;
    }
    PD_CHECK(ntensors == 8);
    PD_CHECK(total == 24 + 24 + 10 + 12 + 16 + 4 + 0 + 48);
    PD_CHECK(n == 8 + hl + total);
    json_decref(hdr);

    pd_st *st;
    PD_CHECK_OK(pd_st_open(path, &st));
    if (!st) return;
    PD_CHECK(pd_st_count(st) == 8);
    const char *want[] = {"b.bf16", "c.f16", "empty", "ids", "ids64", "scalar", "strided", "z.f32"};
    for (int i = 0; i < 8 && i < pd_st_count(st); i++) PD_CHECK(!strcmp(pd_st_name(st, i), want[i]));
    PD_CHECK(pd_st_has(st, "ids") && !pd_st_has(st, "nope"));
    PD_CHECK(!strcmp(pd_st_metadata(st, "format"), "pt"));
    PD_CHECK(pd_st_metadata(st, "missing") == NULL);
    PD_CHECK(!strcmp(pd_st_path(st), path));

    pd_tensor t;
    PD_CHECK_OK(pd_st_get(st, "z.f32", &t));
    PD_CHECK(t.dtype == PD_DTYPE_F32 && t.ndim == 2 && t.shape[0] == 2 && t.shape[1] == 3);
    PD_CHECK(pd_tensor_is_contiguous(&t) && (uintptr_t)t.data % 4 == 0);
    PD_CHECK(!memcmp(t.data, f32v, sizeof f32v));
    PD_CHECK_OK(pd_st_get(st, "b.bf16", &t));
    PD_CHECK(t.dtype == PD_DTYPE_BF16 && t.shape[0] == 3 && t.shape[1] == 4);
    PD_CHECK(pd_bf16_to_f32(((uint16_t *)t.data)[11]) == 5.5f);
    PD_CHECK(!memcmp(t.data, bf, sizeof bf));
    PD_CHECK_OK(pd_st_get(st, "c.f16", &t));
    PD_CHECK(t.dtype == PD_DTYPE_F16 && pd_f16_to_f32(((uint16_t *)t.data)[3]) == 0.75f);
    PD_CHECK_OK(pd_st_get(st, "ids", &t));
    PD_CHECK(t.dtype == PD_DTYPE_I32 && ((int32_t *)t.data)[1] == -1 && ((int32_t *)t.data)[2] == 2147483647);
    PD_CHECK_OK(pd_st_get(st, "ids64", &t));
    PD_CHECK(t.dtype == PD_DTYPE_I64 && ((int64_t *)t.data)[0] == INT64_MIN && (uintptr_t)t.data % 8 == 0);
    PD_CHECK_OK(pd_st_get(st, "scalar", &t));
    PD_CHECK(t.ndim == 0 && pd_tensor_numel(&t) == 1 && *(float *)t.data == 6.5f);
    PD_CHECK_OK(pd_st_get(st, "empty", &t));
    PD_CHECK(t.ndim == 2 && t.shape[0] == 0 && t.shape[1] == 3 && pd_tensor_numel(&t) == 0 && t.data != NULL);
    PD_CHECK_OK(pd_st_get(st, "strided", &t));
    PD_CHECK(t.ndim == 2 && t.shape[0] == 4 && t.shape[1] == 3 && pd_tensor_is_contiguous(&t));
    for (int r = 0; r < 4; r++)
        for (int k = 0; k < 3; k++) PD_CHECK(((float *)t.data)[r * 3 + k] == (float)(10 * r + k + 1));
    PD_CHECK_OK(pd_st_get_shaped(st, "strided", 2, (int64_t[]){4, 3}, &t));
    pd_st_close(st);
}

/* Saving over an existing file when writes fail (file size limit = a full disk) leaves the old file
 * intact and no temporary file behind. */
static void test_atomic_save_failure(void) {
    const char *path = tpath("atomic.safetensors");
    write_text(path, "old contents");
    pd_st_writer *w;
    PD_CHECK_OK(pd_st_writer_create(&w));
    float x[4096] = {0};
    pd_tensor t = pd_tensor_view(x, PD_DTYPE_F32, 1, (int64_t[]){4096});
    PD_CHECK_OK(pd_st_writer_add(w, "x", &t));
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 1000;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    PD_CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    PD_CHECK_ERR(pd_st_writer_save(w, path), PD_ERR_IO);
    PD_CHECK(msg_has("atomic.safetensors"));
    const char *fresh = tpath("fresh.safetensors");
    PD_CHECK_ERR(pd_st_writer_save(w, fresh), PD_ERR_IO);
    setrlimit(RLIMIT_FSIZE, &old);
    PD_CHECK(access(fresh, F_OK) != 0);
    signal(SIGXFSZ, prev);
    char buf[64] = {0};
    FILE *f = fopen(path, "rb");
    if (f) {
        PD_CHECK(fread(buf, 1, sizeof buf - 1, f) == 12);
        fclose(f);
    }
    PD_CHECK(!strcmp(buf, "old contents"));
    DIR *d = opendir(tmpdir);
    struct dirent *de;
    while (d && (de = readdir(d))) PD_CHECK_MSG(!strstr(de->d_name, "atomic.safetensors.") && !strstr(de->d_name, "fresh"), "left %s", de->d_name);
    if (d) closedir(d);
    /* With room again the same writer saves, replacing the old file. */
    PD_CHECK_OK(pd_st_writer_save(w, path));
    pd_st_writer_free(w);
    pd_st *st;
    PD_CHECK_OK(pd_st_open(path, &st));
    if (st) PD_CHECK(pd_st_count(st) == 1);
    pd_st_close(st);
    /* A folder that does not exist: an IO error naming the path. */
    PD_CHECK_OK(pd_st_writer_create(&w));
    PD_CHECK_ERR(pd_st_writer_save(w, tpath("no/such/dir/x.safetensors")), PD_ERR_IO);
    PD_CHECK(msg_has("no/such/dir/x.safetensors"));
    pd_st_writer_free(w);
}

/* ---- sharded sets and directories ---- */

static void save_one(const char *path, const char *name, float base, int n) {
    pd_st_writer *w;
    PD_CHECK_OK(pd_st_writer_create(&w));
    float v[16];
    for (int i = 0; i < n; i++) v[i] = base + (float)i;
    pd_tensor t = pd_tensor_view(v, PD_DTYPE_F32, 1, (int64_t[]){n});
    PD_CHECK_OK(pd_st_writer_add(w, name, &t));
    PD_CHECK_OK(pd_st_writer_save(w, path));
    pd_st_writer_free(w);
}

static void test_sharded(void) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s/sharded", tmpdir);
    mkdir(dir, 0755);
    char p1[400], p2[400], idx[400], q[400];
    snprintf(p1, sizeof p1, "%s/m-00001-of-00002.safetensors", dir);
    snprintf(p2, sizeof p2, "%s/m-00002-of-00002.safetensors", dir);
    snprintf(idx, sizeof idx, "%s/m.safetensors.index.json", dir);
    pd_st_writer *w;
    PD_CHECK_OK(pd_st_writer_create(&w));
    float av[4] = {1, 2, 3, 4};
    uint16_t bv[2] = {pd_f32_to_bf16(-1), pd_f32_to_bf16(8)};
    pd_tensor ta = pd_tensor_view(av, PD_DTYPE_F32, 2, (int64_t[]){2, 2});
    pd_tensor tb = pd_tensor_view(bv, PD_DTYPE_BF16, 1, (int64_t[]){2});
    PD_CHECK_OK(pd_st_writer_add(w, "blocks.0.w", &ta));
    PD_CHECK_OK(pd_st_writer_add(w, "blocks.0.b", &tb));
    PD_CHECK_OK(pd_st_writer_metadata(w, "format", "pt"));
    PD_CHECK_OK(pd_st_writer_save(w, p1));
    pd_st_writer_free(w);
    save_one(p2, "head.w", 100, 3);
    write_text(idx, "{\"metadata\": {\"total_size\": 32}, \"weight_map\": {"
                    "\"blocks.0.w\": \"m-00001-of-00002.safetensors\", \"blocks.0.b\": \"m-00001-of-00002.safetensors\","
                    " \"head.w\": \"m-00002-of-00002.safetensors\"}}");
    for (int pass = 0; pass < 2; pass++) { /* the index itself, then its directory */
        pd_st *st;
        PD_CHECK_OK(pd_st_open(pass ? dir : idx, &st));
        if (!st) continue;
        PD_CHECK(pd_st_count(st) == 3);
        PD_CHECK(!strcmp(pd_st_name(st, 0), "blocks.0.b") && !strcmp(pd_st_name(st, 2), "head.w"));
        PD_CHECK(!strcmp(pd_st_path(st), idx));
        PD_CHECK(pd_st_metadata(st, "format") && !strcmp(pd_st_metadata(st, "format"), "pt"));
        pd_tensor t;
        PD_CHECK_OK(pd_st_get_shaped(st, "blocks.0.w", 2, (int64_t[]){2, 2}, &t));
        PD_CHECK(((float *)t.data)[3] == 4.0f);
        PD_CHECK_OK(pd_st_get(st, "head.w", &t));
        PD_CHECK(t.shape[0] == 3 && ((float *)t.data)[2] == 102.0f);
        PD_CHECK_OK(pd_st_get(st, "blocks.0.b", &t));
        PD_CHECK(pd_bf16_to_f32(((uint16_t *)t.data)[1]) == 8.0f);
        pd_st_close(st);
    }
    /* Hostile indexes. */
    snprintf(q, sizeof q, "%s/missing.safetensors.index.json", dir);
    write_text(q, "{\"weight_map\": {\"head.w\": \"gone-00002.safetensors\"}}");
    expect_open_fail(q, PD_ERR_IO, NULL, "gone-00002.safetensors");
    snprintf(q, sizeof q, "%s/escape.safetensors.index.json", dir);
    write_text(q, "{\"weight_map\": {\"head.w\": \"../m-00002-of-00002.safetensors\"}}");
    expect_open_fail(q, PD_ERR_FORMAT, "head.w", "plain file name");
    snprintf(q, sizeof q, "%s/dotdot.safetensors.index.json", dir);
    write_text(q, "{\"weight_map\": {\"head.w\": \"..\"}}");
    expect_open_fail(q, PD_ERR_FORMAT, "head.w", NULL);
    snprintf(q, sizeof q, "%s/wrong.safetensors.index.json", dir);
    write_text(q, "{\"weight_map\": {\"head.w\": \"m-00001-of-00002.safetensors\"}}");
    expect_open_fail(q, PD_ERR_FORMAT, "head.w", "m-00001-of-00002.safetensors");
    snprintf(q, sizeof q, "%s/nomap.safetensors.index.json", dir);
    write_text(q, "{\"weights\": {}}");
    expect_open_fail(q, PD_ERR_FORMAT, NULL, "weight_map");
    /* Two shards holding the same name. */
    char p3[400];
    snprintf(p3, sizeof p3, "%s/dup.safetensors", dir);
    save_one(p3, "head.w", 0, 2);
    snprintf(q, sizeof q, "%s/dupe.safetensors.index.json", dir);
    write_text(q, "{\"weight_map\": {\"head.w\": \"m-00002-of-00002.safetensors\", \"x\": \"dup.safetensors\"}}");
    expect_open_fail(q, PD_ERR_FORMAT, "head.w", NULL);
    /* Now the folder holds several indexes: opening it is ambiguous. */
    expect_open_fail(dir, PD_ERR_FORMAT, NULL, "index");
}

static void test_directory(void) {
    char dir[300], one[400];
    snprintf(dir, sizeof dir, "%s/single", tmpdir);
    mkdir(dir, 0755);
    expect_open_fail(dir, PD_ERR_IO, NULL, "no .safetensors");
    snprintf(one, sizeof one, "%s/diffusion_pytorch_model.safetensors", dir);
    save_one(one, "proj_out.weight", 5, 4);
    char cfg[400];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    write_text(cfg, "{}");
    pd_st *st;
    PD_CHECK_OK(pd_st_open(dir, &st));
    if (st) {
        PD_CHECK(pd_st_count(st) == 1 && pd_st_has(st, "proj_out.weight"));
        PD_CHECK(!strcmp(pd_st_path(st), one));
        pd_st_close(st);
    }
    snprintf(one, sizeof one, "%s/model.safetensors", dir);
    save_one(one, "other", 5, 4);
    expect_open_fail(dir, PD_ERR_FORMAT, NULL, "no index");
    expect_open_fail(tpath("does-not-exist.safetensors"), PD_ERR_IO, NULL, NULL);
}

/* ---- hostile single files ---- */

#define OK_ENTRY "\"ok\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}"

static void hostile(const char *file, const char *header, size_t data_len, pd_status want, const char *tensor,
                    const char *fragment) {
    const char *p = tpath(file);
    write_st_auto(p, header, data_len);
    expect_open_fail(p, want, tensor, fragment);
    /* The in-memory open validates identically. */
    FILE *f = fopen(p, "rb");
    unsigned char buf[2048];
    size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (f) fclose(f);
    pd_st *st = NULL;
    PD_CHECK_ERR(pd_st_open_memory(buf, n, file, &st), want);
    PD_CHECK(st == NULL && msg_has(file));
}

static void test_hostile(void) {
    const char *p = tpath("empty.safetensors");
    write_bytes(p, "", 0);
    expect_open_fail(p, PD_ERR_FORMAT, NULL, "too short");
    p = tpath("short.safetensors");
    write_bytes(p, "\x10\0\0", 3);
    expect_open_fail(p, PD_ERR_FORMAT, NULL, NULL);

    /* Header length present, header cut: a valid file truncated halfway through its header. */
    p = tpath("cut.safetensors");
    {
        const char *h = "{" OK_ENTRY "}";
        write_st(p, strlen(h), h, 8);
        FILE *f = fopen(p, "rb");
        unsigned char buf[256];
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        PD_CHECK(n > 30);
        write_bytes(p, buf, 8 + strlen(h) / 2);
        expect_open_fail(p, PD_ERR_FORMAT, NULL, "runs past the end");
    }
    p = tpath("past-eof.safetensors");
    write_st(p, 1u << 20, "{}", 0);
    expect_open_fail(p, PD_ERR_FORMAT, NULL, "runs past the end");
    p = tpath("absurd.safetensors");
    write_st(p, UINT64_C(1) << 63, "{}", 0);
    expect_open_fail(p, PD_ERR_FORMAT, NULL, "limit");
    p = tpath("huge-len.safetensors");
    write_st(p, UINT64_MAX, "{}", 0);
    expect_open_fail(p, PD_ERR_FORMAT, NULL, "limit");

    hostile("notjson.safetensors", "{\"w\": {\"dtype\": F32", 0, PD_ERR_FORMAT, NULL, "not valid JSON");
    hostile("binary.safetensors", "\x01\x02\x03\xff\xfe", 0, PD_ERR_FORMAT, NULL, "not valid JSON");
    hostile("array.safetensors", "[1, 2, 3]", 0, PD_ERR_FORMAT, NULL, "not an object");
    hostile("entry-num.safetensors", "{\"w\": 5}", 0, PD_ERR_FORMAT, "w", "not a JSON object");
    hostile("no-dtype.safetensors", "{\"blocks.0.w\": {\"shape\": [2], \"data_offsets\": [0, 8]}}", 8, PD_ERR_FORMAT,
            "blocks.0.w", "dtype");
    hostile("no-shape.safetensors", "{\"w1\": {\"dtype\": \"F32\", \"data_offsets\": [0, 8]}}", 8, PD_ERR_FORMAT, "w1",
            "shape");
    hostile("no-offsets.safetensors", "{\"w2\": {\"dtype\": \"F32\", \"shape\": [2]}}", 8, PD_ERR_FORMAT, "w2",
            "data_offsets");
    hostile("f64.safetensors", "{\"w3\": {\"dtype\": \"F64\", \"shape\": [1], \"data_offsets\": [0, 8]}}", 8,
            PD_ERR_UNSUPPORTED, "w3", "F64");
    hostile("dtype-num.safetensors", "{\"w3\": {\"dtype\": 4, \"shape\": [1], \"data_offsets\": [0, 4]}}", 8,
            PD_ERR_FORMAT, "w3", "dtype");
    hostile("neg.safetensors", "{\"w4\": {\"dtype\": \"F32\", \"shape\": [-1, 2], \"data_offsets\": [0, 8]}}", 8,
            PD_ERR_FORMAT, "w4", "non-negative");
    hostile("float-dim.safetensors", "{\"w4\": {\"dtype\": \"F32\", \"shape\": [2.0], \"data_offsets\": [0, 8]}}", 8,
            PD_ERR_FORMAT, "w4", "integer");
    hostile("rank6.safetensors",
            "{\"w5\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,2], \"data_offsets\": [0, 8]}}", 8, PD_ERR_FORMAT,
            "w5", "dims");
    hostile("overflow.safetensors",
            "{\"w6\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296], \"data_offsets\": [0, 0]}}", 0,
            PD_ERR_FORMAT, "w6", "overflow");
    /* Empty by element count, yet its strides would overflow. */
    hostile("overflow0.safetensors",
            "{\"w6\": {\"dtype\": \"BF16\", \"shape\": [0, 4611686018427387904, 4], \"data_offsets\": [0, 0]}}", 0,
            PD_ERR_FORMAT, "w6", "overflow");
    hostile("range.safetensors", "{\"w7\": {\"dtype\": \"F32\", \"shape\": [250], \"data_offsets\": [0, 1000]}}", 16,
            PD_ERR_FORMAT, "w7", "past the 16-byte data section");
    hostile("negoff.safetensors", "{\"w7\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [-4, -4]}}", 16,
            PD_ERR_FORMAT, "w7", NULL);
    hostile("begin-end.safetensors", "{\"w8\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 4]}}", 16,
            PD_ERR_FORMAT, "w8", "[8, 4]");
    hostile("offs3.safetensors", "{\"w8\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4, 8]}}", 16,
            PD_ERR_FORMAT, "w8", "two integers");
    hostile("overlap.safetensors",
            "{\"aa\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]},"
            " \"bb\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [8, 24]}}",
            24, PD_ERR_FORMAT, "bb", "overlap tensor 'aa'");
    hostile("overlap-inner.safetensors",
            "{\"aa\": {\"dtype\": \"F32\", \"shape\": [8], \"data_offsets\": [0, 32]},"
            " \"bb\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [28, 32]},"
            " \"cc\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [16, 20]}}",
            32, PD_ERR_FORMAT, NULL, "overlap");
    hostile("mismatch.safetensors",
            "{\"blocks.0.ffn.0.weight\": {\"dtype\": \"BF16\", \"shape\": [3, 4], \"data_offsets\": [0, 10]}}", 16,
            PD_ERR_FORMAT, "blocks.0.ffn.0.weight", "data_offsets [0, 10] hold 10 bytes but BF16 (3, 4) needs 24");
    hostile("dup.safetensors",
            "{\"twice\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
            " \"twice\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}",
            8, PD_ERR_FORMAT, "twice", "duplicate");
    hostile("meta.safetensors", "{\"__metadata__\": {\"format\": 1}, " OK_ENTRY "}", 8, PD_ERR_FORMAT, "format",
            "__metadata__");
    hostile("trailing.safetensors", "{" OK_ENTRY "} x", 8, PD_ERR_FORMAT, NULL, "not valid JSON");
}

/* Odd but valid files: an empty header, a misaligned tensor, empty tensors inside another's range,
 * trailing space padding. */
static void test_valid_oddities(void) {
    pd_st *st;
    const char *p = tpath("none.safetensors");
    write_st_auto(p, "{}", 0);
    PD_CHECK_OK(pd_st_open(p, &st));
    if (st) PD_CHECK(pd_st_count(st) == 0);
    pd_st_close(st);

    p = tpath("misaligned.safetensors");
    /* header of 7 bytes + offset 2: the F32 data cannot be 4-aligned in the mapping */
    const char *h = "{\"m\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [2, 10]},"
                    " \"e\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [4, 4]}}   ";
    write_st_auto(p, h, 10);
    PD_CHECK_OK(pd_st_open(p, &st));
    if (st) {
        pd_tensor t;
        PD_CHECK_OK(pd_st_get(st, "m", &t));
        PD_CHECK((uintptr_t)t.data % 4 == 0);
        unsigned char want[8];
        for (int i = 0; i < 8; i++) want[i] = (unsigned char)((i + 2) * 7 + 1);
        PD_CHECK(!memcmp(t.data, want, 8));
        PD_CHECK_OK(pd_st_get(st, "e", &t));
        PD_CHECK(t.data != NULL && pd_tensor_numel(&t) == 0);
        pd_st_close(st);
    }
}

/* A file written by Python from the format description (the fuzz seeds' generator), read here. */
static void test_python_written(void) {
    char path[1200];
    snprintf(path, sizeof path, "%s", __FILE__);
    for (int up = 0; up < 2; up++) {
        char *s = strrchr(path, '/');
        if (s) *s = 0;
    }
    size_t l = strlen(path);
    snprintf(path + l, sizeof path - l, "/fuzz/seeds/fuzz_safetensors/two_tensors.safetensors");
    pd_st *st;
    PD_CHECK_OK(pd_st_open(path, &st));
    if (!st) return;
    PD_CHECK(pd_st_count(st) == 2 && !strcmp(pd_st_metadata(st, "format"), "pt"));
    pd_tensor t;
    PD_CHECK_OK(pd_st_get_shaped(st, "a", 2, (int64_t[]){2, 2}, &t));
    const unsigned char *a = t.data;
    for (int i = 0; i < 16; i++) PD_CHECK(a[i] == i);
    PD_CHECK_OK(pd_st_get_shaped(st, "b", 1, (int64_t[]){3}, &t));
    PD_CHECK(t.dtype == PD_DTYPE_BF16 && ((const unsigned char *)t.data)[0] == 16 && ((const unsigned char *)t.data)[5] == 21);
    pd_st_close(st);
}

static void test_get_errors(void) {
    const char *p = tpath("get.safetensors");
    write_st_auto(p, "{\"blocks.0.self_attn.q.weight\": {\"dtype\": \"BF16\", \"shape\": [4, 2], \"data_offsets\": [0, 16]}}",
                  16);
    pd_st *st;
    PD_CHECK_OK(pd_st_open(p, &st));
    if (!st) return;
    pd_tensor t;
    PD_CHECK_ERR(pd_st_get(st, "blocks.0.self_attn.k.weight", &t), PD_ERR_NOT_FOUND);
    PD_CHECK(msg_has("get.safetensors") && msg_has("blocks.0.self_attn.k.weight"));
    PD_CHECK_ERR(pd_st_get_shaped(st, "blocks.0.self_attn.q.weight", 2, (int64_t[]){2, 4}, &t), PD_ERR_FORMAT);
    PD_CHECK_MSG(msg_has("get.safetensors") && msg_has("blocks.0.self_attn.q.weight") && msg_has("(2, 4)") &&
                     msg_has("(4, 2)"),
                 "%s", pd_error_msg());
    PD_CHECK_ERR(pd_st_get_shaped(st, "blocks.0.self_attn.q.weight", 1, (int64_t[]){8}, &t), PD_ERR_FORMAT);
    PD_CHECK_ERR(pd_st_get_shaped(st, "absent", 1, (int64_t[]){8}, &t), PD_ERR_NOT_FOUND);
    PD_CHECK_OK(pd_st_get_shaped(st, "blocks.0.self_attn.q.weight", 2, (int64_t[]){4, 2}, &t));
    PD_CHECK(t.dtype == PD_DTYPE_BF16);
    pd_st_close(st);
}

int main(void) {
    if (!pd_test_scratch_dir(tmpdir, sizeof tmpdir, "test_safetensors")) return 1;
    PD_RUN(test_round_trip);
    PD_RUN(test_atomic_save_failure);
    PD_RUN(test_sharded);
    PD_RUN(test_directory);
    PD_RUN(test_hostile);
    PD_RUN(test_valid_oddities);
    PD_RUN(test_get_errors);
    PD_RUN(test_python_written);
    int rc = pd_test_summary();
    if (rc == 0) pd_test_rmtree(tmpdir);
    return rc;
}
