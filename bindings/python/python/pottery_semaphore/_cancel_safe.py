"""``Semaphore.acquire_async`` driven so that cancellation cannot lose granted permits.

The generated driver (``_uniffi_rust_call_async``) frees the Rust future when its task is
cancelled. That is safe while the acquire is still running (the host then leaves the queue and
gives back a grant it had not handed over), but not once it has finished: the task can be
cancelled after Rust reported "ready" and before the loop resumed it, and freeing the future then
drops a result whose permits the handle already holds (and keeps refreshing). On cancellation
this driver follows UniFFI's protocol instead: ``rust_future_cancel``, then
``rust_future_complete``, which returns the result if the future had finished; such permits are
given back before the cancellation goes on. The Kotlin SDK does the same (``NativeAcquire.kt``).

Tied to the generated module of the pinned uniffi version: its private names are used here, and
the tests fail if they change.
"""

from __future__ import annotations

import asyncio
from typing import Any, List, Optional

from ._native import pottery_semaphore_ffi as _ffi

_lib = _ffi._UniffiLib


def _complete(rust_future: Any) -> List[Any]:
    """The finished future's permits (raises its error)."""
    buffer = _ffi._uniffi_rust_call_with_error(
        _ffi._UniffiFfiConverterTypeSemaphoreError, _lib.ffi_pottery_semaphore_ffi_rust_future_complete_rust_buffer, rust_future
    )
    return _ffi._UniffiFfiConverterSequenceTypePermit.lift(buffer)


async def acquire(native: Any, n: int, blocking: bool, timeout_s: Optional[float]) -> List[Any]:
    """``native.acquire_async(n, blocking, timeout_s)``, cancellation-safe (see the module)."""
    _ffi._UniffiFfiConverterInt64.check_lower(n)
    _ffi._UniffiFfiConverterOptionalFloat64.check_lower(timeout_s)
    rust_future = _lib.uniffi_pottery_semaphore_ffi_fn_method_semaphore_acquire_async(
        native._uniffi_clone_handle(),
        _ffi._UniffiFfiConverterInt64.lower(n),
        _ffi._UniffiFfiConverterBoolean.lower(blocking),
        _ffi._UniffiFfiConverterOptionalFloat64.lower(timeout_s),
    )
    try:
        try:
            loop = _ffi._uniffi_get_event_loop()
            while True:
                polled = loop.create_future()
                _lib.ffi_pottery_semaphore_ffi_rust_future_poll_rust_buffer(
                    rust_future, _ffi._uniffi_continuation_callback, _ffi._UniffiContinuationHandleMap.insert((loop, polled))
                )
                if await polled == _ffi._UNIFFI_RUST_FUTURE_POLL_READY:
                    break
        except asyncio.CancelledError:
            # After the cancel, complete returns the finished result, or a "cancelled" status
            # (raised here as an internal error) if there was none.
            _lib.ffi_pottery_semaphore_ffi_rust_future_cancel_rust_buffer(rust_future)
            try:
                granted = _complete(rust_future)
            except Exception:
                granted = []
            if granted:
                try:
                    await asyncio.shield(native.release_permits_async([p.token for p in granted]))
                except Exception:
                    pass  # the host retries a failed release itself; the lease ends it at the latest
            raise
        return _complete(rust_future)
    finally:
        _lib.ffi_pottery_semaphore_ffi_rust_future_free_rust_buffer(rust_future)
