"""The original package's API, used verbatim, plus the extras."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import warnings

import pytest

import pottery_semaphore as ps
from pottery_semaphore import AIOSemaphore, BoundedSemaphoreError, Semaphore, SemaphoreError


def test_a_permit_outlives_the_object_that_took_it(redis_client, unique_key, server):
    """As in the original, where permits belong to the semaphore in Redis: an object that took a
    permit and was dropped does not give it back (the code that took it may still be running);
    a release() by another object of this process gives it back, not another holder's."""
    import gc

    def sem(masters=None):
        return Semaphore(value=2, key=unique_key, masters=masters or {redis_client}, lease=1.0)

    other = sem([server.url])
    assert other.acquire(blocking=False)
    assert sem().acquire(blocking=False)  # the object goes at once
    gc.collect()
    time.sleep(2.5)  # two leases and a half: it is refreshed, not left to end
    assert len(other.holders()) == 2
    assert not sem().acquire(blocking=False), "a dropped object's permit was given to a third holder"
    # The same semaphore however its server is spelled: a URL without the client's /0.
    sem([server.url]).release()
    assert other.lost_permits() == [], "another holder's permit was released in its place"
    assert [h.holder for h in other.holders()] == [other.holder_id]
    # Nothing kept any more: the next release of an object holding none is the fungible one.
    with pytest.raises(BoundedSemaphoreError):
        sem().release(2)
    other.release()


def test_kept_permits_go_only_where_they_cover_the_release(redis_client, unique_key):
    """A release of more than the kept permits goes as any release does, in one call, so a
    bounded semaphore still refuses it whole; and a kept permit that another holder's release
    took meanwhile gives nothing back, so the release after it is refused too."""
    import gc

    def sem():
        return Semaphore(value=2, key=unique_key, masters={redis_client}, lease=1.0)

    assert sem().acquire(blocking=False)
    gc.collect()
    with pytest.raises(BoundedSemaphoreError):
        sem().release(2)
    assert len(sem().holders()) == 1, "a refused release changed something"
    # Another holder releases two, its own and the kept one (permits are fungible).
    a = sem()
    assert a.acquire(blocking=False)
    a.release(2)
    assert sem().holders() == []
    with pytest.raises(BoundedSemaphoreError):
        sem().release()


def test_kept_handles_that_lost_their_permits_are_let_go(redis_client, unique_key):
    """A kept permit that another process's release took (here: removed behind the scripts'
    back) is not kept for ever: its handle goes once it knows, as objects are made."""
    import gc

    from pottery_semaphore import _kept

    def sem():
        return Semaphore(value=1, key=unique_key, masters={redis_client}, lease=1.0)

    assert sem().acquire(blocking=False)
    gc.collect()
    sem()
    ident = [k for k in _kept._kept if k[0] == unique_key]
    assert len(ident) == 1, "kept"
    redis_client.delete(f"pottery-semaphore:{{{unique_key}}}:leases")
    deadline = time.monotonic() + 5
    while ident[0] in _kept._kept:
        assert time.monotonic() < deadline, "the handle of a lost permit was kept"
        time.sleep(0.1)
        sem()


def test_a_release_interrupted_between_kept_handles_keeps_the_rest(redis_client, unique_key):
    """A signal's handler that raises between two kept handles' releases leaves those not
    reached kept (for a later release), not taken out and forgotten."""
    import gc

    from pottery_semaphore import _kept

    def sem():
        return Semaphore(value=2, key=unique_key, masters={redis_client}, lease=1.0)

    for _ in range(2):
        assert sem().acquire(blocking=False)
        gc.collect()
    sem()  # settles the registry
    ident = next(k for k in _kept._kept if k[0] == unique_key)
    handles = _kept._kept[ident]
    assert len(handles) == 2
    first = next(iter(handles))

    class InterruptedAfter:
        def __init__(self, native):
            self.native = native

        def held(self):
            return self.native.held()

        def release_permits(self, tokens):
            released = self.native.release_permits(tokens)
            raise KeyboardInterrupt  # as a handler would, right after the native call

    handles[first] = (InterruptedAfter(handles[first][0]), *handles[first][1:])
    with pytest.raises(KeyboardInterrupt):
        sem().release(2)
    assert len(sem().holders()) == 1, "the first went back, the second is still held"
    sem().release()  # the one left kept
    assert sem().holders() == []


def test_a_refused_release_leaves_kept_permits_kept(redis_client, unique_key):
    """More than a call may give back is refused before any kept permit goes."""
    import gc

    # The default lease: a debug build refreshes 12,000 permits in about half a second.
    def sem():
        return Semaphore(value=12_000, key=unique_key, masters={redis_client})

    dropped = sem()
    assert dropped.acquire(blocking=False, n=6000) and dropped.acquire(blocking=False, n=6000)
    del dropped
    gc.collect()
    with pytest.raises(ps.InvalidArgumentError, match="^n must be <= 10000$"):
        sem().release(10_001)
    assert sem().value == 0
    sem().release(10_000)
    sem().release(2_000)
    assert sem().value == 12_000


def test_a_permit_kept_from_an_object_in_a_reference_cycle_stays_usable(server, unique_key):
    """A garbage collection finalizes an object in a reference cycle and its native handle in
    any order: the handle may be freed before the object's finalizer keeps it. What is kept must
    not be that handle (using it after its free crashed the process)."""
    program = f"""
import gc
from pottery_semaphore import Semaphore
url, key = {server.url!r}, {unique_key!r}
s = Semaphore(key=key, masters=[url], lease=1.0, guard_fresh_server=False)
assert s.acquire(blocking=False)
s.me = s  # a cycle: only a collection frees it, with its native handle
del s
gc.collect()
other = Semaphore(key=key, masters=[url], guard_fresh_server=False)  # tidies the registry
assert not other.acquire(blocking=False), "the kept permit was given back"
other.release()  # gives back the kept one
assert other.acquire(blocking=False)
other.release()
print("done")
"""
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "done", out.stderr[-2000:]


def _in_a_cycle(server, key: str, body: str) -> str:
    """A program whose ``make(last_call)`` puts a semaphore in a reference cycle with a generator
    whose ``finally`` runs ``last_call(sem)``, then ``body``. Garbage collection is off but for
    the body's own collection, which finalizes the objects in the order they were made."""
    return f"""
import gc
gc.disable()
from pottery_semaphore import Semaphore
url, key = {server.url!r}, {key!r}

def make(last_call):
    sem = Semaphore(key=key, masters=[url], bounded=False, guard_fresh_server=False)
    def steps():
        try:
            yield
        finally:
            last_call(sem)
    sem.steps = steps()  # sem -> generator -> frame -> sem
    next(sem.steps)
{body}"""


def test_an_object_called_by_another_finalizer_of_its_collection_still_works(server, unique_key):
    """In a reference cycle, a collection runs every finalizer before it frees anything: a
    generator's ``finally`` (a coroutine leaving its ``async with``) may call a semaphore whose
    native wrapper was finalized already. Its handle must still be valid then."""
    program = _in_a_cycle(server, unique_key, """
# A call, and a release by an object holding nothing (which tidies the kept permits meanwhile).
make(lambda sem: print("locked" if sem.locked() else "free"))
make(lambda sem: print(sem.release() or "released"))
gc.collect()
print("done")
""")
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=30)
    assert out.stdout.split() == ["free", "released", "done"], (out.returncode, out.stdout, out.stderr[-2000:])


