/* The tiny tokenizer writer (pd_tokenizer_write_tiny): a real unigram vocabulary, small. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/model_dir.h"
#include "models/text/charsmap.h"
#include "models/text/tokenizer.h"

/* Common English words and words of video prompts, most frequent first. */
static const char *const pd_tiny_words[] = {
    "the", "a", "of", "and", "in", "to", "is", "with", "on", "at", "an", "its", "by", "from", "for", "as",
    "are", "it", "that", "this", "his", "her", "their", "into", "over", "under", "through", "while", "near",
    "behind", "above", "across", "around", "along", "against", "between", "toward", "up", "down", "out", "off",
    "camera", "shot", "close", "view", "scene", "light", "sunlight", "background", "foreground", "frame",
    "slow", "motion", "cinematic", "style", "realistic", "detailed", "high", "quality", "soft", "warm", "cold",
    "bright", "dark", "golden", "hour", "sunset", "sunrise", "night", "day", "morning", "evening", "sky",
    "cloud", "clouds", "rain", "snow", "wind", "fog", "sun", "moon", "star", "stars", "water", "ocean", "sea",
    "river", "lake", "wave", "waves", "beach", "sand", "forest", "tree", "trees", "leaf", "leaves", "grass",
    "flower", "flowers", "garden", "field", "mountain", "mountains", "hill", "valley", "road", "street", "city",
    "town", "house", "building", "room", "window", "door", "wall", "floor", "table", "chair", "bed", "car",
    "train", "boat", "ship", "bike", "plane", "bridge", "park", "market", "cafe", "kitchen", "stage",
    "man", "woman", "men", "women", "child", "children", "boy", "girl", "person", "people", "friend", "family",
    "cat", "dog", "bird", "birds", "horse", "fish", "fox", "bear", "rabbit", "lion", "tiger", "wolf", "deer",
    "panda", "dragon", "robot", "astronaut", "knight", "chef", "dancer", "musician", "player", "teddy",
    "red", "blue", "green", "yellow", "white", "black", "orange", "purple", "pink", "brown", "gray", "silver",
    "big", "small", "little", "large", "tall", "long", "short", "old", "young", "new", "beautiful", "happy",
    "quiet", "calm", "busy", "fast", "gentle", "wild", "ancient", "modern", "futuristic", "colorful", "vivid",
    "walk", "walks", "walking", "run", "runs", "running", "jump", "jumping", "fly", "flying", "swim",
    "swimming", "dance", "dancing", "play", "playing", "sit", "sitting", "stand", "standing", "look",
    "looking", "watch", "watching", "eat", "eating", "drink", "drinking", "ride", "riding", "drive", "driving",
    "hold", "holding", "turn", "turns", "move", "moving", "fall", "falling", "float", "floating", "glow",
    "glowing", "shine", "shining", "smile", "smiling", "sing", "singing", "read", "reading", "cook", "cooking",
    "paint", "painting", "wear", "wearing", "carry", "carrying", "pan", "pans", "zoom", "zooms", "tracking",
    "one", "two", "three", "first", "last", "next", "each", "every", "some", "many", "all", "very", "more",
    "most", "other", "same", "only", "then", "there", "here", "where", "when", "who", "what", "which",
    "was", "were", "be", "been", "has", "have", "had", "do", "does", "not", "no", "can", "will", "would",
    "time", "world", "life", "hand", "hands", "face", "eyes", "hair", "head", "dress", "hat", "coat", "shirt",
    "cup", "coffee", "tea", "food", "bread", "fruit", "apple", "ball", "book", "guitar", "piano", "music",
    "fire", "smoke", "dust", "ice", "stone", "rock", "wood", "metal", "glass", "paper", "color", "colors",
    "shadow", "shadows", "reflection", "reflections", "surface", "texture", "detail", "details", "lens",
    "focus", "depth", "wide", "angle", "aerial", "drone", "portrait", "landscape", "photo", "video", "film",
    "animation", "cartoon", "anime", "painting", "watercolor", "oil", "neon", "lights", "lamp", "candle",
    "snowy", "rainy", "sunny", "cloudy", "misty", "foggy", "stormy", "peaceful", "dramatic", "epic",
};

static const char *const pd_tiny_suffixes[] = {
    "s", "ed", "ing", "er", "ers", "ly", "est", "es", "tion", "ness", "ful", "less", "ment", "able", "y",
};

