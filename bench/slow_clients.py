#!/usr/bin/python3
"""Slow-client attack on a pipeditd on loopback, with a health probe running throughout.

Opens --connections connections that each send a request line and then one more header line every
--trickle-min..--trickle-max seconds, never finishing their headers (the classic slowloris). A
connection the server drops is replaced (so the pressure never lets up), opening at most --open-rate
connections a second and --max-opens in all; with --no-replace the --connections are opened once and
only held. Meanwhile a probe sends GET --probe-path on a fresh connection every
--probe-interval seconds and times the whole exchange (connect to the last byte of the answer).
After --duration seconds it prints one JSON object:

  probes: sent, ok (status 200), failed (refused, reset, timed out or not 200), latency_ms {max, p50,
          p99}, over_limit (answered later than --probe-limit seconds, or not at all)
  attack: opened, connect_failed, dropped_by_server, open_at_end, max_open, lifetime_s {max, p50}
          of the connections the server dropped, trickled_lines

Loopback only. Raises its own open-file limit as far as the hard limit allows (each connection is one
descriptor); the server needs as many, so raise `ulimit -n` before starting it too.

usage: slow_clients.py --port P [--connections 1000] [--duration 30] [--trickle-min 2]
       [--trickle-max 3] [--probe-interval 0.1] [--probe-limit 1] [--open-rate 1000] [--max-opens 40000]
       [--probe-path /health/live] [--no-replace]
"""
import argparse
import errno
import json
import random
import resource
import selectors
import socket
import sys
import threading
import time


def percentile(v, q):
    if not v:
        return None
    v = sorted(v)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def probe_once(port, path, timeout):
    """(status or None, seconds, error) for one GET on a fresh connection."""
    t0 = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(max(0.05, timeout - (time.monotonic() - t0)))
            s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % path).encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        dt = time.monotonic() - t0
        line = data.split(b"\r\n", 1)[0].split()
        status = int(line[1]) if len(line) >= 2 and line[1].isdigit() else None
        return status, dt, None if status else "no status line"
    except OSError as e:
        return None, time.monotonic() - t0, type(e).__name__ + ": " + str(e)


