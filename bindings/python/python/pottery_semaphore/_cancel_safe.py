"""``Semaphore.acquire_async`` and ``Semaphore.open_async`` driven so that cancellation cannot
lose what they produced.

The generated driver (``_uniffi_rust_call_async``) frees the Rust future when its task is
cancelled. That is safe while the call is still running (the host then leaves the queue and
gives back a grant it had not handed over), but not once it has finished: the task can be
cancelled after Rust reported "ready" and before the loop resumed it, and freeing the future then
drops its result unseen: permits the handle already holds (and keeps refreshing), or a whole
opened handle, whose connections and background tasks would live as long as the process. On
cancellation this driver follows UniFFI's protocol instead: ``rust_future_cancel``, then
``rust_future_complete``, which returns the result if the future had finished; such permits are
given back, and such a handle let go, before the cancellation goes on. The Kotlin SDK does the
same (``NativeAcquire.kt``).

Tied to the generated module of the pinned uniffi version: its private names are used here, and
the tests fail if they change.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, List, Optional

from ._native import pottery_semaphore_ffi as _ffi

_lib = _ffi._UniffiLib


class _Kind:
    """The FFI functions of one kind of future (by the type its result crosses as)."""

    def __init__(self, suffix: str, lift: Callable[[Any], Any]) -> None:
        self.poll = getattr(_lib, f"ffi_pottery_semaphore_ffi_rust_future_poll_{suffix}")
        self.cancel = getattr(_lib, f"ffi_pottery_semaphore_ffi_rust_future_cancel_{suffix}")
        self.free = getattr(_lib, f"ffi_pottery_semaphore_ffi_rust_future_free_{suffix}")
        self._complete = getattr(_lib, f"ffi_pottery_semaphore_ffi_rust_future_complete_{suffix}")
        self._lift = lift

    def complete(self, rust_future: Any) -> Any:
        """The finished future's result (raises its error)."""
        lowered = _ffi._uniffi_rust_call_with_error(_ffi._UniffiFfiConverterTypeSemaphoreError, self._complete, rust_future)
        return self._lift(lowered)


_PERMITS = _Kind("rust_buffer", _ffi._UniffiFfiConverterSequenceTypePermit.lift)
_HANDLE = _Kind("u64", _ffi._UniffiFfiConverterTypeSemaphore.lift)


async def _drive(rust_future: Any, kind: _Kind, undo: Callable[[Any], Awaitable[None]]) -> Any:
    """Polls `rust_future` to its result; if the task is cancelled, the result it may already
    have had is handed to `undo` before the cancellation goes on."""
    try:
        try:
            loop = _ffi._uniffi_get_event_loop()
            while True:
                polled = loop.create_future()
                kind.poll(rust_future, _ffi._uniffi_continuation_callback, _ffi._UniffiContinuationHandleMap.insert((loop, polled)))
                if await polled == _ffi._UNIFFI_RUST_FUTURE_POLL_READY:
                    break
        except asyncio.CancelledError:
            # After the cancel, complete returns the finished result, or a "cancelled" status
            # (raised here as an internal error) if there was none.
            kind.cancel(rust_future)
            try:
                done = kind.complete(rust_future)
            except Exception:
                done = None
            if done is not None:
                await undo(done)
            # Not kept alive by the traceback of the cancellation, which refers to this frame.
            done = None
            raise
        return kind.complete(rust_future)
    finally:
        kind.free(rust_future)


async def acquire(native: Any, n: int, blocking: bool, timeout_s: Optional[float], spared: bool) -> List[Any]:
    """``native.acquire_async(n, blocking, timeout_s, spared)``, cancellation-safe (see the module)."""
    _ffi._UniffiFfiConverterInt64.check_lower(n)
    _ffi._UniffiFfiConverterOptionalFloat64.check_lower(timeout_s)
    rust_future = _lib.uniffi_pottery_semaphore_ffi_fn_method_semaphore_acquire_async(
        native._uniffi_clone_handle(),
        _ffi._UniffiFfiConverterInt64.lower(n),
        _ffi._UniffiFfiConverterBoolean.lower(blocking),
        _ffi._UniffiFfiConverterOptionalFloat64.lower(timeout_s),
        _ffi._UniffiFfiConverterBoolean.lower(spared),
    )

    async def give_back(granted: List[Any]) -> None:
        if not granted:
            return
        try:
            await asyncio.shield(native.release_permits_async([p.token for p in granted]))
        except Exception:
            pass  # the host retries a failed release itself; the lease ends it at the latest

    return await _drive(rust_future, _PERMITS, give_back)


async def open_semaphore(options: Any) -> Any:
    """``Semaphore.open_async(options)``, cancellation-safe (see the module)."""
    _ffi._UniffiFfiConverterTypeSemaphoreOptions.check_lower(options)
    rust_future = _lib.uniffi_pottery_semaphore_ffi_fn_constructor_semaphore_open_async(
        _ffi._UniffiFfiConverterTypeSemaphoreOptions.lower(options)
    )

    async def let_go(handle: Any) -> None:
        # Dropping the last reference frees the native handle: its background tasks end, and it
        # holds no permit yet.
        del handle

    return await _drive(rust_future, _HANDLE, let_go)