/* Appends the UTF-8 encoding of code point cp to s (room for 5 bytes). */
static char *pd_utf8_put(char *s, unsigned cp) {
    if (cp < 0x80) *s++ = (char)cp;
    else if (cp < 0x800) {
        *s++ = (char)(0xC0 | cp >> 6);
        *s++ = (char)(0x80 | (cp & 63));
    } else if (cp < 0x10000) {
        *s++ = (char)(0xE0 | cp >> 12);
        *s++ = (char)(0x80 | ((cp >> 6) & 63));
        *s++ = (char)(0x80 | (cp & 63));
    } else {
        *s++ = (char)(0xF0 | cp >> 18);
        *s++ = (char)(0x80 | ((cp >> 12) & 63));
        *s++ = (char)(0x80 | ((cp >> 6) & 63));
        *s++ = (char)(0x80 | (cp & 63));
    }
    *s = 0;
    return s;
}

#define PD_TINY_MAX_RULES 256
typedef struct pd_tiny_rules {
    char key[PD_TINY_MAX_RULES][12], value[PD_TINY_MAX_RULES][12];
    int n;
} pd_tiny_rules;

static void pd_tiny_rule_cp(pd_tiny_rules *r, unsigned cp, const char *value) {
    PD_ASSERT(r->n < PD_TINY_MAX_RULES && strlen(value) < sizeof r->value[0]);
    pd_utf8_put(r->key[r->n], cp);
    strcpy(r->value[r->n], value);
    r->n++;
}

/* The tiny charsmap's rules: a small sample of what SentencePiece's nmt_nfkc table does. */
static void pd_tiny_charsmap_rules(pd_tiny_rules *r) {
    char v[12];
    for (unsigned cp = 0xFF01; cp <= 0xFF5E; cp++) { /* full-width ASCII */
        pd_utf8_put(v, cp - 0xFF01 + 0x21);
        pd_tiny_rule_cp(r, cp, v);
    }
    static const unsigned spaces[] = {0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0xA0, 0x3000, 0x202F, 0x205F};
    for (size_t i = 0; i < sizeof spaces / sizeof spaces[0]; i++) pd_tiny_rule_cp(r, spaces[i], " ");
    for (unsigned cp = 0x2000; cp <= 0x200A; cp++) pd_tiny_rule_cp(r, cp, " ");
    static const unsigned deleted[] = {0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF};
    for (size_t i = 0; i < sizeof deleted / sizeof deleted[0]; i++) pd_tiny_rule_cp(r, deleted[i], "");
    pd_tiny_rule_cp(r, 0xFB00, "ff");
    pd_tiny_rule_cp(r, 0xFB01, "fi");
    pd_tiny_rule_cp(r, 0xFB02, "fl");
    pd_tiny_rule_cp(r, 0xFB03, "ffi");
    pd_tiny_rule_cp(r, 0xFB04, "ffl");
    for (unsigned k = 0; k < 20; k++) { /* circled numbers 1..20 */
        snprintf(v, sizeof v, "%u", k + 1);
        pd_tiny_rule_cp(r, 0x2460 + k, v);
    }
    pd_tiny_rule_cp(r, 0x2122, "TM");
    pd_tiny_rule_cp(r, 0x2026, "...");
    /* A two-character key: e + combining acute composes (NFC), exercising longest match. */
    PD_ASSERT(r->n < PD_TINY_MAX_RULES);
    strcpy(r->key[r->n], "e\xCC\x81");
    pd_utf8_put(r->value[r->n], 0xE9);
    r->n++;
}

/* ---- vocabulary ---- */

typedef struct pd_tiny_vocab {
    json_t *arr;   /* [[piece, score], ...] */
    json_t *seen;  /* piece -> true */
    int want;
} pd_tiny_vocab;

static void pd_tiny_add(pd_tiny_vocab *v, const char *piece, double score) {
    if ((int)json_array_size(v->arr) >= v->want || json_object_get(v->seen, piece)) return;
    json_object_set_new(v->seen, piece, json_true());
    json_t *e = json_array();
    json_array_append_new(e, json_string(piece));
    json_array_append_new(e, json_real(score));
    json_array_append_new(v->arr, e);
}