class Attack:
    def __init__(self, port, n, tmin, tmax, open_rate, max_opens, replace):
        self.port, self.n, self.tmin, self.tmax = port, n, tmin, tmax
        self.max_opens = max_opens if replace else n
        self.open_rate, self.t0 = open_rate, time.monotonic()
        self.sel = selectors.DefaultSelector()
        self.conns = {}  # socket -> [opened_at, next_send_at, lines_sent, connected]
        self.opened = self.connect_failed = self.dropped = self.trickled = self.max_open = 0
        self.lifetimes = []

    def open_one(self, now):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        rc = s.connect_ex(("127.0.0.1", self.port))
        if rc not in (0, errno.EINPROGRESS):
            s.close()
            self.connect_failed += 1
            return
        self.opened += 1
        self.conns[s] = [now, now, 0, False]
        self.sel.register(s, selectors.EVENT_WRITE | selectors.EVENT_READ)

    def close_one(self, s, now, by_server):
        st = self.conns.pop(s)
        self.sel.unregister(s)
        s.close()
        if by_server:
            if st[3]:
                self.dropped += 1
                self.lifetimes.append(now - st[0])
            else:
                self.connect_failed += 1

    def send(self, s, st, now):
        line = b"GET /health/live HTTP/1.1\r\n" if st[2] == 0 else b"X-Trickle-%d: %d\r\n" % (st[2], st[2])
        try:
            s.send(line)
        except OSError:
            self.close_one(s, now, True)
            return
        st[2] += 1
        self.trickled += 1
        st[1] = now + random.uniform(self.tmin, self.tmax)
        self.sel.modify(s, selectors.EVENT_READ)

    def step(self, now):
        budget = min(self.max_opens, int((now - self.t0) * self.open_rate) + 1)
        while len(self.conns) < self.n and self.opened + self.connect_failed < budget:
            self.open_one(now)
        self.max_open = max(self.max_open, sum(1 for st in self.conns.values() if st[3]))
        for key, ev in self.sel.select(timeout=0.05):
            s = key.fileobj
            st = self.conns.get(s)
            if st is None:
                continue
            if not st[3] and ev & selectors.EVENT_WRITE:
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    self.close_one(s, now, True)
                    continue
                st[3] = True
                self.send(s, st, now)
                continue
            if ev & selectors.EVENT_READ:
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if not data:  # end of file or reset: the server dropped it
                    self.close_one(s, now, True)
        for s, st in list(self.conns.items()):
            if st[3] and now >= st[1]:
                self.send(s, st, now)

    def stop(self):
        for s in list(self.conns):
            self.sel.unregister(s)
            s.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--trickle-min", type=float, default=2)
    ap.add_argument("--trickle-max", type=float, default=3)
    ap.add_argument("--probe-interval", type=float, default=0.1)
    ap.add_argument("--probe-limit", type=float, default=1.0)
    ap.add_argument("--probe-path", default="/health/live")
    ap.add_argument("--open-rate", type=float, default=1000)
    ap.add_argument("--max-opens", type=int, default=40000)
    ap.add_argument("--no-replace", dest="replace", action="store_false", help="open --connections once, never replace them")
    a = ap.parse_args()
    if a.host not in ("127.0.0.1", "localhost"):
        sys.exit("slow_clients.py: loopback only")
    if not (1 <= a.connections <= 5000 and 0 < a.duration <= 600 and 0 < a.trickle_min <= a.trickle_max):
        sys.exit("slow_clients.py: connections 1..5000, duration up to 600 s, 0 < trickle-min <= trickle-max")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.connections + 64
    if soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    if soft < want:
        sys.exit("slow_clients.py: the open-file limit (%d) is below the %d this needs" % (soft, want))

    probes = []  # (status, seconds, error)
    stop = threading.Event()

    def prober():
        while not stop.is_set():
            t = time.monotonic()
            probes.append(probe_once(a.port, a.probe_path, max(5.0, 5 * a.probe_limit)))
            stop.wait(max(0.0, a.probe_interval - (time.monotonic() - t)))

    attack = Attack(a.port, a.connections, a.trickle_min, a.trickle_max, a.open_rate, a.max_opens, a.replace)
    th = threading.Thread(target=prober, daemon=True)
    t_end = time.monotonic() + a.duration
    th.start()
    while time.monotonic() < t_end:
        attack.step(time.monotonic())
    stop.set()
    th.join()
    open_at_end = sum(1 for st in attack.conns.values() if st[3])
    attack.stop()

    lat = [p[1] * 1000.0 for p in probes if p[0] == 200]
    failed = [p for p in probes if p[0] != 200]
    out = {
        "config": {"connections": a.connections, "duration_s": a.duration, "trickle_s": [a.trickle_min, a.trickle_max],
                   "probe_interval_s": a.probe_interval, "probe_limit_s": a.probe_limit, "probe_path": a.probe_path,
                   "open_rate_per_s": a.open_rate, "max_opens": attack.max_opens, "replace": a.replace,
                   "open_file_limit": soft},
        "probes": {"sent": len(probes), "ok": len(lat), "failed": len(failed),
                   "failures": sorted({(p[2] or "status %s" % p[0]) for p in failed})[:5],
                   "over_limit": sum(1 for p in probes if p[0] != 200 or p[1] > a.probe_limit),
                   "latency_ms": {"max": max(lat) if lat else None, "p50": percentile(lat, 0.5), "p99": percentile(lat, 0.99)}},
        "attack": {"opened": attack.opened, "connect_failed": attack.connect_failed, "dropped_by_server": attack.dropped,
                   "open_at_end": open_at_end, "max_open": attack.max_open, "trickled_lines": attack.trickled,
                   "lifetime_s": {"max": max(attack.lifetimes) if attack.lifetimes else None,
                                  "p50": percentile(attack.lifetimes, 0.5)}},
    }
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
