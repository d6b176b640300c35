#include "models/text/tokenizer.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "models/text/charsmap.h"

#define PD_TK_META "\xE2\x96\x81" /* U+2581 '▁' */
#define PD_TK_UNK_PENALTY 10.0     /* unknown characters score min_score - 10, as SentencePiece */
#define PD_TK_MAX_SCORE 1e30

struct pd_tokenizer {
    int n;                /* pieces */
    char *blob;           /* pieces, NUL-terminated, back to back */
    uint32_t *off;        /* (n) start of piece i in blob */
    uint16_t *len;        /* (n) bytes */
    float *score;         /* (n) */
    uint8_t *matchable;   /* (n) may match text (not special, unk or byte) */
    int32_t *table;       /* open-addressing hash of all pieces -> id, -1 empty */
    uint32_t table_mask;
    int max_len;          /* longest matchable piece in bytes */
    int unk_id, eos_id, pad_id;
    int byte_id[256];     /* "<0xNN>" pieces, -1 when absent */
    bool byte_fallback;   /* model.byte_fallback and all 256 byte pieces present */
    bool prefix;          /* prefix space: Metaspace's or a Prepend normaliser's */
    bool norm_prefix;     /* a Prepend("▁") normaliser was seen */
    double unk_score;
    pd_charsmap *charsmap; /* NULL: no map */
};

/* ---- UTF-8 ---- */

/* Length of the valid UTF-8 character at s (n > 0 bytes available), or 0 when invalid. */
static size_t pd_utf8_len(const uint8_t *s, size_t n) {
    uint8_t c = s[0];
    if (c < 0x80) return 1;
    size_t l;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) l = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        l = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        l = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else return 0;
    if (n < l || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < l; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return l;
}

/* Step width for segmentation: a whole valid character, else one byte. */
static size_t pd_utf8_step(const uint8_t *s, size_t n) {
    size_t l = pd_utf8_len(s, n);
    return l ? l : 1;
}

/* ---- growable byte buffer ---- */

typedef struct pd_buf {
    char *p;
    size_t n, cap;
    size_t limit;   /* 0: none; beyond it the buffer fails with too_long */
    bool failed, too_long;
} pd_buf;

/* A charsmap may expand text; a hostile one without bound. */
#define PD_TK_MAX_NORMALIZED (4 * (size_t)PD_TOKENIZER_MAX_INPUT)

static void pd_buf_put(pd_buf *b, const void *s, size_t n) {
    if (b->failed) return;
    if (b->limit && b->n + n > b->limit) {
        b->failed = b->too_long = true;
        return;
    }
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

/* ---- piece hash ---- */

#define PD_FNV_BASIS 2166136261u
static uint32_t pd_fnv_step(uint32_t h, uint8_t c) { return (h ^ c) * 16777619u; }

static int pd_tk_find(const pd_tokenizer *tk, uint32_t h, const char *s, size_t n) {
    for (uint32_t i = h & tk->table_mask;; i = (i + 1) & tk->table_mask) {
        int32_t id = tk->table[i];
        if (id < 0) return -1;
        if (tk->len[id] == n && !memcmp(tk->blob + tk->off[id], s, n)) return id;
    }
}

static int pd_tk_lookup(const pd_tokenizer *tk, const char *s) {
    uint32_t h = PD_FNV_BASIS;
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++) h = pd_fnv_step(h, (uint8_t)s[i]);
    return pd_tk_find(tk, h, s, n);
}

/* ---- loading ---- */

void pd_tokenizer_free(pd_tokenizer *tk) {
    if (!tk) return;
    free(tk->blob);
    free(tk->off);
    free(tk->len);
    free(tk->score);
    free(tk->matchable);
    free(tk->table);
    pd_charsmap_free(tk->charsmap);
    free(tk);
}