def test_an_object_a_finalizer_brought_back_to_life_still_works(server, unique_key):
    """A finalizer of a collection may keep an object of that collection for good (a logging
    handler storing a record that names it): its native wrapper was finalized already, and its
    calls go through the handle it left kept, which must stay valid while it lives. Before, the
    next object made let that handle go (it held no permit), and the object's next call used
    freed memory. Once it goes for good (its finalizer does not run again), what it holds then
    stays kept, as for any object dropped holding permits."""
    program = f"""
import gc, time
from pottery_semaphore import Semaphore
url, key = {server.url!r}, {unique_key!r}
saved = []

class KeepsIt:
    def __del__(self):
        saved.append(self.sem)

sem, keeper = Semaphore(key=key, masters=[url], guard_fresh_server=False), KeepsIt()
sem.keeper, keeper.sem = keeper, sem  # a cycle: both finalized by one collection
del sem, keeper
gc.collect()
for _ in range(3):
    Semaphore(key=key, masters=[url], guard_fresh_server=False)  # tidies the registry
    gc.collect()
back = saved[0]
assert back.acquire(blocking=False)
print(back.locked(), len(back.holders()))
del back
saved.clear()
gc.collect()  # still in a cycle with its keeper
other = Semaphore(key=key, masters=[url], guard_fresh_server=False)  # tidies the registry
time.sleep(0.5)  # a handle let go gives its permits back in the background
print(len(other.holders()))
other.release()  # gives back the kept one
print(len(other.holders()))
print("done")
"""
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=30)
    assert out.stdout.split() == ["True", "1", "1", "0", "done"], (out.returncode, out.stdout, out.stderr[-2000:])


def test_a_forked_child_forgets_the_parents_kept_handles(server, unique_key):
    """A child made by fork must never free a handle of the parent's: that runs the parent's
    runtime, copied with locks its threads may hold. Every handle the parent keeps is forgotten
    at the fork, also one a collection's finalizer had just let go of (here: an object in a
    cycle, tidied by a release in another finalizer of the same collection), which the parent
    used to hold back until the collection had ended."""
    program = _in_a_cycle(server, unique_key, """
import os
from pottery_semaphore import _kept
make(lambda sem: None)
make(lambda sem: sem.release())  # tidies the registry, inside the collection
gc.collect()
held = lambda: [*_kept._kept.values(), *_kept._dropped, *getattr(_kept, "_graveyard", [])]
assert held(), "nothing kept before the fork"
pid = os.fork()
if pid == 0:
    os._exit(1 if held() else 0)
_, status = os.waitpid(pid, 0)
print("forgotten" if os.waitstatus_to_exitcode(status) == 0 else "remembered")
""")
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "forgotten", (out.returncode, out.stdout, out.stderr[-2000:])


def test_a_signal_handler_that_makes_a_semaphore_inside_the_registry_does_not_hang(server, unique_key):
    """Python runs a signal's handler between any two steps, also while this thread is inside
    the kept-permit registry: one that makes a semaphore (which tidies the registry) or releases
    must not wait for the registry's lock, held by its own thread."""
    program = f"""
import os, signal
from pottery_semaphore import Semaphore, _kept
url, key = {server.url!r}, {unique_key!r}
made = []
signal.signal(signal.SIGUSR1, lambda *_: made.append(Semaphore(key=key, masters=[url], guard_fresh_server=False)))
s = Semaphore(key=key, masters=[url], lease=1.0, guard_fresh_server=False)
assert s.acquire(blocking=False)
class Signalling:
    def held(self):
        os.kill(os.getpid(), signal.SIGUSR1)  # its handler runs at once, inside prune()
        return s._native.held()
_kept._dropped.append((("other",), Signalling(), [p.token for p in s._native.held()], None))
Semaphore(key=key, masters=[url], guard_fresh_server=False)
assert made
print("done")
"""
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=20)
    assert out.stdout.strip() == "done", out.stderr


def test_kept_permits_are_told_apart_by_the_database_the_native_client_reads():
    from pottery_semaphore import _kept

    # The last db of a unix URL, as the native client reads its query; a TCP URL's path only.
    assert _kept._server("unix:///s?db=1&db=2") == ("unix", "/s", 2)
    assert _kept._server("redis://h:6379?db=1") == _kept._server("redis://h/0")
    assert _kept._server("redis://u:p@H:6379/3") == _kept._server("redis://h/3")
    assert _kept._server("rediss://h/3") != _kept._server("redis://h/3")


async def test_async_bad_arguments_are_refused_before_redis_is_reached(unique_key):
    """An AIOSemaphore's first call opens it: an unreachable Redis must not hide a bad argument
    (acquire would return False, as for a Redis that is down)."""
    aio = AIOSemaphore(key=unique_key, masters={"redis://127.0.0.1:1"})
    with pytest.raises(ps.InvalidArgumentError, match="^n must be >= 1$"):
        await aio.acquire(n=0)
    with pytest.raises(ps.InvalidArgumentError, match="^n must be <= 10000$"):
        await aio.acquire(n=10_001)
    with pytest.raises(ps.InvalidArgumentError, match="got NaN$"):
        await aio.acquire(timeout=float("nan"))
    with pytest.raises(ps.InvalidArgumentError, match="got -5$"):
        await aio.acquire(timeout=-5)
    # Numbers as the native layer writes them (Rust's f64 Display), so both classes agree.
    with pytest.raises(ps.InvalidArgumentError, match="got -0.00001$"):
        await aio.acquire(timeout=-1e-5)
    with pytest.raises(ps.InvalidArgumentError, match="got -1000000000000000000000000000000$"):
        await aio.acquire(timeout=-1e30)
    with pytest.raises(ps.InvalidArgumentError, match="^n must be >= 1$"):
        await aio.release(0)


def test_a_finalizer_run_by_a_collection_inside_the_registry_does_not_hang(server, unique_key):
    """Garbage collection may finalize a semaphore on a thread that is inside the registry's
    own lock: the finalizer must not wait for that lock."""
    program = f"""
import gc, sys
from pottery_semaphore import Semaphore, _kept
s = Semaphore(value=1, key={unique_key!r}, masters=[{server.url!r}], lease=1.0)
assert s.acquire(blocking=False)
s.me = s  # a cycle: only a collection frees it
del s
gc.disable()
with _kept._lock:
    gc.collect()
print("done")
"""
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=20)
    assert out.stdout.strip() == "done", out.stderr


async def test_an_async_permit_outlives_the_object_that_took_it(redis_client, unique_key):
    import gc

    def sem():
        return AIOSemaphore(value=1, key=unique_key, masters={redis_client}, lease=1.0)

    assert await sem().acquire(blocking=False)
    gc.collect()
    await asyncio.sleep(2.5)
    assert len(await sem().holders()) == 1
    assert not await sem().acquire(blocking=False)
    # Kept permits are the same semaphore's whichever class took them.
    await sem().release()
    fresh = Semaphore(value=1, key=unique_key, masters={redis_client})
    assert fresh.acquire(blocking=False)
    fresh.release()


def test_create_with_defaults_and_values(redis_client, unique_key):
    sem = Semaphore(key=unique_key, masters={redis_client})
    assert sem.value == 1
    assert sem.initial_value == 1
    assert not sem.locked()
    five = Semaphore(value=5, key=unique_key + "5", masters={redis_client})
    assert (five.value, five.initial_value) == (5, 5)
    zero = Semaphore(value=0, key=unique_key + "0", masters={redis_client})
    assert zero.value == 0 and zero.locked()
    assert not zero.acquire(blocking=False)


