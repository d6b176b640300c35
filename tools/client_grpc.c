#include "tools/client_grpc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/grpc_client.h"
#include "daemon/pb_json.h"
#include "pipedit/v1/video.pb-c.h"

#define SVC "/pipedit.v1.VideoService/"
#define TIMEOUT_S 60.0

static const char *opt(int argc, char **argv, int from, const char *name) {
    for (int i = from; i + 1 < argc; i++)
        if (!strcmp(argv[i], name)) return argv[i + 1];
    return NULL;
}

static int report(const pd_grpc_result *r) {
    fprintf(stderr, "pipedit client: %s: %s", pd_grpc_code_name(r->code), r->details);
    if (r->error_code[0]) fprintf(stderr, " (code %s)", r->error_code);
    fputc('\n', stderr);
    return 1;
}

static int print_msg(const ProtobufCMessage *m) {
    const char *bad = NULL;
    json_t *v = pd_pb_to_json(m, &bad);
    if (!v) {
        fprintf(stderr, "pipedit client: the answer cannot be shown as JSON (field %s)\n", bad ? bad : "?");
        return 1;
    }
    json_dumpf(v, stdout, JSON_INDENT(2));
    fputc('\n', stdout);
    json_decref(v);
    return 0;
}

/* One unary call whose answer is printed. */
static int unary(pd_grpc_client *c, const char *method, const ProtobufCMessage *req, const ProtobufCMessageDescriptor *out,
                 ProtobufCMessage **keep) {
    ProtobufCMessage *resp;
    pd_grpc_result r;
    if (pd_grpc_client_unary(c, method, req, out, TIMEOUT_S, &resp, &r)) {
        fprintf(stderr, "pipedit client: %s\n", pd_error_msg());
        return 1;
    }
    if (r.code) return report(&r);
    int rc = print_msg(resp);
    if (keep) *keep = resp;
    else protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* WatchVideo with a progress line on stderr; 0 when the video completed. */
static int wait_video(pd_grpc_client *c, const char *id) {
    Pipedit__V1__WatchVideoRequest req = PIPEDIT__V1__WATCH_VIDEO_REQUEST__INIT;
    req.id = (char *)id;
    pd_grpc_stream *s;
    if (pd_grpc_stream_open(c, SVC "WatchVideo", &req.base, 0, &s)) {
        fprintf(stderr, "pipedit client: %s\n", pd_error_msg());
        return 1;
    }
    int rc = 1, k;
    ProtobufCMessage *m;
    pd_grpc_result r;
    while ((k = pd_grpc_stream_next(s, &pipedit__v1__watch_video_event__descriptor, &m, &r)) == 1) {
        const Pipedit__V1__WatchVideoEvent *ev = (const void *)m;
        const Pipedit__V1__Video *v = ev->video;
        if (v) fprintf(stderr, "\r%-12s %3d%% %-10s", v->status == PIPEDIT__V1__VIDEO_STATUS__VIDEO_STATUS_QUEUED ? "queued" : "generating",
                       v->progress, v->_stage_case ? v->stage : "");
        if (ev->type == PIPEDIT__V1__WATCH_VIDEO_EVENT__TYPE__TYPE_COMPLETED) {
            fprintf(stderr, "\rcompleted    100%%           \n");
            rc = 0;
        } else if (ev->type == PIPEDIT__V1__WATCH_VIDEO_EVENT__TYPE__TYPE_FAILED) {
            fprintf(stderr, "\nfailed: %s: %s\n", v && v->error ? v->error->code : "", v && v->error ? v->error->message : "");
        } else if (ev->type == PIPEDIT__V1__WATCH_VIDEO_EVENT__TYPE__TYPE_DELETED) {
            fprintf(stderr, "\ndeleted\n");
        }
        protobuf_c_message_free_unpacked(m, NULL);
    }
    if (k == 0 && r.code) rc = report(&r);
    if (k < 0) fprintf(stderr, "pipedit client: an event could not be decoded\n");
    pd_grpc_stream_close(s);
    return rc;
}

static int download(pd_grpc_client *c, const char *id, int argc, char **argv, int from) {
    const char *variant = opt(argc, argv, from, "--variant");
    if (!variant) variant = "video";
    if (strcmp(variant, "video") && strcmp(variant, "thumbnail")) return 2;
    char def[128], tmp[4096];
    snprintf(def, sizeof def, "%s.%s", id, strcmp(variant, "video") ? "png" : "mp4");
    const char *outp = opt(argc, argv, from, "--output");
    if (!outp) outp = def;
    snprintf(tmp, sizeof tmp, "%s.part", outp);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        fprintf(stderr, "pipedit client: cannot write %s: %s\n", tmp, strerror(errno));
        return 1;
    }
    Pipedit__V1__DownloadVideoRequest req = PIPEDIT__V1__DOWNLOAD_VIDEO_REQUEST__INIT;
    req.id = (char *)id;
    req.variant = strcmp(variant, "video") ? PIPEDIT__V1__DOWNLOAD_VIDEO_REQUEST__VARIANT__VARIANT_THUMBNAIL
                                           : PIPEDIT__V1__DOWNLOAD_VIDEO_REQUEST__VARIANT__VARIANT_VIDEO;
    pd_grpc_stream *s;
    bool ok = pd_grpc_stream_open(c, SVC "DownloadVideo", &req.base, 0, &s) == PD_OK;
    int k = -1;
    pd_grpc_result r = {0};
    if (ok) {
        ProtobufCMessage *m;
        while ((k = pd_grpc_stream_next(s, &pipedit__v1__download_video_chunk__descriptor, &m, &r)) == 1) {
            const Pipedit__V1__DownloadVideoChunk *ch = (const void *)m;
            if (fwrite(ch->data.data, 1, ch->data.len, f) != ch->data.len) ok = false;
            protobuf_c_message_free_unpacked(m, NULL);
        }
        pd_grpc_stream_close(s);
        ok = ok && k == 0 && r.code == 0;
    }
    if (fclose(f) != 0) ok = false;
    if (!ok) {
        unlink(tmp);
        if (k == 0 && r.code) return report(&r);
        fprintf(stderr, "pipedit client: downloading %s failed\n", id);
        return 1;
    }
    if (rename(tmp, outp) != 0) {
        fprintf(stderr, "pipedit client: rename to %s: %s\n", outp, strerror(errno));
        return 1;
    }
    printf("%s\n", outp);
    return 0;
}