static pd_status pd_tk_load_vocab(pd_tokenizer *tk, const json_t *vocab, const char *name) {
    if (!json_is_array(vocab)) return pd_error_set(PD_ERR_FORMAT, "%s: model.vocab is missing or not an array", name);
    size_t n = json_array_size(vocab);
    if (n == 0 || n > PD_TOKENIZER_MAX_VOCAB)
        return pd_error_set(PD_ERR_FORMAT, "%s: model.vocab has %zu pieces (1 .. %d allowed)", name, n,
                            PD_TOKENIZER_MAX_VOCAB);
    size_t blob_bytes = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(vocab, i);
        const json_t *p = json_array_get(e, 0), *s = json_array_get(e, 1);
        if (!json_is_array(e) || json_array_size(e) != 2 || !json_is_string(p) || !json_is_number(s))
            return pd_error_set(PD_ERR_FORMAT, "%s: model.vocab[%zu] is not a [piece, score] pair", name, i);
        size_t l = json_string_length(p);
        if (l == 0 || l > PD_TOKENIZER_MAX_PIECE_BYTES || memchr(json_string_value(p), 0, l))
            return pd_error_set(PD_ERR_FORMAT, "%s: model.vocab[%zu] has an empty, over-long (> %d bytes) or NUL-holding piece",
                                name, i, PD_TOKENIZER_MAX_PIECE_BYTES);
        /* Bounded so that the float score and path sums over any prompt stay finite (Viterbi needs them). */
        if (!(fabs(json_number_value(s)) <= PD_TK_MAX_SCORE))
            return pd_error_set(PD_ERR_FORMAT, "%s: model.vocab[%zu] has a score outside +-%g", name, i, PD_TK_MAX_SCORE);
        blob_bytes += l + 1;
    }
    tk->n = (int)n;
    uint32_t cap = 1;
    while (cap < 2 * n) cap *= 2;
    tk->blob = malloc(blob_bytes);
    tk->off = malloc(n * sizeof *tk->off);
    tk->len = malloc(n * sizeof *tk->len);
    tk->score = malloc(n * sizeof *tk->score);
    tk->matchable = malloc(n);
    tk->table = malloc(cap * sizeof *tk->table);
    if (!tk->blob || !tk->off || !tk->len || !tk->score || !tk->matchable || !tk->table)
        return pd_error_set(PD_ERR_NOMEM, "%s: out of memory for %zu pieces", name, n);
    tk->table_mask = cap - 1;
    memset(tk->table, 0xff, cap * sizeof *tk->table);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(vocab, i);
        const char *p = json_string_value(json_array_get(e, 0));
        size_t l = json_string_length(json_array_get(e, 0));
        memcpy(tk->blob + o, p, l + 1);
        tk->off[i] = (uint32_t)o;
        tk->len[i] = (uint16_t)l;
        tk->score[i] = (float)json_number_value(json_array_get(e, 1));
        tk->matchable[i] = 1;
        o += l + 1;
        uint32_t h = PD_FNV_BASIS;
        for (size_t k = 0; k < l; k++) h = pd_fnv_step(h, (uint8_t)p[k]);
        if (pd_tk_find(tk, h, p, l) >= 0) {
            tk->matchable[i] = 0; /* a duplicate: the first id wins */
            continue;
        }
        uint32_t k = h & tk->table_mask;
        while (tk->table[k] >= 0) k = (k + 1) & tk->table_mask;
        tk->table[k] = (int32_t)i;
        unsigned b;
        char tail;
        if (l == 6 && sscanf(p, "<0x%2X%c", &b, &tail) == 2 && tail == '>' && p[3] != '+' && p[3] != '-') {
            char canon[8];
            snprintf(canon, sizeof canon, "<0x%02X>", b);
            if (!strcmp(canon, p)) {
                tk->byte_id[b] = (int)i;
                tk->matchable[i] = 0;
            }
        }
    }
    return PD_OK;
}

