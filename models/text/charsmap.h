/* SentencePiece's precompiled character map: the table of normalisation rules (NFKC folding,
 * whitespace mapping, deletions) that tokenizer.json carries base64-encoded as
 * normalizer "precompiled_charsmap" and spiece.model carries in its normalizer spec.
 *
 * Binary layout (little endian):
 *   u32 trie_bytes                      size of the trie in bytes (a multiple of 4)
 *   u32 units[trie_bytes / 4]           a double-array trie (darts-clone layout) over UTF-8 keys
 *   char replacements[]                 NUL-terminated replacement strings
 * A key's value in the trie is the byte offset of its replacement inside `replacements`. An empty
 * replacement deletes the matched text.
 *
 * Trie unit bits: 0-7 label, 8 has-leaf, 9 offset-scale (offset << 8), 10-30 offset, 31 leaf flag
 * (a leaf unit's low 31 bits are the value). From node p, the child for byte c sits at
 * p ^ offset(unit[p]) ^ c and is valid when its label equals c; a node ending a key has a leaf at
 * p ^ offset(unit[p]). The root is unit 0.
 *
 * Every index read from a file is bounds-checked: a hostile blob yields no match or a parse error,
 * never an out-of-bounds read. */
#ifndef PD_MODELS_TEXT_CHARSMAP_H
#define PD_MODELS_TEXT_CHARSMAP_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef struct pd_charsmap pd_charsmap;

/* Parses a binary charsmap (copied; blob may be freed afterwards). Returns PD_ERR_FORMAT with a
 * message (prefixed by `what`, e.g. the file name) when the size prefix is missing, not a multiple of
 * 4 or larger than the blob, or the trie is empty; PD_ERR_NOMEM on allocation failure. */
pd_status pd_charsmap_parse(const uint8_t *blob, size_t n, const char *what, pd_charsmap **out);
/* Releases a charsmap. NULL is a no-op. */
void pd_charsmap_free(pd_charsmap *cm);

/* The longest key that is a prefix of s[0, n). Returns its length in bytes (0 when no key matches,
 * or when s starts with a NUL byte) and points *repl at its replacement (*repl_len bytes, not
 * necessarily NUL-terminated from the caller's view, valid while cm lives). */
size_t pd_charsmap_match(const pd_charsmap *cm, const uint8_t *s, size_t n, const char **repl, size_t *repl_len);

/* Builds a binary charsmap from n rules keys[i] -> values[i] (NUL-terminated UTF-8; keys non-empty
 * and distinct, values may be empty). *blob is malloc'd; the caller frees it. PD_ERR_INVALID for an
 * empty or duplicate key, PD_ERR_NOMEM on allocation failure. */
pd_status pd_charsmap_build(const char *const *keys, const char *const *values, int n, uint8_t **blob, size_t *n_blob);

/* Standard base64 (RFC 4648, '=' padding) as tokenizer.json stores the charsmap.
 * Encode: *out is a malloc'd NUL-terminated string. Decode: *out is malloc'd (*n_out bytes);
 * PD_ERR_FORMAT for a character outside the alphabet or a bad length. */
pd_status pd_charsmap_to_base64(const uint8_t *data, size_t n, char **out);
pd_status pd_charsmap_from_base64(const char *text, size_t n, uint8_t **out, size_t *n_out);

#endif
