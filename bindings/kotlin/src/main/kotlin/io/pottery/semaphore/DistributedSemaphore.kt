package io.pottery.semaphore

import io.pottery.semaphore.ffi.Permit as NativePermit
import io.pottery.semaphore.ffi.Semaphore as NativeSemaphore
import java.util.concurrent.ConcurrentHashMap
import java.util.concurrent.atomic.AtomicBoolean
import java.util.concurrent.atomic.AtomicInteger
import java.util.concurrent.atomic.AtomicReference
import java.util.function.Supplier
import kotlin.contracts.ExperimentalContracts
import kotlin.contracts.InvocationKind
import kotlin.contracts.contract
import kotlin.time.Duration
import kotlin.time.Duration.Companion.milliseconds
import kotlin.time.DurationUnit
import kotlin.time.toKotlinDuration
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.CoroutineStart
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.Job
import kotlinx.coroutines.NonCancellable
import kotlinx.coroutines.async
import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.currentCoroutineContext
import kotlinx.coroutines.ensureActive
import kotlinx.coroutines.isActive
import kotlinx.coroutines.withContext

/**
 * A distributed counting semaphore on Redis, shared with every handle, process and SDK (Rust,
 * Python, Kotlin) that opens the same key on the same server.
 *
 * One handle serves any number of coroutines and threads: each acquire waits in the semaphore's
 * FIFO queue on its own. Permits are leased and kept alive in the background while the handle
 * lives; [close] gives back the permits it still holds.
 *
 * Suspending functions are the primary API (the Rust futures run on the host's own runtime, so no
 * dispatcher thread is blocked while waiting). Each has a `*Blocking` twin for Java and other
 * non-coroutine callers, which blocks the calling thread (and does not react to interrupts: use a
 * time-out).
 *
 * Cancelling a coroutine suspended in [acquire] cancels the Rust future: the waiter leaves the
 * queue, and permits granted in the meantime (even ones handed over just as the cancellation
 * came) are given back. Once `acquire` has returned `true`, the permits are the caller's: a
 * cancellation that lands right after (as `withTimeout` around the call can) loses that result
 * while they stay held, so pass a time-out to [acquire], or use [withPermit]. [release] is not
 * cancellable: once called, it completes.
 *
 * Errors are [SemaphoreException]s; using a handle after [close] throws [IllegalStateException]
 * (an acquire that returns after it gives its permits back first).
 */
class DistributedSemaphore private constructor(private val native: NativeSemaphore) : AutoCloseable {

    /** The semaphore's name (its Redis keys derive from it). */
    val key: String = native.key()

    /** This handle's identity in Redis, as [SemaphoreStatus] lists holders and waiters. */
    val holderId: String = native.holderId()

    /** The lease of each permit, in milliseconds. */
    val leaseMillis: Long = native.leaseMs().toLong()

    /** The lease of each permit. */
    @get:JvmSynthetic
    val lease: Duration get() = leaseMillis.milliseconds

    // Acquiring

    /**
     * Takes [n] permits, all at once or none, waiting in FIFO order; returns whether they were
     * taken. [timeout] `null` (or infinite) waits as long as it takes; [Duration.ZERO] does not wait.
     *
     * Prefer [timeout] to wrapping the call in [kotlinx.coroutines.withTimeout]: a coroutine
     * cancelled just after `acquire` returned `true` loses that result (kotlinx.coroutines'
     * "asynchronous timeout and resources" caveat) while the permits stay held; [withPermit]
     * has no such gap.
     */
    suspend fun acquire(n: Int = 1, timeout: Duration? = null): Boolean = acquirePermits(n, timeout).isNotEmpty()

    /** Takes [n] permits if they are available now, without waiting. */
    suspend fun tryAcquire(n: Int = 1): Boolean = acquire(n, Duration.ZERO)

    /**
     * As [acquire], returning the permits taken (empty when not acquired). They are granted
     * spared (see below) until they are the caller's: a [release] beside a grant that a
     * cancellation is giving back then takes other permits, not that one, which would leave the
     * give-back nothing and the permit it meant held.
     */
    suspend fun acquirePermits(n: Int = 1, timeout: Duration? = null): List<Permit> =
        acquirePermits(n, timeout, spared = true).also { permits ->
            if (permits.isNotEmpty()) native.unspare(permits.map { it.token.toULong() })
        }