static void pd_tiny_build_vocab(pd_tiny_vocab *v) {
    char p[64];
    pd_tiny_add(v, "<pad>", 0.0);
    pd_tiny_add(v, "</s>", 0.0);
    pd_tiny_add(v, "<unk>", 0.0);
    for (int b = 0; b < 256; b++) {
        snprintf(p, sizeof p, "<0x%02X>", b);
        pd_tiny_add(v, p, 0.0);
    }
    pd_tiny_add(v, "\xE2\x96\x81", -6.0);
    for (int c = 33; c < 127; c++) {
        snprintf(p, sizeof p, "%c", c);
        pd_tiny_add(v, p, -9.0);
        snprintf(p, sizeof p, "\xE2\x96\x81%c", c);
        pd_tiny_add(v, p, -8.5);
    }
    int n_words = (int)(sizeof pd_tiny_words / sizeof pd_tiny_words[0]);
    for (int i = 0; i < n_words; i++) {
        snprintf(p, sizeof p, "\xE2\x96\x81%s", pd_tiny_words[i]);
        pd_tiny_add(v, p, -3.0 - 0.002 * i);
    }
    for (size_t i = 0; i < sizeof pd_tiny_suffixes / sizeof pd_tiny_suffixes[0]; i++)
        pd_tiny_add(v, pd_tiny_suffixes[i], -5.0 - 0.05 * (double)i);
    for (int i = 0; i < n_words; i++) {
        snprintf(p, sizeof p, "\xE2\x96\x81%s", pd_tiny_words[i]);
        p[3] = (char)(p[3] - 'a' + 'A');
        pd_tiny_add(v, p, -4.5 - 0.002 * i);
    }
    for (int i = 0; i < n_words; i++) /* word stems with the word-start mark */
        for (size_t l = 2; l + 1 < strlen(pd_tiny_words[i]); l++) {
            snprintf(p, sizeof p, "\xE2\x96\x81%.*s", (int)l, pd_tiny_words[i]);
            pd_tiny_add(v, p, -6.5 - 0.1 * (double)l);
        }
    for (int i = 0; i < n_words; i++) /* letter pairs inside words */
        for (size_t k = 1; k + 1 < strlen(pd_tiny_words[i]); k++) {
            snprintf(p, sizeof p, "%.2s", pd_tiny_words[i] + k);
            pd_tiny_add(v, p, -7.0);
        }
    for (int a = 0; a < 26; a++) /* enough filler for any allowed size */
        for (int b = 0; b < 26; b++)
            for (int c = 0; c < 27; c++) {
                snprintf(p, sizeof p, "\xE2\x96\x81%c%c%c", 'a' + a, 'a' + b, c < 26 ? 'a' + c : 0);
                pd_tiny_add(v, p, c < 26 ? -10.0 : -8.0);
            }
    for (int a = 0; a < 26 && (int)json_array_size(v->arr) < v->want; a++) /* full-size vocabularies */
        for (int b = 0; b < 26; b++)
            for (int c = 0; c < 26; c++)
                for (int d = 0; d < 26; d++) {
                    snprintf(p, sizeof p, "\xE2\x96\x81%c%c%c%c", 'a' + a, 'a' + b, 'a' + c, 'a' + d);
                    pd_tiny_add(v, p, -11.0);
                }
}

/* ---- files ---- */

static pd_status pd_tiny_dump(json_t *j, const char *dir, const char *file) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    return pd_model_dir_write_json(path, j);
}

static json_t *pd_tiny_metaspace(void) {
    return json_pack("{s:s, s:s, s:b, s:s, s:b}", "type", "Metaspace", "replacement", "\xE2\x96\x81",
                     "add_prefix_space", 1, "prepend_scheme", "always", "split", 1);
}

static json_t *pd_tiny_added(int id, const char *content) {
    return json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", id, "content", content, "single_word", 0,
                     "lstrip", 0, "rstrip", 0, "normalized", 0, "special", 1);
}