static pd_status pd_tk_load_normalizer(pd_tokenizer *tk, const json_t *nz, const char *name, int depth) {
    if (!nz || json_is_null(nz)) return PD_OK;
    const char *type = json_string_value(json_object_get(nz, "type"));
    if (!json_is_object(nz) || !type) return pd_error_set(PD_ERR_FORMAT, "%s: normalizer has no \"type\"", name);
    if (!strcmp(type, "Sequence")) {
        const json_t *list = json_object_get(nz, "normalizers");
        if (!json_is_array(list) || depth > 4)
            return pd_error_set(PD_ERR_FORMAT, "%s: normalizer Sequence without a \"normalizers\" array", name);
        for (size_t i = 0; i < json_array_size(list); i++)
            PD_TRY(pd_tk_load_normalizer(tk, json_array_get(list, i), name, depth + 1));
        return PD_OK;
    }
    if (!strcmp(type, "Precompiled")) {
        const json_t *cm = json_object_get(nz, "precompiled_charsmap");
        if (!cm || json_is_null(cm)) return PD_OK;
        if (!json_is_string(cm))
            return pd_error_set(PD_ERR_FORMAT, "%s: normalizer precompiled_charsmap is not a base64 string", name);
        if (tk->charsmap)
            return pd_error_set(PD_ERR_UNSUPPORTED, "%s: more than one Precompiled normalizer", name);
        uint8_t *bin;
        size_t n_bin;
        pd_status st = pd_charsmap_from_base64(json_string_value(cm), json_string_length(cm), &bin, &n_bin);
        if (st != PD_OK) return pd_error_prefix(st, "%s: precompiled_charsmap", name);
        char what[512];
        snprintf(what, sizeof what, "%s: precompiled_charsmap", name);
        st = pd_charsmap_parse(bin, n_bin, what, &tk->charsmap);
        free(bin);
        return st;
    }
    if (!strcmp(type, "Replace")) {
        /* Only what SentencePiece converters emit: the space-run collapse (step 2) and the space
         * escape (step 3), both done anyway. */
        const json_t *pat = json_object_get(nz, "pattern");
        const char *re = json_string_value(json_object_get(pat, "Regex"));
        const char *str = json_string_value(json_object_get(pat, "String"));
        const char *content = json_string_value(json_object_get(nz, "content"));
        bool to_space = content && (!strcmp(content, " ") || !strcmp(content, PD_TK_META));
        if (re && !strcmp(re, " {2,}") && to_space) return PD_OK;
        if (str && !strcmp(str, " ") && content && !strcmp(content, PD_TK_META)) return PD_OK;
        return pd_error_set(PD_ERR_UNSUPPORTED, "%s: normalizer Replace other than \" {2,}\" -> \" \" or \" \" -> "
                            "\"\u2581\" is not supported", name);
    }
    if (!strcmp(type, "Strip")) return PD_OK; /* step 2 strips both ends */
    if (!strcmp(type, "Prepend")) { /* the prefix space, written as a normaliser step */
        const char *pre = json_string_value(json_object_get(nz, "prepend"));
        if (!pre || strcmp(pre, PD_TK_META))
            return pd_error_set(PD_ERR_UNSUPPORTED, "%s: normalizer Prepend other than \"\u2581\" is not supported", name);
        tk->norm_prefix = true;
        return PD_OK;
    }
    return pd_error_set(PD_ERR_UNSUPPORTED, "%s: normalizer type \"%s\" is not supported (Precompiled, Replace, Strip, Sequence are)",
                        name, type);
}

