"""Waits under gevent. A native wait blocks its OS thread, and under gevent the greenlets of a
thread share it: a greenlet waiting for a permit would stop the one holding it from ever
releasing it. So where gevent has patched ``threading`` (``monkey.patch_all()``) and this thread
runs a hub, an acquire waits on an OS thread of its own while its greenlet yields. Not on gevent's
thread pool: its few threads, held for whole waits, would leave later waits (with their
time-outs) and gevent's own DNS look-ups queued behind them. A greenlet interrupted while it
waits (``gevent.Timeout``, ``kill()``) cancels the wait: the waiter leaves the queue, and permits
granted before the cancellation reached it are given back. A thread without a hub (a plain
thread, a pool worker) has no greenlets to hold up and waits natively."""

from __future__ import annotations

import sys
from typing import Any, Callable, List, Optional, Tuple

from . import exceptions as exc
from ._native import pottery_semaphore_ffi as _ffi


def hub() -> Optional[Any]:
    """This thread's gevent hub when gevent has patched ``threading``; else None."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("threading"):
        return None
    from gevent._hub_local import get_hub_if_exists

    return get_hub_if_exists()


def _start_thread(fn: Callable[..., Any], *args: Any) -> None:
    """Runs ``fn`` on a new OS thread (gevent's patched ``_thread`` would make it a greenlet)."""
    from gevent import monkey

    try:
        monkey.get_original("_thread", "start_new_thread")(fn, args)
    except RuntimeError as e:  # "can't start new thread": a limit on threads or processes
        raise exc.SemaphoreRuntimeError(f"no thread to wait on: {e}") from None


def acquire(native: Any, hub: Any, count: int, blocking: bool, seconds: Optional[float], ticket: int) -> Any:
    """The native acquire, run on a thread of its own while this greenlet yields. Its grant is
    kept under ``ticket`` for ``give_back``, as on the caller's own thread."""
    from gevent.event import AsyncResult

    cancellation = _ffi.Cancellation()
    done = AsyncResult()
    outcome: List[Tuple[Any, Optional[BaseException]]] = []
    # Started, the watcher keeps the hub's loop alive until the thread reports: with nothing
    # else to run, the hub would end the wait with LoopExit.
    reported = hub.loop.async_()

    def deliver() -> None:
        reported.close()
        permits, error = outcome[0]
        if error is None:
            done.set(permits)
        else:
            done.set_exception(error)

    def wait() -> None:
        try:
            outcome.append((native.acquire_cancellable(count, blocking, seconds, ticket, cancellation), None))
        except BaseException as e:  # noqa: BLE001 - handed to the waiting greenlet as it is
            outcome.append((None, e))
        try:
            reported.send()  # thread-safe
        except Exception:
            # The hub is gone (its thread ended): nobody will take these.
            _give_back(native, outcome[0][0])

    reported.start(deliver)
    try:
        _start_thread(wait)
    except BaseException:
        reported.close()
        raise
    try:
        return done.get()
    except BaseException:
        cancellation.cancel()
        # Granted before the cancellation reached it (or after ``get`` returned): given back
        # once the thread has answered, on a thread again, so that the hub waits on no Redis.
        done.rawlink(lambda result: _give_back(native, result.value if result.successful() else None))
        raise


def _give_back(native: Any, permits: Optional[List[Any]]) -> None:
    if permits:
        tokens = [p.token for p in permits]
        try:
            _start_thread(_quietly, native.release_permits, tokens)
        except exc.SemaphoreRuntimeError:
            _quietly(native.release_permits, tokens)


def _quietly(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:
        pass  # Redis out of reach: the handle releases them in the background