    /**
     * [acquirePermits] for [withPermit]: [spared], the host takes the permits last in a [release]
     * beside the block from the moment it grants them, before the block has them, so that such a
     * release cannot leave the block nothing to give back (and the permit it meant held).
     */
    @PublishedApi
    internal suspend fun acquirePermits(n: Int, timeout: Duration?, spared: Boolean): List<Permit> {
        checkCount(n)
        checkOpen()
        val wait = Wait.of(timeout)
        // A caller cancelled before it asks sends nothing: the scope and the undispatched child
        // below would start the native acquire first (and give back what it was granted).
        currentCoroutineContext().ensureActive()
        // What the child got, set before it completes: a cancellation that comes after that
        // drops the value await() or the scope was about to return (kotlinx.coroutines' prompt
        // cancellation), so the handler below gives those permits back.
        val handedOver = AtomicReference<List<NativePermit>?>(null)
        // Exactly these permits, whatever happens to the caller meanwhile.
        val giveBack: suspend (List<NativePermit>) -> Unit = { lost ->
            withContext(NonCancellable + Dispatchers.IO) { native.releasePermits(lost.map { it.token }) }
        }
        val granted = try {
            // A child that close() can cancel: the caller's own job is not the handle's to end.
            coroutineScope {
                val acquiring = async(start = CoroutineStart.UNDISPATCHED) {
                    translated {
                        // Cancelled just as the permits were handed over: those go back.
                        native.acquireCancellationSafe(n.toLong(), wait.blocking, wait.seconds, spared, giveBack)
                    }.also { handedOver.set(it) }
                }
                waiting += acquiring
                if (closing) acquiring.cancel() // close() ran before it was registered
                try {
                    acquiring.await()
                } finally {
                    waiting -= acquiring
                }
            }
        } catch (e: CancellationException) {
            // The scope waited for the child, so what it got is known: nobody else will see it.
            handedOver.getAndSet(null)?.takeIf { it.isNotEmpty() }?.let { lost -> runCatching { giveBack(lost) } }
            // Ended by close(), not by the caller's cancellation: the waiter left the queue.
            if (closing && currentCoroutineContext().isActive) throw IllegalStateException(CLOSED_DURING_ACQUIRE)
            throw e
        }
        val permits = granted.toPermits()
        if (permits.isNotEmpty() && closing) {
            runCatching { withContext(NonCancellable) { releasePermits(permits) } }
            throw IllegalStateException(CLOSED_DURING_ACQUIRE)
        }
        return permits
    }

    /** [acquire] for non-coroutine callers: blocks this thread. `timeout` `null` waits as long as it takes. */
    @JvmOverloads
    fun acquireBlocking(n: Int = 1, timeout: java.time.Duration? = null): Boolean =
        acquirePermitsBlocking(n, timeout).isNotEmpty()

    /** [tryAcquire] for non-coroutine callers. */
    @JvmOverloads
    fun tryAcquireBlocking(n: Int = 1): Boolean = acquireBlocking(n, java.time.Duration.ZERO)

    /** [acquirePermits] for non-coroutine callers: blocks this thread. */
    @JvmOverloads
    fun acquirePermitsBlocking(n: Int = 1, timeout: java.time.Duration? = null): List<Permit> =
        acquirePermitsBlocking(n, timeout, spared = false)

    private fun acquirePermitsBlocking(n: Int, timeout: java.time.Duration?, spared: Boolean): List<Permit> {
        checkCount(n)
        checkOpen()
        val wait = Wait.of(timeout?.toKotlinDuration())
        val permits = translated { native.acquire(n.toLong(), wait.blocking, wait.seconds, spared) }.toPermits()
        if (permits.isNotEmpty() && closing) {
            runCatching { releasePermitsBlocking(permits) }
            throw IllegalStateException(CLOSED_DURING_ACQUIRE)
        }
        return permits
    }

    /**
     * No acquire starts once [close] was called: while a [withPermit] block keeps the native
     * handle open, it would still queue and take a permit from others before giving it back.
     */
    private fun checkOpen() {
        check(!closing) { "the semaphore handle is closed" }
    }

