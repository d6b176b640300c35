#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/model_dir.h"
#include "tools/cli_opt.h"
#include "tools/commands.h"

static void pd_mkmodel_usage(FILE *f) {
    fprintf(f, "usage: pipedit mkmodel --out DIR [--preset tiny] [--seed S] [--layout diffusers|original]\n"
               "                        [--dtype f32|bf16|f16] [--layers N]\n"
               "Writes a complete Wan2.1 model folder (model_index.json, scheduler/, transformer/, vae/,\n"
               "text_encoder/, tokenizer/) with deterministic random weights.\n"
               "  --out DIR      folder to write (created if missing)\n"
               "  --preset NAME  tiny (default), attn-bench (dim 512, 8 heads: attention-heavy), wan2.1-t2v-1.3b\n"
               "                 or wan2.1-t2v-14b\n"
               "  --seed S       random seed (default 0)\n"
               "  --layout L     tensor names: diffusers (default) or original\n"
               "  --dtype D      weight storage: f32 (default), bf16 or f16\n"
               "  --layers N     DiT blocks (1..200) instead of the preset's (a deeper tiny model for tests)\n");
}

int pd_cmd_mkmodel(int argc, char **argv) {
    const char *out = NULL, *preset = "tiny";
    uint64_t seed = 0;
    pd_wan_layout layout = PD_WAN_LAYOUT_DIFFUSERS;
    pd_dtype dtype = PD_DTYPE_F32;
    int layers = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            pd_mkmodel_usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "pipedit mkmodel: %s needs a value\n", a);
            pd_mkmodel_usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--out")) {
            out = v;
        } else if (!strcmp(a, "--preset")) {
            preset = v;
        } else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (errno || end == v || *end || v[0] == '-') {
                fprintf(stderr, "pipedit mkmodel: --seed must be a non-negative integer, got \"%s\"\n", v);
                return 2;
            }
            seed = s;
        } else if (!strcmp(a, "--layers")) {
            if (!pd_cli_opt_int("pipedit mkmodel", a, v, 1, 200, &layers)) return 2;
        } else if (!strcmp(a, "--layout")) {
            if (!strcmp(v, "diffusers")) layout = PD_WAN_LAYOUT_DIFFUSERS;
            else if (!strcmp(v, "original")) layout = PD_WAN_LAYOUT_ORIGINAL;
            else {
                fprintf(stderr, "pipedit mkmodel: --layout must be diffusers or original, got \"%s\"\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--dtype")) {
            if (!strcmp(v, "f32")) dtype = PD_DTYPE_F32;
            else if (!strcmp(v, "bf16")) dtype = PD_DTYPE_BF16;
            else if (!strcmp(v, "f16")) dtype = PD_DTYPE_F16;
            else {
                fprintf(stderr, "pipedit mkmodel: --dtype must be f32, bf16 or f16, got \"%s\"\n", v);
                return 2;
            }
        } else {
            fprintf(stderr, "pipedit mkmodel: unknown option %s\n", a);
            pd_mkmodel_usage(stderr);
            return 2;
        }
    }
    if (!out) {
        fprintf(stderr, "pipedit mkmodel: --out DIR is required\n");
        pd_mkmodel_usage(stderr);
        return 2;
    }
    const pd_model_preset *p = pd_model_preset_find(preset);
    if (!p) {
        fprintf(stderr, "pipedit mkmodel: unknown preset \"%s\" (tiny, attn-bench, wan2.1-t2v-1.3b, wan2.1-t2v-14b)\n", preset);
        return 2;
    }
    pd_model_preset custom = *p;
    if (layers) custom.dit.layers = layers;
    pd_status st = pd_model_dir_write(out, &custom, seed, layout, dtype);
    if (st != PD_OK) {
        fprintf(stderr, "pipedit mkmodel: %s\n", pd_error_msg());
        return 1;
    }
    printf("wrote %s (preset %s, seed %" PRIu64 ", %s layout, %s)\n", out, p->name, seed,
           layout == PD_WAN_LAYOUT_DIFFUSERS ? "diffusers" : "original", pd_dtype_name(dtype));
    return 0;
}