int pd_client_grpc(const char *target, const char *api_key, const char *action, json_t *create_req, int argc, char **argv, int from) {
    pd_grpc_client *c;
    if (pd_grpc_client_open(target, api_key, &c)) {
        fprintf(stderr, "pipedit client: %s\n", pd_error_msg());
        return 2;
    }
    int rc = 2;
    const char *id = from < argc ? argv[from] : "";
    if (!strcmp(action, "create")) {
        pd_pb_pool pl = {0};
        Pipedit__V1__CreateVideoRequest req;
        if (!pd_pb_from_json(&pipedit__v1__create_video_request__descriptor, create_req, &req.base, &pl)) {
            rc = 1;
        } else {
            ProtobufCMessage *v = NULL;
            rc = unary(c, SVC "CreateVideo", &req.base, &pipedit__v1__video__descriptor, &v);
            bool wait = false;
            for (int i = from; i < argc; i++) wait |= !strcmp(argv[i], "--wait");
            if (rc == 0 && wait) rc = wait_video(c, ((const Pipedit__V1__Video *)v)->id);
            if (v) protobuf_c_message_free_unpacked(v, NULL);
        }
        pd_pb_pool_free(&pl);
    } else if (!strcmp(action, "models")) {
        Pipedit__V1__ListModelsRequest req = PIPEDIT__V1__LIST_MODELS_REQUEST__INIT;
        rc = unary(c, SVC "ListModels", &req.base, &pipedit__v1__list_models_response__descriptor, NULL);
    } else if (!strcmp(action, "list")) {
        Pipedit__V1__ListVideosRequest req = PIPEDIT__V1__LIST_VIDEOS_REQUEST__INIT;
        const char *lim = opt(argc, argv, from, "--limit");
        req.limit = lim ? atoi(lim) : 0;
        req.after = (char *)(opt(argc, argv, from, "--after") ? opt(argc, argv, from, "--after") : "");
        req.order = (char *)(opt(argc, argv, from, "--order") ? opt(argc, argv, from, "--order") : "");
        rc = unary(c, SVC "ListVideos", &req.base, &pipedit__v1__list_videos_response__descriptor, NULL);
    } else if (!strcmp(action, "get")) {
        Pipedit__V1__GetVideoRequest req = PIPEDIT__V1__GET_VIDEO_REQUEST__INIT;
        req.id = (char *)id;
        rc = unary(c, SVC "GetVideo", &req.base, &pipedit__v1__video__descriptor, NULL);
    } else if (!strcmp(action, "cancel")) {
        Pipedit__V1__CancelVideoRequest req = PIPEDIT__V1__CANCEL_VIDEO_REQUEST__INIT;
        req.id = (char *)id;
        rc = unary(c, SVC "CancelVideo", &req.base, &pipedit__v1__video__descriptor, NULL);
    } else if (!strcmp(action, "delete")) {
        Pipedit__V1__DeleteVideoRequest req = PIPEDIT__V1__DELETE_VIDEO_REQUEST__INIT;
        req.id = (char *)id;
        rc = unary(c, SVC "DeleteVideo", &req.base, &pipedit__v1__delete_video_response__descriptor, NULL);
    } else if (!strcmp(action, "wait")) {
        rc = wait_video(c, id);
    } else if (!strcmp(action, "download")) {
        rc = download(c, id, argc, argv, from + 1);
    } else {
        fprintf(stderr, "pipedit client: unknown action '%s'\n", action);
    }
    pd_grpc_client_close(c);
    return rc;
}