static pd_status pd_tk_load_pretokenizer(pd_tokenizer *tk, const json_t *pt, const char *name, int depth) {
    if (!pt || json_is_null(pt)) return PD_OK;
    const char *type = json_string_value(json_object_get(pt, "type"));
    if (!json_is_object(pt) || !type) return pd_error_set(PD_ERR_FORMAT, "%s: pre_tokenizer has no \"type\"", name);
    if (!strcmp(type, "Sequence")) {
        const json_t *list = json_object_get(pt, "pretokenizers");
        if (!json_is_array(list) || depth > 4)
            return pd_error_set(PD_ERR_FORMAT, "%s: pre_tokenizer Sequence without a \"pretokenizers\" array", name);
        for (size_t i = 0; i < json_array_size(list); i++)
            PD_TRY(pd_tk_load_pretokenizer(tk, json_array_get(list, i), name, depth + 1));
        return PD_OK;
    }
    if (!strcmp(type, "WhitespaceSplit")) return PD_OK; /* pieces never span '▁' boundaries differently */
    if (!strcmp(type, "Metaspace")) {
        const json_t *rep = json_object_get(pt, "replacement");
        if (rep && (!json_is_string(rep) || strcmp(json_string_value(rep), PD_TK_META)))
            return pd_error_set(PD_ERR_UNSUPPORTED, "%s: Metaspace replacement other than U+2581 is not supported", name);
        const json_t *aps = json_object_get(pt, "add_prefix_space");
        const char *scheme = json_string_value(json_object_get(pt, "prepend_scheme"));
        tk->prefix = true;
        if (json_is_boolean(aps)) tk->prefix = json_is_true(aps);
        if (scheme) {
            if (!strcmp(scheme, "never")) tk->prefix = false;
            else if (!strcmp(scheme, "always") || !strcmp(scheme, "first")) tk->prefix = true;
            else return pd_error_set(PD_ERR_FORMAT, "%s: Metaspace prepend_scheme \"%s\" is unknown", name, scheme);
        }
        return PD_OK;
    }
    return pd_error_set(PD_ERR_UNSUPPORTED, "%s: pre_tokenizer type \"%s\" is not supported (Metaspace is)", name, type);
}

/* EOS: the special token the post-processor's single-sequence template appends, else "</s>". */
static pd_status pd_tk_find_eos(pd_tokenizer *tk, const json_t *pp, const char *name) {
    tk->eos_id = -1;
    const json_t *single = json_object_get(pp, "single");
    for (size_t i = 0; i < json_array_size(single); i++) {
        const json_t *st = json_object_get(json_array_get(single, i), "SpecialToken");
        const char *key = json_string_value(json_object_get(st, "id"));
        if (!key) continue;
        const json_t *ids = json_object_get(json_object_get(json_object_get(pp, "special_tokens"), key), "ids");
        const json_t *id = json_array_get(ids, 0);
        if (json_is_integer(id)) {
            json_int_t v = json_integer_value(id);
            if (v < 0 || v >= tk->n)
                return pd_error_set(PD_ERR_FORMAT, "%s: post_processor special token %s has id %lld outside the vocabulary",
                                    name, key, (long long)v);
            tk->eos_id = (int)v;
        } else {
            tk->eos_id = pd_tk_lookup(tk, key);
        }
    }
    if (tk->eos_id < 0) tk->eos_id = pd_tk_lookup(tk, "</s>");
    if (tk->eos_id < 0) return pd_error_set(PD_ERR_FORMAT, "%s: no EOS token (\"</s>\") in the vocabulary", name);
    tk->matchable[tk->eos_id] = 0;
    return PD_OK;
}

