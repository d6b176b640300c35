/* libFuzzer target for the tokenizer.
 *  - Every input is a prompt for the tiny tokenizer (written once into a temporary folder by
 *    pd_tokenizer_write_tiny): encode must succeed with 1..512 ids, EOS last, ids in range, and
 *    decoding those ids must succeed.
 *  - An input starting with '{' is also parsed as a tokenizer.json; when it loads, a few prompts and
 *    the input itself are encoded and decoded with it under the same checks. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "models/text/tokenizer.h"

static pd_tokenizer *pd_fz_tiny;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    char dir[] = "/tmp/fuzz_tokenizer.XXXXXX", cmd[128];
    if (!mkdtemp(dir) || pd_tokenizer_write_tiny(dir, 2048) != PD_OK || pd_tokenizer_load(dir, &pd_fz_tiny) != PD_OK) {
        fprintf(stderr, "fuzz_tokenizer: cannot make the tiny tokenizer: %s\n", pd_error_msg());
        abort();
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "fuzz_tokenizer: could not remove %s\n", dir);
    return 0;
}

/* strict: the tokenizer's charsmap is sane, so only over-long input may fail. */
static void pd_fz_check(const pd_tokenizer *tk, const char *text, size_t len, int strict) {
    int32_t ids[PD_TOKENIZER_MAX_TOKENS];
    int n = -1;
    pd_status st = pd_tokenizer_encode(tk, text, len, PD_TOKENIZER_MAX_TOKENS, ids, &n);
    if (st != PD_OK) {
        if (st != PD_ERR_INVALID || (strict && len <= PD_TOKENIZER_MAX_INPUT)) abort();
        return;
    }
    if (n < 1 || n > PD_TOKENIZER_MAX_TOKENS || ids[n - 1] != pd_tokenizer_eos_id(tk)) abort();
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= pd_tokenizer_vocab_size(tk)) abort();
    char *out = NULL;
    if (pd_tokenizer_decode(tk, ids, n, &out) != PD_OK || !out) abort();
    free(out);
    char *norm = NULL;
    if (pd_tokenizer_normalize(tk, text, len, &norm) != PD_OK || !norm) abort(); /* encode succeeded */
    free(norm);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    pd_fz_check(pd_fz_tiny, (const char *)data, size, 1);
    if (size && data[0] == '{') {
        pd_tokenizer *tk = NULL;
        if (pd_tokenizer_load_json((const char *)data, size, "fuzz.json", &tk) == PD_OK) {
            static const char *const prompts[] = {"", " ", "a cat", "  ab  abc d\xE2\x96\x81", "\xFF\xC3"};
            for (size_t i = 0; i < sizeof prompts / sizeof prompts[0]; i++)
                pd_fz_check(tk, prompts[i], strlen(prompts[i]), 0);
            pd_fz_check(tk, (const char *)data, size, 0);
            pd_tokenizer_free(tk);
        } else if (tk) {
            abort();
        }
    }
    return 0;
}
