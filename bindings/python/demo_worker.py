"""A Python worker of `cargo xtask demo`: ROUNDS acquire/hold/release rounds on the demo's
semaphore; prints one line per hold, `span <start µs> <end µs> <token>`, relative to EPOCH_US
(Unix µs, the clock every worker reads) so the demo can draw every worker on one timeline and
check that no more than `permits` held at once."""

import sys
import time

from pottery_semaphore import Semaphore

url, key, permits, rounds, epoch_us, seed = sys.argv[1:7]
sem = Semaphore(value=int(permits), key=key, masters={url}, guard_fresh_server=False)
for r in range(int(rounds)):
    with sem:
        start = time.time_ns() // 1000 - int(epoch_us)
        time.sleep((40 + (int(seed) * 37 + r * 53) % 90) / 1000)
        end = time.time_ns() // 1000 - int(epoch_us)
        print("span", start, end, sem.fencing_token, flush=True)