static pd_status pd_tk_from_json(pd_tokenizer *tk, const json_t *root, const char *name) {
    if (!json_is_object(root)) return pd_error_set(PD_ERR_FORMAT, "%s: not a JSON object", name);
    const json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) return pd_error_set(PD_ERR_FORMAT, "%s: missing \"model\" object", name);
    const char *type = json_string_value(json_object_get(model, "type"));
    if (!type) return pd_error_set(PD_ERR_FORMAT, "%s: model.type is missing", name);
    if (strcmp(type, "Unigram"))
        return pd_error_set(PD_ERR_UNSUPPORTED, "%s: model.type is \"%s\"; only SentencePiece \"Unigram\" is supported",
                            name, type);
    PD_TRY(pd_tk_load_vocab(tk, json_object_get(model, "vocab"), name));

    const json_t *unk = json_object_get(model, "unk_id");
    tk->unk_id = -1;
    if (unk && !json_is_null(unk)) {
        if (!json_is_integer(unk) || json_integer_value(unk) < 0 || json_integer_value(unk) >= tk->n)
            return pd_error_set(PD_ERR_FORMAT, "%s: model.unk_id is not an id inside the vocabulary", name);
        tk->unk_id = (int)json_integer_value(unk);
        tk->matchable[tk->unk_id] = 0;
    }
    const json_t *bf = json_object_get(model, "byte_fallback");
    if (bf && !json_is_boolean(bf)) return pd_error_set(PD_ERR_FORMAT, "%s: model.byte_fallback is not a boolean", name);
    tk->byte_fallback = json_is_true(bf);
    for (int b = 0; b < 256 && tk->byte_fallback; b++)
        if (tk->byte_id[b] < 0) tk->byte_fallback = false;
    if (tk->unk_id < 0 && !tk->byte_fallback)
        return pd_error_set(PD_ERR_FORMAT, "%s: model.unk_id is missing and there is no byte fallback", name);

    const json_t *added = json_object_get(root, "added_tokens");
    if (added && !json_is_null(added) && !json_is_array(added))
        return pd_error_set(PD_ERR_FORMAT, "%s: added_tokens is not an array", name);
    for (size_t i = 0; i < json_array_size(added); i++) {
        const json_t *a = json_array_get(added, i);
        const json_t *id = json_object_get(a, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0)
            return pd_error_set(PD_ERR_FORMAT, "%s: added_tokens[%zu].id is not a non-negative integer", name, i);
        /* Ids past model.vocab are tokens the encoder can never produce here: nothing to mark. */
        if (json_integer_value(id) < tk->n && json_is_true(json_object_get(a, "special")))
            tk->matchable[json_integer_value(id)] = 0;
    }
    PD_TRY(pd_tk_load_normalizer(tk, json_object_get(root, "normalizer"), name, 0));
    PD_TRY(pd_tk_load_pretokenizer(tk, json_object_get(root, "pre_tokenizer"), name, 0));
    tk->prefix = tk->prefix || tk->norm_prefix;
    PD_TRY(pd_tk_find_eos(tk, json_object_get(root, "post_processor"), name));
    tk->pad_id = pd_tk_lookup(tk, "<pad>");
    if (tk->pad_id >= 0) tk->matchable[tk->pad_id] = 0;

    double min_score = 0.0;
    bool any = false;
    for (int i = 0; i < tk->n; i++) {
        if (!tk->matchable[i]) continue;
        if (!any || tk->score[i] < min_score) min_score = tk->score[i];
        any = true;
        if (tk->len[i] > tk->max_len) tk->max_len = tk->len[i];
    }
    tk->unk_score = min_score - PD_TK_UNK_PENALTY;
    return PD_OK;
}

pd_status pd_tokenizer_load_json(const char *json, size_t len, const char *name, pd_tokenizer **out) {
    *out = NULL;
    if (!name) name = "tokenizer.json";
    if (len > PD_TOKENIZER_MAX_FILE)
        return pd_error_set(PD_ERR_FORMAT, "%s: %zu bytes is larger than the %u-byte limit", name, len,
                            PD_TOKENIZER_MAX_FILE);
    json_error_t err;
    json_t *root = json_loadb(json, len, 0, &err);
    if (!root)
        return pd_error_set(PD_ERR_FORMAT, "%s: invalid JSON at line %d column %d: %s", name, err.line, err.column,
                            err.text);
    pd_tokenizer *tk = calloc(1, sizeof *tk);
    if (!tk) {
        json_decref(root);
        return pd_error_set(PD_ERR_NOMEM, "%s: out of memory", name);
    }
    memset(tk->byte_id, 0xff, sizeof tk->byte_id);
    pd_status st = pd_tk_from_json(tk, root, name);
    json_decref(root);
    if (st != PD_OK) {
        pd_tokenizer_free(tk);
        return st;
    }
    *out = tk;
    return PD_OK;
}

static bool pd_is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

