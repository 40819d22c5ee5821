"""Under gevent (``monkey.patch_all()``) a greenlet waiting for a permit must not stop the
others: the one holding it has to run to release it. The original library waited in patched
sockets and ``time.sleep``; a native wait would block gevent's only thread."""

import json
import subprocess
import sys
from pathlib import Path

import gevent  # noqa: F401  (a pinned test requirement: failing to import it fails the run)


def test_waiting_greenlets_let_the_holder_run_and_leave_when_interrupted(server, unique_key):
    program = Path(__file__).with_name("_gevent_program.py")
    done = subprocess.run(
        [sys.executable, str(program), server.url, unique_key], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["entered_alone"], seen
    assert seen["pool_thread_acquired"] is False, "a wait on a pool thread did not time out"
    order = [tuple(step) for step in seen["order"]]
    assert len(order) == 6, order
    # One holder at a time: every "in" is followed by its own "out".
    assert all(order[i][0] == "in" and order[i + 1] == ("out", order[i][1]) for i in range(0, 6, 2)), order
    assert seen["ticks"] >= 20, f"the hub stood still while greenlets waited ({seen['ticks']} ticks in 0.6 s)"
    assert seen["timed_out"], "gevent.Timeout did not end the wait"
    assert seen["waiters_after_timeout"] == 0, "the timed-out waiter stayed queued"
    assert seen["waiting_before_kill"] == 1, seen
    assert seen["waiters_after_kill"] == 0, "the killed waiter stayed queued"
    assert seen["value_at_end"] == 1, "a permit stayed held"
    assert seen["value_after_interrupted_enter"] == 1, "the grant of an interrupted `with` stayed held"
    assert seen["value_after_late_grant"] == 1, "a grant that came after the wait ended stayed held"
    assert seen["value_after_interrupted_start"] == 1, "a wait abandoned as its thread started kept its grant"
    assert seen["two_kept_after_giving_up"] == 0, "a grant given up on stayed among the handle's own"
    assert (seen["two_value"], seen["two_holders"]) == (2, 0), "release() took the permit being given back"
    assert seen["two_beside"] == [True, 2, 0], "a release() beside took a grant not yet reported"
    # Waits do not hold gevent's thread pool, which its DNS resolver needs too.
    assert not seen["late_waiter_acquired"] and seen["late_waiter_took"] < 2.0, seen
    assert seen.get("looked_up"), "the holder's DNS look-up waited behind the waiters"
    assert seen["served"] == 12, seen
    # An interrupted wait is not reported as an error nobody handled.
    assert "Cancelled" not in done.stderr, done.stderr


def test_a_grant_not_yet_claimed_is_spared_however_many_come_after(server, unique_key):
    """The native side of the above, without gevent: a grant of ``acquire_cancellable`` stays
    spared by the handle's releases until claimed, even after many claimed grants (which are
    kept for ``take_grant`` only up to a bound)."""
    from pottery_semaphore import Semaphore

    sem = Semaphore(value=100, key=unique_key, masters={server.url}, guard_fresh_server=False)
    native = sem._native
    ffi = __import__("pottery_semaphore._native", fromlist=["pottery_semaphore_ffi"]).pottery_semaphore_ffi
    unclaimed = [p.token for p in native.acquire_cancellable(1, False, None, 1000, False, ffi.Cancellation())]
    later = []
    for ticket in range(1001, 1071):
        later += [p.token for p in native.acquire_cancellable(1, False, None, ticket, False, ffi.Cancellation())]
        native.claim_grant(ticket)
    native.release_permits(later)
    assert native.acquire(1, False, None, False)
    native.release(1)
    assert [p.token for p in native.held()] == unclaimed, "the release took the unclaimed grant"
    assert native.take_grant(1000) == unclaimed


def test_a_claimed_grant_stays_spared_only_if_it_was_asked_for_spared(server, unique_key):
    """The native side of a greenlet's ``with`` beside its plain ``acquire``: ``claim_grant``
    ends the host's sparing of a plain grant and keeps a block's. Were the plain one left
    spared, ``release()`` would take the lower, the block's, and the plain one would stay held."""
    from pottery_semaphore import Semaphore

    sem = Semaphore(value=2, key=unique_key, masters={server.url}, guard_fresh_server=False)
    native = sem._native
    ffi = __import__("pottery_semaphore._native", fromlist=["pottery_semaphore_ffi"]).pottery_semaphore_ffi
    block = [p.token for p in native.acquire_cancellable(1, False, None, 2000, True, ffi.Cancellation())]
    native.claim_grant(2000)
    plain = [p.token for p in native.acquire_cancellable(1, False, None, 2001, False, ffi.Cancellation())]
    native.claim_grant(2001)
    assert block[0] < plain[0]
    native.release(1)
    assert [p.token for p in native.held()] == block, "the release took the block's permit"
    native.release_permits(block)
    assert sem.value == 2


ABANDONED_BY_ITS_THREAD = """
import sys, threading, time
import gevent
from pottery_semaphore import Semaphore

url, key = sys.argv[1], sys.argv[2]
sem = Semaphore(value=1, key=key, masters={url}, guard_fresh_server=False, lease=2)
assert sem.acquire()


def batch():
    # A thread that runs greenlets and returns while one still waits.
    gevent.joinall([gevent.spawn(sem.acquire)], timeout=0.3)


thread = threading.Thread(target=batch)
thread.start()
thread.join()
sem.release()
time.sleep(1.5)
print(sem.status().available, len(sem.permits))
"""


def test_a_wait_whose_hub_thread_ended_gives_its_grant_back(server, unique_key):
    """No greenlet will ever take the grant of a wait whose hub's thread has returned (gevent
    cannot even kill such a greenlet): the wait gives it back itself."""
    done = subprocess.run(
        [sys.executable, "-c", ABANDONED_BY_ITS_THREAD, server.url, unique_key],
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "0"], f"available, held: {done.stdout!r}"