def test_later_constructors_do_not_overwrite_the_value(redis_client, unique_key):
    Semaphore(value=3, key=unique_key, masters={redis_client})
    again = Semaphore(value=9, key=unique_key, masters={redis_client})
    assert again.initial_value == 3


def test_negative_value_raises_the_original_value_error(redis_client, unique_key):
    with pytest.raises(ValueError, match="^Semaphore value must be non-negative$"):
        Semaphore(value=-1, key=unique_key, masters={redis_client})
    with pytest.raises(ValueError, match="^Semaphore value must be non-negative$"):
        AIOSemaphore(value=-1, key=unique_key, masters={redis_client})


def test_acquire_release_blocking_and_timeouts(redis_client, unique_key):
    sem = Semaphore(value=2, key=unique_key, masters={redis_client})
    assert sem.acquire()
    assert sem.acquire(blocking=False)
    assert sem.locked()
    assert not sem.acquire(blocking=False)
    started = time.monotonic()
    assert not sem.acquire(timeout=0.3)
    waited = time.monotonic() - started
    assert 0.3 <= waited < 0.5, waited
    assert not sem.acquire(True, 0.05), "positional arguments as in threading"
    sem.release(2)
    assert sem.value == 2


def test_release_checks(redis_client, unique_key):
    sem = Semaphore(value=1, key=unique_key, masters={redis_client})
    with pytest.raises(ValueError, match="^n must be >= 1$"):
        sem.release(0)
    with pytest.raises(ValueError, match="^n must be >= 1$"):
        sem.release(-2)
    with pytest.raises(BoundedSemaphoreError) as info:
        sem.release()
    e = info.value
    assert isinstance(e, SemaphoreError) and isinstance(e, ValueError)
    assert (e.key, e.current, e.initial) == (unique_key, 1, 1)
    assert str(e) == f"Semaphore '{unique_key}' released too many times: current=1, initial=1"
    assert sem.value == 1, "a refused release changes nothing"


def test_unbounded_release_raises_capacity(redis_client, unique_key):
    sem = Semaphore(value=1, key=unique_key, masters={redis_client}, bounded=False)
    sem.release()
    assert sem.value == 2
    for _ in range(2):
        assert sem.acquire(blocking=False)
    sem.release(n=2)
    assert sem.value == 2


def test_context_managers_release_even_on_errors(redis_client, unique_key):
    sem = Semaphore(value=1, key=unique_key, masters={redis_client})
    with pytest.raises(RuntimeError), sem:
        assert sem.value == 0
        raise RuntimeError("boom")
    assert sem.value == 1
    # Entered and left from ExitStack's own frames: found by the thread that entered it.
    with contextlib.ExitStack() as stack:
        stack.enter_context(sem)
        assert sem.value == 0
    assert sem.value == 1


def test_an_exit_stack_closed_inside_a_with_block_leaves_its_own_block(redis_client, unique_key):
    """ExitStack's block is found by the thread that entered it, but not the innermost block of
    that thread when that one is still running: closing the stack inside a `with` once released
    the `with` block's permit while it ran, and later the stack's in its place."""
    sem = Semaphore(value=2, key=unique_key, masters={redis_client})
    stack = contextlib.ExitStack()
    stack.enter_context(sem)
    in_stack = sem.fencing_token
    with sem:
        in_block = sem.fencing_token
        stack.close()
        assert [p.token for p in sem.permits] == [in_block], f"the stack's permit was {in_stack}"
    assert sem.permits == []
    # Entered by calling __enter__ in this frame, left through ExitStack.push: still found.
    sem.__enter__()
    with contextlib.ExitStack() as pushed:
        pushed.push(sem)
    assert sem.permits == []


def test_exit_stacks_closed_out_of_order_each_leave_their_own_block(redis_client, unique_key):
    """Two stacks entered on one thread and closed in the order entered: each gives back its
    own permit, not the thread's innermost. Its lease ended, the first gives back nothing (the
    innermost once went in its place, and the second stack's block ran on no permit)."""
    sem = Semaphore(value=2, key=unique_key, masters={redis_client})
    probe = Semaphore(value=2, key=unique_key, masters={redis_client})
    first, second = contextlib.ExitStack(), contextlib.ExitStack()
    first.enter_context(sem)
    in_first = sem.fencing_token
    second.enter_context(sem)
    in_second = sem.fencing_token
    redis_client.zrem(f"pottery-semaphore:{{{unique_key}}}:leases", f"{in_first}:{sem.holder_id}")
    first.close()
    assert [p.token for p in sem.permits] == [in_second]
    assert probe.value == 1, "the second stack's block runs on no permit"
    second.close()
    assert sem.permits == [] and probe.value == 2
    # One stack, two blocks: left last in, first out.
    seen = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(sem)
        outer = sem.fencing_token
        stack.callback(lambda: seen.append([p.token for p in sem.permits]))
        stack.enter_context(sem)
    assert seen == [[outer]] and sem.permits == []


def test_nested_blocks_through_a_wrapper_each_leave_their_own(redis_client, unique_key):
    """A context manager whose __enter__ and __exit__ call the semaphore's: entered and left
    from the wrapper's frames, nested blocks are left innermost first, as before stacks were
    told apart (that made them release nothing)."""
    sem = Semaphore(value=2, key=unique_key, masters={redis_client})

    class Guard:
        def __enter__(self):
            return sem.__enter__()

        def __exit__(self, *exc):
            return sem.__exit__(*exc)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Guard():
            outer = sem.fencing_token
            with Guard():
                pass
            assert [p.token for p in sem.permits] == [outer]
    assert sem.permits == []


def test_a_with_block_in_an_exit_stack_subclass_is_not_the_stacks(redis_client, unique_key):
    """A plain `with` in a method of an ExitStack subclass is not one the stack entered: closing
    the stack inside it leaves the stack's block, not the running one."""
    sem = Semaphore(value=2, key=unique_key, masters={redis_client})

    class Worker(contextlib.ExitStack):
        def start(self):
            self.enter_context(sem)

        def step(self):
            with sem:
                running = sem.fencing_token
                self.close()
                assert [p.token for p in sem.permits] == [running]

    worker = Worker()
    worker.start()
    worker.step()
    assert sem.permits == []


def test_blocks_that_cannot_be_told_apart_release_nothing(redis_client, unique_key):
    """Stacks moved by pop_all() leave from a stack that entered nothing: of the thread's two
    blocks neither can be told to be the one, so neither is released (with a warning)."""
    sem = Semaphore(value=2, key=unique_key, masters={redis_client})
    moved = []
    for _ in range(2):
        with contextlib.ExitStack() as stack:
            stack.enter_context(sem)
            moved.append(stack.pop_all())
    held = [p.token for p in sem.permits]
    with pytest.warns(RuntimeWarning, match="cannot tell which"):
        moved[0].close()
    assert [p.token for p in sem.permits] == held
    sem.release(2)


def test_a_with_block_gives_back_only_the_permit_it_took(redis_client, unique_key):
    a, b, c = (Semaphore(key=unique_key, masters={redis_client}) for _ in range(3))
    with a:
        # a pauses past its lease: Redis frees the permit, and b takes it.
        redis_client.delete(f"pottery-semaphore:{{{unique_key}}}:leases")
        assert b.acquire(blocking=False)
    assert not c.acquire(blocking=False), "leaving a's block released b's permit: two holders"
    b.release()