pd_status pd_tokenizer_load(const char *path, pd_tokenizer **out) {
    *out = NULL;
    char file[4096];
    int w = snprintf(file, sizeof file, "%s", path);
    if (pd_is_dir(path)) {
        w = snprintf(file, sizeof file, "%s/tokenizer.json", path);
        struct stat sb;
        if (w > 0 && (size_t)w < sizeof file && stat(file, &sb) != 0)
            w = snprintf(file, sizeof file, "%s/tokenizer/tokenizer.json", path);
    }
    if (w < 0 || (size_t)w >= sizeof file) return pd_error_set(PD_ERR_INVALID, "tokenizer path too long: %s", path);
    FILE *f = fopen(file, "rb");
    if (!f)
        return pd_error_set(PD_ERR_IO, "cannot open tokenizer %s: %s (give a tokenizer.json, a tokenizer/ folder or a "
                            "model folder holding one)", file, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return pd_error_set(PD_ERR_IO, "%s: not a regular file", file);
    }
    if ((uint64_t)sb.st_size > PD_TOKENIZER_MAX_FILE) {
        fclose(f);
        return pd_error_set(PD_ERR_FORMAT, "%s: %lld bytes is larger than the %u-byte limit", file,
                            (long long)sb.st_size, PD_TOKENIZER_MAX_FILE);
    }
    size_t n = (size_t)sb.st_size;
    char *buf = malloc(n ? n : 1);
    if (!buf) {
        fclose(f);
        return pd_error_set(PD_ERR_NOMEM, "%s: out of memory reading %zu bytes", file, n);
    }
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    if (got != n) {
        free(buf);
        return pd_error_set(PD_ERR_IO, "%s: short read (%zu of %zu bytes)", file, got, n);
    }
    pd_status st = pd_tokenizer_load_json(buf, n, file, out);
    free(buf);
    return st;
}

int pd_tokenizer_vocab_size(const pd_tokenizer *tk) { return tk->n; }
int pd_tokenizer_eos_id(const pd_tokenizer *tk) { return tk->eos_id; }
int pd_tokenizer_unk_id(const pd_tokenizer *tk) { return tk->unk_id; }
int pd_tokenizer_pad_id(const pd_tokenizer *tk) { return tk->pad_id; }
const char *pd_tokenizer_piece(const pd_tokenizer *tk, int id) {
    return id >= 0 && id < tk->n ? tk->blob + tk->off[id] : NULL;
}

/* ---- encoding ---- */

/* Steps 1-3 into b. */
static void pd_tk_normalize(const pd_tokenizer *tk, const uint8_t *s, size_t n, pd_buf *b) {
    bool started = false, pending = false;
    size_t i = 0;
    while (i < n) {
        const char *r = NULL;
        size_t rl = 0, used = tk->charsmap ? pd_charsmap_match(tk->charsmap, s + i, n - i, &r, &rl) : 0;
        if (!used) {
            size_t cl = pd_utf8_len(s + i, n - i);
            if (cl) {
                r = (const char *)s + i;
                rl = used = cl;
            } else {
                r = "\xEF\xBF\xBD"; /* U+FFFD for one bad byte */
                rl = 3;
                used = 1;
            }
        }
        i += used;
        for (size_t k = 0; k < rl; k++) {
            if (r[k] == ' ') {
                pending = started;
                continue;
            }
            if (!started) {
                if (tk->prefix) pd_buf_put(b, PD_TK_META, 3);
                started = true;
            } else if (pending) {
                pd_buf_put(b, PD_TK_META, 3);
            }
            pending = false;
            pd_buf_put(b, r + k, 1);
        }
    }
}

