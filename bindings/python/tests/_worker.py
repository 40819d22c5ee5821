"""A separate Python process for the multi-process tests.

hold URL KEY LEASE         acquire one permit, print "held TOKEN", sleep until killed
stress URL KEY PERMITS N   N acquire/hold/release cycles; an oracle counter (INCR/DECR on a key the
                           protocol never touches) records more than PERMITS holders as violations
wait URL KEY TIMEOUT       print "waiting", block in acquire, print "acquired MS" or "timeout"
signalled URL KEY          queue behind a holder while the server sleeps in DEBUG SLEEP 2 and the
                           process is sent SIGUSR1, whose handler raises; print "raised S" (how
                           long the acquire took), or "returned"
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
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
    elif mode == "signalled":
        # Only this process's main thread and the SDK's own threads: no Python thread of the
        # test's that the signal could go to instead (the sleep and the signal come from other
        # processes).
        class Raised(Exception):
            pass

        def raise_it(signum: int, frame: object) -> None:
            raise Raised()

        holder = Semaphore(value=1, key=key, masters={url}, guard_fresh_server=False)
        waiter = Semaphore(value=1, key=key, masters={url}, guard_fresh_server=False)
        assert holder.acquire()
        waiter.locked()  # connected
        signal.signal(signal.SIGUSR1, raise_it)
        stall = subprocess.Popen(["redis-cli", "-u", url, "DEBUG", "SLEEP", "2"], stdout=subprocess.DEVNULL)
        time.sleep(0.2)  # the server is asleep: the acquire's script waits for it
        subprocess.Popen(["sh", "-c", f"sleep 0.3; kill -USR1 {os.getpid()}"])
        started = time.monotonic()
        try:
            waiter.acquire(timeout=8)
            print("returned", flush=True)
        except Raised:
            print("raised", round(time.monotonic() - started, 2), flush=True)
        stall.wait()


if __name__ == "__main__":
    main()
