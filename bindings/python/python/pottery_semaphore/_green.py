"""Waits under gevent. A native wait blocks its OS thread, and under gevent every greenlet shares
one: a greenlet waiting for a permit would stop the one holding it from ever releasing it. So once
gevent has patched ``threading`` (``monkey.patch_all()``), an acquire waits on gevent's thread pool
and its greenlet yields meanwhile. A greenlet interrupted while it waits (``gevent.Timeout``,
``kill()``) cancels the wait: the waiter leaves the queue, and permits granted before the
cancellation reached it are given back."""

from __future__ import annotations

import sys
from typing import Any, Optional

from ._native import pottery_semaphore_ffi as _ffi


def hub() -> Optional[Any]:
    """gevent's hub of this thread when gevent has patched ``threading``; else None."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("threading"):
        return None
    import gevent

    return gevent.get_hub()


def acquire(native: Any, hub: Any, count: int, blocking: bool, seconds: Optional[float]) -> Any:
    """The native acquire, run on ``hub``'s thread pool while this greenlet yields."""
    cancellation = _ffi.Cancellation()
    waiting = hub.threadpool.spawn(native.acquire_cancellable, count, blocking, seconds, cancellation)
    try:
        return waiting.get()
    except BaseException:
        cancellation.cancel()
        # Granted before the cancellation reached it (or after ``get`` returned): give them back
        # once the pool's thread has answered.
        waiting.rawlink(lambda done: _give_back(native, hub, done))
        raise


def _give_back(native: Any, hub: Any, done: Any) -> None:
    if done.successful() and done.value:
        hub.threadpool.spawn(_quietly, native.release_permits, [p.token for p in done.value])


def _quietly(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except Exception:
        pass  # Redis out of reach: the handle releases them in the background