async def test_an_async_with_block_gives_back_only_the_permit_it_took(redis_client, unique_key, server):
    import redis.asyncio

    a, b, c = (AIOSemaphore(key=unique_key, masters={redis.asyncio.Redis(port=server.port)}) for _ in range(3))
    async with a:
        redis_client.delete(f"pottery-semaphore:{{{unique_key}}}:leases")
        assert await b.acquire(blocking=False)
    assert not await c.acquire(blocking=False), "leaving a's block released b's permit: two holders"
    await b.release()


def test_a_with_block_left_on_another_thread_gives_back_its_own_permit(redis_client, unique_key):
    sem = Semaphore(value=2, key=unique_key, masters={redis_client})

    def guarded():
        with sem:
            yield

    steps = guarded()
    next(steps)  # entered here, in a generator
    inside, leave = threading.Event(), threading.Event()

    def other_block():
        with sem:
            inside.set()
            leave.wait(10)

    other = threading.Thread(target=other_block)
    other.start()
    inside.wait(10)
    first, second = sorted(p.token for p in sem.permits)
    finishing = threading.Thread(target=lambda: next(steps, None))  # left there, as a thread pool may
    finishing.start()
    finishing.join()
    assert [p.token for p in sem.permits] == [second], "the generator's block gave back another block's permit"
    leave.set()
    other.join()
    assert sem.value == 2


async def test_async_exit_stacks_closed_out_of_order_each_leave_their_own_block(unique_key, server):
    """As with ExitStack: each AsyncExitStack gives back the permit it took."""
    import redis.asyncio

    aio = AIOSemaphore(value=2, key=unique_key, masters={redis.asyncio.Redis(port=server.port)})
    first, second = contextlib.AsyncExitStack(), contextlib.AsyncExitStack()
    await first.enter_async_context(aio)
    in_first = aio.fencing_token
    await second.enter_async_context(aio)
    in_second = aio.fencing_token
    await first.aclose()
    assert [p.token for p in await aio.permits()] == [in_second], f"the first stack's was {in_first}"
    await second.aclose()
    assert await aio.permits() == []


async def test_an_async_with_block_left_by_another_task_gives_back_its_own_permit(unique_key, server):
    import redis.asyncio

    aio = AIOSemaphore(value=2, key=unique_key, masters={redis.asyncio.Redis(port=server.port)})

    async def guarded():
        async with aio:
            yield

    steps = guarded()
    await steps.__anext__()
    inside, leave = asyncio.Event(), asyncio.Event()

    async def other_block():
        async with aio:
            inside.set()
            await leave.wait()

    other = asyncio.ensure_future(other_block())
    await inside.wait()
    first, second = sorted(p.token for p in await aio.permits())
    await asyncio.ensure_future(steps.aclose())  # as asyncio's finalizer closes an abandoned generator
    assert [p.token for p in await aio.permits()] == [second], "the generator's block gave back another block's permit"
    leave.set()
    await other
    assert await aio.get_value() == 2


def test_a_release_beside_a_with_block_leaves_the_block_its_permit(redis_client, unique_key):
    """One handle, a ``with`` block running and, beside it, an acquire then a release: the
    release took the lowest token, the block's, so the block's end released nothing and the
    permit acquired beside it stayed held (and refreshed) for as long as the object lived."""
    sem = Semaphore(value=2, key=unique_key, masters={redis_client})
    probe = Semaphore(value=2, key=unique_key, masters={redis_client})
    with sem:
        assert sem.acquire(blocking=False)
        sem.release()
        assert len(sem.permits) == 1, "the block's permit is still held"
    assert probe.holders() == [], "a permit stayed held after the block and the release"


@pytest.mark.parametrize("side", ["sync", "asyncio"])
def test_a_release_between_a_with_blocks_grant_and_its_recording_leaves_the_block_its_permit(redis_client, unique_key, side):
    """As above, the acquire and release beside the block coming between the block's grant and
    the SDK's record of it (on another thread, or in a signal's handler, in the real world):
    the host spares the permit from the grant on, before any step of the SDK's."""
    probe = Semaphore(value=2, key=unique_key, masters={redis_client})
    if side == "sync":
        sem = Semaphore(value=2, key=unique_key, masters={redis_client})
        real_enter = sem._blocks.enter

        def beside_then_enter(*args):
            assert sem.acquire(blocking=False)
            sem.release()
            real_enter(*args)

        sem._blocks.enter = beside_then_enter
        with sem:
            assert len(sem.permits) == 1, "the block's permit is still held"
    else:
        aio = AIOSemaphore(value=2, key=unique_key, masters={redis_client})

        async def block():
            real_enter = aio._blocks.enter
            entered = []

            def beside_then_enter(*args):
                entered.append(args)

            aio._blocks.enter = beside_then_enter
            async with aio:
                assert await aio.acquire(blocking=False)
                await aio.release()
                real_enter(*entered[0])
                assert len(await aio.permits()) == 1, "the block's permit is still held"

        asyncio.run(block())
    assert probe.holders() == [], "a permit stayed held after the block and the release"


def test_a_release_while_a_with_block_is_being_left_leaves_the_block_its_permit(redis_client, unique_key):
    """As above, the acquire and release beside the block coming while it is being left, after
    it was found and before its own release: the block's permit is still spared then."""
    sem = Semaphore(value=2, key=unique_key, masters={redis_client})
    probe = Semaphore(value=2, key=unique_key, masters={redis_client})
    real = sem._call

    def beside_first(method, *args):
        if method == "release_permits":
            assert sem.acquire(blocking=False)
            sem.release()
        return real(method, *args)

    sem._call = beside_first
    with sem:
        pass
    sem._call = real
    assert probe.holders() == [], "a permit stayed held after the block and the release"
    assert sem._blocks._open == []


@pytest.mark.parametrize("moment", ["moving", "interrupted"])
def test_a_release_in_the_steps_of_leaving_a_with_block_leaves_the_block_its_permit(redis_client, unique_key, moment):
    """The same, the release beside the block coming inside the steps of leaving it: as the
    block leaves the record ("moving"); or, when a signal's handler raised before the block's
    release went out ("interrupted"), as ``__exit__`` is about to give it back once more.
    Neither moment may leave the block's permit unspared."""
    sem = Semaphore(value=2, key=unique_key, masters={redis_client})
    probe = Semaphore(value=2, key=unique_key, masters={redis_client})

    def beside():
        assert sem.acquire(blocking=False)
        sem.release()

    if moment == "moving":
        class Open(list):
            def remove(self, block):
                super().remove(block)
                beside()

        sem._blocks._open = Open()
        with sem:
            pass
    else:
        real_call, real_native = sem._call, sem._native

        class BesideFirst:
            """The native handle, with the release beside coming just before the block's
            permit is given back once more."""

            def __getattr__(self, name):
                return getattr(real_native, name)

            def release_permits(self, tokens):
                beside()
                return real_native.release_permits(tokens)

        def interrupted(method, *args):
            if method == "release_permits":
                sem._native = BesideFirst()
                raise _Interrupted()
            return real_call(method, *args)

        sem._call = interrupted
        with pytest.raises(_Interrupted):
            with sem:
                pass
        sem._call, sem._native = real_call, real_native
    assert probe.holders() == [], f"{moment}: a permit stayed held after the block and the release"


