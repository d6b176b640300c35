/* Fuzzes the control protocol's frame reader and decoder: any byte stream from a peer either yields
 * whole messages or a PD_ERR_FORMAT, never a crash or an out-of-bounds read. A decoded message must
 * re-encode to the same payload bytes. */
#include <stdint.h>
#include <string.h>

#include "proto/proto.h"

static pd_proto_reader rd;
static pd_msg m, m2;
static uint8_t again[4 + PD_PROTO_MAX_FRAME];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    pd_proto_reader_reset(&rd);
    size_t off = 0;
    /* Feed in uneven pieces so frames straddle reads. */
    for (size_t piece = 1; off < size; piece = piece * 3 % 17 + 1) {
        size_t n = size - off < piece ? size - off : piece;
        if (pd_proto_reader_feed(&rd, data + off, n) != PD_OK) return 0;
        off += n;
        for (;;) {
            bool got = false;
            if (pd_proto_reader_next(&rd, &m, &got) != PD_OK) return 0;
            if (!got) break;
            size_t len;
            if (pd_proto_encode(&m, again, sizeof again, &len) != PD_OK) __builtin_trap();
            if (pd_proto_decode(again + 4, len - 4, &m2) != PD_OK || memcmp(&m, &m2, sizeof m)) __builtin_trap();
        }
    }
    return 0;
}