    /** [block], on a handle not closed (see [close]). */
    private inline fun <T> whileOpen(block: () -> T): T {
        checkOpen()
        return block()
    }

    /** A count of permits is checked here, before any native call (which may first connect). */
    private fun checkCount(n: Int) {
        if (n < 1) throw SemaphoreException.InvalidArgument("n must be >= 1, not $n")
    }

    // Releasing

    /**
     * Gives back [n] permits: this handle's own first, then (permits are fungible, as with
     * `java.util.concurrent.Semaphore`) other holders', who then see them as lost. A bounded
     * semaphore refuses to go above its initial value ([SemaphoreException.Bounded]). After any
     * other error (but [SemaphoreException.InvalidArgument]) the release may or may not have
     * happened: the handle finishes it in the background, so do not call `release` again for it.
     * The permits of running [withPermit] blocks go last: each block gives back its own.
     */
    suspend fun release(n: Int = 1) {
        checkOpen()
        checkCount(n)
        enterRunningSuspending()
        try {
            // Runs to completion even if the caller is cancelled meanwhile, as a release should.
            withContext(NonCancellable) { translated { native.releaseAsync(n.toLong()) } }
        } finally {
            leaveRunningSuspending()
        }
    }

    /** [release] for non-coroutine callers. */
    @JvmOverloads
    fun releaseBlocking(n: Int = 1) {
        checkOpen()
        checkCount(n)
        enterRunning()
        try {
            translated { native.release(n.toLong()) }
        } finally {
            leaveRunning()
        }
    }

    /**
     * Gives back exactly these permits of this handle (never another holder's); returns those it
     * still held and released.
     */
    suspend fun releasePermits(permits: Collection<Permit>): List<Permit> {
        if (permits.isEmpty()) return emptyList()
        val released = translated { native.releasePermitsAsync(permits.map { it.token.toULong() }) }.toSet()
        return permits.filter { it.token.toULong() in released }
    }

    /** [releasePermits] for non-coroutine callers. */
    fun releasePermitsBlocking(permits: Collection<Permit>): List<Permit> {
        if (permits.isEmpty()) return emptyList()
        val released = translated { native.releasePermits(permits.map { it.token.toULong() }) }.toSet()
        return permits.filter { it.token.toULong() in released }
    }

    /**
     * Runs [block] holding [n] permits, for non-coroutine callers: acquires (waiting as long as
     * it takes), runs, and gives exactly those permits back however [block] ends.
     */
    @JvmOverloads
    fun <T> withPermitBlocking(n: Int = 1, block: Supplier<T>): T {
        val permits = acquirePermitsBlocking(n, null, spared = true)
        checkGranted(permits)
        try {
            enterRunning()
        } catch (e: IllegalStateException) {
            runCatching { releasePermitsBlocking(permits) }
            throw e
        }
        try {
            val result = try {
                block.get()
            } catch (e: Throwable) {
                try {
                    releasePermitsBlocking(permits)
                } catch (r: Throwable) {
                    e.addSuppressed(r)
                }
                throw e
            }
            releasePermitsBlocking(permits)
            return result
        } finally {
            leaveRunning()
        }
    }

    // A block run by withPermit must keep its permits until it ends, even if the handle is
    // closed meanwhile: closing gives back every permit the handle holds. So close() waits for
    // the blocks running then (the last one to end closes the handle), and a block whose acquire
    // returns after close() does not run. Blocks count from when they hold their permits: one
    // still waiting for them does not hold close() up. A release() under way counts too: had
    // close() given back the handle's permits first, it would find none of its own left and
    // release another holder's (permits are fungible).
    private val withPermitRunning = AtomicInteger()
    @Volatile private var closing = false
    private val closed = AtomicBoolean()

    // Suspended acquires, which close() ends: each would keep its place in the queue, and the
    // native handle (so the permits it holds, refreshed) alive, for as long as it waits.
    private val waiting: MutableSet<Job> = ConcurrentHashMap.newKeySet()