def test_a_release_by_a_handler_that_ran_inside_the_block_bookkeeping_does_not_hang(redis_client, unique_key):
    """A signal's handler runs between any two bytecodes, also while this thread holds the
    blocks' lock; one that releases must not wait for that lock (it never would be let go).
    (Here it runs as the block is left; see README for one that runs as it is entered.)"""
    sem = Semaphore(value=2, key=unique_key, masters={redis_client})

    class HandlerRunsInside:
        def __init__(self):
            self.lock, self.uses = threading.Lock(), 0

        def __enter__(self):
            self.lock.acquire()
            self.uses += 1
            if self.uses == 2:
                assert sem.acquire(blocking=False)
                sem.release()

        def __exit__(self, *exc_info):
            self.lock.release()

    sem._blocks._lock = HandlerRunsInside()
    assert _a_block_ends_on_a_thread(sem), "the release inside the bookkeeping waited for its lock forever"
    assert sem.value == 2


def _a_block_ends_on_a_thread(sem) -> bool:
    """Runs ``with sem: pass`` on a thread of its own; whether it ended within 10 s."""
    done = threading.Event()

    def block():
        with sem:
            pass
        done.set()

    threading.Thread(target=block, daemon=True).start()
    return done.wait(10)


def test_a_with_block_run_by_a_handler_inside_the_block_bookkeeping_does_not_hang(redis_client, unique_key):
    """As above, with a handler that runs a `with` block of its own: its bookkeeping takes the
    blocks' lock that this thread holds already."""
    sem = Semaphore(value=2, key=unique_key, masters={redis_client})

    class HandlerRunsInside:
        def __init__(self, real):
            self.real, self.uses = real, 0

        def __enter__(self):
            self.real.__enter__()
            self.uses += 1
            if self.uses == 2:  # the block's leave()
                with sem:
                    pass

        def __exit__(self, *exc_info):
            return self.real.__exit__(*exc_info)

    sem._blocks._lock = HandlerRunsInside(sem._blocks._lock)
    assert _a_block_ends_on_a_thread(sem), "the handler's block waited for the bookkeeping's lock forever"
    assert sem.value == 2
    assert sem.holders() == []


def test_an_exit_handed_to_an_exit_stack_releases_a_permit_from_acquire(redis_client, unique_key):
    """``__exit__`` is ``release()`` in the original: ``acquire()`` then ``ExitStack.push(sem)``
    gives the permit back when the stack closes, also inside a `with` block of the semaphore."""
    sem = Semaphore(value=2, key=unique_key, masters={redis_client})
    assert sem.acquire()
    with contextlib.ExitStack() as stack:
        stack.push(sem)
    assert sem.holders() == [], "the permit from acquire() stayed held"
    with sem:
        assert sem.acquire()
        with contextlib.ExitStack() as stack:
            stack.push(sem)
        assert sem.value == 1
    assert sem.holders() == [], "a permit stayed held after the block and the pushed exit"


async def test_an_async_exit_handed_to_an_exit_stack_releases_a_permit_from_acquire(unique_key, server):
    import redis.asyncio

    aio = AIOSemaphore(value=2, key=unique_key, masters={redis.asyncio.Redis(port=server.port)})
    probe = Semaphore(value=2, key=unique_key, masters={server.client()})
    assert await aio.acquire()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_exit(aio)
    assert probe.holders() == [], "the permit from acquire() stayed held"


async def test_a_release_beside_an_async_with_block_leaves_the_block_its_permit(unique_key, server):
    import redis.asyncio

    aio = AIOSemaphore(value=2, key=unique_key, masters={redis.asyncio.Redis(port=server.port)})
    probe = Semaphore(value=2, key=unique_key, masters={server.client()})
    async with aio:
        assert await aio.acquire(blocking=False)
        await aio.release()
        assert len(await aio.permits()) == 1, "the block's permit is still held"
    assert probe.holders() == [], "a permit stayed held after the block and the release"


def _signal_main_thread_after(seconds, handler):
    """Installs `handler` for SIGUSR1 and sends it to the main thread after `seconds`; returns
    a function that waits for the sender and puts the previous handler back."""
    previous = signal.signal(signal.SIGUSR1, handler)
    main = threading.main_thread().ident
    sender = threading.Timer(seconds, lambda: signal.pthread_kill(main, signal.SIGUSR1))
    sender.start()

    def restore():
        sender.join()
        signal.signal(signal.SIGUSR1, previous)

    return restore


class _Interrupted(Exception):
    pass


def _raise_interrupted(signum, frame):
    raise _Interrupted()


# At 0.3 s the wait is in its first pop. With a 1 s lease, at 1 s it pops on a connection kept
# from a heartbeat (every third of a second), whose broken read was once taken for a dropped
# connection and the pop sent again: Ctrl-C then did nothing until a permit came.
@pytest.mark.parametrize("after, lease", [(0.3, 10.0), (1.0, 1.0)], ids=["first pop", "after heartbeats"])
def test_a_signal_ends_a_blocking_acquire_on_the_main_thread_and_keeps_nothing(redis_client, unique_key, after, lease):
    """Python acts on a signal (Ctrl-C) only between its own steps, but the signal also breaks
    the native wait's read from Redis (EINTR): the acquire ends at once, leaves the queue and
    keeps no permit, and the handler's exception follows."""
    holder = Semaphore(key=unique_key, masters={redis_client})
    waiter = Semaphore(key=unique_key, masters={redis_client}, lease=lease)
    assert holder.acquire()
    restore = _signal_main_thread_after(after, _raise_interrupted)
    started = time.monotonic()
    try:
        with pytest.raises(_Interrupted):
            waiter.acquire(timeout=after + 3)
        waited = time.monotonic() - started
    finally:
        restore()
    assert waited < after + 0.6, f"the signal ended the wait only after {waited:.2f} s"
    # The host leaves the queue in the background, right after the cancellation.
    deadline = time.monotonic() + 2
    while waiter.waiters() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert waiter.waiters() == [], "the interrupted waiter stayed queued"
    holder.release()
    assert waiter.acquire(timeout=2), "the handle is still usable"
    assert len(waiter.permits) == 1, "it holds the one permit it took, nothing from the interrupted wait"
    waiter.release()


def test_a_signal_whose_handler_returns_does_not_end_the_acquire(redis_client, unique_key):
    """A handler that only notes the signal (a reload flag, a profiler's tick): the acquire
    waits on and is granted, instead of failing as if Redis were unreachable."""
    holder = Semaphore(key=unique_key, masters={redis_client})
    waiter = Semaphore(key=unique_key, masters={redis_client})
    assert holder.acquire()
    seen = []
    restore = _signal_main_thread_after(0.3, lambda signum, frame: seen.append(signum))
    releaser = threading.Timer(1.0, holder.release)
    releaser.start()
    try:
        assert waiter.acquire(timeout=4), "the signal failed the acquire"
    finally:
        restore()
        releaser.join()
    assert seen == [signal.SIGUSR1]
    assert len(waiter.permits) == 1
    waiter.release()


