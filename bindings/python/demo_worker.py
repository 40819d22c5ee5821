"""A Python worker of `cargo xtask demo`: ROUNDS acquire/hold/release rounds on the demo's
semaphore; prints one line per hold, `span <start ms> <end ms> <token>`, relative to EPOCH_MS
(Unix ms) so the demo can draw every worker on one timeline."""

import sys
import time

from pottery_semaphore import Semaphore

url, key, permits, rounds, epoch_ms, seed = sys.argv[1:7]
sem = Semaphore(value=int(permits), key=key, masters={url}, guard_fresh_server=False)
for r in range(int(rounds)):
    with sem:
        start = time.time() * 1000 - float(epoch_ms)
        time.sleep((40 + (int(seed) * 37 + r * 53) % 90) / 1000)
        end = time.time() * 1000 - float(epoch_ms)
        print("span", round(start), round(end), sem.fencing_token, flush=True)
