package io.pottery.semaphore

import io.pottery.semaphore.ffi.FfiConverterBoolean
import io.pottery.semaphore.ffi.FfiConverterLong
import io.pottery.semaphore.ffi.FfiConverterOptionalDouble
import io.pottery.semaphore.ffi.FfiConverterSequenceTypePermit
import io.pottery.semaphore.ffi.FfiConverterString
import io.pottery.semaphore.ffi.FfiConverterTypeSemaphore
import io.pottery.semaphore.ffi.FfiConverterTypeSemaphoreOptions
import io.pottery.semaphore.ffi.InternalException
import io.pottery.semaphore.ffi.Permit as NativePermit
import io.pottery.semaphore.ffi.Semaphore as NativeSemaphore
import io.pottery.semaphore.ffi.SemaphoreException as NativeError
import io.pottery.semaphore.ffi.SemaphoreOptions
import io.pottery.semaphore.ffi.UNIFFI_RUST_FUTURE_POLL_READY
import io.pottery.semaphore.ffi.UniffiLib
import io.pottery.semaphore.ffi.UniffiRustCallStatus
import io.pottery.semaphore.ffi.UniffiRustFutureContinuationCallback
import io.pottery.semaphore.ffi.uniffiContinuationHandleMap
import io.pottery.semaphore.ffi.uniffiRustFutureContinuationCallbackImpl
import kotlin.coroutines.cancellation.CancellationException
import kotlinx.coroutines.suspendCancellableCoroutine

/*
 * `Semaphore.acquireAsync` and `Semaphore.openAsync`, driven so that cancellation cannot lose
 * what they produced.
 *
 * The generated driver (`uniffiRustCallAsync`) frees the Rust future when the coroutine is
 * cancelled. That is safe while the call is still running (the host then leaves the queue and
 * gives back a grant it had not handed over yet), but not once it has finished: kotlinx.coroutines'
 * prompt cancellation can discard the final "ready" poll, and freeing the future then drops its
 * result unseen: permits the handle already holds (and keeps refreshing), or a whole opened handle,
 * whose connections and background tasks would live as long as the process. So on cancellation
 * this driver follows UniFFI's documented protocol instead: `rust_future_cancel`, then
 * `rust_future_complete`, which returns the result if the future had finished; such a result goes
 * to `undo` before the cancellation is rethrown.
 *
 * Tied to the generated code of the pinned uniffi version (=0.32.2): a change there fails
 * compilation here rather than at run time.
 */

/** The FFI functions of one kind of Rust future (by the type its result crosses as). */
private class FutureKind<L>(
    val poll: (Long, UniffiRustFutureContinuationCallback, Long) -> Unit,
    val cancel: (Long) -> Unit,
    val complete: (Long, UniffiRustCallStatus) -> L,
    val free: (Long) -> Unit,
)

private val permitsFuture = FutureKind(
    { f, cb, data -> UniffiLib.ffi_pottery_semaphore_ffi_rust_future_poll_rust_buffer(f, cb, data) },
    { f -> UniffiLib.ffi_pottery_semaphore_ffi_rust_future_cancel_rust_buffer(f) },
    { f, status -> UniffiLib.ffi_pottery_semaphore_ffi_rust_future_complete_rust_buffer(f, status) },
    { f -> UniffiLib.ffi_pottery_semaphore_ffi_rust_future_free_rust_buffer(f) },
)

private val handleFuture = FutureKind(
    { f, cb, data -> UniffiLib.ffi_pottery_semaphore_ffi_rust_future_poll_u64(f, cb, data) },
    { f -> UniffiLib.ffi_pottery_semaphore_ffi_rust_future_cancel_u64(f) },
    { f, status -> UniffiLib.ffi_pottery_semaphore_ffi_rust_future_complete_u64(f, status) },
    { f -> UniffiLib.ffi_pottery_semaphore_ffi_rust_future_free_u64(f) },
)

/** The result `complete` gave with `status`, lifted, or its error thrown (the buffers freed). */
private fun <L, T> lifted(status: UniffiRustCallStatus, lowered: L, lift: (L) -> T): T = when {
    status.isSuccess() -> lift(lowered)
    status.isError() -> throw NativeError.ErrorHandler.lift(status.error_buf)
    status.isPanic() && status.error_buf.len > 0 -> throw InternalException(FfiConverterString.lift(status.error_buf))
    else -> throw InternalException("Rust call status ${status.code}")
}

private suspend fun <L, T> drive(future: Long, kind: FutureKind<L>, lift: (L) -> T, undo: suspend (T) -> Unit): T {
    try {
        try {
            do {
                val poll = suspendCancellableCoroutine<Byte> { continuation ->
                    kind.poll(future, uniffiRustFutureContinuationCallbackImpl, uniffiContinuationHandleMap.insert(continuation))
                }
            } while (poll != UNIFFI_RUST_FUTURE_POLL_READY)
        } catch (cancelled: CancellationException) {
            // No poll runs now (they run on this coroutine only): after the cancel, complete
            // returns the finished result, or a "cancelled" status if there was none.
            kind.cancel(future)
            val status = UniffiRustCallStatus()
            val lowered = kind.complete(future, status)
            val done = runCatching { lifted(status, lowered, lift) }.getOrNull()
            if (done != null) {
                try {
                    undo(done)
                } catch (e: Throwable) {
                    cancelled.addSuppressed(e)
                }
            }
            throw cancelled
        }
        val status = UniffiRustCallStatus()
        return lifted(status, kind.complete(future, status), lift)
    } finally {
        kind.free(future)
    }
}

/** `acquireAsync`, cancellation-safe: permits granted as the caller was cancelled go to [giveBack]. */
internal suspend fun NativeSemaphore.acquireCancellationSafe(
    n: Long,
    blocking: Boolean,
    timeoutS: Double?,
    spared: Boolean,
    giveBack: suspend (List<NativePermit>) -> Unit,
): List<NativePermit> {
    val future = callWithHandle { handle ->
        UniffiLib.uniffi_pottery_semaphore_ffi_fn_method_semaphore_acquire_async(
            handle,
            FfiConverterLong.lower(n),
            FfiConverterBoolean.lower(blocking),
            FfiConverterOptionalDouble.lower(timeoutS),
            FfiConverterBoolean.lower(spared),
        )
    }
    return drive(future, permitsFuture, FfiConverterSequenceTypePermit::lift) { granted -> if (granted.isNotEmpty()) giveBack(granted) }
}

/** `openAsync`, cancellation-safe: a handle opened as the caller was cancelled is closed. */
internal suspend fun openCancellationSafe(options: SemaphoreOptions): NativeSemaphore {
    val future = UniffiLib.uniffi_pottery_semaphore_ffi_fn_constructor_semaphore_open_async(FfiConverterTypeSemaphoreOptions.lower(options))
    return drive(future, handleFuture, FfiConverterTypeSemaphore::lift) { it.close() }
}
