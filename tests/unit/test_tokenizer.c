/* The SentencePiece unigram tokenizer: hand-worked cases on the tiny tokenizer and on small
 * tokenizer.json files written here, the charsmap trie, and malformed files. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "models/text/charsmap.h"
#include "models/text/tokenizer.h"
#include "tests/unit/test.h"

static char pd_tmp[512];
static pd_tokenizer *tiny;

#define U2581 "\xE2\x96\x81"

/* Encodes and returns the pieces joined by '|' (EOS shown as </s>) into buf. */
static const char *pieces(pd_tokenizer *tk, const char *text, char *buf, size_t n) {
    int32_t ids[PD_TOKENIZER_MAX_TOKENS];
    int k = 0;
    buf[0] = 0;
    if (pd_tokenizer_encode(tk, text, strlen(text), PD_TOKENIZER_MAX_TOKENS, ids, &k) != PD_OK) {
        snprintf(buf, n, "ERROR %s", pd_error_msg());
        return buf;
    }
    size_t o = 0;
    for (int i = 0; i < k && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%s", i ? "|" : "", pd_tokenizer_piece(tk, ids[i]));
    return buf;
}

static int encode(pd_tokenizer *tk, const char *text, size_t len, int32_t *ids) {
    int k = -1;
    PD_CHECK_OK(pd_tokenizer_encode(tk, text, len, PD_TOKENIZER_MAX_TOKENS, ids, &k));
    return k;
}

/* Same ids for two texts. */
static void same_ids(const char *a, const char *b) {
    int32_t ia[PD_TOKENIZER_MAX_TOKENS], ib[PD_TOKENIZER_MAX_TOKENS];
    int na = encode(tiny, a, strlen(a), ia), nb = encode(tiny, b, strlen(b), ib);
    PD_CHECK_MSG(na == nb && !memcmp(ia, ib, (size_t)na * sizeof ia[0]), "\"%s\" and \"%s\" encode differently", a, b);
}

static void check_pieces(pd_tokenizer *tk, const char *text, const char *want) {
    char buf[4096];
    pieces(tk, text, buf, sizeof buf);
    PD_CHECK_MSG(!strcmp(buf, want), "\"%s\" -> %s, want %s", text, buf, want);
}

static void check_norm(const char *text, size_t len, const char *want) {
    char *out = NULL;
    PD_CHECK_OK(pd_tokenizer_normalize(tiny, text, len, &out));
    PD_CHECK_MSG(out && !strcmp(out, want), "normalize -> \"%s\", want \"%s\"", out ? out : "(null)", want);
    free(out);
}

static void test_tiny_basics(void) {
    PD_CHECK(pd_tokenizer_vocab_size(tiny) == 2048);
    PD_CHECK(pd_tokenizer_pad_id(tiny) == 0 && pd_tokenizer_eos_id(tiny) == 1 && pd_tokenizer_unk_id(tiny) == 2);
    PD_CHECK(!strcmp(pd_tokenizer_piece(tiny, 1), "</s>"));
    PD_CHECK(pd_tokenizer_piece(tiny, 2048) == NULL && pd_tokenizer_piece(tiny, -1) == NULL);
    check_pieces(tiny, "A cat running on the beach",
                 U2581 "A|" U2581 "cat|" U2581 "running|" U2581 "on|" U2581 "the|" U2581 "beach|</s>");
    /* words outside the list split into a known word and suffix pieces */
    check_pieces(tiny, "cats jumped", U2581 "cat|s|" U2581 "jump|ed|</s>");
    check_pieces(tiny, "42!", U2581 "4|2|!|</s>");
}

static void test_whitespace(void) {
    check_norm("  a   cat  ", 11, U2581 "a" U2581 "cat");
    same_ids("  a   cat  ", "a cat");
    same_ids("a\tcat\n", "a cat");
    same_ids("a \r\n cat", "a cat");
}

static void test_normalisation(void) {
    check_norm("\xEF\xBD\x83\xEF\xBD\x81\xEF\xBD\x94", 9, U2581 "cat");  /* full-width ｃａｔ */
    same_ids("\xEF\xBC\xA1 \xEF\xBD\x83\xEF\xBD\x81\xEF\xBD\x94\xEF\xBC\x81", "A cat!");
    check_norm("\xEF\xAC\x81re", 5, U2581 "fire");                     /* U+FB01 ligature */
    check_norm("\xE2\x91\xA0 \xE2\x91\xB3", 7, U2581 "1" U2581 "20");   /* ① ⑳ */
    check_norm("a\xC2\xA0" "cat", 6, U2581 "a" U2581 "cat");            /* NBSP */
    check_norm("ca\xE2\x80\x8Bt", 6, U2581 "cat");                      /* zero-width space deleted */
    check_norm("cafe\xCC\x81", 6, U2581 "caf\xC3\xA9");                 /* e + U+0301 -> é (longest match) */
    check_norm("e", 1, U2581 "e");                                       /* the shorter prefix alone: no rule */
    same_ids("\xEF\xAC\x81re", "fire");
}

static void test_unknown_and_bytes(void) {
    int32_t ids[PD_TOKENIZER_MAX_TOKENS];
    /* U+732B (E7 8C AB) is outside the tiny vocabulary: byte fallback */
    int n = encode(tiny, "\xE7\x8C\xAB", 3, ids);
    PD_CHECK(n == 5);
    if (n == 5) {
        PD_CHECK(!strcmp(pd_tokenizer_piece(tiny, ids[0]), U2581));
        PD_CHECK(!strcmp(pd_tokenizer_piece(tiny, ids[1]), "<0xE7>"));
        PD_CHECK(!strcmp(pd_tokenizer_piece(tiny, ids[2]), "<0x8C>"));
        PD_CHECK(!strcmp(pd_tokenizer_piece(tiny, ids[3]), "<0xAB>"));
        PD_CHECK(ids[4] == 1);
    }
    char *text = NULL;
    PD_CHECK_OK(pd_tokenizer_decode(tiny, ids, n, &text));
    PD_CHECK(text && !strcmp(text, "\xE7\x8C\xAB"));
    free(text);
    /* a literal "<0x41>" or "</s>" in a prompt is text, never the special piece */
    n = encode(tiny, "</s>", 4, ids);
    PD_CHECK(n > 2 && ids[n - 1] == 1);
    for (int i = 0; i + 1 < n; i++) PD_CHECK(ids[i] != 1);
}

static void test_empty(void) {
    int32_t ids[PD_TOKENIZER_MAX_TOKENS];
    PD_CHECK(encode(tiny, "", 0, ids) == 1 && ids[0] == 1);
    PD_CHECK(encode(tiny, "   \t\n ", 6, ids) == 1 && ids[0] == 1);
    PD_CHECK(encode(tiny, "\xE2\x80\x8B", 3, ids) == 1 && ids[0] == 1); /* deleted by the charsmap */
}

static void test_truncation(void) {
    size_t n = 4 * 600;
    char *text = malloc(n + 1);
    for (size_t i = 0; i < n; i += 4) memcpy(text + i, "cat ", 4);
    text[n] = 0;
    int32_t ids[PD_TOKENIZER_MAX_TOKENS];
    int k = encode(tiny, text, n, ids);
    PD_CHECK(k == 512);
    if (k == 512) {
        PD_CHECK(ids[511] == 1);
        int cat = ids[0];
        PD_CHECK(!strcmp(pd_tokenizer_piece(tiny, cat), U2581 "cat"));
        for (int i = 0; i < 511; i++) PD_CHECK(ids[i] == cat);
    }
    /* a smaller cap keeps EOS too */
    k = -1;
    PD_CHECK_OK(pd_tokenizer_encode(tiny, text, n, 3, ids, &k));
    PD_CHECK(k == 3 && ids[2] == 1);
    PD_CHECK_OK(pd_tokenizer_encode(tiny, text, n, 1, ids, &k));
    PD_CHECK(k == 1 && ids[0] == 1);
    PD_CHECK_ERR(pd_tokenizer_encode(tiny, text, n, 0, ids, &k), PD_ERR_INVALID);
    free(text);
    PD_CHECK_ERR(pd_tokenizer_encode(tiny, "x", PD_TOKENIZER_MAX_INPUT + 1, 512, ids, &k), PD_ERR_INVALID);
}

static void test_invalid_utf8(void) {
    check_norm("a\xFF" "b", 3, U2581 "a\xEF\xBF\xBD" "b");                  /* bad lead byte */
    check_norm("ab\xC3", 3, U2581 "ab\xEF\xBF\xBD");                          /* truncated sequence */
    check_norm("\xC0\xAF", 2, U2581 "\xEF\xBF\xBD\xEF\xBF\xBD");              /* overlong '/' */
    check_norm("\xED\xA0\x80", 3, U2581 "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"); /* surrogate */
    int32_t ids[PD_TOKENIZER_MAX_TOKENS];
    int n = encode(tiny, "a\xFF" "b", 3, ids);
    /* ▁a, then U+FFFD as its three byte pieces, then b, EOS */
    PD_CHECK(n == 6 && ids[n - 1] == 1);
    if (n == 6) PD_CHECK(!strcmp(pd_tokenizer_piece(tiny, ids[1]), "<0xEF>"));
    char *text = NULL;
    PD_CHECK_OK(pd_tokenizer_decode(tiny, ids, n, &text));
    PD_CHECK(text && !strcmp(text, "a\xEF\xBF\xBD" "b"));
    free(text);
    /* a NUL byte inside the prompt is a character like any other */
    n = encode(tiny, "a\0b", 3, ids);
    PD_CHECK(n >= 3 && ids[n - 1] == 1);
}

static void test_round_trip(void) {
    static const char *const texts[] = {
        "a cat running on the beach at sunset, 4k!",
        "Close shot: a red fox jumps over the lazy dog (slow motion).",
        "caf\xC3\xA9 \xE7\x8C\xAB ~ 100% #tags",
    };
    for (size_t t = 0; t < sizeof texts / sizeof texts[0]; t++) {
        int32_t a[PD_TOKENIZER_MAX_TOKENS], b[PD_TOKENIZER_MAX_TOKENS];
        int na = encode(tiny, texts[t], strlen(texts[t]), a);
        char *text = NULL;
        PD_CHECK_OK(pd_tokenizer_decode(tiny, a, na, &text));
        PD_CHECK_MSG(text && !strcmp(text, texts[t]), "decoded \"%s\", want \"%s\"", text ? text : "", texts[t]);
        int nb = encode(tiny, text ? text : "", text ? strlen(text) : 0, b);
        PD_CHECK(na == nb && !memcmp(a, b, (size_t)na * sizeof a[0]));
        free(text);
    }
    int32_t bad = 5000;
    char *text = NULL;
    PD_CHECK_ERR(pd_tokenizer_decode(tiny, &bad, 1, &text), PD_ERR_INVALID);
}

/* ---- hand-made tokenizer.json files ---- */

static pd_status load_str(const char *json, pd_tokenizer **tk) {
    return pd_tokenizer_load_json(json, strlen(json), "test.json", tk);
}

#define PD_HEAD "{\"added_tokens\":[{\"id\":0,\"content\":\"<pad>\",\"special\":true},{\"id\":1,\"content\":\"</s>\",\"special\":true}," \
                "{\"id\":2,\"content\":\"<unk>\",\"special\":true}],"
#define PD_META "\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"add_prefix_space\":true},"
#define PD_POST "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}," \
                "{\"SpecialToken\":{\"id\":\"</s>\",\"type_id\":0}}],\"special_tokens\":{\"</s>\":{\"id\":\"</s>\",\"ids\":[1]}}},"

static void test_viterbi_hand_made(void) {
    /* "▁abcd": greedy longest match would take ▁abc + d = -15; the best path is ▁ab + cd = -2. */
    const char *json = PD_HEAD PD_META PD_POST
        "\"normalizer\":null,\"model\":{\"type\":\"Unigram\",\"unk_id\":2,\"vocab\":[[\"<pad>\",0],[\"</s>\",0],"
        "[\"<unk>\",0],[\"\\u2581\",-4],[\"\\u2581abc\",-10],[\"\\u2581ab\",-1],[\"cd\",-1],[\"d\",-5],[\"a\",-3],"
        "[\"b\",-3],[\"c\",-3],[\"ab\",-1.5],[\"\\u2581a\",-2]]}}";
    pd_tokenizer *tk = NULL;
    PD_CHECK_OK(load_str(json, &tk));
    if (!tk) return;
    check_pieces(tk, "abcd", U2581 "ab|cd|</s>");
    check_pieces(tk, "abab", U2581 "ab|ab|</s>");        /* -2.5 beats ▁a b ab (-6.5) */
    check_pieces(tk, "abc", U2581 "ab|c|</s>");          /* -4 beats ▁abc (-10) */
    /* x, y, z are unknown: one merged <unk> (no byte fallback); each scores min - 10 = -20 */
    check_pieces(tk, "xyzab", U2581 "|<unk>|ab|</s>");
    check_pieces(tk, "x ab y", U2581 "|<unk>|" U2581 "ab|" U2581 "|<unk>|</s>");
    int32_t ids[8];
    int n = encode(tk, "xyzab", 5, ids);
    char *text = NULL;
    PD_CHECK_OK(pd_tokenizer_decode(tk, ids, n, &text));
    PD_CHECK_MSG(text && !strcmp(text, " \xE2\x81\x87 ab"), "decoded \"%s\"", text ? text : "");
    free(text);
    pd_tokenizer_free(tk);

    /* no prefix space (prepend_scheme never), EOS found by its piece without a post-processor, an
     * added token past the vocabulary ignored */
    const char *json2 = "{\"added_tokens\":[{\"id\":99,\"content\":\"<extra_id_0>\",\"special\":true}],\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"prepend_scheme\":\"never\"},"
                        "\"model\":{\"type\":\"Unigram\",\"unk_id\":0,\"vocab\":[[\"<unk>\",0],[\"</s>\",0],"
                        "[\"a\",-1],[\"\\u2581a\",-1]]}}";
    PD_CHECK_OK(load_str(json2, &tk));
    if (!tk) return;
    PD_CHECK(pd_tokenizer_eos_id(tk) == 1 && pd_tokenizer_pad_id(tk) == -1);
    PD_CHECK(pd_tokenizer_piece(tk, 3) && !strcmp(pd_tokenizer_piece(tk, 3), U2581 "a"));
    check_pieces(tk, " a a ", "a|" U2581 "a|</s>");
    pd_tokenizer_free(tk);

    /* the newer converter shape: Prepend + Replace(" " -> "▁") normalisers, Metaspace never prepends */
    const char *json3 = "{\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Strip\",\"left\":false,"
                        "\"right\":true},{\"type\":\"Prepend\",\"prepend\":\"\u2581\"},{\"type\":\"Replace\",\"pattern\":"
                        "{\"String\":\" \"},\"content\":\"\u2581\"}]},\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":"
                        "\"\u2581\",\"prepend_scheme\":\"never\",\"split\":false},\"model\":{\"type\":\"Unigram\",\"unk_id\":0,"
                        "\"vocab\":[[\"<unk>\",0],[\"</s>\",0],[\"a\",-1],[\"\u2581a\",-1]]}}";
    PD_CHECK_OK(load_str(json3, &tk));
    if (!tk) return;
    check_pieces(tk, " a  a ", U2581 "a|" U2581 "a|</s>");
    pd_tokenizer_free(tk);
}

static void test_charsmap_trie(void) {
    const char *keys[] = {"ab", "abc", "b", "\xC3\xA9", "x"};
    const char *vals[] = {"1", "22", "", "e", "yy"};
    uint8_t *blob = NULL;
    size_t n = 0;
    PD_CHECK_OK(pd_charsmap_build(keys, vals, 5, &blob, &n));
    pd_charsmap *cm = NULL;
    PD_CHECK_OK(pd_charsmap_parse(blob, n, "test", &cm));
    if (cm) {
        const char *r = NULL;
        size_t rl = 0;
        PD_CHECK(pd_charsmap_match(cm, (const uint8_t *)"abcd", 4, &r, &rl) == 3 && rl == 2 && !memcmp(r, "22", 2));
        PD_CHECK(pd_charsmap_match(cm, (const uint8_t *)"abd", 3, &r, &rl) == 2 && rl == 1 && r[0] == '1');
        PD_CHECK(pd_charsmap_match(cm, (const uint8_t *)"abc", 2, &r, &rl) == 2); /* bounded by n */
        PD_CHECK(pd_charsmap_match(cm, (const uint8_t *)"a", 1, &r, &rl) == 0);
        PD_CHECK(pd_charsmap_match(cm, (const uint8_t *)"bz", 2, &r, &rl) == 1 && rl == 0);
        PD_CHECK(pd_charsmap_match(cm, (const uint8_t *)"\xC3\xA9", 2, &r, &rl) == 2 && rl == 1 && r[0] == 'e');
        PD_CHECK(pd_charsmap_match(cm, (const uint8_t *)"\xC3", 1, &r, &rl) == 0);
        PD_CHECK(pd_charsmap_match(cm, (const uint8_t *)"y", 1, &r, &rl) == 0);
        PD_CHECK(pd_charsmap_match(cm, (const uint8_t *)"\0ab", 3, &r, &rl) == 0);
    }
    pd_charsmap_free(cm);
    /* truncated blobs are rejected */
    PD_CHECK_ERR(pd_charsmap_parse(blob, 3, "test", &cm), PD_ERR_FORMAT);
    PD_CHECK_ERR(pd_charsmap_parse(blob, 4 + 8, "test", &cm), PD_ERR_FORMAT);
    free(blob);
    const char *dup[] = {"a", "a"};
    PD_CHECK_ERR(pd_charsmap_build(dup, dup, 2, &blob, &n), PD_ERR_INVALID);
    /* base64 */
    char *b64 = NULL;
    PD_CHECK_OK(pd_charsmap_to_base64((const uint8_t *)"hello", 5, &b64));
    PD_CHECK(b64 && !strcmp(b64, "aGVsbG8="));
    uint8_t *back = NULL;
    PD_CHECK_OK(pd_charsmap_from_base64(b64, strlen(b64), &back, &n));
    PD_CHECK(n == 5 && back && !memcmp(back, "hello", 5));
    free(b64);
    free(back);
    PD_CHECK_ERR(pd_charsmap_from_base64("aGV*", 4, &back, &n), PD_ERR_FORMAT);
    PD_CHECK_ERR(pd_charsmap_from_base64("aGV", 3, &back, &n), PD_ERR_FORMAT);
}

static void test_malformed(void) {
    pd_tokenizer *tk = NULL;
    PD_CHECK_ERR(load_str("{\"model\": ", &tk), PD_ERR_FORMAT);
    PD_CHECK(strstr(pd_error_msg(), "test.json") && strstr(pd_error_msg(), "JSON"));
    PD_CHECK_ERR(load_str("[1,2]", &tk), PD_ERR_FORMAT);
    PD_CHECK_ERR(load_str("{}", &tk), PD_ERR_FORMAT);
    PD_CHECK(strstr(pd_error_msg(), "model"));
    PD_CHECK_ERR(load_str("{\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}", &tk), PD_ERR_UNSUPPORTED);
    PD_CHECK(strstr(pd_error_msg(), "BPE"));
    PD_CHECK_ERR(load_str("{\"model\":{\"vocab\":[]}}", &tk), PD_ERR_FORMAT);
    PD_CHECK_ERR(load_str("{\"model\":{\"type\":\"Unigram\",\"unk_id\":0}}", &tk), PD_ERR_FORMAT);
    PD_CHECK(strstr(pd_error_msg(), "vocab"));
    PD_CHECK_ERR(load_str("{\"model\":{\"type\":\"Unigram\",\"unk_id\":0,\"vocab\":[[\"<unk>\",0],[\"a\"]]}}", &tk),
                 PD_ERR_FORMAT);
    PD_CHECK(strstr(pd_error_msg(), "vocab[1]"));
    PD_CHECK_ERR(load_str("{\"model\":{\"type\":\"Unigram\",\"unk_id\":0,\"vocab\":[[\"<unk>\",\"x\"]]}}", &tk),
                 PD_ERR_FORMAT);
    /* a score beyond float range would become -inf and break Viterbi (found by fuzz_tokenizer) */
    PD_CHECK_ERR(load_str("{\"model\":{\"type\":\"Unigram\",\"unk_id\":0,\"vocab\":[[\"<unk>\",0],[\"</s>\",0],"
                          "[\"a\",-1e308]]}}", &tk), PD_ERR_FORMAT);
    PD_CHECK_ERR(load_str("{\"model\":{\"type\":\"Unigram\",\"unk_id\":7,\"vocab\":[[\"<unk>\",0],[\"</s>\",0]]}}", &tk),
                 PD_ERR_FORMAT);
    PD_CHECK_ERR(load_str("{\"model\":{\"type\":\"Unigram\",\"unk_id\":0,\"vocab\":[[\"<unk>\",0],[\"a\",0]]}}", &tk),
                 PD_ERR_FORMAT); /* no EOS */
    /* charsmaps: truncated (trie size larger than the blob), bad base64, wrong type */
    uint8_t trunc[8] = {0x00, 0x01, 0x00, 0x00, 1, 2, 3, 4};
    char *b64 = NULL;
    PD_CHECK_OK(pd_charsmap_to_base64(trunc, sizeof trunc, &b64));
    char json[1024];
    const char *model = "\"model\":{\"type\":\"Unigram\",\"unk_id\":0,\"vocab\":[[\"<unk>\",0],[\"</s>\",0]]}}";
    snprintf(json, sizeof json, "{\"normalizer\":{\"type\":\"Precompiled\",\"precompiled_charsmap\":\"%s\"},%s", b64, model);
    PD_CHECK_ERR(load_str(json, &tk), PD_ERR_FORMAT);
    PD_CHECK(strstr(pd_error_msg(), "charsmap"));
    free(b64);
    snprintf(json, sizeof json, "{\"normalizer\":{\"type\":\"Precompiled\",\"precompiled_charsmap\":\"%%%%%%%%\"},%s", model);
    PD_CHECK_ERR(load_str(json, &tk), PD_ERR_FORMAT);
    snprintf(json, sizeof json, "{\"normalizer\":{\"type\":\"Precompiled\",\"precompiled_charsmap\":5},%s", model);
    PD_CHECK_ERR(load_str(json, &tk), PD_ERR_FORMAT);
    snprintf(json, sizeof json, "{\"normalizer\":{\"type\":\"Lowercase\"},%s", model);
    PD_CHECK_ERR(load_str(json, &tk), PD_ERR_UNSUPPORTED);
    snprintf(json, sizeof json, "{\"pre_tokenizer\":{\"type\":\"ByteLevel\"},%s", model);
    PD_CHECK_ERR(load_str(json, &tk), PD_ERR_UNSUPPORTED);
    /* files */
    char path[600];
    snprintf(path, sizeof path, "%s/nonexistent", pd_tmp);
    PD_CHECK_ERR(pd_tokenizer_load(path, &tk), PD_ERR_IO);
    snprintf(path, sizeof path, "%s/bad.json", pd_tmp);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs("{\"model\": [", f);
        fclose(f);
    }
    PD_CHECK_ERR(pd_tokenizer_load(path, &tk), PD_ERR_FORMAT);
    PD_CHECK(strstr(pd_error_msg(), "bad.json"));
    PD_CHECK(tk == NULL);
}

