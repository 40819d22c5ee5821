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
    """This thread's gevent hub, if gevent is in use, the thread runs one and this is not the
    hub itself (a signal's handler runs there, and may not switch away); else None."""
    if "gevent" not in sys.modules:
        return None
    import gevent
    from gevent._hub_local import get_hub_if_exists

    found = get_hub_if_exists()
    return None if found is None or gevent.getcurrent() is found else found


def _start_thread(fn: Callable[..., Any], *args: Any) -> None:
    """Runs ``fn`` on a new OS thread (a patched ``_thread`` would make it a greenlet)."""
    from gevent import monkey

    try:
        monkey.get_original("_thread", "start_new_thread")(fn, args)
    except RuntimeError as e:  # "can't start new thread": a limit on threads or processes
        raise exc.SemaphoreRuntimeError(f"no thread to wait on: {e}") from None


def acquire(native: Any, hub: Any, count: int, blocking: bool, seconds: Optional[float], ticket: int, spared: bool) -> Any:
    """The native acquire, run on a thread of its own while this greenlet yields. Its grant is
    kept under ``ticket`` for ``take_grant``, as on the caller's own thread; ``spared`` as
    there."""
    from gevent.event import AsyncResult

    cancellation = _ffi.Cancellation()
    done = AsyncResult()
    outcome: List[Tuple[Any, Optional[BaseException]]] = []
    # Appended to (atomically) by the thread as it starts, and by this greenlet as it stops
    # waiting: a thread that starts after that makes no wait, and one that started reports.
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
                result = (native.acquire_cancellable(count, blocking, seconds, ticket, spared, cancellation), None)
            except BaseException as e:  # noqa: BLE001 - handed to the waiting greenlet as it is
                result = (None, e)
        outcome.append(result)
        try:
            if hub.thread_ident not in sys._current_frames():
                raise RuntimeError("the hub's thread ended")
            reported.send()  # thread-safe; nothing when closed
        except Exception:
            # The hub's thread ended (its loop may live on, never to run again) or the hub was
            # destroyed: nobody will take these.
            native.give_back_grant(ticket, True)

    try:
        reported.start(deliver)
        _start_thread(wait)
        permits = done.get()
        # Ours now: until here a release() beside took this grant last (it may be given back),
        # and from now on only if spared.
        native.claim_grant(ticket)
        return permits
    except BaseException:
        abandoned.append(True)
        cancellation.cancel()
        # A grant that raced the end is let go of at once, so that no ``release`` beside takes
        # it for one of this handle's own, and released in the background: taken out here if
        # already made, else by the native call as it returns (it sees the cancellation).
        native.give_back_grant(ticket, True)
        # And whatever the thread still reports (nothing, unless the above missed it).
        done.rawlink(lambda result: result.successful() and _let_go(native, [p.token for p in result.value or []]))
        if not running:
            # The thread did not start (or has not yet: it then sees ``abandoned``).
            reported.close()
        raise


def _let_go(native: Any, tokens: List[int]) -> None:
    """Gives back, in the background, permits the caller never took."""
    if tokens:
        native.give_back_soon(tokens)
