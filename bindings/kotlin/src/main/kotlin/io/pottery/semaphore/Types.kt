package io.pottery.semaphore

import io.pottery.semaphore.ffi.HolderInfo as NativeHolder
import io.pottery.semaphore.ffi.Permit as NativePermit
import io.pottery.semaphore.ffi.SemaphoreStatus as NativeStatus
import io.pottery.semaphore.ffi.WaiterInfo as NativeWaiter

/**
 * A held permit: its fencing [token] (grows with every grant of the semaphore; with several
 * masters, with every grant of its slot, the token's low 16 bits), the end of its lease
 * ([deadlineMs], Redis time in ms since the epoch) and the lease time left ([ttlMs]).
 */
data class Permit(val token: Long, val deadlineMs: Long, val ttlMs: Long)

/** A permit held by any holder, as [SemaphoreStatus] lists it. */
data class Holder(val token: Long, val holder: String, val ttlMs: Long)

/** A queued acquire of [n] permits by [holder], as [SemaphoreStatus] lists it. */
data class Waiter(val id: Long, val n: Int, val holder: String)

/**
 * A snapshot of the semaphore in Redis: its [initial] value, current [capacity], [available]
 * permits, every holder and the waiters in the order they will be served.
 */
data class SemaphoreStatus(
    val initial: Long,
    val capacity: Long,
    val available: Long,
    val holders: List<Holder>,
    val waiters: List<Waiter>,
)

internal fun NativePermit.toPermit() = Permit(token.toLong(), deadlineMs.toLong(), ttlMs.toLong())

internal fun List<NativePermit>.toPermits() = map { it.toPermit() }

internal fun NativeHolder.toHolder() = Holder(token.toLong(), holder, ttlMs.toLong())

internal fun NativeWaiter.toWaiter() = Waiter(id.toLong(), n.toInt(), holder)

internal fun NativeStatus.toStatus() = SemaphoreStatus(
    initial = initial.toLong(),
    capacity = capacity.toLong(),
    available = available.toLong(),
    holders = holders.map { it.toHolder() },
    waiters = waiters.map { it.toWaiter() },
)
