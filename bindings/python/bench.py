"""Benchmark of the Python SDK (prints figures, asserts nothing): `cargo xtask bench`.

In one run against a throwaway redis-server: raw redis-py EVALSHA x2 per cycle vs a Semaphore
acquire+release cycle; the contended scenario (8 worker processes, 2 permits, 10 ms hold);
peak RSS of a process that imports the package and opens one semaphore; and the time from
`import` to the first acquired permit in a fresh process (component cache warm).

`BENCH_ITERS` (default 2000) timed cycles, `BENCH_SECONDS` (default 6) of contended run;
`BENCH_JSON=<path>` also writes every row, with the contended wait samples, as JSON there for
`bench/report.py`.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).with_name("tests")))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from conftest import Server  # noqa: E402
from rows import contended_row, cycle_row, pct  # noqa: E402

import redis  # noqa: E402

ITERS = int(os.environ.get("BENCH_ITERS", "2000"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "6"))

CONTENDED_WORKER = r"""
import sys, time
from pottery_semaphore import Semaphore
url, key, start, until = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
sem = Semaphore(value=2, key=key, masters={url}, guard_fresh_server=False)
time.sleep(max(0.0, start - time.time()))
held = 0.0; waits = []
while time.time() < until:
    t0 = time.perf_counter()
    sem.acquire()
    waits.append(time.perf_counter() - t0)
    h0 = time.perf_counter(); time.sleep(0.010); held += time.perf_counter() - h0
    sem.release()
print(held, time.time(), " ".join(f"{w:.6f}" for w in waits))
"""

FIRST_PERMIT = r"""
import sys, time
t0 = time.perf_counter()
from pottery_semaphore import Semaphore
sem = Semaphore(value=1, key=sys.argv[2], masters={sys.argv[1]}, guard_fresh_server=False)
assert sem.acquire()
print(time.perf_counter() - t0)
"""

RSS = r"""
import resource, sys
from pottery_semaphore import Semaphore
sem = Semaphore(value=1, key=sys.argv[2], masters={sys.argv[1]}, guard_fresh_server=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""




def us(seconds):
    return f"{seconds * 1e6:,.1f} µs"


def main() -> None:
    from pottery_semaphore import Semaphore

    server = Server()
    url = server.url
    r = redis.Redis(port=server.port)
    sha = r.script_load("return 1")
    raw = []
    for i in range(ITERS + 200):
        t0 = time.perf_counter()
        r.evalsha(sha, 0)
        r.evalsha(sha, 0)
        if i >= 200:
            raw.append(time.perf_counter() - t0)
    sem = Semaphore(value=1, key="bench-cycle", masters={url}, guard_fresh_server=False)
    cycle = []
    for i in range(ITERS + 200):
        t0 = time.perf_counter()
        sem.acquire()
        sem.release()
        if i >= 200:
            cycle.append(time.perf_counter() - t0)
    raw_mean, cycle_mean = statistics.mean(raw), statistics.mean(cycle)

    # Every worker starts its loop at `start` (after its import and open) and stops at `until`.
    start = time.time() + 2.0
    until = start + SECONDS
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONTENDED_WORKER, url, "bench-contended", str(start), str(until)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    held, waits, ended = 0.0, [], start
    for p in procs:
        out, _ = p.communicate()
        h, end, *w = out.split()
        held += float(h)
        ended = max(ended, float(end))
        waits += [float(x) for x in w]
    # Over the run as it went: the last cycles end after `until`, and their holds count.
    wall = ended - start
    utilisation = held / (2 * wall)

    firsts = []
    for i in range(3):
        out = subprocess.run([sys.executable, "-c", FIRST_PERMIT, url, f"bench-first-{i}"], capture_output=True, text=True, check=True)
        firsts.append(float(out.stdout))
    rss = subprocess.run([sys.executable, "-c", RSS, url, "bench-rss"], capture_output=True, text=True, check=True)
    rss_mib = int(rss.stdout) / 1024

    print("\n### Python SDK (pottery_semaphore over the component)\n")
    print("| measure | result | baseline / target |")
    print("| --- | --- | --- |")
    print(f"| raw redis-py EVALSHA x2 | {us(raw_mean)} (p50 {us(pct(raw, .5))}, p99 {us(pct(raw, .99))}) | baseline |")
    ratio = cycle_mean / raw_mean
    print(f"| Semaphore acquire+release | {us(cycle_mean)} (p50 {us(pct(cycle, .5))}, p99 {us(pct(cycle, .99))}) | {ratio:.2f}x raw, target <= 1.5x: {'met' if ratio <= 1.5 else 'missed'} |")
    print(f"| contended, 8 processes, 2 permits, 10 ms hold, {SECONDS:.0f} s | utilisation {utilisation:.1%}, {len(waits)} grants, wait p50 {pct(waits, .5) * 1e3:.1f} ms, p99 {pct(waits, .99) * 1e3:.1f} ms | target >= 90%: {'met' if utilisation >= 0.9 else 'missed'} |")
    print(f"| import to first permit, fresh process | {min(firsts) * 1e3:.1f} ms (best of 3; {', '.join(f'{f * 1e3:.0f}' for f in firsts)}) | target <= 150 ms: {'met' if min(firsts) <= 0.15 else 'missed'} |")
    print(f"| peak RSS, import + one semaphore | {rss_mib:.1f} MiB | |")

    if os.environ.get("BENCH_JSON"):
        version = r.info("server").get("redis_version", "?")
        write_json(os.environ["BENCH_JSON"], raw, cycle, utilisation, wall, waits, firsts, rss_mib, version)
    server.close()


def write_json(path, raw, cycle, utilisation, wall, waits, firsts, rss_mib, version) -> None:
    """The rows of the table above, machine-readable, for bench/report.py."""
    rows = [
        cycle_row("raw redis-py EVALSHA x2", "raw EVALSHA", "Python (redis-py)", raw),
        dict(cycle_row("Semaphore acquire+release", "Python SDK", "Python (pottery_semaphore)", cycle),
             ratio_to_baseline=statistics.mean(cycle) / statistics.mean(raw)),
        contended_row("Python SDK", "Python (pottery_semaphore)", workers=8, permits=2, hold_s=0.010,
                      seconds=SECONDS, wall_seconds=wall, utilisation=utilisation, waits=waits),
        {
            "name": "import to first permit, fresh process",
            "implementation": "Python SDK",
            "client": "Python (pottery_semaphore)",
            "scenario": "import to first permit",
            "best_ms": min(firsts) * 1e3,
            "runs_ms": [f * 1e3 for f in firsts],
        },
        {
            "name": "peak RSS, import + one semaphore",
            "implementation": "Python SDK",
            "client": "Python (pottery_semaphore)",
            "scenario": "peak RSS",
            "rss_mib": rss_mib,
        },
    ]
    doc = {"benchmark": "bindings/python/bench.py", "iters": ITERS, "warmup": 200, "redis_server": version, "rows": rows}
    Path(path).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
