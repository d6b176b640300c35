#include "models/text/charsmap.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct pd_charsmap {
    uint32_t *units;
    size_t n_units;
    char *repl; /* replacement strings */
    size_t n_repl;
};

#define PD_CM_LEAF 0x80000000u
#define PD_CM_MAX_OFFSET (1u << 21) /* the builder never needs the scaled form */

static uint32_t pd_cm_offset(uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); }

static uint32_t pd_cm_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

pd_status pd_charsmap_parse(const uint8_t *blob, size_t n, const char *what, pd_charsmap **out) {
    *out = NULL;
    if (!what) what = "precompiled_charsmap";
    if (n < 4) return pd_error_set(PD_ERR_FORMAT, "%s: charsmap of %zu bytes has no size prefix", what, n);
    uint32_t trie_bytes = pd_cm_le32(blob);
    if (trie_bytes == 0 || trie_bytes % 4 || trie_bytes > n - 4)
        return pd_error_set(PD_ERR_FORMAT, "%s: charsmap trie size %u does not fit its %zu-byte blob (truncated?)",
                            what, trie_bytes, n);
    pd_charsmap *cm = calloc(1, sizeof *cm);
    if (!cm) return pd_error_set(PD_ERR_NOMEM, "%s: out of memory", what);
    cm->n_units = trie_bytes / 4;
    cm->n_repl = n - 4 - trie_bytes;
    cm->units = malloc(trie_bytes);
    cm->repl = malloc(cm->n_repl + 1);
    if (!cm->units || !cm->repl) {
        pd_charsmap_free(cm);
        return pd_error_set(PD_ERR_NOMEM, "%s: out of memory", what);
    }
    for (size_t i = 0; i < cm->n_units; i++) cm->units[i] = pd_cm_le32(blob + 4 + 4 * i);
    memcpy(cm->repl, blob + 4 + trie_bytes, cm->n_repl);
    cm->repl[cm->n_repl] = 0; /* a missing final NUL ends at the blob's end */
    *out = cm;
    return PD_OK;
}

void pd_charsmap_free(pd_charsmap *cm) {
    if (!cm) return;
    free(cm->units);
    free(cm->repl);
    free(cm);
}

size_t pd_charsmap_match(const pd_charsmap *cm, const uint8_t *s, size_t n, const char **repl, size_t *repl_len) {
    size_t best = 0;
    size_t p = pd_cm_offset(cm->units[0]);
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c == 0) break; /* keys never hold NUL; an empty slot's label would match it */
        p ^= c;
        if (p >= cm->n_units) break;
        uint32_t u = cm->units[p];
        if ((u & (PD_CM_LEAF | 0xFFu)) != c) break;
        p ^= pd_cm_offset(u);
        if (p >= cm->n_units) break;
        if (u & (1u << 8)) {
            uint32_t v = cm->units[p] & ~PD_CM_LEAF;
            if (v >= cm->n_repl) continue; /* dangling value: ignore this rule */
            best = i + 1;
            *repl = cm->repl + v;
            *repl_len = strlen(cm->repl + v);
        }
    }
    return best;
}

/* ---- builder ---- */

typedef struct pd_cm_builder {
    uint32_t *units;
    uint8_t *used;      /* slot taken */
    uint8_t *base_used; /* base taken: bases are unique so a label identifies its parent */
    size_t cap;
    const char *const *keys;
    const uint32_t *values;
} pd_cm_builder;

static pd_status pd_cm_grow(pd_cm_builder *b, size_t need) {
    if (need <= b->cap) return PD_OK;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < need) cap *= 2;
    uint32_t *u = realloc(b->units, cap * sizeof *u);
    if (u) b->units = u;
    uint8_t *us = realloc(b->used, cap);
    if (us) b->used = us;
    uint8_t *bu = realloc(b->base_used, cap);
    if (bu) b->base_used = bu;
    if (!u || !us || !bu) return pd_error_set(PD_ERR_NOMEM, "out of memory building a charsmap");
    memset(b->units + b->cap, 0, (cap - b->cap) * sizeof *u);
    memset(b->used + b->cap, 0, cap - b->cap);
    memset(b->base_used + b->cap, 0, cap - b->cap);
    b->cap = cap;
    return PD_OK;
}