def test_a_signal_sent_to_the_process_during_a_script_still_ends_the_wait(unique_key):
    """A signal sent to the process (Ctrl-C, kill) while a script's reply is on its way, which the
    calling thread holds back meanwhile: the SDK's own threads must not take it instead (its
    handler then runs there, and the wait it should end goes on to its time-out). Run in a
    process of its own, whose only other threads are the SDK's."""
    from conftest import Server, python_worker

    server = Server("--enable-debug-command", "yes")
    try:
        done = subprocess.run(python_worker("signalled", server.url, unique_key), capture_output=True, text=True, timeout=20)
    finally:
        server.close()
    assert done.returncode == 0, done.stderr
    outcome = done.stdout.split()
    assert outcome[0] == "raised", done.stdout
    # The reply comes after the server's 2 s sleep; then the wait ends at once, not at 8 s.
    assert float(outcome[1]) < 5, f"the wait ended {outcome[1]} s after it began"


@contextlib.contextmanager
def _sigusr1_every_millisecond(handler, seconds):
    """SIGUSR1 sent to the main thread every millisecond for ``seconds``, handled by
    ``handler``. The sender stops by itself at the end: a raising handler may fire anywhere in
    this clean-up too (even before its first step, which nothing in Python can prevent), and a
    sender left running would then bombard every test after it, and the interpreter's exit."""
    previous = signal.signal(signal.SIGUSR1, handler)
    main, stop = threading.main_thread().ident, threading.Event()
    ends = time.monotonic() + seconds

    def send():
        while not stop.wait(0.001) and time.monotonic() < ends:
            signal.pthread_kill(main, signal.SIGUSR1)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        yield ends
    finally:
        # The last signals land while the sender is stopped: a handler that raised then would
        # fail the test's own clean-up.
        quiet = lambda: signal.signal(signal.SIGUSR1, lambda signum, frame: None)  # noqa: E731
        for step in (quiet, stop.set, sender.join, lambda: signal.signal(signal.SIGUSR1, previous)):
            ps._common.despite_signals(step)


def test_signals_during_scripts_neither_fail_calls_nor_leave_permits(redis_client, unique_key):
    """Signals whose handler returns, sent to the main thread every millisecond while it takes
    and gives back a permit: each one that lands while a script's reply is on its way once broke
    the read (EINTR), which was taken for a dropped connection: the script ran a second time (a
    permit or a place in the queue left behind for a lease) or the call failed as if Redis were
    unreachable. Now the reply is read, and the calls go on as if nothing happened."""
    sem = Semaphore(key=unique_key, masters={redis_client})
    probe = Semaphore(key=unique_key, masters={redis_client})
    seen = []
    cycles = 0
    with _sigusr1_every_millisecond(lambda signum, frame: seen.append(signum), 2) as ends:
        while time.monotonic() < ends:
            with sem:
                pass
            assert sem.acquire(blocking=False), f"a free permit was refused after {cycles} cycles"
            sem.release()
            cycles += 1
    assert len(seen) > 100, f"only {len(seen)} signals were handled"
    assert (probe.holders(), probe.waiters()) == ([], []), f"left behind after {cycles} cycles and {len(seen)} signals"


def test_signals_whose_handler_raises_leave_no_permit_behind(redis_client, unique_key):
    """As above, with a handler that raises. One that lands while a grant's reply is on its way
    runs once the call returns, before the caller has seen the permits: they stayed held (and
    refreshed) for as long as the object lived. Now what the interrupted call granted is given
    back, and a ``with`` block interrupted on entering or leaving keeps nothing either."""
    sem = Semaphore(value=10_000, key=unique_key, masters={redis_client})
    probe = Semaphore(value=10_000, key=unique_key, masters={redis_client})
    cycles, interrupted = 0, 0
    ends = time.monotonic() + 2
    try:
        with _sigusr1_every_millisecond(_raise_interrupted, 2):
            while time.monotonic() < ends:
                # An exception may land in the loop's own steps too (its test, this try): the
                # loop goes on.
                try:
                    while time.monotonic() < ends:
                        try:
                            with sem:
                                cycles += 1
                        except _Interrupted:
                            interrupted += 1
                except _Interrupted:
                    interrupted += 1
    except _Interrupted:
        pass  # one that landed in entering or in the clean-up, before its first step
    try:
        # Quiet from here on, whatever of the clean-up that exception skipped (the sender stops
        # by itself at its end).
        ps._common.despite_signals(lambda: signal.signal(signal.SIGUSR1, lambda signum, frame: None))
    except _Interrupted:
        pass
    assert interrupted > 100, f"only {interrupted} of {cycles} cycles were interrupted"
    assert probe.holders() == [], f"left behind after {cycles} cycles, {interrupted} interrupted"


def _take_a_permit(sem, entry):
    """``sem.acquire()``, or a ``with sem:`` block, as ``entry`` says."""
    if entry == "acquire":
        sem.acquire()
    else:
        with sem:
            pass


@pytest.mark.parametrize("entry", ["acquire", "with"])
def test_a_handler_that_acquires_before_raising_leaves_no_permit_behind(redis_client, unique_key, entry):
    """A signal's handler that runs right after a grant, takes and gives back a permit itself
    (of another semaphore) and then raises: only the thread's last grant could be given back,
    the handler's, so the interrupted one stayed held for as long as the object lived. (The
    handler is run here by the call itself, at that moment.)"""
    sem = Semaphore(key=unique_key, masters={redis_client})
    other = Semaphore(key=unique_key + "-other", masters={redis_client})
    probe = Semaphore(key=unique_key, masters={redis_client})
    real = sem._call

    def granted_then_handler(method, *args):
        result = real(method, *args)
        if method == "acquire_interruptible":
            assert other.acquire(blocking=False)
            other.release()
            raise _Interrupted()
        return result

    sem._call = granted_then_handler
    with pytest.raises(_Interrupted):
        _take_a_permit(sem, entry)
    assert probe.holders() == [], f"{entry}: the interrupted grant stayed held"


def test_a_release_from_another_thread_beside_an_interrupted_grant_does_not_take_it(redis_client, unique_key):
    """A plain acquire's grant that a handler raising right after it gives back: a release()
    of the same object from another thread in between must take the object's other permit, not
    that grant (which would leave the give-back nothing, and the other permit held for as long
    as the object lived). (The other thread's calls are made here by the call itself, at that
    moment, on the native handle.)"""
    sem = Semaphore(value=2, key=unique_key, masters={redis_client})
    probe = Semaphore(value=2, key=unique_key, masters={redis_client})
    real = sem._call

    def granted_then_other_thread_then_handler(method, *args):
        result = real(method, *args)
        if method == "acquire_interruptible":
            assert sem._native.acquire(1, False, None, False)
            sem._native.release(1)
            raise _Interrupted()
        return result

    sem._call = granted_then_other_thread_then_handler
    with pytest.raises(_Interrupted):
        sem.acquire()
    assert probe.holders() == [], "a permit stayed held"


