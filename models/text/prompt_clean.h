/* Prompt cleaning as Wan2.1's text encoder does it before tokenising (wan/modules/tokenizers.py,
 * HuggingfaceTokenizer with clean='whitespace'): whitespace_clean(basic_clean(text)), where
 * basic_clean = ftfy.fix_text, then html.unescape twice, then strip, and whitespace_clean replaces
 * every run of white space with one space and strips.
 *
 * ftfy is a Python library; this is the part of ftfy.fix_text's default behaviour (ftfy 6) that
 * changes prompts, in ftfy's order:
 *  1. HTML entities unescaped once when the text has no '<' (ftfy's unescape_html="auto");
 *  2. ANSI terminal escapes (ESC [ digits/semicolons letter) removed;
 *  3. mojibake: runs of characters that, read back as Windows-1252 (or Latin-1) bytes, form valid
 *     multi-byte UTF-8 are decoded ("cafÃ©" -> "café", "â€œ" -> a left double quote);
 *     then C1 controls U+0080..U+009F are read as Windows-1252 (U+0093 -> a left double quote);
 *  4. Latin ligatures expanded (U+FB00..U+FB06 ff fi fl ffi ffl st st, IJ/ij, DZ/Dz/dz with caron,
 *     LJ/Lj/lj, NJ/Nj/nj, DZ/Dz/dz, 'n);
 *  5. character width: fullwidth ASCII U+FF01..U+FF5E and the ideographic space U+3000 to ASCII,
 *     and the fullwidth/halfwidth symbols U+FF5F..U+FF64, U+FFE0..U+FFE6, U+FFE8..U+FFEE to their
 *     NFKC forms;
 *  6. curly quotes straightened (U+02BC, U+2018..U+201B -> '; U+201C..U+201F -> ");
 *  7. line breaks (CR LF, CR, U+2028, U+2029) to LF;
 *  8. control characters removed (U+0000..U+0008, U+000B, U+000E..U+001F, U+007F, U+206A..U+206F,
 *     U+FEFF, U+FFF9..U+FFFC);
 * then html.unescape twice (numeric references with Python's rules: Windows-1252 for 0x80..0x9F,
 * U+FFFD for 0, surrogates and values past U+10FFFF, nothing for other invalid code points; named
 * references: the HTML 4 Latin-1 set (also without ';', as HTML5 allows), amp lt gt quot apos and the
 * common typographic ones), then white space (Python's str.isspace set) collapsed and stripped.
 *
 * Not done (said plainly): ftfy's Unicode NFC normalisation (the tokenizer's own NFKC character map
 * normalises after this anyway), its badness heuristics (it leaves some mojibake-looking text alone
 * when the result looks worse; this fixes every run that decodes), the other mojibake families
 * (UTF-8 read as Latin-1 with lost bytes, MacRoman, cp437, Cyrillic and Greek code pages,
 * "sloppy" decodes with replacement characters, inconsistent UTF-8), the halfwidth katakana and
 * hangul (U+FF65..U+FFDC, their NFKC composition), surrogate fixes (no UTF-16 here), and the rest of
 * HTML5's 2231 named references (an unknown name is left as written). ftfy's own first unescape
 * needs the ';' and knows upper-case names (&EACUTE;); here that pass follows html.unescape's rules
 * (legacy names without ';' too), which differs only for references nested three deep. The official
 * code's clean step is applied by the pipeline's text stage (pd_pipeline_encode_text), not by
 * `pipedit tokenize` / `encode-text`, which show the tokenizer and encoder on the text as given.
 *
 * Input bytes that are not valid UTF-8 become U+FFFD (Python would have refused them earlier). */
#ifndef PD_TEXT_PROMPT_CLEAN_H
#define PD_TEXT_PROMPT_CLEAN_H

#include <stddef.h>

#include "base/status.h"

/* Cleans len bytes of text into *out, a NUL-terminated UTF-8 string allocated here (the caller frees
 * it); *out_len (may be NULL) gets its length. The output is never longer than 4 x len + 1 bytes.
 * Errors: PD_ERR_NOMEM. */
pd_status pd_prompt_clean(const char *text, size_t len, char **out, size_t *out_len);

#endif
