"""A gevent program (run by test_gevent.py in a process of its own: monkey-patching must come
before anything else is imported). Prints one JSON line of what it saw."""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402

from pottery_semaphore import Semaphore  # noqa: E402

url, key = sys.argv[1], sys.argv[2]
sem = Semaphore(value=1, key=key, masters={url}, guard_fresh_server=False)
seen = {}

# A hub with nothing else to run (no other greenlet, no timer) must not end a wait as if it
# could never finish.
gevent.sleep(0)
with sem:
    seen["entered_alone"] = True
# On a thread of gevent's pool, which has no hub of its own, a wait blocks that thread only.
other = Semaphore(value=1, key=key, masters={url}, guard_fresh_server=False)
assert other.acquire(blocking=False)
seen["pool_thread_acquired"] = gevent.get_hub().threadpool.spawn(sem.acquire, True, 0.5).get()
other.release()

# Three greenlets share one permit: each waits while another holds it, and the holder's
# gevent.sleep must run meanwhile, or the first to wait blocks everyone for good.
order = []
ticks = [0]


def ticker() -> None:
    while True:
        gevent.sleep(0.01)
        ticks[0] += 1


def worker(i: int) -> None:
    with sem:
        order.append(("in", i))
        gevent.sleep(0.2)
        order.append(("out", i))


tick = gevent.spawn(ticker)
with gevent.Timeout(10):
    gevent.joinall([gevent.spawn(worker, i) for i in range(3)], raise_error=True)
seen["order"] = order
seen["ticks"] = ticks[0]

# A wait that gevent.Timeout interrupts leaves the queue and keeps nothing.
assert sem.acquire(blocking=False)
try:
    with gevent.Timeout(0.3):
        sem.acquire()
    seen["timed_out"] = False
except gevent.Timeout:
    seen["timed_out"] = True
gevent.sleep(0.3)  # the cancelled wait leaves the queue in the background
seen["waiters_after_timeout"] = len(sem.waiters())
# A killed waiter too.
waiter = gevent.spawn(sem.acquire)
gevent.sleep(0.3)
seen["waiting_before_kill"] = len(sem.waiters())
waiter.kill()
gevent.sleep(0.3)
seen["waiters_after_kill"] = len(sem.waiters())
sem.release()
gevent.sleep(0.3)
seen["value_at_end"] = sem.value

# More waiters than gevent's thread pool has threads (10): the holder's DNS look-up (on that
# pool) still runs, a time-out of one more waiter is still honoured, and every waiter is served.
import socket  # noqa: E402
import time  # noqa: E402

assert sem.acquire(blocking=False)
served = []


def waits(i: int) -> None:
    with sem:
        served.append(i)


crowd = [gevent.spawn(waits, i) for i in range(12)]
gevent.sleep(0.5)
started = time.monotonic()
seen["late_waiter_acquired"] = sem.acquire(timeout=0.5)
seen["late_waiter_took"] = time.monotonic() - started
with gevent.Timeout(5, False):
    socket.getaddrinfo("localhost", 80)
    seen["looked_up"] = True
sem.release()
with gevent.Timeout(10, False):
    gevent.joinall(crowd)
seen["served"] = len(served)

# Raised once the wait returned but before the block recorded its permit (as a signal's
# handler may): the grant, made on the pool's thread, is given back.
recording = sem._blocks.enter


def interrupted(*args, **kwargs):
    raise KeyboardInterrupt


sem._blocks.enter = interrupted
try:
    with sem:
        pass
except KeyboardInterrupt:
    pass
sem._blocks.enter = recording
gevent.sleep(0.3)  # given back on a thread, so that the hub waits on no Redis
seen["value_after_interrupted_enter"] = sem.value

# A grant that lands after the greenlet stopped waiting (the native wait made deaf to the
# cancellation, so that it is granted once the other handle releases) is given back.
from pottery_semaphore import _green  # noqa: E402
from pottery_semaphore._native import pottery_semaphore_ffi as ffi  # noqa: E402

real = sem._native


class Deaf:
    def __getattr__(self, name):
        return getattr(real, name)

    def acquire_cancellable(self, n, blocking, seconds, ticket, spared, cancellation):
        return real.acquire_cancellable(n, blocking, seconds, ticket, spared, ffi.Cancellation())


assert other.acquire(blocking=False)
sem._native = Deaf()
with gevent.Timeout(0.2, False):
    sem.acquire()
other.release()
gevent.sleep(0.5)
sem._native = real
seen["value_after_late_grant"] = sem.value

# A grant the greenlet gave up on (its wait's thread slow to report it) is let go of at once:
# a release() beside it gives back this handle's other permit, not that one.
two = Semaphore(value=2, key=key + "-two", masters={url}, guard_fresh_server=False)
real_two = two._native
pause = monkey.get_original("time", "sleep")


class Slow:
    def __getattr__(self, name):
        return getattr(real_two, name)

    def acquire_cancellable(self, *args):
        granted = real_two.acquire_cancellable(*args)
        pause(0.3)
        return granted


two._native = Slow()
with gevent.Timeout(0.1, False):
    two.acquire()
two._native = real_two
seen["two_kept_after_giving_up"] = len(real_two.held())  # at once, before anything else runs
assert two.acquire(blocking=False)
two.release()
gevent.sleep(0.6)
seen["two_value"] = two.value
seen["two_holders"] = len(two.holders())

# The same, with the release() beside made while the greenlet has not yet resumed: the grant
# it is about to give up is taken last.
beside = {}


def acquire_and_release_beside() -> None:
    gevent.sleep(0.05)  # the slow wait's grant is made by now, and not yet reported
    beside["acquired"] = two.acquire(blocking=False)
    two.release()


two._native = Slow()
helper = gevent.spawn(acquire_and_release_beside)
with gevent.Timeout(0.2, False):
    two.acquire()
two._native = real_two
helper.join()
gevent.sleep(0.6)
seen["two_beside"] = [beside.get("acquired"), two.value, len(real_two.held())]

# A signal's handler that raises just as the wait's thread starts (before the greenlet waits):
# the wait is abandoned, and what it is granted later is given back.
start_thread = _green._start_thread


def interrupted_start(fn, *args):
    start_thread(fn, *args)
    raise KeyboardInterrupt


assert other.acquire(blocking=False)
sem._native = Deaf()
_green._start_thread = interrupted_start
try:
    sem.acquire()
except KeyboardInterrupt:
    pass
_green._start_thread = start_thread
other.release()
gevent.sleep(0.5)
sem._native = real
seen["value_after_interrupted_start"] = sem.value
tick.kill()
print(json.dumps(seen))
