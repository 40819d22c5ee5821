"""Waits under gevent. A native wait blocks its OS thread, and the greenlets of a thread share
it: a greenlet waiting for a permit would stop the one holding it from ever releasing it. So in a
thread that runs a gevent hub, an acquire waits on an OS thread of its own while its greenlet
yields. Not on gevent's thread pool: its few threads, held for whole waits, would leave later
waits (with their time-outs) and gevent's own DNS look-ups queued behind them. A greenlet
interrupted while it waits (``gevent.Timeout``, ``kill()``, a signal's handler that raises)
cancels the wait: the waiter leaves the queue, and permits granted before the cancellation
reached it are given back. A thread without a hub (a plain thread, a worker of gevent's pool)
has no greenlets to hold up and waits natively."""

from __future__ import annotations

import sys
from typing import Any, Callable, List, Optional, Tuple

from . import exceptions as exc
from ._native import pottery_semaphore_ffi as _ffi


def hub() -> Optional[Any]:
    """This thread's gevent hub, if gevent is in use and the thread runs one; else None."""
    if "gevent" not in sys.modules:
        return None
    from gevent._hub_local import get_hub_if_exists

    return get_hub_if_exists()


def _start_thread(fn: Callable[..., Any], *args: Any) -> None:
    """Runs ``fn`` on a new OS thread (a patched ``_thread`` would make it a greenlet)."""
    from gevent import monkey

    try:
        monkey.get_original("_thread", "start_new_thread")(fn, args)
    except RuntimeError as e:  # "can't start new thread": a limit on threads or processes
        raise exc.SemaphoreRuntimeError(f"no thread to wait on: {e}") from None


def release(native: Any, tokens: List[int]) -> None:
    """Gives back exactly these permits, on a thread when this one runs a hub."""
    if hub() is None:
        _quietly(native.release_permits, tokens)
        return
    try:
        _start_thread(_quietly, native.release_permits, tokens)
    except exc.SemaphoreRuntimeError:
        _quietly(native.release_permits, tokens)


def acquire(native: Any, hub: Any, count: int, blocking: bool, seconds: Optional[float], ticket: int) -> Any:
    """The native acquire, run on a thread of its own while this greenlet yields. Its grant is
    kept under ``ticket`` for ``take_grant``, as on the caller's own thread."""
    from gevent.event import AsyncResult

    cancellation = _ffi.Cancellation()
    done = AsyncResult()
    outcome: List[Tuple[Any, Optional[BaseException]]] = []
    # Appended to (atomically) by the thread as it starts, and by this greenlet as it stops
    # waiting: between them, whatever the thread is granted is given back exactly once or more.
    running: List[bool] = []
    abandoned: List[bool] = []
    # Started, the watcher keeps the hub's loop alive until the thread reports: with nothing
    # else to run, the hub would end the wait with LoopExit.
    reported = hub.loop.async_()

    def deliver() -> None:
        try:
            permits, error = outcome[0]
            if error is None:
                done.set(permits)
            else:
                done.set_exception(error)
        finally:
            reported.close()

    def wait() -> None:
        running.append(True)
        result: Tuple[Any, Optional[BaseException]] = (None, None)
        if not abandoned:
            try:
                result = (native.acquire_cancellable(count, blocking, seconds, ticket, cancellation), None)
            except BaseException as e:  # noqa: BLE001 - handed to the waiting greenlet as it is
                result = (None, e)
        outcome.append(result)
        if abandoned and result[0]:
            # The greenlet stopped waiting, and may have closed the watcher before this ran.
            _quietly(native.release_permits, [p.token for p in result[0]])
        try:
            reported.send()  # thread-safe; nothing when closed
        except Exception:
            # The hub is gone (its thread ended): nobody will take these.
            if not abandoned and result[0]:
                _quietly(native.release_permits, [p.token for p in result[0]])

    try:
        reported.start(deliver)
        _start_thread(wait)
        return done.get()
    except BaseException:
        abandoned.append(True)
        cancellation.cancel()
        # A grant that raced the end: given back once the thread has answered (on a thread
        # again, so that the hub waits on no Redis), or by the thread itself.
        done.rawlink(lambda result: result.successful() and result.value and release(native, [p.token for p in result.value]))
        if not running:
            # The thread did not start (or has not yet: it then sees ``abandoned``).
            reported.close()
        raise


def _quietly(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:
        pass  # Redis out of reach: the handle releases them in the background
