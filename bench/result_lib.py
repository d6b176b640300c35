"""The JSON result file of DESIGN.md section 10 for the shell benchmarks (bench/*.sh), with the same
fields bench/common/bench.h writes for the C ones: bench, commit, date, time, machine, machine_slug, then
the caller's config and figures.

    sys.path.insert(0, os.path.join(src, "bench")); import result_lib
    out = result_lib.header("wrk_get", src)
    out.update(config={...}, figures=[{"name": ..., "value": ..., "unit": ...}])
    result_lib.write(out, results, width=26)
"""
import datetime
import json
import os
import subprocess


def header(bench, src):
    """bench, commit (of the checkout at src, "-dirty" when tracked files differ), date and time (UTC),
    and the machine (CPU model and cores) with its file-name slug."""
    model = "unknown CPU"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    cores = os.cpu_count() or 1

    def git(*a):
        try:
            return subprocess.run(["git", "-C", src, *a], capture_output=True, text=True, check=True).stdout.strip()
        except Exception:
            return ""

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no"):
        commit += "-dirty"
    now = datetime.datetime.now(datetime.timezone.utc)
    return {"bench": bench, "commit": commit, "date": now.strftime("%Y-%m-%d"), "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": "%s, %d core%s" % (model, cores, "" if cores == 1 else "s"), "machine_slug": "cpu-%dcore" % cores}


def write(out, results, width=26):
    """Writes out to <results>/<bench>-<machine_slug>-<date>.json (atomically, replacing a same-day file),
    prints the path and the figures, and returns the path."""
    path = os.path.join(results, "%s-%s-%s.json" % (out["bench"], out["machine_slug"], out["date"]))
    with open(path + ".tmp", "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    os.replace(path + ".tmp", path)
    print("%s: %s" % (out["bench"], path))
    for fig in out["figures"]:
        print("  %-*s %12s %s" % (width, fig["name"], fig["value"], fig["unit"]))
    return path
