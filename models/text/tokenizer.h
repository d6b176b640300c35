/* The umT5 tokenizer: SentencePiece unigram segmentation, loaded from the Hugging Face
 * `tokenizer.json` of a diffusers `tokenizer/` folder (google/umt5-xxl's format).
 *
 * Encoding a prompt, step by step (SentencePiece's behaviour, which the umT5 vocabulary was trained
 * with):
 *  1. Normalisation. The input is read as UTF-8. At each position the longest key of the precompiled
 *     character map (normalizer "Precompiled", see charsmap.h) is replaced by its value; otherwise one
 *     UTF-8 character is copied. A byte that does not start a valid UTF-8 sequence (bad lead, missing
 *     continuation, overlong form, surrogate, > U+10FFFF) is replaced by U+FFFD and skipped alone: invalid
 *     input never fails and never crashes.
 *  2. Whitespace, on the normalised text: leading and trailing spaces are dropped and every run of
 *     spaces becomes one (SentencePiece's remove_extra_whitespaces; the umT5 tokenizer.json expresses
 *     the collapse as Replace(" {2,}" -> " ") and the Wan pipeline strips prompts the same way). Only
 *     U+0020 is a space here; the charsmap maps tabs, newlines and other spaces to it.
 *  3. Metaspace: each space becomes U+2581 '▁' and, when the pre-tokenizer asks for a prefix space
 *     (add_prefix_space / prepend_scheme "always" or "first"), or a Prepend("▁") normaliser does, '▁' is
 *     put before the first character.
 *  4. Viterbi segmentation: the split of the text into vocabulary pieces with the highest total
 *     score (the unigram log-probabilities of model.vocab). Special tokens (added_tokens marked
 *     special, the unk piece) and byte pieces never match text. A character no piece covers becomes
 *     an unknown token with score min_score - 10; with model.byte_fallback and all 256 "<0xNN>" pieces
 *     present each of its UTF-8 bytes becomes its byte piece instead, otherwise a run of consecutive
 *     unknown characters becomes a single unk id.
 *  5. EOS ("</s>", taken from the post-processor template) is appended. A result longer than the
 *     caller's max_len keeps the first max_len - 1 pieces and the EOS.
 * Normaliser steps understood: Precompiled, Replace(" {2,}" -> " ") and Replace(" " -> "▁"), Strip,
 * Prepend("▁"), Sequence; pre-tokenisers: Metaspace ('▁' only), WhitespaceSplit, Sequence. Anything
 * else is refused by name rather than silently tokenised differently. The charsmap is applied as
 * SentencePiece applies it (longest byte-wise match); Hugging Face's fast tokenizer matches per
 * grapheme and can differ on decomposed (NFD) input.
 *
 * spiece.model (protobuf) is not read: tokenizer.json carries the same vocabulary, scores and charsmap.
 * Everything read from the file is bounded: file size, vocabulary size, piece length, scores (|s| <=
 * 1e30), charsmap size, and the length of normalised text. */
#ifndef PD_MODELS_TEXT_TOKENIZER_H
#define PD_MODELS_TEXT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef struct pd_tokenizer pd_tokenizer;

#define PD_TOKENIZER_MAX_TOKENS 512          /* umT5 / Wan text_len */
#define PD_TOKENIZER_MAX_FILE (256u << 20)   /* tokenizer.json size limit */
#define PD_TOKENIZER_MAX_VOCAB (1 << 22)     /* pieces */
#define PD_TOKENIZER_MAX_PIECE_BYTES 256     /* longest piece accepted */
#define PD_TOKENIZER_MAX_INPUT (256u << 10)  /* prompt bytes accepted by encode */

/* Loads a tokenizer from `path`: a tokenizer.json file, a `tokenizer/` folder holding one, or a
 * model folder whose tokenizer/ subfolder holds one. Errors (message names the file and the field):
 * PD_ERR_IO (missing or unreadable), PD_ERR_FORMAT (not JSON, a missing or mistyped field, a vocab
 * entry that is not [piece, score], a truncated or undecodable charsmap, out-of-range ids, too large),
 * PD_ERR_UNSUPPORTED (a model type other than "Unigram", a normaliser or pre-tokeniser step this
 * tokenizer does not implement), PD_ERR_NOMEM. The caller frees *out with pd_tokenizer_free. */