@pytest.mark.parametrize("entry", ["acquire", "with"])
def test_a_second_handler_that_raises_during_a_give_back_leaves_no_permit_behind(redis_client, unique_key, entry):
    """A handler raises right after a grant, and while that grant is given back another raises,
    just as the native call that took the grant's record out returned: the tokens it returned
    were lost, and the permit stayed held for as long as the object lived. (The second handler
    is run here by that call itself, at that moment.)"""
    sem = Semaphore(key=unique_key, masters={redis_client})
    probe = Semaphore(key=unique_key, masters={redis_client})
    real_call, real_native = sem._call, sem._native
    second = []

    class SecondSignal:
        """The native handle, raising once just after the call that takes a grant out."""

        def __getattr__(self, name):
            method = getattr(real_native, name)
            if name not in ("take_grant", "give_back_grant"):
                return method

            def then_raise(*args):
                result = method(*args)
                if not second:
                    second.append(name)
                    raise _Interrupted()
                return result

            return then_raise

    def granted_then_handler(method, *args):
        result = real_call(method, *args)
        if method == "acquire_interruptible":
            sem._native = SecondSignal()
            raise _Interrupted()
        return result

    sem._call = granted_then_handler
    with pytest.raises(_Interrupted):
        _take_a_permit(sem, entry)
    sem._call, sem._native = real_call, real_native
    assert second, "the second handler did not run"
    assert probe.holders() == [], f"{entry}: the permit stayed held after the second handler"


def test_a_clean_up_that_handlers_interrupt_runs_to_its_end_and_keeps_their_exceptions():
    """``despite_signals``: the step runs again after each handler's exception; the last is
    raised once it is done, with the ones before it as its context (a ``SystemExit`` between two
    ``KeyboardInterrupt``s vanished)."""
    from pottery_semaphore import _common

    raising = [KeyboardInterrupt("first"), SystemExit("second"), KeyboardInterrupt("third")]
    attempts = []

    def step():
        attempts.append(1)
        if raising:
            raise raising.pop(0)

    with pytest.raises(KeyboardInterrupt) as raised:
        _common.despite_signals(step)
    assert len(attempts) == 4, "the step ran to its end"
    chain = []
    e = raised.value
    while e is not None:
        chain.append(str(e))
        e = e.__context__
    assert chain == ["third", "second", "first"], chain


@pytest.mark.parametrize("step", ["enter", "leave"])
def test_a_with_block_interrupted_in_its_bookkeeping_keeps_nothing(redis_client, unique_key, step):
    """A signal's handler that raises right after the block was recorded (entering) or found
    (leaving): the permit was kept, or the record stayed behind, for as long as the object
    lived. (Raised here by the bookkeeping itself, at the worst moment.)"""
    sem = Semaphore(key=unique_key, masters={redis_client})
    probe = Semaphore(key=unique_key, masters={redis_client})
    real = getattr(sem._blocks, step)

    def interrupted(*args):
        real(*args)
        raise _Interrupted()

    setattr(sem._blocks, step, interrupted)
    with pytest.raises(_Interrupted):
        with sem:
            pass
    assert probe.holders() == [], f"interrupted on {step}: the permit stayed held"
    assert sem._blocks._open == [], f"interrupted on {step}: the block stayed recorded"


def test_a_with_block_interrupted_before_its_block_is_found_keeps_nothing(redis_client, unique_key):
    """A handler that raises inside ``__exit__`` before the block is found (here: as leaving
    takes the bookkeeping's lock): the block is looked for again and released."""
    sem = Semaphore(key=unique_key, masters={redis_client})
    probe = Semaphore(key=unique_key, masters={redis_client})

    class RaisingOnSecondUse:
        def __init__(self):
            self.lock, self.uses = threading.Lock(), 0

        def __enter__(self):
            self.uses += 1
            if self.uses == 2:
                raise _Interrupted()
            self.lock.acquire()

        def __exit__(self, *exc_info):
            self.lock.release()

    sem._blocks._lock = RaisingOnSecondUse()
    with pytest.raises(_Interrupted):
        with sem:
            pass
    assert probe.holders() == [], "the permit stayed held"
    assert sem._blocks._open == [], "the block stayed recorded"


def test_an_aiosemaphore_first_used_from_event_loops_on_three_threads(unique_key, server, monkeypatch):
    """Its first call opens it; three threads' event loops make that call at once. The opening
    was guarded by one asyncio.Lock, which serves one loop: the second loop waited on it and was
    woken from the first loop's thread (missed until something else woke it), the third was
    refused ("bound to a different event loop")."""
    from pottery_semaphore import _cancel_safe

    opening = _cancel_safe.open_semaphore

    async def slow_open(options):
        await asyncio.sleep(0.3)
        return await opening(options)

    monkeypatch.setattr(_cancel_safe, "open_semaphore", slow_open)
    aio = AIOSemaphore(value=2, key=unique_key, masters={f"redis://127.0.0.1:{server.port}"})
    values, errors = [], []

    def first_call():
        try:
            values.append(asyncio.run(asyncio.wait_for(aio.get_value(), 5)))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=first_call) for _ in range(3)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    took = time.monotonic() - started
    assert (values, errors) == ([2, 2, 2], []), f"after {took:.1f} s"
    assert took < 3, f"the first calls took {took:.1f} s"


async def test_async_api(redis_client, unique_key, server):
    import redis.asyncio

    sem = AIOSemaphore(value=2, key=unique_key, masters={redis.asyncio.Redis(port=server.port)})
    assert await sem.get_value() == 2
    assert await sem.get_initial_value() == 2
    assert await sem.acquire()
    assert await sem.get_value() == 1
    assert [h.holder for h in await sem.holders()] == [sem.holder_id]
    assert await sem.waiters() == []
    assert (sem.key, sem.lease) == (unique_key, 10.0)
    assert AIOSemaphore(key="", lease=2.5).key == ps.DEFAULT_KEY
    async with sem:
        assert await sem.locked()
    assert not await sem.locked()
    await sem.release()
    with pytest.raises(BoundedSemaphoreError):
        await sem.release()
    with pytest.raises(ValueError, match="^n must be >= 1$"):
        await sem.release(0)
    assert repr(sem) == f"<AIOSemaphore key='{unique_key}' bounded=True>"


def test_a_forked_child_refuses_the_parents_semaphore_and_opens_its_own(redis_client, unique_key):
    """A handle lives on the threads of the process that opened it, which a child made by
    fork() does not have: every use there raises, before touching the handle, and a semaphore
    created in the child works (on a runtime of its own)."""
    sem = Semaphore(key=unique_key, masters={redis_client})
    assert sem.acquire()
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        code = 1
        try:
            uses = [lambda: sem.value, lambda: sem.fencing_token, lambda: sem.key, sem.lost_permits, sem.release]
            refused = 0
            for use in uses:
                try:
                    use()
                except SemaphoreError:
                    refused += 1
            own = Semaphore(value=1, key=unique_key + "-child", masters={redis_client})
            code = 0 if refused == len(uses) and own.acquire(blocking=False) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child could use the parent's handle, or not open its own"
    assert sem.value == 0, "the child released nothing of the parent's"
    sem.release()


def test_a_fork_while_another_thread_starts_the_runtime_leaves_the_child_able_to_start_its_own(tmp_path, server):
    """The first semaphore of a process starts the runtime, compiling the component for seconds
    when nothing is cached. A fork meanwhile (multiprocessing, from the main thread) once left the
    child the runtime's lock held by a thread it does not have: its first semaphore hung."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import os, signal, sys, threading, time
        import redis
        from pottery_semaphore import Semaphore
        client = redis.Redis(port={server.port})
        opener = threading.Thread(target=lambda: Semaphore(key="fork-while-starting", masters={{client}}))
        opener.start()
        time.sleep(0.5)
        pid = os.fork()
        if pid == 0:
            signal.alarm(60)
            sem = Semaphore(key="fork-while-starting-child", masters={{client}})
            os._exit(0 if sem.acquire(timeout=5) else 3)
        _, status = os.waitpid(pid, 0)
        opener.join()
        sys.exit(os.waitstatus_to_exitcode(status))
    """)
    env = dict(os.environ, POTTERY_SEMAPHORE_CACHE_DIR=str(tmp_path))  # nothing cached: it compiles
    done = subprocess.run([sys.executable, "-c", script], env=env, timeout=180)
    assert done.returncode == 0, f"the child ended with {done.returncode} (242: killed by its alarm, it hung)"