/* Places the children of node `pos`, whose keys are [lo, hi) (sorted) sharing `depth` bytes. */
static pd_status pd_cm_place(pd_cm_builder *b, size_t pos, int lo, int hi, size_t depth) {
    uint8_t labels[257];
    int n_labels = 0;
    bool leaf = false;
    for (int i = lo; i < hi; i++) {
        uint8_t c = (uint8_t)b->keys[i][depth];
        if (c == 0) leaf = true;
        else if (n_labels == 0 || labels[n_labels - 1] != c) labels[n_labels++] = c;
    }
    size_t base = 1;
    for (;; base++) {
        PD_TRY(pd_cm_grow(b, (base | 0xFF) + 1));
        if (b->base_used[base] || (leaf && b->used[base])) continue;
        bool ok = true;
        for (int j = 0; j < n_labels && ok; j++) ok = !b->used[base ^ labels[j]];
        if (ok) break;
    }
    size_t off = pos ^ base;
    if (off >= PD_CM_MAX_OFFSET) return pd_error_set(PD_ERR_INVALID, "charsmap too large for the builder");
    b->base_used[base] = 1;
    b->units[pos] |= (uint32_t)off << 10 | (leaf ? 1u << 8 : 0);
    if (leaf) {
        b->used[base] = 1;
        b->units[base] = PD_CM_LEAF | b->values[lo];
    }
    for (int j = 0; j < n_labels; j++) {
        b->used[base ^ labels[j]] = 1;
        b->units[base ^ labels[j]] = labels[j];
    }
    /* Recurse per label over the keys that continue with it. */
    int i = leaf ? lo + 1 : lo;
    for (int j = 0; j < n_labels; j++) {
        int k = i;
        while (k < hi && (uint8_t)b->keys[k][depth] == labels[j]) k++;
        PD_TRY(pd_cm_place(b, base ^ labels[j], i, k, depth + 1));
        i = k;
    }
    return PD_OK;
}

typedef struct pd_cm_rule {
    const char *key, *value;
} pd_cm_rule;

static int pd_cm_rule_cmp(const void *a, const void *b) {
    return strcmp(((const pd_cm_rule *)a)->key, ((const pd_cm_rule *)b)->key); /* unsigned byte order */
}