pd_status pd_tokenizer_load(const char *path, pd_tokenizer **out);

/* Same, from the bytes of a tokenizer.json held in memory (len bytes, need not be NUL-terminated).
 * `name` is used in error messages. */
pd_status pd_tokenizer_load_json(const char *json, size_t len, const char *name, pd_tokenizer **out);

/* Releases a tokenizer. NULL is a no-op. */
void pd_tokenizer_free(pd_tokenizer *tk);

/* Number of pieces, and the ids of the special pieces (-1 when the vocabulary has none). */
int pd_tokenizer_vocab_size(const pd_tokenizer *tk);
int pd_tokenizer_eos_id(const pd_tokenizer *tk);
int pd_tokenizer_unk_id(const pd_tokenizer *tk);
int pd_tokenizer_pad_id(const pd_tokenizer *tk);
/* The text of piece id (as stored, with '▁'), or NULL when id is out of range. Valid while tk lives. */
const char *pd_tokenizer_piece(const pd_tokenizer *tk, int id);

/* Steps 1-3 only: the normalised text with '▁' for spaces, as a malloc'd NUL-terminated string the
 * caller frees. PD_ERR_INVALID when len > PD_TOKENIZER_MAX_INPUT or the normalised text would exceed
 * 4 x PD_TOKENIZER_MAX_INPUT bytes (a charsmap expanding without bound); PD_ERR_NOMEM. */
pd_status pd_tokenizer_normalize(const pd_tokenizer *tk, const char *text, size_t len, char **out);

/* Encodes len bytes of text into at most max_len ids (1 <= max_len; PD_TOKENIZER_MAX_TOKENS for
 * umT5), EOS last. ids must hold max_len entries; *n_ids receives the count (>= 1: an empty or
 * all-space prompt gives just EOS). PD_ERR_INVALID when len > PD_TOKENIZER_MAX_INPUT, the normalised
 * text is too long (as in pd_tokenizer_normalize) or max_len < 1; PD_ERR_NOMEM. Thread-safe: a loaded tokenizer is read-only. */
pd_status pd_tokenizer_encode(const pd_tokenizer *tk, const char *text, size_t len, int max_len, int32_t *ids,
                              int *n_ids);

/* Decodes ids into text, for inspection and tests: pieces are concatenated, '▁' becomes a space
 * and the leading space of the first piece is dropped; runs of byte pieces are reassembled into
 * their bytes (an invalid result becomes U+FFFD); the unk id reads " ⁇ "; pad and EOS are skipped.
 * *out is a malloc'd NUL-terminated string the caller frees. PD_ERR_INVALID for an id outside the
 * vocabulary; PD_ERR_NOMEM. */
pd_status pd_tokenizer_decode(const pd_tokenizer *tk, const int32_t *ids, int n, char **out);

/* Writes <model_dir>/tokenizer/{tokenizer.json, tokenizer_config.json, special_tokens_map.json} for
 * a small but real unigram vocabulary of exactly vocab_size pieces (1024 .. 300000): <pad> 0, </s> 1,
 * <unk> 2, the 256 byte-fallback pieces, single characters with and without '▁', then English
 * words and sub-words from an embedded list (then filler pieces for large sizes), all with
 * log-probability scores, and a precompiled
 * charsmap built here (full-width ASCII, NBSP and other spaces, tabs and newlines, ligatures such as
 * U+FB01 -> "fi", circled numbers U+2460.. -> "1".., zero-width characters deleted, "e" + U+0301 ->
 * "é"). Deterministic. Creates the folders as needed. PD_ERR_INVALID for a bad vocab_size, PD_ERR_IO,
 * PD_ERR_NOMEM. */
pd_status pd_tokenizer_write_tiny(const char *model_dir, int vocab_size);

#endif
