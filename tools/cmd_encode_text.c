/* pipedit encode-text / tokenize: the text stage on its own, for inspection and reference tests. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "engine/safetensors.h"
#include "models/text/tokenizer.h"
#include "models/text/umt5.h"
#include "tools/commands.h"

static void pd_encode_text_usage(FILE *f) {
    fprintf(f, "usage: pipedit encode-text --model DIR --prompt TEXT --out CTX.safetensors [--threads N]\n"
               "Tokenizes a prompt (tokenizer/) and runs the umT5 encoder (text_encoder/) on its real length.\n"
               "  --model DIR    model folder holding tokenizer/ and text_encoder/\n"
               "  --prompt TEXT  UTF-8 prompt (EOS appended, at most 512 tokens)\n"
               "  --out FILE     receives \"context\" (L, d_model) f32 and \"ids\" (L) i32\n"
               "  --threads N    CPU threads (default: all cores)\n"
               "usage: pipedit tokenize --model DIR --prompt TEXT\n"
               "Prints each token's id and piece, then the decoded text.\n");
}

typedef struct pd_text_args {
    const char *model, *prompt, *out;
    int threads;
} pd_text_args;

/* Parses the shared options; returns 0 to go on, or an exit status. */
static int pd_text_parse(int argc, char **argv, pd_text_args *a, const char *cmd) {
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            pd_encode_text_usage(stdout);
            return -1;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "pipedit %s: %s needs a value\n", cmd, o);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(o, "--model")) a->model = v;
        else if (!strcmp(o, "--prompt")) a->prompt = v;
        else if (!strcmp(o, "--out")) a->out = v;
        else if (!strcmp(o, "--threads")) {
            char *end;
            long t = strtol(v, &end, 10);
            if (*end || t < 0 || t > 1024) {
                fprintf(stderr, "pipedit %s: --threads must be 0 .. 1024, got \"%s\"\n", cmd, v);
                return 2;
            }
            a->threads = (int)t;
        } else {
            fprintf(stderr, "pipedit %s: unknown option %s\n", cmd, o);
            pd_encode_text_usage(stderr);
            return 2;
        }
    }
    if (!a->model || !a->prompt) {
        fprintf(stderr, "pipedit %s: --model and --prompt are required\n", cmd);
        pd_encode_text_usage(stderr);
        return 2;
    }
    return 0;
}

static int pd_text_fail(const char *cmd) {
    fprintf(stderr, "pipedit %s: %s\n", cmd, pd_error_msg());
    return 1;
}

int pd_cmd_tokenize(int argc, char **argv) {
    pd_text_args a = {0};
    int rc = pd_text_parse(argc, argv, &a, "tokenize");
    if (rc) return rc < 0 ? 0 : rc;
    pd_tokenizer *tk;
    if (pd_tokenizer_load(a.model, &tk) != PD_OK) return pd_text_fail("tokenize");
    int32_t ids[PD_TOKENIZER_MAX_TOKENS];
    int n;
    char *text = NULL;
    pd_status st = pd_tokenizer_encode(tk, a.prompt, strlen(a.prompt), PD_TOKENIZER_MAX_TOKENS, ids, &n);
    if (st == PD_OK) st = pd_tokenizer_decode(tk, ids, n, &text);
    if (st != PD_OK) {
        pd_tokenizer_free(tk);
        return pd_text_fail("tokenize");
    }
    for (int i = 0; i < n; i++) printf("%6d  %s\n", ids[i], pd_tokenizer_piece(tk, ids[i]));
    printf("%d tokens; decoded: %s\n", n, text);
    free(text);
    pd_tokenizer_free(tk);
    return 0;
}

int pd_cmd_encode_text(int argc, char **argv) {
    pd_text_args a = {0};
    int rc = pd_text_parse(argc, argv, &a, "encode-text");
    if (rc) return rc < 0 ? 0 : rc;
    if (!a.out) {
        fprintf(stderr, "pipedit encode-text: --out is required\n");
        return 2;
    }
    pd_tokenizer *tk = NULL;
    pd_backend *be = NULL;
    pd_umt5 *m = NULL;
    pd_st_writer *w = NULL;
    pd_tensor ctx = {0};
    int32_t ids[PD_TOKENIZER_MAX_TOKENS];
    int n = 0;
    pd_status st = pd_tokenizer_load(a.model, &tk);
    if (st == PD_OK) st = pd_tokenizer_encode(tk, a.prompt, strlen(a.prompt), PD_TOKENIZER_MAX_TOKENS, ids, &n);
    if (st == PD_OK) st = pd_backend_cpu_create(a.threads, &be);
    if (st == PD_OK) st = pd_umt5_load(a.model, be, &m);
    const double t0 = pd_now_s();
    if (st == PD_OK) st = pd_umt5_encode(m, ids, n, &ctx);
    const double encode_ms = (pd_now_s() - t0) * 1e3;
    if (st == PD_OK) st = pd_st_writer_create(&w);
    pd_tensor tids = pd_tensor_view(ids, PD_DTYPE_I32, 1, (const int64_t[]){n});
    if (st == PD_OK) st = pd_st_writer_add(w, "context", &ctx);
    if (st == PD_OK) st = pd_st_writer_add(w, "ids", &tids);
    if (st == PD_OK) st = pd_st_writer_save(w, a.out);
    if (st == PD_OK)
        printf("%d tokens -> context (%d, %d) in %s (encoder %.1f ms)\n", n, n, pd_umt5_config_of(m)->d_model, a.out,
               encode_ms);
    pd_st_writer_free(w);
    pd_tensor_free(&ctx);
    pd_umt5_free(m);
    pd_backend_free(be);
    pd_tokenizer_free(tk);
    return st == PD_OK ? 0 : pd_text_fail("encode-text");
}