pd_status pd_charsmap_build(const char *const *keys, const char *const *values, int n, uint8_t **blob, size_t *n_blob) {
    *blob = NULL;
    *n_blob = 0;
    if (n <= 0) return pd_error_set(PD_ERR_INVALID, "charsmap needs at least one rule");
    pd_status st = PD_OK;
    pd_cm_rule *rules = malloc((size_t)n * sizeof *rules);
    const char **sk = malloc((size_t)n * sizeof *sk);
    uint32_t *sv = malloc((size_t)n * sizeof *sv);
    pd_cm_builder b = {0};
    size_t repl_bytes = 0;
    if (!rules || !sk || !sv) {
        st = pd_error_set(PD_ERR_NOMEM, "out of memory building a charsmap");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        if (!keys[i][0]) {
            st = pd_error_set(PD_ERR_INVALID, "charsmap rule %d has an empty key", i);
            goto done;
        }
        rules[i] = (pd_cm_rule){keys[i], values[i]};
    }
    qsort(rules, (size_t)n, sizeof *rules, pd_cm_rule_cmp);
    for (int i = 0; i < n; i++) {
        if (i && !strcmp(rules[i].key, rules[i - 1].key)) {
            st = pd_error_set(PD_ERR_INVALID, "charsmap key '%s' appears twice", rules[i].key);
            goto done;
        }
        sk[i] = rules[i].key;
        sv[i] = (uint32_t)repl_bytes;
        repl_bytes += strlen(rules[i].value) + 1;
    }
    b.keys = sk;
    b.values = sv;
    if ((st = pd_cm_grow(&b, 256)) != PD_OK) goto done;
    b.used[0] = 1;
    b.base_used[0] = 1;
    if ((st = pd_cm_place(&b, 0, 0, n, 0)) != PD_OK) goto done;
    size_t n_units = b.cap;
    while (n_units > 1 && !b.used[n_units - 1]) n_units--;
    n_units = (n_units + 255) & ~(size_t)255; /* whole blocks, as darts-clone writes them */
    size_t total = 4 + 4 * n_units + repl_bytes;
    uint8_t *out = malloc(total);
    if (!out) {
        st = pd_error_set(PD_ERR_NOMEM, "out of memory building a charsmap");
        goto done;
    }
    uint32_t tb = (uint32_t)(4 * n_units);
    for (int k = 0; k < 4; k++) out[k] = (uint8_t)(tb >> (8 * k));
    for (size_t i = 0; i < n_units; i++) {
        uint32_t u = i < b.cap ? b.units[i] : 0;
        for (int k = 0; k < 4; k++) out[4 + 4 * i + k] = (uint8_t)(u >> (8 * k));
    }
    uint8_t *r = out + 4 + 4 * n_units;
    for (int i = 0; i < n; i++) {
        size_t l = strlen(rules[i].value) + 1;
        memcpy(r, rules[i].value, l);
        r += l;
    }
    *blob = out;
    *n_blob = total;
done:
    free(rules);
    free(sk);
    free(sv);
    free(b.units);
    free(b.used);
    free(b.base_used);
    return st;
}

/* ---- base64 ---- */

static const char pd_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pd_status pd_charsmap_to_base64(const uint8_t *data, size_t n, char **out) {
    char *s = malloc((n + 2) / 3 * 4 + 1);
    if (!s) return pd_error_set(PD_ERR_NOMEM, "out of memory encoding base64");
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16 | (i + 1 < n ? (uint32_t)data[i + 1] << 8 : 0) |
                     (i + 2 < n ? data[i + 2] : 0);
        s[o++] = pd_b64[v >> 18];
        s[o++] = pd_b64[(v >> 12) & 63];
        s[o++] = i + 1 < n ? pd_b64[(v >> 6) & 63] : '=';
        s[o++] = i + 2 < n ? pd_b64[v & 63] : '=';
    }
    s[o] = 0;
    *out = s;
    return PD_OK;
}

static int pd_b64_value(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

pd_status pd_charsmap_from_base64(const char *text, size_t n, uint8_t **out, size_t *n_out) {
    *out = NULL;
    *n_out = 0;
    if (n % 4) return pd_error_set(PD_ERR_FORMAT, "base64 text of %zu characters is not a multiple of 4", n);
    size_t pad = 0;
    if (n && text[n - 1] == '=') pad++;
    if (n > 1 && text[n - 2] == '=') pad++;
    uint8_t *d = malloc(n / 4 * 3 + 1);
    if (!d) return pd_error_set(PD_ERR_NOMEM, "out of memory decoding base64");
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        uint32_t v = 0;
        for (int k = 0; k < 4; k++) {
            char c = text[i + k];
            int x = (c == '=' && i + k >= n - pad) ? 0 : pd_b64_value(c);
            if (x < 0) {
                free(d);
                return pd_error_set(PD_ERR_FORMAT, "invalid base64 character at offset %zu", i + k);
            }
            v = v << 6 | (uint32_t)x;
        }
        d[o++] = (uint8_t)(v >> 16);
        d[o++] = (uint8_t)(v >> 8);
        d[o++] = (uint8_t)v;
    }
    *out = d;
    *n_out = o - pad;
    return PD_OK;
}
