"""Black-box checks of pipeditd's gRPC API with an independent client (python3-grpcio, stubs that
test_grpc_api.sh generates from proto/ with grpc_tools.protoc). Run by test_grpc_api.sh, which starts
the daemon with --api-keys KEY --queue-capacity 1 --workers 2 and waits until it is ready.

Covers every RPC (the streaming ones to their end), invalid requests (INVALID_ARGUMENT naming the
field, nothing created), unknown ids, missing and wrong keys, a full queue, a WatchVideo cancelled
midway, a deadline, resuming a watch, many watches not blocking unary calls, health Check and Watch,
HTTP <-> gRPC visibility, and the drain on SIGTERM (UNAVAILABLE, NOT_SERVING)."""
import argparse
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request

ap = argparse.ArgumentParser()
ap.add_argument("--grpc", required=True)
ap.add_argument("--http", required=True)
ap.add_argument("--key", required=True)
ap.add_argument("--gen", required=True)
ap.add_argument("--pid", type=int, required=True)
ap.add_argument("--data", required=True)
args = ap.parse_args()
sys.path.insert(0, args.gen)

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from pipedit.v1 import video_pb2 as pb, video_pb2_grpc as pbg  # noqa: E402

SC = grpc.StatusCode
ET = pb.WatchVideoEvent
AUTH = (("authorization", "Bearer " + args.key),)


def ok(what):
    print("ok: " + what, flush=True)


def fail(what):
    print("FAIL: " + what, file=sys.stderr, flush=True)
    sys.exit(1)


def check(cond, what):
    if not cond:
        fail(what)


channel = grpc.insecure_channel(args.grpc)
grpc.channel_ready_future(channel).result(timeout=30)
svc = pbg.VideoServiceStub(channel)
health = health_pb2_grpc.HealthStub(channel)


def call(method, req, md=AUTH, timeout=30):
    return getattr(svc, method)(req, metadata=md, timeout=timeout)


def expect_error(what, code, method, req, md=AUTH, param=None, ecode=None):
    try:
        r = call(method, req, md)
    except grpc.RpcError as e:
        check(e.code() == code, f"{what}: {e.code()} ({e.details()}), want {code}")
        check(e.details(), f"{what}: no message")
        tm = dict(e.trailing_metadata() or ())
        if param is not None:
            check(tm.get("pipedit-error-param") == param, f"{what}: param {tm.get('pipedit-error-param')!r}, want {param!r}")
            check(e.details().startswith(param + ": ") and not e.details().startswith(f"{param}: {param}:"),
                  f"{what}: message {e.details()!r} does not name {param} (once)")
        if ecode is not None:
            check(tm.get("pipedit-error-code") == ecode, f"{what}: code {tm.get('pipedit-error-code')!r}, want {ecode!r}")
        ok(f"{what} -> {code.name}")
        return e
    if hasattr(r, "__next__"):
        try:
            for _ in r:
                pass
        except grpc.RpcError as e:
            check(e.code() == code, f"{what}: {e.code()} ({e.details()}), want {code}")
            ok(f"{what} -> {code.name}")
            return e
    fail(f"{what}: succeeded, want {code}")


def http(method, path, body=None, key=args.key):
    req = urllib.request.Request(args.http + path, method=method, data=json.dumps(body).encode() if body is not None else None)
    if key:
        req.add_header("Authorization", "Bearer " + key)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def count_jobs():
    return len(call("ListVideos", pb.ListVideosRequest(limit=100)).data)


def journal_lines():
    try:
        with open(os.path.join(args.data, "journal.jsonl")) as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def watch_all(vid, timeout=300):
    return list(call("WatchVideo", pb.WatchVideoRequest(id=vid), timeout=timeout))


def small(**kw):
    base = dict(prompt="a red fox in the snow", seconds="1", size="64x48", num_inference_steps=6, seed=7)
    base.update(kw)
    return pb.CreateVideoRequest(**base)


def long_job(**kw):
    base = dict(prompt="a very slow river", size="256x192", num_frames=17, num_inference_steps=100)
    base.update(kw)
    return pb.CreateVideoRequest(**base)


# ---- health: no key needed ----
check(health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING, "health Check ''")
check(health.Check(health_pb2.HealthCheckRequest(service="pipedit.v1.VideoService"), timeout=10).status ==
      health_pb2.HealthCheckResponse.SERVING, "health Check of the service")
try:
    health.Check(health_pb2.HealthCheckRequest(service="nope.Service"), timeout=10)
    fail("health Check of an unknown service succeeded")
except grpc.RpcError as e:
    check(e.code() == SC.NOT_FOUND, f"health unknown service: {e.code()}")
