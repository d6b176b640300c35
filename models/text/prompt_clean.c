#include "models/text/prompt_clean.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Code points of Windows-1252 bytes 0x80..0x9F (0 = undefined: the byte maps to U+0080 + k, as
 * ftfy's "sloppy" codec and Python's html.unescape for numeric references do). */
static const uint16_t pd_cp1252_c1[32] = {
    0x20AC, 0,      0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0, 0x017D, 0,
    0,      0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0, 0x017E, 0x0178};

static uint32_t pd_cp1252_decode(uint8_t b) {
    if (b >= 0x80 && b < 0xA0 && pd_cp1252_c1[b - 0x80]) return pd_cp1252_c1[b - 0x80];
    return b;
}

/* The byte a code point came from when UTF-8 was misread as Windows-1252 (or Latin-1); -1 if none. */
static int pd_cp1252_byte(uint32_t c) {
    if (c < 0x100) return (int)c;
    for (int k = 0; k < 32; k++)
        if (pd_cp1252_c1[k] == c) return 0x80 + k;
    return -1;
}

typedef struct pd_cps {
    uint32_t *c;
    size_t n;
} pd_cps;

/* ---- UTF-8 ---- */

static size_t pd_utf8_decode(const uint8_t *s, size_t len, uint32_t *out) {
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        uint8_t b = s[i];
        uint32_t c;
        int k;
        if (b < 0x80) c = b, k = 0;
        else if (b >= 0xC2 && b < 0xE0) c = b & 0x1F, k = 1;
        else if (b >= 0xE0 && b < 0xF0) c = b & 0x0F, k = 2;
        else if (b >= 0xF0 && b < 0xF5) c = b & 0x07, k = 3;
        else c = 0xFFFD, k = -1;
        size_t j = 1;
        for (; k > 0 && (int)j <= k; j++) {
            if (i + j >= len || (s[i + j] & 0xC0) != 0x80) break;
            c = (c << 6) | (s[i + j] & 0x3F);
        }
        if (k > 0 && ((int)j <= k || (k == 2 && c < 0x800) || (k == 3 && (c < 0x10000 || c > 0x10FFFF)) ||
                      (c >= 0xD800 && c < 0xE000))) {
            c = 0xFFFD; /* truncated, overlong, surrogate or out of range: one replacement, skip the lead */
            j = 1;
        }
        if (k < 0) j = 1;
        out[n++] = c;
        i += j;
    }
    return n;
}

