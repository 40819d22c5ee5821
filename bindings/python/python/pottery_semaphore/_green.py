"""Waits under gevent. A native wait blocks its OS thread, and under gevent every greenlet shares
one: a greenlet waiting for a permit would stop the one holding it from ever releasing it. So once
gevent has patched ``threading`` (``monkey.patch_all()``), an acquire waits on an OS thread of its
own and its greenlet yields meanwhile. Not on gevent's thread pool: its few threads, held for
whole waits, would leave later waits (with their time-outs) and gevent's own DNS look-ups queued
behind them. A greenlet interrupted while it waits (``gevent.Timeout``, ``kill()``) cancels the
wait: the waiter leaves the queue, and permits granted before the cancellation reached it are
given back."""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional

from ._native import pottery_semaphore_ffi as _ffi


def hub() -> Optional[Any]:
    """gevent's hub of this thread when gevent has patched ``threading``; else None."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("threading"):
        return None
    import gevent

    return gevent.get_hub()


def _start_thread(fn: Callable[..., Any], *args: Any) -> None:
    """Runs ``fn`` on a new OS thread (gevent's patched ``_thread`` would make it a greenlet)."""
    from gevent import monkey

    monkey.get_original("_thread", "start_new_thread")(fn, args)


def acquire(native: Any, hub: Any, count: int, blocking: bool, seconds: Optional[float], ticket: int) -> Any:
    """The native acquire, run on a thread of its own while this greenlet yields. Its grant is
    kept under ``ticket`` for ``give_back``, as on the caller's own thread."""
    from gevent.event import AsyncResult

    cancellation = _ffi.Cancellation()
    done = AsyncResult()

    def wait() -> None:
        # The outcome goes to the hub's thread to be set there (AsyncResult is not thread-safe).
        try:
            permits = native.acquire_cancellable(count, blocking, seconds, ticket, cancellation)
        except BaseException as e:  # noqa: BLE001 - handed to the waiting greenlet as it is
            hub.loop.run_callback_threadsafe(done.set_exception, e)
        else:
            hub.loop.run_callback_threadsafe(done.set, permits)

    _start_thread(wait)
    try:
        return done.get()
    except BaseException:
        cancellation.cancel()
        # Granted before the cancellation reached it (or after ``get`` returned): give them back
        # once the thread has answered, on a thread again, so that the hub never waits on Redis.
        done.rawlink(lambda result: _give_back(native, result))
        raise


def _give_back(native: Any, result: Any) -> None:
    if result.successful() and result.value:
        _start_thread(_quietly, native.release_permits, [p.token for p in result.value])


def _quietly(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:
        pass  # Redis out of reach: the handle releases them in the background