    /**
     * Counts a withPermit block or a release() as running (see above); refused once closing.
     * Published for the inline [withPermit], as are the three below.
     */
    @PublishedApi
    internal fun enterRunning() {
        withPermitRunning.incrementAndGet()
        if (closing) {
            leaveRunning()
            throw IllegalStateException("the semaphore handle is closed")
        }
    }

    /** [enterRunning] for coroutines: the close it may finish waits for Redis off their dispatcher. */
    @PublishedApi
    internal suspend fun enterRunningSuspending() {
        withPermitRunning.incrementAndGet()
        if (closing) {
            leaveRunningSuspending()
            throw IllegalStateException("the semaphore handle is closed")
        }
    }

    /** True when the handle should close now: the block was the last one close() waited for. */
    private fun leftLast(): Boolean = withPermitRunning.decrementAndGet() == 0 && closing

    @PublishedApi
    internal fun leaveRunning() {
        if (leftLast()) closeNow()
    }

    /** [leaveRunning] for coroutines: closing may wait for Redis, off their dispatcher. */
    @PublishedApi
    internal suspend fun leaveRunningSuspending() {
        if (leftLast()) withContext(NonCancellable + Dispatchers.IO) { closeNow() }
    }

    /** An acquire without a time-out returns permits or throws; anything else must not run a block. */
    @PublishedApi
    internal fun checkGranted(permits: List<Permit>) {
        check(permits.isNotEmpty()) { "an acquire without a time-out returned no permit" }
    }

    private fun closeNow() {
        if (closed.compareAndSet(false, true)) {
            // Given back now, not when the native handle is freed: a blocking acquire still in
            // flight keeps it alive. (Unreachable Redis: the host tries once more when the handle
            // is freed; what that cannot give back ends with its lease, as nothing refreshes it.)
            // Nothing held: no call, which would wait for Redis.
            // In calls of at most MAX_TOKENS_PER_CALL: the host refuses more, changing nothing.
            native.held().map { it.token }.chunked(MAX_TOKENS_PER_CALL).forEach { tokens ->
                runCatching { native.releasePermits(tokens) }
            }
            native.close()
        }
    }

    // Inspecting

    /** Permits available now. */
    suspend fun value(): Long = whileOpen { translated { native.valueAsync() } }.toLong()

    fun valueBlocking(): Long = whileOpen { translated { native.value() } }.toLong()

    /** The value the semaphore was created with, as Redis holds it. */
    suspend fun initialValue(): Long = whileOpen { translated { native.initialValueAsync() } }.toLong()

    fun initialValueBlocking(): Long = whileOpen { translated { native.initialValue() } }.toLong()

    /** True when no permit is available. */
    suspend fun locked(): Boolean = whileOpen { translated { native.lockedAsync() } }

    fun lockedBlocking(): Boolean = whileOpen { translated { native.locked() } }

    /** The permits this handle holds, as Redis has them. */
    suspend fun permits(): List<Permit> = whileOpen { translated { native.permitsAsync() } }.toPermits()

    fun permitsBlocking(): List<Permit> = whileOpen { translated { native.permits() } }.toPermits()

    /** Capacity, available permits, every holder and the waiters in the order served. */
    suspend fun status(): SemaphoreStatus = whileOpen { translated { native.statusAsync() } }.toStatus()

    fun statusBlocking(): SemaphoreStatus = whileOpen { translated { native.status() } }.toStatus()

    /** The permits this handle holds as it last saw them (no I/O). */
    val held: List<Permit> get() = whileOpen { native.held() }.toPermits()

    /** The fencing token of this handle's newest permit, or null when it holds none (no I/O). */
    val fencingToken: Long? get() = held.maxOfOrNull { it.token }

    /**
     * Permits this handle held and lost since the last call (their lease ended, or another holder
     * released them). Stop using what such a permit protected.
     */
    fun takeLostPermits(): List<Permit> = whileOpen { native.takeLost() }.toPermits()

    /** Renews the leases of this handle's permits now (the handle also does so in the background). */
    suspend fun refresh() = withContext(Dispatchers.IO) { refreshBlocking() }

    fun refreshBlocking() {
        whileOpen { translated { native.refresh() } }
    }

    // Operating

