"""A minimal reference of the original pottery-semaphore algorithm, and its benchmark.

Written from the original README's "How It Works" alone — 1. Redlock (distributed mutual
exclusion for atomic operations), 2. a counter (available permits), 3. a queue (blocking waits
through BLPOP) — with redis-py; no code of the original was used. It is what pottery-semaphore
is compared against in the benchmark report (`bench/report.py`), not something to use:

- Redlock on a single master: ``SET lock token NX PX ttl``; released by a compare-and-delete
  Lua script; a busy lock is retried after a short random sleep.
- Counter: a key holding the number of available permits, created under the lock.
- Queue: a list that ``release`` pushes a token onto. A waiter that finds no permit releases the
  lock and BLPOPs the list with a 0.2 s time-out (the original polls with a 0.2 s retry delay),
  then retries; when the BLPOP got a token it pushes it back, since it only wanted to wake up.

Nothing here has leases: a holder that dies keeps its permit for ever.

Benchmark (prints a table; asserts only that no permit was lost): an uncontended acquire+release
cycle (``BENCH_ITERS``, default 2000, after 200 warm-up) and the contended run of the other
benchmarks — 8 processes, 2 permits, 10 ms hold, ``BENCH_SECONDS`` (default 6) — against a
throwaway redis-server. ``BENCH_JSON=<path>`` also writes the rows as JSON for report.py.

    target/py/venv/bin/python bench/reference/original.py
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Optional

import redis

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from rows import contended_row, cycle_row, pct  # noqa: E402

LOCK_TTL_MS = 10_000
LOCK_RETRY_S = (0.0005, 0.005)  # a busy lock is retried after a random sleep in this range
WAIT_S = 0.2  # BLPOP time-out between two looks at the counter

# KEYS[1] = lock, ARGV[1] = our token: delete the lock only if it is still ours.
UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class OriginalSemaphore:
    """Redlock + counter + queue, as the original's README describes it."""

    def __init__(self, client: redis.Redis, key: str, value: int) -> None:
        self.r = client
        self.lock_key = f"reference:{key}:lock"
        self.counter_key = f"reference:{key}:counter"
        self.queue_key = f"reference:{key}:queue"
        self._unlock_script = client.register_script(UNLOCK)
        token = self._lock()
        try:
            self.r.set(self.counter_key, value, nx=True)
        finally:
            self._unlock(token)

    def _lock(self) -> str:
        token = uuid.uuid4().hex
        while not self.r.set(self.lock_key, token, nx=True, px=LOCK_TTL_MS):
            time.sleep(random.uniform(*LOCK_RETRY_S))
        return token

    def _unlock(self, token: str) -> None:
        self._unlock_script(keys=[self.lock_key], args=[token])

    def acquire(self, blocking: bool = True, timeout: Optional[float] = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            token = self._lock()
            try:
                if int(self.r.get(self.counter_key) or 0) > 0:
                    self.r.decr(self.counter_key)
                    return True
            finally:
                self._unlock(token)
            if not blocking:
                return False
            wait = WAIT_S
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    return False
            woke = self.r.blpop([self.queue_key], timeout=wait)
            if woke is not None:
                self.r.rpush(self.queue_key, woke[1])  # only wanted to wake up: leave it for others

    def release(self) -> None:
        token = self._lock()
        try:
            self.r.incr(self.counter_key)
            self.r.rpush(self.queue_key, "1")
        finally:
            self._unlock(token)

    def value(self) -> int:
        return int(self.r.get(self.counter_key) or 0)


# ---------------------------------------------------------------------------------------------
# Benchmark

ITERS = int(os.environ.get("BENCH_ITERS", "2000"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "6"))
WARMUP = 200
WORKERS = 8
PERMITS = 2
HOLD_S = 0.010




def worker(port: int, key: str, start: float, until: float) -> None:
    """One contended worker process: prints the time it held permits, when it ended, then its waits (s)."""
    sem = OriginalSemaphore(redis.Redis(host="127.0.0.1", port=port), key, PERMITS)
    time.sleep(max(0.0, start - time.time()))
    held, waits = 0.0, []
    while time.time() < until:
        t0 = time.perf_counter()
        sem.acquire()
        waits.append(time.perf_counter() - t0)
        h0 = time.perf_counter()
        time.sleep(HOLD_S)
        held += time.perf_counter() - h0
        sem.release()
    print(held, time.time(), " ".join(f"{w:.6f}" for w in waits))


def main() -> None:
    sys.path.insert(0, str(ROOT / "bindings/python/tests"))
    from conftest import Server  # the Python SDK's test fixture: a throwaway redis-server

    server = Server()
    try:
        r = redis.Redis(host="127.0.0.1", port=server.port)
        sem = OriginalSemaphore(r, "bench-cycle", 1)
        cycle = []
        for i in range(ITERS + WARMUP):
            t0 = time.perf_counter()
            assert sem.acquire()
            sem.release()
            if i >= WARMUP:
                cycle.append(time.perf_counter() - t0)

        # Every worker starts its loop at `start` (after its import and open) and stops at `until`.
        key = "bench-contended"
        start = time.time() + 2.0
        until = start + SECONDS
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--worker", str(server.port), key, str(start), str(until)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(WORKERS)
        ]
        held, waits, ended = 0.0, [], start
        for p in procs:
            out, _ = p.communicate()
            if p.returncode != 0:
                raise SystemExit(f"a contended worker failed ({p.returncode})")
            h, end, *w = out.split()
            held += float(h)
            ended = max(ended, float(end))
            waits += [float(x) for x in w]
        # Over the run as it went: the last cycles end after `until`, and their holds count.
        wall = ended - start
        utilisation = held / (PERMITS * wall)
        left = OriginalSemaphore(r, key, PERMITS).value()
        assert left == PERMITS, f"{left} of {PERMITS} permits free after the contended run"
        version = r.info("server").get("redis_version", "?")
    finally:
        server.close()

    mean = statistics.mean(cycle)
    print("\n### Reference: the original algorithm (Redlock + counter + BLPOP queue, redis-py)\n")
    print("| measure | result |")
    print("| --- | --- |")
    print(f"| acquire+release cycle | {mean * 1e6:,.1f} µs (p50 {pct(cycle, .5) * 1e6:,.1f} µs, "
          f"p99 {pct(cycle, .99) * 1e6:,.1f} µs) |")
    print(f"| contended, {WORKERS} processes, {PERMITS} permits, {HOLD_S * 1e3:.0f} ms hold, {SECONDS:g} s | "
          f"utilisation {utilisation:.1%}, {len(waits)} grants, wait p50 {pct(waits, .5) * 1e3:.1f} ms, "
          f"p99 {pct(waits, .99) * 1e3:.1f} ms |")

    if os.environ.get("BENCH_JSON"):
        implementation, client = "reference original algorithm", "Python (redis-py)"
        rows = [
            cycle_row("acquire+release cycle", implementation, client, cycle),
            contended_row(implementation, client, workers=WORKERS, permits=PERMITS, hold_s=HOLD_S,
                          seconds=SECONDS, wall_seconds=wall, utilisation=utilisation, waits=waits),
        ]
        doc = {"benchmark": "bench/reference/original.py", "iters": ITERS, "warmup": WARMUP,
               "redis_server": version, "rows": rows}
        Path(os.environ["BENCH_JSON"]).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {os.environ['BENCH_JSON']}", file=sys.stderr)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), float(sys.argv[5]))
    else:
        main()