pd_status pd_tokenizer_normalize(const pd_tokenizer *tk, const char *text, size_t len, char **out) {
    *out = NULL;
    if (len > PD_TOKENIZER_MAX_INPUT)
        return pd_error_set(PD_ERR_INVALID, "prompt of %zu bytes is longer than the %u-byte limit", len,
                            PD_TOKENIZER_MAX_INPUT);
    pd_buf b = {.limit = PD_TK_MAX_NORMALIZED};
    pd_buf_put(&b, "", 0);
    pd_tk_normalize(tk, (const uint8_t *)text, len, &b);
    if (b.failed) {
        free(b.p);
        return b.too_long ? pd_error_set(PD_ERR_INVALID, "prompt longer than %zu bytes once normalised", PD_TK_MAX_NORMALIZED)
                          : pd_error_set(PD_ERR_NOMEM, "out of memory normalising a prompt");
    }
    *out = b.p;
    return PD_OK;
}

pd_status pd_tokenizer_encode(const pd_tokenizer *tk, const char *text, size_t len, int max_len, int32_t *ids,
                              int *n_ids) {
    *n_ids = 0;
    if (max_len < 1) return pd_error_set(PD_ERR_INVALID, "max_len %d must be at least 1", max_len);
    if (len > PD_TOKENIZER_MAX_INPUT)
        return pd_error_set(PD_ERR_INVALID, "prompt of %zu bytes is longer than the %u-byte limit", len,
                            PD_TOKENIZER_MAX_INPUT);
    pd_buf b = {.limit = PD_TK_MAX_NORMALIZED};
    pd_buf_put(&b, "", 0);
    pd_tk_normalize(tk, (const uint8_t *)text, len, &b);
    if (b.too_long) {
        free(b.p);
        return pd_error_set(PD_ERR_INVALID, "prompt longer than %zu bytes once normalised", PD_TK_MAX_NORMALIZED);
    }
    size_t n = b.n;
    const uint8_t *s = (const uint8_t *)b.p;
    double *best = malloc((n + 1) * sizeof *best);
    int32_t *bid = malloc((n + 1) * sizeof *bid);   /* piece ending here; -1 = unknown character */
    uint32_t *blen = malloc((n + 1) * sizeof *blen); /* its length */
    if (b.failed || !best || !bid || !blen) {
        free(b.p), free(best), free(bid), free(blen);
        return pd_error_set(PD_ERR_NOMEM, "out of memory encoding a prompt of %zu bytes", len);
    }
    for (size_t i = 0; i <= n; i++) best[i] = -INFINITY;
    best[0] = 0.0;
    /* Viterbi: every reachable position extends by each vocabulary piece starting there. */
    for (size_t pos = 0; pos < n; pos++) {
        if (best[pos] == -INFINITY) continue;
        size_t cl = pd_utf8_step(s + pos, n - pos);
        bool single = false;
        uint32_t h = PD_FNV_BASIS;
        size_t lim = n - pos < (size_t)tk->max_len ? n - pos : (size_t)tk->max_len;
        for (size_t l = 1; l <= lim; l++) {
            h = pd_fnv_step(h, s[pos + l - 1]);
            int id = pd_tk_find(tk, h, (const char *)s + pos, l);
            if (id < 0 || !tk->matchable[id]) continue;
            if (l == cl) single = true;
            double sc = best[pos] + tk->score[id];
            if (sc > best[pos + l]) {
                best[pos + l] = sc;
                bid[pos + l] = id;
                blen[pos + l] = (uint32_t)l;
            }
        }
        if (!single && best[pos] + tk->unk_score > best[pos + cl]) {
            best[pos + cl] = best[pos] + tk->unk_score;
            bid[pos + cl] = -1;
            blen[pos + cl] = (uint32_t)cl;
        }
    }
    /* Backtrack. Every character boundary is reachable (a piece or an unknown covers each character). */
    PD_ASSERT(best[n] > -INFINITY);
    size_t n_seg = 0;
    for (size_t pos = n; pos > 0; pos -= blen[pos]) n_seg++;
    int32_t *seg_id = malloc((n_seg + 1) * sizeof *seg_id);
    uint32_t *seg_start = malloc((n_seg + 1) * sizeof *seg_start);
    if (!seg_id || !seg_start) {
        free(b.p), free(best), free(bid), free(blen), free(seg_id), free(seg_start);
        return pd_error_set(PD_ERR_NOMEM, "out of memory encoding a prompt of %zu bytes", len);
    }
    size_t k = n_seg;
    for (size_t pos = n; pos > 0; pos -= blen[pos]) {
        k--;
        seg_id[k] = bid[pos];
        seg_start[k] = (uint32_t)(pos - blen[pos]);
    }
    int cnt = 0, room = max_len - 1;
    bool prev_unk = false;
    for (size_t j = 0; j < n_seg && cnt < room; j++) {
        if (seg_id[j] >= 0) {
            ids[cnt++] = seg_id[j];
            prev_unk = false;
        } else if (tk->byte_fallback) {
            uint32_t end = j + 1 < n_seg ? seg_start[j + 1] : (uint32_t)n;
            for (uint32_t q = seg_start[j]; q < end && cnt < room; q++) ids[cnt++] = tk->byte_id[s[q]];
        } else if (!prev_unk) {
            ids[cnt++] = tk->unk_id;
            prev_unk = true;
        }
    }
    ids[cnt++] = tk->eos_id;
    *n_ids = cnt;
    free(b.p), free(best), free(bid), free(blen), free(seg_id), free(seg_start);
    return PD_OK;
}