/* A charsmap rule that expands one byte into 200 cannot blow up memory: the normalised text is bounded. */
static void test_expansion_bound(void) {
    char big[201];
    memset(big, 'z', 200);
    big[200] = 0;
    const char *keys[] = {"a"}, *vals[] = {big};
    uint8_t *blob = NULL;
    size_t n = 0;
    char *b64 = NULL;
    PD_CHECK_OK(pd_charsmap_build(keys, vals, 1, &blob, &n));
    PD_CHECK_OK(pd_charsmap_to_base64(blob, n, &b64));
    free(blob);
    if (!b64) return;
    size_t jl = strlen(b64) + 512;
    char *json = malloc(jl);
    snprintf(json, jl, "{\"normalizer\":{\"type\":\"Precompiled\",\"precompiled_charsmap\":\"%s\"},"
             "\"model\":{\"type\":\"Unigram\",\"unk_id\":0,\"vocab\":[[\"<unk>\",0],[\"</s>\",0],[\"z\",-1]]}}", b64);
    free(b64);
    pd_tokenizer *tk = NULL;
    PD_CHECK_OK(load_str(json, &tk));
    free(json);
    if (!tk) return;
    char want[420] = "";
    for (int i = 0; i < 200; i++) strcat(want, "z|");
    strcat(want, "</s>");
    check_pieces(tk, "a", want); /* no Metaspace: no prefix */
    size_t len = PD_TOKENIZER_MAX_INPUT;
    char *text = malloc(len);
    memset(text, 'a', len);
    int32_t ids[PD_TOKENIZER_MAX_TOKENS];
    int k = 0;
    PD_CHECK_ERR(pd_tokenizer_encode(tk, text, len, 512, ids, &k), PD_ERR_INVALID);
    char *out = NULL;
    PD_CHECK_ERR(pd_tokenizer_normalize(tk, text, len, &out), PD_ERR_INVALID);
    free(text);
    pd_tokenizer_free(tk);
}