hw = health.Watch(health_pb2.HealthCheckRequest(), timeout=10)
check(next(hw).status == health_pb2.HealthCheckResponse.SERVING, "health Watch first status")
hw.cancel()
ok("health Check and Watch")

# ---- auth ----
jobs0, lines0 = count_jobs(), journal_lines()
expect_error("no API key", SC.UNAUTHENTICATED, "ListModels", pb.ListModelsRequest(), md=(), ecode="invalid_api_key")
expect_error("wrong API key", SC.UNAUTHENTICATED, "ListModels", pb.ListModelsRequest(), md=(("authorization", "Bearer wrong-key-0123456"),))
expect_error("key with an extra byte", SC.UNAUTHENTICATED, "GetVideo", pb.GetVideoRequest(id="x"), md=(("authorization", "Bearer " + args.key + "x"),))
expect_error("create without a key", SC.UNAUTHENTICATED, "CreateVideo", small(), md=())
check(count_jobs() == jobs0 and journal_lines() == lines0, "a refused create left a job behind")

# ---- models ----
m = call("ListModels", pb.ListModelsRequest())
check(m.object == "list" and len(m.data) == 1 and m.data[0].id == "tiny" and m.data[0].object == "model", f"ListModels: {m}")
ok("ListModels")

# ---- invalid requests: INVALID_ARGUMENT naming the field, nothing created ----
bad = [
    ("missing prompt", dict(prompt=""), "prompt"),
    ("blank prompt", dict(prompt="   "), "prompt"),
    ("zero steps", dict(num_inference_steps=0), "num_inference_steps"),
    ("too many steps", dict(num_inference_steps=1000), "num_inference_steps"),
    ("size not WxH", dict(size="large"), "size"),
    ("size not a multiple of 16", dict(size="100x96"), "width"),
    ("frames not 4k+1", dict(seconds=None, num_frames=10), "num_frames"),
    ("seconds and frames", dict(num_frames=17), "seconds"),
    ("unknown model", dict(model="sora-2"), "model"),
    ("unknown sampler", dict(sampler="ddim"), "sampler"),
    ("NaN guidance", dict(guidance_scale=float("nan")), "guidance_scale"),
    ("negative seed", dict(seed=-1), "seed"),
    ("zero flow shift", dict(flow_shift=0.0), "flow_shift"),
    ("unknown output format", dict(output_format="gif"), "output_format"),
    ("unknown noise", dict(noise="gaussian"), "noise"),
]
for what, kw, param in bad:
    base = dict(prompt="a red fox in the snow", seconds="1", size="64x48", num_inference_steps=6, seed=7)
    base.update(kw)
    base = {k: v for k, v in base.items() if v is not None}
    expect_error(what, SC.INVALID_ARGUMENT, "CreateVideo", pb.CreateVideoRequest(**base), param=param)
expect_error("list limit 101", SC.INVALID_ARGUMENT, "ListVideos", pb.ListVideosRequest(limit=101), param="limit")
expect_error("list order", SC.INVALID_ARGUMENT, "ListVideos", pb.ListVideosRequest(order="up"), param="order")
expect_error("list after", SC.INVALID_ARGUMENT, "ListVideos", pb.ListVideosRequest(after="nope"), param="after")
check(count_jobs() == jobs0 and journal_lines() == lines0, "an invalid request created a job or a journal line")
ok("invalid requests changed nothing")

# ---- unknown ids ----
unknown = "video_" + "0" * 32
for method, req in [("GetVideo", pb.GetVideoRequest(id=unknown)), ("GetVideo", pb.GetVideoRequest(id="nope")),
                    ("CancelVideo", pb.CancelVideoRequest(id=unknown)), ("DeleteVideo", pb.DeleteVideoRequest(id=unknown)),
                    ("WatchVideo", pb.WatchVideoRequest(id=unknown)), ("DownloadVideo", pb.DownloadVideoRequest(id=unknown))]:
    expect_error(f"{method} of an unknown id", SC.NOT_FOUND, method, req, param="id")

# ---- create over gRPC, visible over HTTP; create over HTTP, visible over gRPC; both watched to the end ----
watched = {}


def watch_into(vid):
    watched[vid] = watch_all(vid)


v1 = call("CreateVideo", small(noise="torch-cpu"))
t1 = threading.Thread(target=watch_into, args=(v1.id,))
t1.start()
check(v1.status in (pb.VIDEO_STATUS_QUEUED, pb.VIDEO_STATUS_IN_PROGRESS) and v1.seed == 7 and v1.num_frames == 17 and v1.object == "video"
      and v1.size == "64x48" and v1.noise == "torch-cpu", f"CreateVideo answer: {v1}")