/* ---- decoding ---- */

/* Appends bytes, replacing each byte that does not start a valid character with U+FFFD. */
static void pd_tk_put_checked(pd_buf *b, const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        size_t l = pd_utf8_len(s + i, n - i);
        if (l) pd_buf_put(b, s + i, l);
        else pd_buf_put(b, "\xEF\xBF\xBD", 3);
        i += l ? l : 1;
    }
}

pd_status pd_tokenizer_decode(const pd_tokenizer *tk, const int32_t *ids, int n, char **out) {
    *out = NULL;
    pd_buf b = {0}, bytes = {0};
    pd_buf_put(&b, "", 0);
    for (int i = 0; i <= n; i++) {
        int id = i < n ? ids[i] : -1;
        if (i < n && (id < 0 || id >= tk->n)) {
            free(b.p), free(bytes.p);
            return pd_error_set(PD_ERR_INVALID, "id %d at position %d is outside the vocabulary of %d pieces", id, i,
                                tk->n);
        }
        bool is_byte = false;
        if (id >= 0) {
            const char *p = tk->blob + tk->off[id];
            is_byte = tk->len[id] == 6 && !tk->matchable[id] && id != tk->unk_id && id != tk->eos_id &&
                      id != tk->pad_id && tk->byte_id[(uint8_t)strtoul(p + 3, NULL, 16)] == id;
            if (is_byte) {
                uint8_t v = (uint8_t)strtoul(p + 3, NULL, 16);
                pd_buf_put(&bytes, &v, 1);
                continue;
            }
        }
        if (bytes.n) { /* a run of byte pieces ends */
            pd_tk_put_checked(&b, (const uint8_t *)bytes.p, bytes.n);
            bytes.n = 0;
        }
        if (id < 0 || id == tk->eos_id || id == tk->pad_id) continue;
        if (id == tk->unk_id) {
            pd_buf_put(&b, " \xE2\x81\x87 ", 5);
            continue;
        }
        if (!tk->matchable[id]) continue; /* other special tokens */
        const char *p = tk->blob + tk->off[id];
        for (size_t q = 0; q < tk->len[id];) {
            if (q + 3 <= tk->len[id] && !memcmp(p + q, PD_TK_META, 3)) {
                pd_buf_put(&b, " ", 1);
                q += 3;
            } else {
                pd_buf_put(&b, p + q, 1);
                q++;
            }
        }
    }
    free(bytes.p);
    if (b.failed || bytes.failed) {
        free(b.p);
        return pd_error_set(PD_ERR_NOMEM, "out of memory decoding %d ids", n);
    }
    if (tk->prefix && b.n && b.p[0] == ' ') memmove(b.p, b.p + 1, b.n--);
    *out = b.p;
    return PD_OK;
}