def test_an_aiosemaphore_created_before_a_fork_and_never_opened_works_in_the_child(redis_client, unique_key):
    """An ``AIOSemaphore`` does no I/O until first used (a module-level one, then gunicorn's
    --preload or multiprocessing's fork): the child opens it as its own, with locks of its own,
    and before that reads it as not opened."""
    import redis.asyncio

    aio = AIOSemaphore(value=1, key=unique_key, masters={redis.asyncio.Redis(port=redis_client.connection_pool.connection_kwargs["port"])})
    # Held by another thread of the parent at the fork: never let go in the child.
    aio._open_lock.acquire()
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        code = 1

        async def use() -> bool:
            taken = await aio.acquire(blocking=False)
            await aio.release()
            return taken and await aio.get_value() == 1

        signal.alarm(30)  # a hang on the inherited lock ends the child
        try:
            unopened = aio.holder_id is None and aio.lost_permits() == [] and aio.fencing_token is None
            code = 0 if unopened and asyncio.run(use()) else 2
        finally:
            os._exit(code)
    aio._open_lock.release()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child could not use a semaphore it opened itself"


def test_repr(redis_client, unique_key):
    sem = Semaphore(value=3, key=unique_key, masters={redis_client})
    assert repr(sem) == f"<Semaphore key='{unique_key}' value=3/3 bounded=True>"


def test_extras_n_lease_fencing_and_inspection(redis_client, unique_key):
    sem = Semaphore(value=3, key=unique_key, masters={redis_client}, lease=2.0)
    assert sem.lease == 2.0
    assert sem.fencing_token is None and sem.lease_deadline is None
    assert sem.acquire(n=2)
    assert sem.value == 1
    permits = sem.permits
    assert len(permits) == 2 and permits[0].token < permits[1].token
    assert sem.fencing_token == permits[1].token
    assert sem.lease_deadline is not None and 0 < permits[0].ttl_ms <= 2000
    other = Semaphore(value=3, key=unique_key, masters={redis_client})
    assert other.acquire()
    assert other.fencing_token > sem.fencing_token, "tokens increase with every grant"
    status = sem.status()
    assert (status.capacity, status.available) == (3, 0)
    assert {h.holder for h in sem.holders()} == {sem.holder_id, other.holder_id}
    assert sem.waiters() == []
    # Fungible release: other gives back 2, its own and one of sem's, which sem learns of.
    other.release(2)
    deadline = time.monotonic() + 5
    lost = []
    while not lost and time.monotonic() < deadline:
        lost = sem.lost_permits()
        time.sleep(0.05)
    assert len(lost) == 1 and lost[0].token in {p.token for p in permits}


def test_leases_are_refreshed_while_held(redis_client, unique_key):
    sem = Semaphore(value=1, key=unique_key, masters={redis_client}, lease=0.6)
    assert sem.acquire()
    time.sleep(1.5)
    assert sem.value == 0 and sem.lost_permits() == []
    sem.release()


def test_waiters_are_listed_in_order(redis_client, unique_key):
    holder = Semaphore(value=1, key=unique_key, masters={redis_client})
    assert holder.acquire()
    waiter = Semaphore(value=1, key=unique_key, masters={redis_client})
    t = threading.Thread(target=lambda: waiter.acquire(timeout=5) and waiter.release())
    t.start()
    deadline = time.monotonic() + 5
    while not holder.waiters() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [w.holder for w in holder.waiters()] == [waiter.holder_id]
    holder.release()
    t.join(5)
    assert not t.is_alive()


def test_public_names_are_importable_and_documented():
    for name in ps.__all__:
        obj = getattr(ps, name)
        if name == "DEFAULT_KEY":
            continue
        assert obj.__doc__, f"{name} has no docstring"
        for attr, member in vars(obj).items() if isinstance(obj, type) else []:
            if not attr.startswith("_") and callable(member) or isinstance(member, property):
                if not attr.startswith("_"):
                    assert getattr(member, "__doc__", None), f"{name}.{attr} has no docstring"
    # The original package's names.
    from pottery_semaphore import AIORedisCounter, AIORedisSimpleQueue, QueueEmpty  # noqa: F401


def test_empty_key_names_the_default_semaphore(redis_client):
    sem = Semaphore(masters={redis_client})
    assert sem.key == ps.DEFAULT_KEY


async def test_original_aio_primitives_still_work(server, unique_key):
    import redis.asyncio

    r = redis.asyncio.Redis(port=server.port)
    counter = ps.AIORedisCounter(redis=r, key=unique_key + ":c")
    await counter.set("permits", 5)
    assert await counter.decr("permits") == 4
    assert await counter.exists("permits") and not await counter.exists("other")
    queue = ps.AIORedisSimpleQueue(redis=r, key=unique_key + ":q")
    await queue.put({"a": 1})
    assert await queue.qsize() == 1
    assert await queue.get(block=False) == {"a": 1}
    with pytest.raises(ps.QueueEmpty):
        await queue.get(timeout=0.1)


def test_the_stub_lists_every_public_name():
    import ast
    from pathlib import Path

    stub = Path(ps.__file__).with_suffix(".pyi")
    tree = ast.parse(stub.read_text())
    exported = {a.asname for node in tree.body if isinstance(node, ast.ImportFrom) for a in node.names if a.asname}
    assert exported == set(ps.__all__)
    assert (Path(ps.__file__).parent / "py.typed").exists()


async def test_a_semaphore_cannot_be_deep_copied_or_pickled_and_stays_usable(redis_client, unique_key):
    """Each object frees its native handle when it goes: a deep copy (that of an opened
    ``AIOSemaphore`` used to get as far as duplicating the handle before failing) would free it a
    second time, a crash, and a pickle cannot carry it. Both are refused with a TypeError; a
    shallow copy is the object itself."""
    import copy
    import pickle

    sync = Semaphore(value=2, key=unique_key, masters={redis_client})
    aio = AIOSemaphore(value=2, key=unique_key, masters={redis_client})
    assert await aio.get_value() == 2  # opened: it holds its native handle
    for obj in (sync, aio):
        for make in (copy.deepcopy, pickle.dumps):
            with pytest.raises(TypeError, match="cannot be deep-copied or pickled"):
                make(obj)
        assert copy.copy(obj) is obj, "a shallow copy is the object itself"
    assert sync.acquire(blocking=False)
    assert await aio.acquire(blocking=False)
    sync.release()
    await aio.release()
    assert sync.value == 2


def test_a_bounded_error_survives_pickling_and_copying():
    """A process pool hands a worker's exception to the caller pickled: it must load."""
    import copy
    import pickle

    error = BoundedSemaphoreError("k", 2, 1)
    error.add_note("while closing the pool")
    for again in (pickle.loads(pickle.dumps(error)), copy.copy(error), copy.deepcopy(error)):
        assert isinstance(again, BoundedSemaphoreError)
        assert (again.key, again.current, again.initial, str(again)) == ("k", 2, 1, str(error))
        assert again.__notes__ == ["while closing the pool"]