check(v1.id.startswith("video_") and len(v1.id) == 38, f"id {v1.id}")
st, body = http("GET", "/v1/videos/" + v1.id)
check(st == 200 and json.loads(body)["prompt"] == "a red fox in the snow" and json.loads(body)["seed"] == 7 and json.loads(body)["noise"] == "torch-cpu",
      f"HTTP GET of the gRPC video: {st} {body[:200]}")
# Larger, so that its MP4 spans several 64 KiB chunks.
st, body = http("POST", "/v1/videos", {"prompt": "a cat on a hill", "size": "128x112", "num_frames": 25, "num_inference_steps": 4, "seed": 9})
check(st == 200, f"HTTP create: {st} {body[:200]}")
v2id = json.loads(body)["id"]
t2 = threading.Thread(target=watch_into, args=(v2id,))
t2.start()
g2 = call("GetVideo", pb.GetVideoRequest(id=v2id))
check(g2.id == v2id and g2.prompt == "a cat on a hill" and g2.seed == 9 and g2.noise == "philox", f"gRPC GetVideo of the HTTP video: {g2}")
ok("gRPC <-> HTTP visibility")

# ---- WatchVideo to the end ----
t1.join(300)
t2.join(300)
for vid in (v1.id, v2id):
    evs = watched.get(vid)
    check(evs, f"no events for {vid}")
    types = [e.type for e in evs]
    prog = [e.video.progress for e in evs]
    check(types[-1] == ET.TYPE_COMPLETED and evs[-1].video.status == pb.VIDEO_STATUS_COMPLETED, f"watch end: {types}")
    check(all(t != ET.TYPE_COMPLETED for t in types[:-1]), f"COMPLETED before the end: {types}")
    check(prog == sorted(prog) and prog[-1] == 100 and all(p < 100 for p in prog[:-1]), f"watch progress {prog}")
    check(len(evs) >= 3 and ET.TYPE_STAGE in types, f"too few events: {types}")
    check(all(e.video.id == vid for e in evs), "an event of another video")
    check(all((e.type == ET.TYPE_QUEUED) == (e.video.status == pb.VIDEO_STATUS_QUEUED) for e in evs), f"QUEUED events: {types}")
    ok(f"WatchVideo {vid}: {len(evs)} events, progress {prog[0]}..{prog[-1]}")
evs = watch_all(v1.id)
check(len(evs) == 1 and evs[0].type == ET.TYPE_COMPLETED, f"re-watching a completed video: {[e.type for e in evs]}")
ok("a watch of a finished video answers its state and ends")

