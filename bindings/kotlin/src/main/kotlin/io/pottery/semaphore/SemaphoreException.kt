package io.pottery.semaphore

import io.pottery.semaphore.ffi.InternalException
import io.pottery.semaphore.ffi.SemaphoreException as NativeError

/**
 * Every error of the semaphore, case for case as the Rust host reports it.
 *
 * `when` over the subclasses is exhaustive; [detail] is the host's own description.
 * Kotlin's coroutine cancellation is never one of these: a cancelled [DistributedSemaphore.acquire]
 * throws [kotlinx.coroutines.CancellationException] as usual.
 */
sealed class SemaphoreException(message: String, cause: Throwable? = null) : RuntimeException(message, cause) {
    /** An argument is out of range (negative value, `n < 1` or above the capacity, NaN or negative
     *  time-out, over-long key, waiting forever on a zero-capacity semaphore...). */
    class InvalidArgument(val detail: String, cause: Throwable? = null) :
        SemaphoreException("invalid argument: $detail", cause)

    /** Releasing would take a bounded semaphore above its initial value; nothing changed. */
    class Bounded(val key: String, val current: Long, val initial: Long, cause: Throwable? = null) :
        SemaphoreException(
            "cannot release: semaphore \"$key\" would exceed its initial value $initial ($current available)",
            cause,
        )

    /** A key of this semaphore holds another Redis type. */
    class WrongType(val detail: String, cause: Throwable? = null) : SemaphoreException("wrong type: $detail", cause)

    /** Redis could not be reached, or the connection broke. */
    class Unreachable(val detail: String, cause: Throwable? = null) :
        SemaphoreException("Redis is unreachable: $detail", cause)

    /** Redis refused the credentials, or the ACL user lacks a permission. */
    class Auth(val detail: String, cause: Throwable? = null) :
        SemaphoreException("Redis refused the credentials: $detail", cause)

    /** The host cancelled the operation (not a Kotlin coroutine cancellation). */
    class Cancelled(cause: Throwable? = null) : SemaphoreException("cancelled", cause)

    /** The host sandbox refused something the protocol component asked for. */
    class Forbidden(val detail: String, cause: Throwable? = null) :
        SemaphoreException("forbidden by the host sandbox: $detail", cause)

    /** An error reply from Redis. */
    class Redis(val detail: String, cause: Throwable? = null) : SemaphoreException("Redis error: $detail", cause)

    /** Several masters: so many of them failed that no majority could decide. */
    class Quorum(val detail: String, cause: Throwable? = null) : SemaphoreException("no quorum: $detail", cause)
    /** Fewer replicas than configured acknowledged a change in time; an acquire gave its permits back. */
    class NotReplicated(val detail: String, cause: Throwable? = null) :
        SemaphoreException("not replicated: $detail", cause)

    /** The protocol component (wasm) failed. */
    class Guest(val detail: String, cause: Throwable? = null) :
        SemaphoreException("the protocol component failed: $detail", cause)

    /** Any other failure of the host runtime. */
    class Runtime(val detail: String, cause: Throwable? = null) : SemaphoreException("runtime error: $detail", cause)

    internal companion object {
        /** The generated error, case for case: a new Rust case fails compilation here. */
        fun from(e: NativeError): SemaphoreException = when (e) {
            is NativeError.InvalidArgument -> InvalidArgument(e.detail, e)
            is NativeError.Bounded -> Bounded(e.key, e.current.toLong(), e.initial.toLong(), e)
            is NativeError.WrongType -> WrongType(e.detail, e)
            is NativeError.Unreachable -> Unreachable(e.detail, e)
            is NativeError.Auth -> Auth(e.detail, e)
            is NativeError.Cancelled -> Cancelled(e)
            is NativeError.Forbidden -> Forbidden(e.detail, e)
            is NativeError.Redis -> Redis(e.detail, e)
            is NativeError.Quorum -> Quorum(e.detail, e)
            is NativeError.NotReplicated -> NotReplicated(e.detail, e)
            is NativeError.Guest -> Guest(e.detail, e)
            is NativeError.Runtime -> Runtime(e.detail, e)
        }
    }
}

/** Runs [block], turning the generated errors into [SemaphoreException]s. */
internal inline fun <T> translated(block: () -> T): T =
    try {
        block()
    } catch (e: NativeError) {
        throw SemaphoreException.from(e)
    } catch (e: InternalException) {
        // A panic in the native library (a bug there): still one of ours, as documented.
        throw SemaphoreException.Runtime(e.message ?: "internal error in the native library", e)
    }