    /** Sets the number of permits; permits in use are never taken away. Returns the new capacity. */
    suspend fun setPermits(value: Long): Long = withContext(Dispatchers.IO) { setPermitsBlocking(value) }

    fun setPermitsBlocking(value: Long): Long = whileOpen { translated { native.setPermits(value) } }.toLong()

    /** Adds permits (negative removes); returns the new capacity. */
    suspend fun addPermits(delta: Long): Long = withContext(Dispatchers.IO) { addPermitsBlocking(delta) }

    fun addPermitsBlocking(delta: Long): Long = whileOpen { translated { native.addPermits(delta) } }.toLong()

    /**
     * Lets the handle go: the permits it still holds are given back, and its suspended acquires
     * end with [IllegalStateException] (a blocking one returns once served or timed out, and
     * gives back what it got). Further calls fail with [IllegalStateException], from the moment
     * close() is called (even while a call begun before still runs), but [releasePermits]: a
     * [withPermit] block running now keeps its permits, gives them back so as it ends, and the
     * handle closes when the last such block ends.
     */
    override fun close() {
        closing = true
        waiting.forEach { it.cancel() }
        if (withPermitRunning.get() == 0) closeNow()
    }

    override fun toString() = "DistributedSemaphore(key=$key, holderId=$holderId)"

    companion object {
        /**
         * An acquire that returns after [close] was called: the handle gives back what it holds
         * as it goes, so the caller must not take those permits for held.
         */
        private const val CLOSED_DURING_ACQUIRE = "the semaphore handle was closed during the acquire; its permits were given back"

        /** The most tokens the host takes in one release (it refuses more, changing nothing). */
        private const val MAX_TOKENS_PER_CALL = 10_000

        /** Connects and creates the semaphore in Redis unless it exists. */
        suspend fun open(config: SemaphoreConfig): DistributedSemaphore {
            val options = config.toOptions()
            return DistributedSemaphore(translated { openCancellationSafe(options) })
        }

        /** [open] for non-coroutine callers: blocks this thread. */
        @JvmStatic
        fun openBlocking(config: SemaphoreConfig): DistributedSemaphore {
            val options = config.toOptions()
            return DistributedSemaphore(translated { NativeSemaphore.open(options) })
        }
    }

    /** How an acquire waits: the native layer's `blocking` and `timeout_s`. */
    private class Wait(val blocking: Boolean, val seconds: Double?) {
        companion object {
            fun of(timeout: Duration?): Wait = when {
                timeout == null || timeout == Duration.INFINITE -> Wait(true, null)
                timeout == Duration.ZERO -> Wait(false, null)
                // Negative time-outs reach the host, which rejects them as invalid arguments.
                else -> Wait(true, timeout.toDouble(DurationUnit.SECONDS))
            }
        }
    }
}

/**
 * Runs [block] holding [n] permits, as `kotlinx.coroutines.sync.Semaphore.withPermit`: acquires
 * (waiting as long as it takes), runs [block], and gives exactly those permits back however it
 * ends, cancellation included. A release that fails after [block] threw is attached to that
 * exception as suppressed. [DistributedSemaphore.close] waits for the block to end.
 */
@OptIn(ExperimentalContracts::class)
suspend inline fun <T> DistributedSemaphore.withPermit(n: Int = 1, block: () -> T): T {
    contract { callsInPlace(block, InvocationKind.EXACTLY_ONCE) }
    val permits = acquirePermits(n, null, spared = true)
    checkGranted(permits)
    try {
        enterRunningSuspending()
    } catch (e: IllegalStateException) {
        // Closed meanwhile: the block does not run; its permits go back now, not when the
        // blocks still running end (if the handle is gone already, they went with it).
        runCatching { withContext(NonCancellable) { releasePermits(permits) } }
        throw e
    }
    // The release sits in `finally`: [block] is inlined, so a `return` in it leaves through
    // here without passing a line after it.
    var failure: Throwable? = null
    try {
        return block()
    } catch (e: Throwable) {
        failure = e
        throw e
    } finally {
        try {
            withContext(NonCancellable) { releasePermits(permits) }
        } catch (r: Throwable) {
            if (failure == null) throw r
            failure.addSuppressed(r)
        } finally {
            leaveRunningSuspending()
        }
    }
}
