"""A separate Python process for the multi-process tests.

hold URL KEY LEASE         acquire one permit, print "held TOKEN", sleep until killed
stress URL KEY PERMITS N   N acquire/hold/release cycles; an oracle counter (INCR/DECR on a key the
                           protocol never touches) records more than PERMITS holders as violations
wait URL KEY TIMEOUT       print "waiting", block in acquire, print "acquired MS" or "timeout"
"""

from __future__ import annotations

import random
import sys
import time

import redis

from pottery_semaphore import Semaphore


def main() -> None:
    mode, url, key = sys.argv[1:4]
    if mode == "hold":
        sem = Semaphore(value=1, key=key, masters={url}, lease=float(sys.argv[4]), guard_fresh_server=False)
        assert sem.acquire()
        print("held", sem.fencing_token, flush=True)
        time.sleep(3600)
    elif mode == "stress":
        permits, cycles = int(sys.argv[4]), int(sys.argv[5])
        sem = Semaphore(value=permits, key=key, masters={url}, guard_fresh_server=False)
        oracle = redis.Redis.from_url(url)
        most = 0
        for _ in range(cycles):
            with sem:
                holders = oracle.incr(f"{key}:oracle")
                most = max(most, holders)
                if holders > permits:
                    oracle.incr(f"{key}:violations")
                time.sleep(random.uniform(0, 0.004))
                oracle.decr(f"{key}:oracle")
        print("done", cycles, most, flush=True)
    elif mode == "wait":
        sem = Semaphore(value=1, key=key, masters={url}, guard_fresh_server=False)
        print("waiting", flush=True)
        started = time.monotonic()
        if sem.acquire(timeout=float(sys.argv[4])):
            print("acquired", round((time.monotonic() - started) * 1000), flush=True)
            sem.release()
        else:
            print("timeout", flush=True)


if __name__ == "__main__":
    main()
