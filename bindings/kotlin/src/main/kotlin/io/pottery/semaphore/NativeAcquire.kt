package io.pottery.semaphore

import io.pottery.semaphore.ffi.FfiConverterBoolean
import io.pottery.semaphore.ffi.FfiConverterLong
import io.pottery.semaphore.ffi.FfiConverterOptionalDouble
import io.pottery.semaphore.ffi.FfiConverterSequenceTypePermit
import io.pottery.semaphore.ffi.FfiConverterString
import io.pottery.semaphore.ffi.InternalException
import io.pottery.semaphore.ffi.Permit as NativePermit
import io.pottery.semaphore.ffi.Semaphore as NativeSemaphore
import io.pottery.semaphore.ffi.SemaphoreException as NativeError
import io.pottery.semaphore.ffi.UNIFFI_RUST_FUTURE_POLL_READY
import io.pottery.semaphore.ffi.UniffiLib
import io.pottery.semaphore.ffi.UniffiRustCallStatus
import io.pottery.semaphore.ffi.uniffiContinuationHandleMap
import io.pottery.semaphore.ffi.uniffiRustFutureContinuationCallbackImpl
import kotlin.coroutines.cancellation.CancellationException
import kotlinx.coroutines.suspendCancellableCoroutine

/**
 * `Semaphore.acquireAsync`, driven so that cancellation cannot lose granted permits.
 *
 * The generated driver (`uniffiRustCallAsync`) frees the Rust future when the coroutine is
 * cancelled. That is safe while the acquire is still running (the host then leaves the queue and
 * gives back a grant it had not handed over yet), but not once it has finished: kotlinx.coroutines'
 * prompt cancellation can discard the final "ready" poll, and freeing the future then drops a
 * result whose permits the handle already holds (and keeps refreshing). So on cancellation this
 * driver follows UniFFI's documented protocol instead: `rust_future_cancel`, then
 * `rust_future_complete`, which returns the result if the future had finished; such permits go to
 * [giveBack] before the cancellation is rethrown.
 *
 * Tied to the generated code of the pinned uniffi version (=0.32.2): a change there fails
 * compilation here rather than at run time.
 */
internal suspend fun NativeSemaphore.acquireCancellationSafe(
    n: Long,
    blocking: Boolean,
    timeoutS: Double?,
    giveBack: suspend (List<NativePermit>) -> Unit,
): List<NativePermit> {
    val future = callWithHandle { handle ->
        UniffiLib.uniffi_pottery_semaphore_ffi_fn_method_semaphore_acquire_async(
            handle,
            FfiConverterLong.lower(n),
            FfiConverterBoolean.lower(blocking),
            FfiConverterOptionalDouble.lower(timeoutS),
        )
    }
    try {
        try {
            do {
                val poll = suspendCancellableCoroutine<Byte> { continuation ->
                    UniffiLib.ffi_pottery_semaphore_ffi_rust_future_poll_rust_buffer(
                        future,
                        uniffiRustFutureContinuationCallbackImpl,
                        uniffiContinuationHandleMap.insert(continuation),
                    )
                }
            } while (poll != UNIFFI_RUST_FUTURE_POLL_READY)
        } catch (cancelled: CancellationException) {
            // No poll runs now (they run on this coroutine only): after the cancel, complete
            // returns the finished result, or a "cancelled" status if there was none.
            UniffiLib.ffi_pottery_semaphore_ffi_rust_future_cancel_rust_buffer(future)
            val status = UniffiRustCallStatus()
            val buffer = UniffiLib.ffi_pottery_semaphore_ffi_rust_future_complete_rust_buffer(future, status)
            when {
                status.isSuccess() -> {
                    val granted = FfiConverterSequenceTypePermit.lift(buffer)
                    if (granted.isNotEmpty()) {
                        try {
                            giveBack(granted)
                        } catch (e: Throwable) {
                            cancelled.addSuppressed(e)
                        }
                    }
                }
                // The acquire had failed: lifting frees the error buffer.
                status.isError() -> NativeError.ErrorHandler.lift(status.error_buf)
            }
            throw cancelled
        }
        val status = UniffiRustCallStatus()
        val buffer = UniffiLib.ffi_pottery_semaphore_ffi_rust_future_complete_rust_buffer(future, status)
        when {
            status.isSuccess() -> return FfiConverterSequenceTypePermit.lift(buffer)
            status.isError() -> throw NativeError.ErrorHandler.lift(status.error_buf)
            status.isPanic() && status.error_buf.len > 0 ->
                throw InternalException(FfiConverterString.lift(status.error_buf))
            else -> throw InternalException("Rust call status ${status.code}")
        }
    } finally {
        UniffiLib.ffi_pottery_semaphore_ffi_rust_future_free_rust_buffer(future)
    }
}