static size_t pd_utf8_put(uint32_t c, char *o) {
    if (c < 0x80) return o[0] = (char)c, 1;
    if (c < 0x800) return o[0] = (char)(0xC0 | c >> 6), o[1] = (char)(0x80 | (c & 0x3F)), 2;
    if (c < 0x10000) {
        o[0] = (char)(0xE0 | c >> 12), o[1] = (char)(0x80 | ((c >> 6) & 0x3F)), o[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | c >> 18), o[1] = (char)(0x80 | ((c >> 12) & 0x3F)), o[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    o[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/* ---- HTML references (Python's html.unescape) ---- */

static const char *const pd_latin1_names[96] = {
    "nbsp",   "iexcl",  "cent",   "pound",  "curren", "yen",    "brvbar", "sect",   "uml",    "copy",   "ordf",   "laquo",
    "not",    "shy",    "reg",    "macr",   "deg",    "plusmn", "sup2",   "sup3",   "acute",  "micro",  "para",   "middot",
    "cedil",  "sup1",   "ordm",   "raquo",  "frac14", "frac12", "frac34", "iquest", "Agrave", "Aacute", "Acirc",  "Atilde",
    "Auml",   "Aring",  "AElig",  "Ccedil", "Egrave", "Eacute", "Ecirc",  "Euml",   "Igrave", "Iacute", "Icirc",  "Iuml",
    "ETH",    "Ntilde", "Ograve", "Oacute", "Ocirc",  "Otilde", "Ouml",   "times",  "Oslash", "Ugrave", "Uacute", "Ucirc",
    "Uuml",   "Yacute", "THORN",  "szlig",  "agrave", "aacute", "acirc",  "atilde", "auml",   "aring",  "aelig",  "ccedil",
    "egrave", "eacute", "ecirc",  "euml",   "igrave", "iacute", "icirc",  "iuml",   "eth",    "ntilde", "ograve", "oacute",
    "ocirc",  "otilde", "ouml",   "divide", "oslash", "ugrave", "uacute", "ucirc",  "uuml",   "yacute", "thorn",  "yuml"};

/* Names that need their ';' (HTML5 has no legacy form for them). */
static const struct {
    const char *name;
    uint32_t c;
} pd_entities[] = {
    {"apos", 0x27},     {"OElig", 0x152},   {"oelig", 0x153},   {"Scaron", 0x160},  {"scaron", 0x161}, {"Yuml", 0x178},
    {"fnof", 0x192},    {"circ", 0x2C6},    {"tilde", 0x2DC},   {"ensp", 0x2002},   {"emsp", 0x2003},  {"thinsp", 0x2009},
    {"zwnj", 0x200C},   {"zwj", 0x200D},    {"lrm", 0x200E},    {"rlm", 0x200F},    {"ndash", 0x2013}, {"mdash", 0x2014},
    {"lsquo", 0x2018},  {"rsquo", 0x2019},  {"sbquo", 0x201A},  {"ldquo", 0x201C},  {"rdquo", 0x201D}, {"bdquo", 0x201E},
    {"dagger", 0x2020}, {"Dagger", 0x2021}, {"bull", 0x2022},   {"hellip", 0x2026}, {"permil", 0x2030}, {"prime", 0x2032},
    {"lsaquo", 0x2039}, {"rsaquo", 0x203A}, {"euro", 0x20AC},   {"trade", 0x2122},  {"larr", 0x2190},  {"rarr", 0x2192},
    {"hearts", 0x2665}, {"star", 0x2606},   {"check", 0x2713},
};

/* Legacy names also valid without ';' (HTML5's list; the Latin-1 names are the rest of it). */
static const struct {
    const char *name;
    uint32_t c;
} pd_legacy[] = {{"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'}, {"AMP", '&'}, {"LT", '<'},
                 {"GT", '>'},  {"QUOT", '"'}, {"COPY", 0xA9}, {"REG", 0xAE}};

static int pd_name_is(const uint32_t *s, size_t n, const char *name) {
    size_t k = strlen(name);
    if (k != n) return 0;
    for (size_t i = 0; i < k; i++)
        if (s[i] != (unsigned char)name[i]) return 0;
    return 1;
}

/* A name of n code points: its character, or 0. legacy_only: only the forms valid without ';'. */
static uint32_t pd_entity_lookup(const uint32_t *s, size_t n, int legacy_only) {
    for (size_t k = 0; k < sizeof pd_legacy / sizeof pd_legacy[0]; k++)
        if (pd_name_is(s, n, pd_legacy[k].name)) return pd_legacy[k].c;
    for (int k = 0; k < 96; k++)
        if (pd_name_is(s, n, pd_latin1_names[k])) return 0xA0 + (uint32_t)k;
    if (legacy_only) return 0;
    for (size_t k = 0; k < sizeof pd_entities / sizeof pd_entities[0]; k++)
        if (pd_name_is(s, n, pd_entities[k].name)) return pd_entities[k].c;
    return 0;
}

/* Python's rule for &#N;: returns the code point, 0 for "remove it". */
static uint32_t pd_charref(uint64_t num) {
    if (num == 0) return 0xFFFD;
    if (num == 0x0D) return 0x0D;
    if (num >= 0x80 && num < 0xA0) return pd_cp1252_decode((uint8_t)num);
    if ((num >= 0xD800 && num < 0xE000) || num > 0x10FFFF) return 0xFFFD;
    if ((num >= 0x1 && num <= 0x8) || (num >= 0xE && num <= 0x1F) || (num >= 0x7F && num < 0xA0) ||
        (num >= 0xFDD0 && num <= 0xFDEF) || num == 0xB || (num & 0xFFFE) == 0xFFFE)
        return 0;
    return (uint32_t)num;
}

static int pd_is_digit(uint32_t c) { return c >= '0' && c <= '9'; }
static int pd_is_hex(uint32_t c) { return pd_is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

/* In place (never grows). */
static void pd_html_unescape(pd_cps *t) {
    uint32_t *c = t->c;
    size_t o = 0;
    for (size_t i = 0; i < t->n;) {
        if (c[i] != '&') {
            c[o++] = c[i++];
            continue;
        }
        size_t j = i + 1;
        if (j < t->n && c[j] == '#') { /* &#123; &#x1F; (';' optional) */
            int hex = j + 1 < t->n && (c[j + 1] == 'x' || c[j + 1] == 'X');
            size_t d = j + 1 + (size_t)hex, e = d;
            uint64_t num = 0;
            while (e < t->n && (hex ? pd_is_hex(c[e]) : pd_is_digit(c[e]))) {
                uint32_t v = pd_is_digit(c[e]) ? c[e] - '0' : (c[e] | 0x20) - 'a' + 10;
                if (num <= 0x10FFFFull * 16) num = num * (hex ? 16 : 10) + v; /* saturates past the range */
                e++;
            }
            if (e == d) {
                c[o++] = c[i++];
                continue;
            }
            if (e < t->n && c[e] == ';') e++;
            uint32_t r = pd_charref(num);
            if (r) c[o++] = r;
            i = e;
            continue;
        }
        /* a name: up to 32 characters other than \t \n \f space < & # ; */
        size_t e = j;
        while (e < t->n && e - j < 32 && c[e] != '\t' && c[e] != '\n' && c[e] != '\f' && c[e] != ' ' && c[e] != '<' &&
               c[e] != '&' && c[e] != '#' && c[e] != ';')
            e++;
        uint32_t r = 0;
        size_t end = 0;
        if (e < t->n && c[e] == ';') r = pd_entity_lookup(c + j, e - j, 0), end = e + 1;
        if (!r) /* the longest legacy prefix, the rest kept as text */
            for (size_t k = e; k > j + 1 && !r; k--) r = pd_entity_lookup(c + j, k - j, 1), end = k;
        if (!r) {
            c[o++] = c[i++];
            continue;
        }
        c[o++] = r;
        i = end;
    }
    t->n = o;
}

/* ---- ftfy's fixes ---- */

static void pd_remove_terminal_escapes(pd_cps *t) {
    uint32_t *c = t->c;
    size_t o = 0;
    for (size_t i = 0; i < t->n;) {
        if (c[i] == 0x1B && i + 1 < t->n && c[i + 1] == '[') {
            size_t e = i + 2;
            while (e < t->n && (pd_is_digit(c[e]) || c[e] == ';')) e++;
            if (e < t->n && ((c[e] | 0x20) >= 'a' && (c[e] | 0x20) <= 'z')) {
                i = e + 1;
                continue;
            }
        }
        c[o++] = c[i++];
    }
    t->n = o;
}

/* UTF-8 misread as Windows-1252: a lead byte and its continuation bytes, each a character. */
static void pd_fix_mojibake(pd_cps *t) {
    uint32_t *c = t->c;
    size_t o = 0;
    for (size_t i = 0; i < t->n;) {
        int b0 = pd_cp1252_byte(c[i]);
        int k = b0 >= 0xC2 && b0 < 0xE0 ? 1 : b0 >= 0xE0 && b0 < 0xF0 ? 2 : b0 >= 0xF0 && b0 < 0xF5 ? 3 : 0;
        if (k && i + (size_t)k < t->n) {
            uint32_t v = (uint32_t)b0 & (k == 1 ? 0x1F : k == 2 ? 0x0F : 0x07);
            int ok = 1;
            for (int j = 1; j <= k && ok; j++) {
                int b = pd_cp1252_byte(c[i + (size_t)j]);
                ok = b >= 0x80 && b < 0xC0;
                v = (v << 6) | ((uint32_t)b & 0x3F);
            }
            ok = ok && !(k == 2 && v < 0x800) && !(k == 3 && (v < 0x10000 || v > 0x10FFFF)) && !(v >= 0xD800 && v < 0xE000);
            if (ok) {
                c[o++] = v;
                i += (size_t)k + 1;
                continue;
            }
        }
        c[o++] = c[i++];
    }
    t->n = o;
}

static void pd_fix_c1(pd_cps *t) {
    for (size_t i = 0; i < t->n; i++)
        if (t->c[i] >= 0x80 && t->c[i] < 0xA0) t->c[i] = pd_cp1252_decode((uint8_t)t->c[i]);
}

/* Ligatures (up to 3 code points each) and width, from t into out (3 x t->n). */
static void pd_fix_ligatures_width(const pd_cps *t, pd_cps *out) {
    static const struct {
        uint32_t c;
        uint32_t to[3];
    } lig[] = {
        {0x132, {'I', 'J'}},       {0x133, {'i', 'j'}},         {0x149, {0x2BC, 'n'}},     {0x1C4, {'D', 0x17D}},
        {0x1C5, {'D', 0x17E}},     {0x1C6, {'d', 0x17E}},       {0x1C7, {'L', 'J'}},       {0x1C8, {'L', 'j'}},
        {0x1C9, {'l', 'j'}},       {0x1CA, {'N', 'J'}},         {0x1CB, {'N', 'j'}},       {0x1CC, {'n', 'j'}},
        {0x1F1, {'D', 'Z'}},       {0x1F2, {'D', 'z'}},         {0x1F3, {'d', 'z'}},       {0xFB00, {'f', 'f'}},
        {0xFB01, {'f', 'i'}},      {0xFB02, {'f', 'l'}},        {0xFB03, {'f', 'f', 'i'}}, {0xFB04, {'f', 'f', 'l'}},
        {0xFB05, {0x17F, 't'}},    {0xFB06, {'s', 't'}},
    };
    /* U+FF5F..U+FF64, U+FFE0..U+FFE6 (U+FFE7 unassigned), U+FFE8..U+FFEE */
    static const uint32_t w1[6] = {0x2985, 0x2986, 0x3002, 0x300C, 0x300D, 0x3001};
    static const uint32_t w2[7] = {0xA2, 0xA3, 0xAC, 0xAF, 0xA6, 0xA5, 0x20A9};
    static const uint32_t w3[7] = {0x2502, 0x2190, 0x2191, 0x2192, 0x2193, 0x25A0, 0x25CB};
    size_t o = 0;
    for (size_t i = 0; i < t->n; i++) {
        uint32_t c = t->c[i];
        int done = 0;
        for (size_t k = 0; k < sizeof lig / sizeof lig[0] && !done; k++)
            if (lig[k].c == c) {
                for (int j = 0; j < 3 && lig[k].to[j]; j++) out->c[o++] = lig[k].to[j];
                done = 1;
            }
        if (done) continue;
        if (c >= 0xFF01 && c <= 0xFF5E) c = c - 0xFF01 + 0x21;
        else if (c == 0x3000) c = ' ';
        else if (c >= 0xFF5F && c <= 0xFF64) c = w1[c - 0xFF5F];
        else if (c >= 0xFFE0 && c <= 0xFFE6) c = w2[c - 0xFFE0];
        else if (c >= 0xFFE8 && c <= 0xFFEE) c = w3[c - 0xFFE8];
        out->c[o++] = c;
    }
    out->n = o;
}

static void pd_uncurl_breaks_controls(pd_cps *t) {
    uint32_t *c = t->c;
    size_t o = 0;
    for (size_t i = 0; i < t->n; i++) {
        uint32_t x = c[i];
        if (x == 0x2BC || (x >= 0x2018 && x <= 0x201B)) x = '\'';
        else if (x >= 0x201C && x <= 0x201F) x = '"';
        if (x == '\r') {
            if (i + 1 < t->n && c[i + 1] == '\n') continue; /* CR LF: the LF stays */
            x = '\n';
        } else if (x == 0x2028 || x == 0x2029) {
            x = '\n';
        }
        if (x <= 0x08 || x == 0x0B || (x >= 0x0E && x <= 0x1F) || x == 0x7F || (x >= 0x206A && x <= 0x206F) || x == 0xFEFF ||
            (x >= 0xFFF9 && x <= 0xFFFC))
            continue;
        c[o++] = x;
    }
    t->n = o;
}

static int pd_is_space(uint32_t c) { /* Python's str.isspace */
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

pd_status pd_prompt_clean(const char *text, size_t len, char **out, size_t *out_len) {
    *out = NULL;
    if (out_len) *out_len = 0;
    pd_cps a = {malloc(sizeof(uint32_t) * (len + 1)), 0}, b = {malloc(sizeof(uint32_t) * (3 * len + 1)), 0};
    char *s = NULL;
    if (a.c && b.c) {
        a.n = pd_utf8_decode((const uint8_t *)text, len, a.c);
        int has_lt = 0;
        for (size_t i = 0; i < a.n; i++) has_lt |= a.c[i] == '<';
        if (!has_lt) pd_html_unescape(&a); /* ftfy: unescape_html="auto" */
        pd_remove_terminal_escapes(&a);
        pd_fix_mojibake(&a);
        pd_fix_c1(&a);
        pd_fix_ligatures_width(&a, &b);
        pd_uncurl_breaks_controls(&b);
        pd_html_unescape(&b); /* basic_clean: html.unescape(html.unescape(text)) */
        pd_html_unescape(&b);
        s = malloc(4 * b.n + 1);
    }
    if (!s) {
        free(a.c);
        free(b.c);
        return pd_error_set(PD_ERR_NOMEM, "prompt cleaning: out of memory for %zu bytes", len);
    }
    /* strip, then every run of white space -> one space, strip (whitespace_clean) */
    size_t o = 0;
    int pending = 0;
    for (size_t i = 0; i < b.n; i++) {
        if (pd_is_space(b.c[i])) {
            pending = o > 0;
            continue;
        }
        if (pending) s[o++] = ' ';
        pending = 0;
        o += pd_utf8_put(b.c[i], s + o);
    }
    s[o] = 0;
    free(a.c);
    free(b.c);
    *out = s;
    if (out_len) *out_len = o;
    return PD_OK;
}