int main(void) {
    const char *base = getenv("PIPEDIT_TMP");
    if (!base || !*base) base = "/tmp";
    char mk[600];
    snprintf(mk, sizeof mk, "mkdir -p '%s'", base);
    if (system(mk) != 0) return 1;
    snprintf(pd_tmp, sizeof pd_tmp, "%s/test_tokenizer.XXXXXX", base);
    if (!mkdtemp(pd_tmp)) return 1;
    pd_status st = pd_tokenizer_write_tiny(pd_tmp, 2048);
    if (st == PD_OK) st = pd_tokenizer_load(pd_tmp, &tiny);
    if (st != PD_OK) {
        fprintf(stderr, "tiny tokenizer: %s\n", pd_error_msg());
        return 1;
    }
    PD_RUN(test_tiny_basics);
    PD_RUN(test_whitespace);
    PD_RUN(test_normalisation);
    PD_RUN(test_unknown_and_bytes);
    PD_RUN(test_empty);
    PD_RUN(test_truncation);
    PD_RUN(test_invalid_utf8);
    PD_RUN(test_round_trip);
    PD_RUN(test_viterbi_hand_made);
    PD_RUN(test_charsmap_trie);
    PD_RUN(test_malformed);
    PD_RUN(test_expansion_bound);
    pd_tokenizer_free(tiny);
    pd_test_rmtree(pd_tmp);
    return pd_test_summary();
}
