#include "daemon/pb_json.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>

void *pd_pb_pool_alloc(pd_pb_pool *pl, size_t bytes) {
    if (pl->n == pl->cap) {
        size_t cap = pl->cap ? 2 * pl->cap : 16;
        void **p = realloc(pl->p, cap * sizeof *p);
        if (!p) return NULL;
        pl->p = p;
        pl->cap = cap;
    }
    void *x = calloc(1, bytes ? bytes : 1);
    if (x) pl->p[pl->n++] = x;
    return x;
}

void pd_pb_pool_free(pd_pb_pool *pl) {
    for (size_t i = 0; i < pl->n; i++) free(pl->p[i]);
    free(pl->p);
    memset(pl, 0, sizeof *pl);
}

static bool oneof_set(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) {
    return *(const uint32_t *)((const char *)m + f->quantifier_offset) == f->id;
}

json_t *pd_pb_to_json(const ProtobufCMessage *m, const char **bad) {
    json_t *o = json_object();
    if (!o) return NULL;
    const ProtobufCMessageDescriptor *desc = m->descriptor;
    for (unsigned i = 0; i < desc->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &desc->fields[i];
        const char *p = (const char *)m + f->offset;
        bool oneof = f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF;
        if (oneof && !oneof_set(m, f)) continue;
        json_t *v = NULL;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            if (f->type != PROTOBUF_C_TYPE_MESSAGE) continue;
            size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
            ProtobufCMessage *const *arr = *(ProtobufCMessage *const *const *)p;
            v = json_array();
            for (size_t k = 0; v && k < n; k++) {
                json_t *e = pd_pb_to_json(arr[k], bad);
                if (!e || json_array_append_new(v, e)) {
                    json_decref(v);
                    json_decref(o);
                    return NULL;
                }
            }
            if (!v) {
                json_decref(o);
                return NULL;
            }
            json_object_set_new(o, f->name, v);
            continue;
        }
        switch (f->type) {
        case PROTOBUF_C_TYPE_STRING: {
            const char *s = *(char *const *)p;
            if (!s || (!oneof && !*s)) continue;
            v = json_string(s);
            break;
        }
        case PROTOBUF_C_TYPE_INT32:
            if (!oneof && !*(const int32_t *)p) continue;
            v = json_integer(*(const int32_t *)p);
            break;
        case PROTOBUF_C_TYPE_INT64:
            if (!oneof && !*(const int64_t *)p) continue;
            v = json_integer(*(const int64_t *)p);
            break;
        case PROTOBUF_C_TYPE_DOUBLE:
            if (!oneof && *(const double *)p == 0) continue;
            v = json_real(*(const double *)p); /* NULL for NaN and infinities */
            break;
        case PROTOBUF_C_TYPE_BOOL:
            if (!oneof && !*(const protobuf_c_boolean *)p) continue;
            v = json_boolean(*(const protobuf_c_boolean *)p);
            break;
        case PROTOBUF_C_TYPE_ENUM: {
            int x = *(const int *)p;
            if (!oneof && !x) continue;
            const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, x);
            v = ev ? json_string(ev->name) : json_integer(x);
            break;
        }
        case PROTOBUF_C_TYPE_MESSAGE: {
            const ProtobufCMessage *sub = *(ProtobufCMessage *const *)p;
            if (!sub) continue;
            v = pd_pb_to_json(sub, bad);
            if (!v) {
                json_decref(o);
                return NULL;
            }
            break;
        }
        default: continue;
        }
        if (!v || json_object_set_new(o, f->name, v)) {
            *bad = f->name;
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

/* The enum value whose name ends in "_" + upper-case s. */
static int enum_of(const ProtobufCEnumDescriptor *e, const char *s) {
    char up[64] = "_";
    size_t n = 1;
    for (; *s && n + 1 < sizeof up; s++) up[n++] = (char)(*s >= 'a' && *s <= 'z' ? *s - 32 : *s);
    up[n] = 0;
    for (unsigned i = 0; i < e->n_values; i++) {
        size_t l = strlen(e->values[i].name);
        if ((l >= n && !strcmp(e->values[i].name + l - n, up)) || !strcmp(e->values[i].name, up + 1)) return e->values[i].value;
    }
    return 0;
}

bool pd_pb_from_json(const ProtobufCMessageDescriptor *desc, json_t *o, ProtobufCMessage *m, pd_pb_pool *pl) {
    protobuf_c_message_init(desc, m);
    for (unsigned i = 0; i < desc->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &desc->fields[i];
        json_t *v = json_object_get(o, f->name);
        char *p = (char *)m + f->offset;
        if (!v || json_is_null(v)) continue;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            if (f->type != PROTOBUF_C_TYPE_MESSAGE || !json_is_array(v)) continue;
            const ProtobufCMessageDescriptor *sd = f->descriptor;
            size_t n = json_array_size(v);
            ProtobufCMessage **arr = pd_pb_pool_alloc(pl, n * sizeof *arr);
            if (!arr) return false;
            for (size_t k = 0; k < n; k++) {
                arr[k] = pd_pb_pool_alloc(pl, sd->sizeof_message);
                if (!arr[k] || !pd_pb_from_json(sd, json_array_get(v, k), arr[k], pl)) return false;
            }
            *(size_t *)((char *)m + f->quantifier_offset) = n;
            *(ProtobufCMessage ***)p = arr;
            continue;
        }
        switch (f->type) {
        case PROTOBUF_C_TYPE_STRING:
            if (!json_is_string(v)) continue;
            *(const char **)p = json_string_value(v);
            break;
        case PROTOBUF_C_TYPE_INT32:
            if (!json_is_integer(v)) continue;
            *(int32_t *)p = (int32_t)json_integer_value(v);
            break;
        case PROTOBUF_C_TYPE_INT64:
            if (!json_is_integer(v)) continue;
            *(int64_t *)p = json_integer_value(v);
            break;
        case PROTOBUF_C_TYPE_DOUBLE:
            if (!json_is_number(v)) continue;
            *(double *)p = json_number_value(v);
            break;
        case PROTOBUF_C_TYPE_BOOL:
            if (!json_is_boolean(v)) continue;
            *(protobuf_c_boolean *)p = json_is_true(v);
            break;
        case PROTOBUF_C_TYPE_ENUM:
            if (!json_is_string(v)) continue;
            *(int *)p = enum_of(f->descriptor, json_string_value(v));
            break;
        case PROTOBUF_C_TYPE_MESSAGE: {
            if (!json_is_object(v)) continue;
            const ProtobufCMessageDescriptor *sd = f->descriptor;
            ProtobufCMessage *sub = pd_pb_pool_alloc(pl, sd->sizeof_message);
            if (!sub || !pd_pb_from_json(sd, v, sub, pl)) return false;
            *(ProtobufCMessage **)p = sub;
            break;
        }
        default: continue;
        }
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) *(uint32_t *)((char *)m + f->quantifier_offset) = f->id;
    }
    return true;
}

grpc_byte_buffer *pd_pb_pack(const ProtobufCMessage *m) {
    size_t n = protobuf_c_message_get_packed_size(m);
    grpc_slice s = grpc_slice_malloc(n);
    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(s));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

ProtobufCMessage *pd_pb_unpack(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc) {
    grpc_byte_buffer_reader r;
    if (!grpc_byte_buffer_reader_init(&r, bb)) return NULL;
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    return m;
}