pd_status pd_tokenizer_write_tiny(const char *model_dir, int vocab_size) {
    if (vocab_size < 1024 || vocab_size > 300000)
        return pd_error_set(PD_ERR_INVALID, "tiny tokenizer vocab_size %d outside 1024 .. 300000", vocab_size);
    char dir[4096];
    if (snprintf(dir, sizeof dir, "%s/tokenizer", model_dir) >= (int)sizeof dir)
        return pd_error_set(PD_ERR_INVALID, "model folder path too long: %s", model_dir);
    PD_TRY(pd_model_dir_mkdirs(dir));

    pd_tiny_rules *rules = calloc(1, sizeof *rules);
    if (!rules) return pd_error_set(PD_ERR_NOMEM, "out of memory writing the tiny tokenizer");
    pd_tiny_charsmap_rules(rules);
    const char *keys[PD_TINY_MAX_RULES], *values[PD_TINY_MAX_RULES];
    for (int i = 0; i < rules->n; i++) keys[i] = rules->key[i], values[i] = rules->value[i];
    uint8_t *blob = NULL;
    size_t n_blob = 0;
    char *b64 = NULL;
    pd_status st = pd_charsmap_build(keys, values, rules->n, &blob, &n_blob);
    free(rules);
    if (st == PD_OK) st = pd_charsmap_to_base64(blob, n_blob, &b64);
    free(blob);
    if (st != PD_OK) return st;

    pd_tiny_vocab v = {json_array(), json_object(), vocab_size};
    pd_tiny_build_vocab(&v);
    json_decref(v.seen);
    if ((int)json_array_size(v.arr) != vocab_size) {
        json_decref(v.arr);
        free(b64);
        return pd_error_set(PD_ERR_INVALID, "tiny tokenizer: only %zu pieces for vocab_size %d",
                            json_array_size(v.arr), vocab_size);
    }
    json_t *normalizer = json_pack(
        "{s:s, s:[{s:s, s:s}, {s:s, s:{s:s}, s:s}]}", "type", "Sequence", "normalizers", "type", "Precompiled",
        "precompiled_charsmap", b64, "type", "Replace", "pattern", "Regex", " {2,}", "content", " ");
    free(b64);
    json_t *post = json_pack("{s:s, s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}], s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}, "
                             "{s:{s:s, s:i}}, {s:{s:s, s:i}}], s:{s:{s:s, s:[i], s:[s]}}}",
                             "type", "TemplateProcessing", "single", "Sequence", "id", "A", "type_id", 0,
                             "SpecialToken", "id", "</s>", "type_id", 0, "pair", "Sequence", "id", "A", "type_id", 0,
                             "SpecialToken", "id", "</s>", "type_id", 0, "Sequence", "id", "B", "type_id", 0,
                             "SpecialToken", "id", "</s>", "type_id", 0, "special_tokens", "</s>", "id", "</s>",
                             "ids", 1, "tokens", "</s>");
    json_t *root = json_pack("{s:s, s:n, s:n, s:[o, o, o], s:o, s:o, s:o, s:o, s:{s:s, s:i, s:o, s:b}}",
                             "version", "1.0", "truncation", "padding", "added_tokens", pd_tiny_added(0, "<pad>"),
                             pd_tiny_added(1, "</s>"), pd_tiny_added(2, "<unk>"), "normalizer", normalizer,
                             "pre_tokenizer", pd_tiny_metaspace(), "post_processor", post, "decoder",
                             pd_tiny_metaspace(), "model", "type", "Unigram", "unk_id", 2, "vocab", v.arr,
                             "byte_fallback", 1);
    if (!root) return pd_error_set(PD_ERR_NOMEM, "out of memory writing the tiny tokenizer");
    st = pd_tiny_dump(root, dir, "tokenizer.json");
    json_decref(root);
    if (st != PD_OK) return st;

    json_t *cfg = json_pack("{s:s, s:s, s:s, s:i, s:i, s:b, s:b, s:s}", "eos_token", "</s>", "pad_token", "<pad>",
                            "unk_token", "<unk>", "extra_ids", 0, "model_max_length", PD_TOKENIZER_MAX_TOKENS,
                            "legacy", 1, "add_prefix_space", 1, "tokenizer_class", "T5Tokenizer");
    st = cfg ? pd_tiny_dump(cfg, dir, "tokenizer_config.json")
             : pd_error_set(PD_ERR_NOMEM, "out of memory");
    json_decref(cfg);
    if (st != PD_OK) return st;
    json_t *map = json_pack("{s:s, s:s, s:s}", "eos_token", "</s>", "pad_token", "<pad>", "unk_token", "<unk>");
    st = map ? pd_tiny_dump(map, dir, "special_tokens_map.json")
             : pd_error_set(PD_ERR_NOMEM, "out of memory");
    json_decref(map);
    return st;
}
