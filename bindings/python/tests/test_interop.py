"""Sharing: sync and async objects, threads, processes, and a Rust host, on one semaphore."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time

import pytest
import redis.asyncio

from conftest import python_worker, worker_binary
from pottery_semaphore import AIOSemaphore, Semaphore


async def test_sync_and_async_objects_share_one_semaphore(server, unique_key):
    sync = Semaphore(value=2, key=unique_key, masters={server.url})
    aio = AIOSemaphore(value=2, key=unique_key, masters={redis.asyncio.Redis(port=server.port)})
    assert sync.acquire()
    assert await aio.get_value() == 1
    assert await aio.acquire()
    assert sync.value == 0
    assert not sync.acquire(blocking=False)
    await aio.release()
    assert sync.value == 1


async def test_a_blocked_async_waiter_is_woken_by_a_sync_release(server, unique_key):
    sync = Semaphore(value=1, key=unique_key, masters={server.url})
    aio = AIOSemaphore(value=1, key=unique_key, masters={server.url})
    assert sync.acquire()
    waiting = asyncio.ensure_future(aio.acquire(timeout=5))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    released = time.monotonic()
    await asyncio.get_running_loop().run_in_executor(None, sync.release)
    assert await waiting
    assert time.monotonic() - released < 0.2
    await aio.release()


def test_a_thread_blocked_in_acquire_does_not_block_a_release_on_the_same_object(server, unique_key):
    sem = Semaphore(value=1, key=unique_key, masters={server.url})
    assert sem.acquire()
    result = {}

    def wait() -> None:
        result["acquired"] = sem.acquire(timeout=5)

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.3)
    started = time.monotonic()
    sem.release()
    assert time.monotonic() - started < 0.2, "release waited for the blocked acquire"
    t.join(5)
    assert result == {"acquired": True}
    sem.release()


async def test_cancelling_an_awaiting_acquire_leaks_nothing(server, unique_key):
    holder = Semaphore(value=1, key=unique_key, masters={server.url})
    assert holder.acquire()
    aio = AIOSemaphore(value=1, key=unique_key, masters={server.url})
    for _ in range(3):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(aio.acquire(), 0.2)
    await asyncio.sleep(0.3)
    assert holder.waiters() == [], "cancelled waiters left the queue"
    holder.release()
    assert holder.value == 1
    assert holder.holders() == []
    assert await aio.acquire(blocking=False), "the object stays usable"
    await aio.release()


async def cancelled_when_ready(call, monkeypatch, then=None) -> None:
    """Runs `call` as a task cancelled just as its first Rust future reports "ready": Rust has
    finished (the result exists) but the task has not resumed with it. `then`, if given, runs
    right after the cancellation, before the task resumes."""
    from pottery_semaphore._native import pottery_semaphore_ffi as ffi

    task = None
    set_result = ffi._uniffi_set_future_result

    def set_result_then_cancel(future, poll_code):
        set_result(future, poll_code)
        if poll_code == ffi._UNIFFI_RUST_FUTURE_POLL_READY and task is not None:
            task.cancel()
            if then is not None:
                then()

    monkeypatch.setattr(ffi, "_uniffi_set_future_result", set_result_then_cancel)
    task = asyncio.ensure_future(call)
    with pytest.raises(asyncio.CancelledError):
        await task
    monkeypatch.undo()


async def test_cancelling_an_acquire_as_its_grant_arrives_gives_the_permit_back(server, unique_key, monkeypatch):
    # Forces the interleaving wait_for's time-out can hit: Rust has finished the acquire (the
    # handle holds the permit) and the task is cancelled before it resumes with the result.
    aio = AIOSemaphore(value=1, key=unique_key, masters={server.url})
    assert await aio.get_value() == 1
    await cancelled_when_ready(aio.acquire(), monkeypatch)
    assert aio.fencing_token is None, "the handle kept the permit of the cancelled acquire"
    other = Semaphore(value=1, key=unique_key, masters={server.url})
    assert other.holders() == [], "the permit of the cancelled acquire is still held"
    assert other.acquire(blocking=False)
    other.release()


async def test_a_release_beside_a_cancelled_grant_does_not_take_it(server, unique_key, monkeypatch):
    # As above, with a release() of the same object run between the cancellation and the
    # give-back: it must take the handle's other permit, not the grant being given back (which
    # would leave the give-back nothing, and the other permit held with nobody to release it).
    aio = AIOSemaphore(value=2, key=unique_key, masters={server.url})
    assert await aio.get_value() == 2

    def another_task_acquires_and_releases():
        assert aio._native.acquire(1, False, None, False)
        aio._native.release(1)

    await cancelled_when_ready(aio.acquire(), monkeypatch, then=another_task_acquires_and_releases)
    assert aio.fencing_token is None, "the handle kept a permit"
    other = Semaphore(value=2, key=unique_key, masters={server.url})
    assert other.holders() == [], "a permit is still held"


async def test_cancelling_an_open_as_it_finishes_lets_the_handle_go(own_server, unique_key, monkeypatch):
    # As above for the first call, which opens the handle: cancelled once Rust has opened it,
    # the handle must be freed, not kept (with its connections and background tasks) for good.
    probe = own_server.client()

    def clients() -> int:
        return int(probe.info("clients")["connected_clients"])

    baseline = clients()
    aio = AIOSemaphore(value=1, key=unique_key, masters={own_server.url}, guard_fresh_server=False)
    await cancelled_when_ready(aio.get_value(), monkeypatch)
    deadline = time.monotonic() + 3
    while clients() > baseline and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert clients() == baseline, "the cancelled open kept its handle and connections"
    assert await aio.get_value() == 1, "the semaphore opens again"


async def test_a_cancellable_acquire_ends_when_cancelled_and_keeps_nothing(server, unique_key):
    # The FFI call the Swift layer makes: Swift does not drop a cancelled task's future, so its
    # task cancellation reaches Rust through a Cancellation object instead.
    from pottery_semaphore._native import pottery_semaphore_ffi as ffi

    holder = Semaphore(value=1, key=unique_key, masters={server.url})
    assert holder.acquire()
    aio = AIOSemaphore(value=1, key=unique_key, masters={server.url})
    await aio.get_value()
    cancellation = ffi.Cancellation()
    waiting = asyncio.ensure_future(aio._native.acquire_cancellable_async(1, True, None, False, cancellation))
    deadline = time.monotonic() + 3
    while not holder.waiters() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert holder.waiters(), "the acquire did not queue"
    cancelled = time.monotonic()
    cancellation.cancel()
    with pytest.raises(ffi.SemaphoreError.Cancelled):
        await asyncio.wait_for(waiting, 2)  # a time-out here: the cancellation did not reach it
    assert time.monotonic() - cancelled < 0.5
    while holder.waiters() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert holder.waiters() == [], "the cancelled waiter stayed queued"
    holder.release()
    assert aio.fencing_token is None, "the cancelled acquire kept a permit"
    assert await aio.acquire(timeout=2), "the handle is still usable"
    await aio.release()


def test_four_processes_compete_for_two_permits(server, unique_key):
    procs = [
        subprocess.Popen(python_worker("stress", server.url, unique_key, "2", "60"), stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    most = 0
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out
        _, cycles, seen = out.split()
        assert int(cycles) == 60
        most = max(most, int(seen))
    assert server.client().get(f"{unique_key}:violations") is None, "more than 2 holders at once"
    assert most == 2, f"most holders seen: {most}"


def test_a_killed_process_gives_its_permit_back_within_the_lease(server, unique_key):
    lease = 1.5
    proc = subprocess.Popen(python_worker("hold", server.url, unique_key, str(lease)), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("held ")
    sem = Semaphore(value=1, key=unique_key, masters={server.url})
    assert not sem.acquire(blocking=False)
    proc.kill()
    proc.wait()
    killed = time.monotonic()
    assert sem.acquire(timeout=lease * 3)
    assert time.monotonic() - killed <= lease + 0.3
    sem.release()


@pytest.mark.parametrize("rust_holds", [True, False])
def test_a_rust_host_and_python_share_a_semaphore(server, unique_key, rust_holds):
    sem = Semaphore(value=1, key=unique_key, masters={server.url})
    if rust_holds:
        rust = subprocess.Popen([str(worker_binary()), "hold", server.url, unique_key, "1", "10000"], stdout=subprocess.PIPE, text=True)
        assert rust.stdout.readline().startswith("held ")
        assert not sem.acquire(blocking=False), "the Rust holder's permit counts"
        rust.kill()
        rust.wait()
        assert sem.acquire(timeout=12), "and comes back when its lease ends"
        sem.release()
    else:
        assert sem.acquire()
        rust = subprocess.Popen([str(worker_binary()), "wait", server.url, unique_key, "1", "10"], stdout=subprocess.PIPE, text=True)
        assert rust.stdout.readline().strip() == "waiting"
        deadline = time.monotonic() + 5
        while not sem.waiters() and time.monotonic() < deadline:
            time.sleep(0.02)
        sem.release()
        line = rust.stdout.readline().split()
        assert line[0] == "acquired", line
        assert rust.wait(5) == 0