# ---- DownloadVideo ----
st, mp4 = http("GET", f"/v1/videos/{v1.id}/content")
check(st == 200 and len(mp4) > 1000, f"HTTP content {st}")
chunks = list(call("DownloadVideo", pb.DownloadVideoRequest(id=v1.id)))
data = b"".join(c.data for c in chunks)
check(data == mp4, f"gRPC download ({len(data)} bytes) differs from HTTP ({len(mp4)})")
check(chunks[0].content_type == "video/mp4" and all(c.total_size == len(mp4) for c in chunks), "chunk metadata")
check(all(len(c.data) <= 65536 for c in chunks), "chunk over 64 KiB")
part = b"".join(c.data for c in call("DownloadVideo", pb.DownloadVideoRequest(id=v1.id, offset=100, length=1000)))
check(part == mp4[100:1100], "offset/length download")
tail = b"".join(c.data for c in call("DownloadVideo", pb.DownloadVideoRequest(id=v1.id, offset=len(mp4) - 10)))
check(tail == mp4[-10:], "tail download")
png = b"".join(c.data for c in call("DownloadVideo", pb.DownloadVideoRequest(id=v1.id, variant=pb.DownloadVideoRequest.VARIANT_THUMBNAIL)))
check(png.startswith(b"\x89PNG\r\n\x1a\n"), "thumbnail is not a PNG")
expect_error("download past the end", SC.OUT_OF_RANGE, "DownloadVideo", pb.DownloadVideoRequest(id=v1.id, offset=len(mp4)), param="offset")
expect_error("negative offset", SC.INVALID_ARGUMENT, "DownloadVideo", pb.DownloadVideoRequest(id=v1.id, offset=-1), param="offset")
st, big = http("GET", f"/v1/videos/{v2id}/content")
bchunks = list(call("DownloadVideo", pb.DownloadVideoRequest(id=v2id)))
check(st == 200 and b"".join(c.data for c in bchunks) == big, "download of the larger video")
check(len(big) > 65536 and len(bchunks) == (len(big) + 65535) // 65536, f"{len(big)} bytes in {len(bchunks)} chunks")
check([c.offset for c in bchunks] == [i * 65536 for i in range(len(bchunks))], "chunk offsets")
ok(f"DownloadVideo: {len(chunks)} chunk(s) of {len(data)} bytes and {len(bchunks)} of {len(big)}, ranges, thumbnail")

# ---- ListVideos paging ----
p1 = call("ListVideos", pb.ListVideosRequest(limit=1, order="asc"))
check(p1.object == "list" and [v.id for v in p1.data] == [v1.id] and p1.has_more and p1.first_id == v1.id and p1.last_id == v1.id, f"page 1 {p1}")
p2 = call("ListVideos", pb.ListVideosRequest(limit=1, order="asc", after=p1.last_id))
check([v.id for v in p2.data] == [v2id] and not p2.has_more, f"page 2 {p2}")
pd = call("ListVideos", pb.ListVideosRequest())
check([v.id for v in pd.data] == [v2id, v1.id], "default order is newest first")
ok("ListVideos paging")

# ---- a long job: a watch cancelled midway, resumed, a deadline ----
l1 = call("CreateVideo", long_job())
stream = call("WatchVideo", pb.WatchVideoRequest(id=l1.id), timeout=120)
seen = 0
for ev in stream:
    seen = ev.video.progress
    if ev.video.status == pb.VIDEO_STATUS_IN_PROGRESS and ev.video.progress > 0:
        break
stream.cancel()
check(call("GetVideo", pb.GetVideoRequest(id=l1.id)).status == pb.VIDEO_STATUS_IN_PROGRESS, "after a cancelled watch")
check(http("GET", "/health/live", key=None)[0] == 200, "HTTP after a cancelled watch")
ok(f"a WatchVideo cancelled midway (at progress {seen}); the daemon keeps serving")
again = call("WatchVideo", pb.WatchVideoRequest(id=l1.id), timeout=60)
first = next(again)
check(first.video.id == l1.id and first.video.progress >= seen and first.video.status == pb.VIDEO_STATUS_IN_PROGRESS,
      f"resumed watch starts at progress {first.video.progress} < {seen}")
again.cancel()
ok(f"a resumed watch starts from the current state (progress {first.video.progress})")
t0 = time.time()
try:
    for _ in svc.WatchVideo(pb.WatchVideoRequest(id=l1.id), metadata=AUTH, timeout=1.5):
        pass
    fail("a 1.5 s watch of a long job ended without DEADLINE_EXCEEDED")
except grpc.RpcError as e:
    check(e.code() == SC.DEADLINE_EXCEEDED, f"deadline: {e.code()}")
check(time.time() - t0 < 10, "the deadline was not honoured promptly")
check(call("GetVideo", pb.GetVideoRequest(id=l1.id)).id == l1.id, "after a deadline")
ok("WatchVideo deadline -> DEADLINE_EXCEEDED; the daemon keeps serving")

# ---- many watches do not block unary calls ----
streams = [call("WatchVideo", pb.WatchVideoRequest(id=l1.id), timeout=120) for _ in range(50)]
firsts = [next(s) for s in streams]
check(all(f.video.id == l1.id for f in firsts), "50 watches")
t0 = time.time()
for _ in range(20):
    call("GetVideo", pb.GetVideoRequest(id=v1.id))
dt = time.time() - t0
check(dt < 5, f"20 GetVideo took {dt:.2f} s with 50 open watches")
ok(f"50 open watches; 20 GetVideo in {dt:.3f} s")
# The daemon runs with --grpc-max-calls 55: the calls beyond it are refused, and served again once
# the open ones end.
extra, refused = [], 0
for _ in range(10):
    s = call("WatchVideo", pb.WatchVideoRequest(id=l1.id), timeout=120)
    try:
        next(s)
        extra.append(s)
    except grpc.RpcError as e:
        check(e.code() == SC.RESOURCE_EXHAUSTED, f"call over the limit: {e.code()}")
        refused += 1
check(refused >= 5 and len(extra) <= 5, f"{len(extra)} calls over a limit of 55 were accepted")
for s in streams + extra:
    s.cancel()
time.sleep(1.5)
check(call("GetVideo", pb.GetVideoRequest(id=v1.id)).id == v1.id, "a call after the open ones ended")
ok(f"grpc_max_calls: {refused} calls over the limit refused with RESOURCE_EXHAUSTED; served again after")

# ---- a full queue: RESOURCE_EXHAUSTED, nothing created ----
# The queue holds one job (--queue-capacity 1); how many start at once depends on the worker split, so
# long jobs are added until the queue refuses one.
waiting, refused = [], None
for k in range(6):
    n_before, lines_before = count_jobs(), journal_lines()
    try:
        waiting.append(call("CreateVideo", long_job(prompt=f"waiting in the queue {k}")))
    except grpc.RpcError as e:
        refused = e
        break
check(refused is not None, f"{len(waiting)} long jobs were all accepted by a queue of 1")
check(refused.code() == SC.RESOURCE_EXHAUSTED and dict(refused.trailing_metadata()).get("pipedit-error-code") == "queue_full",
      f"full queue: {refused.code()} {refused.details()}")
check(count_jobs() == n_before and journal_lines() == lines_before, "a refused create left a job")
ok(f"full queue -> RESOURCE_EXHAUSTED (after {len(waiting)} more long jobs)")

# ---- cancel: queued and running; a completed video cannot be cancelled ----
queued = [v for v in waiting if call("GetVideo", pb.GetVideoRequest(id=v.id)).status == pb.VIDEO_STATUS_QUEUED]
check(queued, "no queued job while the queue was full")
wq = call("WatchVideo", pb.WatchVideoRequest(id=queued[0].id), timeout=30)
fq = next(wq)
wq.cancel()
check(fq.type == ET.TYPE_QUEUED and fq.video.HasField("queue_position"), f"first event of a queued video: {fq}")
ok(f"a queued video's watch starts with TYPE_QUEUED (queue_position {fq.video.queue_position})")
for v in waiting:
    check(call("CancelVideo", pb.CancelVideoRequest(id=v.id)).id == v.id, "CancelVideo answer")
for v in waiting:
    end = watch_all(v.id, timeout=120)[-1]
    check(end.type == ET.TYPE_FAILED and end.video.error.code == "cancelled", f"cancelled job: {end}")
call("CancelVideo", pb.CancelVideoRequest(id=l1.id))
end1 = watch_all(l1.id, timeout=120)[-1]
check(end1.type == ET.TYPE_FAILED and end1.video.error.code == "cancelled", f"cancelled running job: {end1}")
expect_error("cancel a completed video", SC.FAILED_PRECONDITION, "CancelVideo", pb.CancelVideoRequest(id=v1.id), ecode="invalid_state")
ok("CancelVideo of a queued and a running job")

# ---- delete: the answer, gone on both APIs, a watcher sees DELETED ----
l3 = call("CreateVideo", long_job(prompt="deleted while watched"))
w3 = call("WatchVideo", pb.WatchVideoRequest(id=l3.id), timeout=120)
next(w3)
got = {}


def drain_watch():
    got["events"] = [e.type for e in w3]


th = threading.Thread(target=drain_watch)
th.start()
d3 = call("DeleteVideo", pb.DeleteVideoRequest(id=l3.id))
check(d3.id == l3.id and d3.object == "video.deleted" and d3.deleted, f"DeleteVideo answer {d3}")
th.join(30)
check(not th.is_alive() and got["events"] and got["events"][-1] == ET.TYPE_DELETED, f"watch of a deleted video: {got}")
d2 = call("DeleteVideo", pb.DeleteVideoRequest(id=v2id))
check(d2.deleted, "delete v2")
expect_error("GetVideo after delete", SC.NOT_FOUND, "GetVideo", pb.GetVideoRequest(id=v2id))
check(http("GET", "/v1/videos/" + v2id)[0] == 404, "HTTP GET after a gRPC delete")
ok("DeleteVideo")

# ---- drain on SIGTERM: UNAVAILABLE for creates, NOT_SERVING ----
l4 = call("CreateVideo", long_job(prompt="running while the daemon drains"))
os.kill(args.pid, signal.SIGTERM)
deadline = time.time() + 10
e = None
while time.time() < deadline:
    try:
        call("CreateVideo", small(prompt="too late"), timeout=5)
    except grpc.RpcError as err:
        if err.code() == SC.UNAVAILABLE:
            e = err
            break
    time.sleep(0.1)
check(e is not None, "no UNAVAILABLE after SIGTERM")
check(dict(e.trailing_metadata()).get("pipedit-error-code") == "shutting_down", "drain error code")
check(health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.NOT_SERVING, "health while draining")
ok("SIGTERM: CreateVideo UNAVAILABLE, health NOT_SERVING")


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


for _ in range(300):
    if not alive(args.pid):
        break
    time.sleep(0.1)
else:
    fail("pipeditd did not exit within 30 s of SIGTERM")
ok("pipeditd exited after the drain")
