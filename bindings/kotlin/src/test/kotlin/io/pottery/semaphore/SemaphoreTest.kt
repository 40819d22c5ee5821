package io.pottery.semaphore

import java.util.Collections
import java.util.concurrent.atomic.AtomicBoolean
import java.util.concurrent.atomic.AtomicInteger
import kotlin.time.Duration
import kotlin.time.Duration.Companion.milliseconds
import kotlin.time.Duration.Companion.seconds
import kotlin.time.TimeSource
import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.cancel
import kotlinx.coroutines.awaitAll
import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.delay
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeoutOrNull
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Assertions.fail
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

/** Polls [check] until it holds, failing after [timeout]. */
suspend fun eventually(what: String, timeout: Duration = 3.seconds, check: suspend () -> Boolean) {
    val deadline = TimeSource.Monotonic.markNow() + timeout
    while (!check()) {
        if (deadline.hasPassedNow()) fail<Unit>("not within $timeout: $what")
        delay(5)
    }
}

class SemaphoreTest : RedisTest() {

    @Test
    fun `value, initial value and locked`() = runBlocking<Unit> {
        val sem = open(uniqueKey(), value = 2)
        assertEquals(2, sem.value())
        assertEquals(2, sem.initialValue())
        assertFalse(sem.locked())
        assertTrue(sem.acquire(2))
        assertEquals(0, sem.value())
        assertEquals(2, sem.initialValue())
        assertTrue(sem.locked())
        sem.release(2)
        assertEquals(2, sem.valueBlocking())
        assertFalse(sem.lockedBlocking())
        assertEquals(2, sem.initialValueBlocking())
    }

    @Test
    fun `a caller cancelled before it asks takes nothing`() = runBlocking<Unit> {
        val sem = open(uniqueKey())
        val first = sem.acquirePermits().single().token
        sem.release()
        val cancelled = launch {
            cancel()
            sem.acquire()
        }
        cancelled.join()
        delay(300) // time for a grant started anyway to have been given back
        val next = sem.acquirePermits().single().token
        assertEquals(first + 1, next, "the cancelled caller's acquire was granted a permit")
        sem.release()
    }

    @Test
    fun `the first opener sets the value`() = runBlocking<Unit> {
        val key = uniqueKey()
        open(key, value = 3)
        val later = open(key, value = 7)
        assertEquals(3, later.initialValue())
        assertEquals(3, later.value())
    }

    @Test
    fun `non-blocking acquire answers at once`() = runBlocking<Unit> {
        val key = uniqueKey()
        val a = open(key)
        val b = open(key)
        assertTrue(a.tryAcquire())
        val started = TimeSource.Monotonic.markNow()
        assertFalse(b.tryAcquire())
        assertFalse(b.acquire(timeout = Duration.ZERO))
        assertFalse(b.tryAcquireBlocking())
        assertTrue(started.elapsedNow() < 200.milliseconds, "took ${started.elapsedNow()}")
    }

    @Test
    fun `a time-out is honoured within 200 ms`() = runBlocking<Unit> {
        val key = uniqueKey()
        val holder = open(key)
        val waiter = open(key)
        assertTrue(holder.acquire())
        for (timeout in listOf(50.milliseconds, 300.milliseconds)) {
            val started = TimeSource.Monotonic.markNow()
            assertFalse(waiter.acquire(timeout = timeout))
            val took = started.elapsedNow()
            assertTrue(took >= timeout && took < timeout + 200.milliseconds, "timeout $timeout took $took")
        }
        val started = TimeSource.Monotonic.markNow()
        assertFalse(waiter.acquireBlocking(1, java.time.Duration.ofMillis(300)))
        val took = started.elapsedNow()
        assertTrue(took >= 300.milliseconds && took < 500.milliseconds, "blocking took $took")
        assertEquals(0, waiter.status().waiters.size)
        assertEquals(0, waiter.value())
    }

    @Test
    fun `n permits are taken at once or not at all`() = runBlocking<Unit> {
        val key = uniqueKey()
        val a = open(key, value = 3)
        val b = open(key, value = 3)
        assertTrue(a.tryAcquire())
        assertFalse(b.tryAcquire(3))
        assertFalse(b.acquire(3, 100.milliseconds))
        assertEquals(2, b.value())
        val permits = b.acquirePermits(2)
        assertEquals(2, permits.size)
        assertEquals(2, b.held.size)
        assertEquals(permits.map { it.token }.toSet(), b.permits().map { it.token }.toSet())
        assertEquals(0, a.value())
        b.release(2)
        assertEquals(2, a.value())
    }

    @Test
    fun `releasing a bounded semaphore past its initial value fails with the numbers`() = runBlocking<Unit> {
        val key = uniqueKey()
        val sem = open(key, value = 2)
        val e = assertThrows<SemaphoreException.Bounded> { sem.release() }
        assertEquals(key, e.key)
        assertEquals(2, e.current)
        assertEquals(2, e.initial)
        assertTrue(e.message!!.contains("would exceed its initial value 2"), e.message)
        assertTrue(sem.acquire())
        val again = assertThrows<SemaphoreException.Bounded> { sem.releaseBlocking(2) }
        assertEquals(1, again.current)
        assertEquals(1, sem.value(), "a refused release changes nothing")
    }

    @Test
    fun `an unbounded semaphore grows`() = runBlocking<Unit> {
        val sem = open(uniqueKey(), value = 1, bounded = false)
        sem.release(2)
        assertEquals(3, sem.value())
        assertEquals(1, sem.initialValue())
        assertTrue(sem.tryAcquire(3))
    }

    @Test
    fun `fencing tokens increase with every grant`() = runBlocking<Unit> {
        val key = uniqueKey()
        val a = open(key)
        val b = open(key)
        assertNull(a.fencingToken)
        var last = 0L
        repeat(5) {
            val sem = if (it % 2 == 0) a else b
            assertTrue(sem.acquire())
            val token = sem.fencingToken ?: fail("no fencing token after acquiring")
            assertTrue(token > last, "token $token after $last")
            assertEquals(listOf(token), sem.permits().map { p -> p.token })
            last = token
            sem.release()
            assertNull(sem.fencingToken)
        }
    }

    @Test
    fun `waiters are served in FIFO order`() = runBlocking<Unit> {
        val key = uniqueKey()
        val holder = open(key)
        val waiters = List(4) { open(key) }
        assertTrue(holder.acquire())
        val order = Collections.synchronizedList(mutableListOf<Int>())
        coroutineScope {
            val jobs = waiters.mapIndexed { i, w ->
                val job = launch(Dispatchers.Default) {
                    assertTrue(w.acquire(timeout = 10.seconds))
                    order += i
                    w.release()
                }
                eventually("waiter $i queued") { holder.status().waiters.size == i + 1 }
                job
            }
            assertEquals(waiters.map { it.holderId }, holder.status().waiters.map { it.holder })
            holder.release()
            jobs.forEach { it.join() }
        }
        assertEquals(listOf(0, 1, 2, 3), order)
        assertEquals(1, holder.value())
    }

    @Test
    fun `cancelling a suspended acquire leaks nothing`() = runBlocking<Unit> {
        val key = uniqueKey()
        val holder = open(key)
        val waiter = open(key)
        assertTrue(holder.acquire())
        val got = withTimeoutOrNull(300.milliseconds) { waiter.acquire() }
        assertNull(got, "the acquire was cancelled")
        eventually("the waiter left the queue", 1.seconds) { waiter.status().waiters.isEmpty() }
        assertEquals(0, waiter.value())
        assertTrue(waiter.held.isEmpty())
        holder.release()
        assertEquals(1, holder.value(), "no permit went to the cancelled waiter")
        val status = holder.status()
        assertTrue(status.holders.isEmpty() && status.waiters.isEmpty(), "$status")
        assertTrue(waiter.tryAcquire(), "the handle stays usable")
        waiter.release()
    }

    @Test
    fun `cancelling as the permit is granted gives it back`() = runBlocking<Unit> {
        val key = uniqueKey()
        val holder = open(key)
        val waiter = open(key)
        var kept = 0
        val rounds = System.getProperty("pottery.cancelRounds")?.toInt() ?: 100
        for (round in 0 until rounds) {
            assertTrue(holder.acquire(timeout = 5.seconds))
            // Whether acquire *returned* the permit: a coroutine cancelled after that still ends
            // cancelled and its result is lost to await() (kotlinx's "asynchronous timeout and
            // resources" caveat), but then the permit is the caller's to release, not a leak.
            val returned = AtomicBoolean(false)
            val acquiring = async(Dispatchers.Default) { waiter.acquire().also { returned.set(it) } }
            eventually("round $round: queued") { holder.status().waiters.size == 1 }
            val releasing = launch(Dispatchers.Default) { holder.release() }
            delay((round % 5).toLong())
            acquiring.cancel()
            releasing.join()
            runCatching { acquiring.await() }
            val got = returned.get()
            if (got) {
                kept++
                waiter.release()
            }
            val settled = withTimeoutOrNull(3.seconds) {
                while (true) {
                    val s = holder.status()
                    if (s.available == 1L && s.holders.isEmpty() && s.waiters.isEmpty()) break
                    delay(5)
                }
            }
            if (settled == null) {
                fail<Unit>(
                    "round $round (acquire returned: $got, waiter ${waiter.holderId} holds ${waiter.held}): " +
                        "not back to 1 permit, no holder, no waiter: ${holder.status()}",
                )
            }
        }
        println("cancel-vs-grant: the acquire won $kept of $rounds races")
    }

    @Test
    fun `many coroutines share one handle`() = runBlocking<Unit> {
        val sem = open(uniqueKey(), value = 3)
        val inside = AtomicInteger()
        val most = AtomicInteger()
        val cycles = AtomicInteger()
        val started = TimeSource.Monotonic.markNow()
        (0 until 50).map {
            async(Dispatchers.Default) {
                repeat(20) {
                    sem.withPermit {
                        val now = inside.incrementAndGet()
                        most.accumulateAndGet(now, ::maxOf)
                        delay(1)
                        inside.decrementAndGet()
                    }
                    cycles.incrementAndGet()
                }
            }
        }.awaitAll()
        println("50 coroutines x 20 withPermit on 3 permits: ${started.elapsedNow()}, at most ${most.get()} inside")
        assertEquals(1000, cycles.get())
        assertTrue(most.get() in 1..3, "at most ${most.get()} inside")
        assertEquals(3, sem.value())
        assertTrue(sem.held.isEmpty())
    }

    @Test
    fun `withPermit gives the permit back when the block throws`() = runBlocking<Unit> {
        val sem = open(uniqueKey())
        assertThrows<IllegalStateException> { sem.withPermit { error("boom") } }
        assertEquals(1, sem.value())
        assertEquals(42, sem.withPermitBlocking { 42 })
        assertEquals(1, sem.value())
    }

    /**
     * A caller cancelled while its block runs (suspended in it): the block's release runs in a
     * cancelled coroutine, so it must not be cut short where it suspends.
     */
    @Test
    fun `cancelling a caller inside a withPermit block gives the permit back`() = runBlocking<Unit> {
        val sem = open(uniqueKey())
        val inside = CompletableDeferred<Unit>()
        val caller = launch(Dispatchers.Default) {
            sem.withPermit {
                inside.complete(Unit)
                delay(60_000)
            }
        }
        inside.await()
        assertEquals(0, sem.value(), "the block holds the permit")
        caller.cancel()
        caller.join()
        assertTrue(sem.held.isEmpty(), "still held: ${sem.held}")
        assertEquals(1, sem.value(), "the cancelled block's permit did not come back")
    }

    /**
     * One handle, a withPermit block running and, beside it, an acquire then a release: the
     * release took the lowest token, the block's, so the block's end gave back nothing and the
     * permit acquired beside it stayed held (and refreshed) until close().
     */
    @Test
    fun `a release beside a withPermit block leaves the block its permit`() = runBlocking<Unit> {
        val sem = open(uniqueKey(), value = 2)
        sem.withPermit {
            assertTrue(sem.acquire(timeout = Duration.ZERO))
            sem.release()
            assertEquals(1, sem.held.size, "the block's permit is still held")
        }
        assertTrue(sem.held.isEmpty(), "still held: ${sem.held}")
        assertEquals(2, sem.value())
        sem.withPermitBlocking {
            assertTrue(sem.acquireBlocking(timeout = java.time.Duration.ZERO))
            sem.releaseBlocking()
        }
        assertTrue(sem.held.isEmpty(), "still held after the blocking forms: ${sem.held}")
    }

    /** Leaves [DistributedSemaphore.withPermit] by a `return` from this function when [early]. */
    private suspend fun returnsFromWithin(sem: DistributedSemaphore, early: Boolean): Int {
        sem.withPermit { if (early) return 7 }
        return 0
    }

    @Test
    fun `a return out of a withPermit block gives the permit back`() = runBlocking<Unit> {
        val sem = open(uniqueKey())
        assertEquals(7, returnsFromWithin(sem, early = true))
        assertTrue(sem.held.isEmpty(), "still held: ${sem.held}")
        assertEquals(1, sem.value())
        assertEquals(0, returnsFromWithin(sem, early = false))
        assertEquals(1, sem.value())
    }

    @Test
    fun `status lists holders and waiters`() = runBlocking<Unit> {
        val key = uniqueKey()
        val a = open(key, value = 2)
        val b = open(key, value = 2)
        assertTrue(a.acquire(2))
        val waiting = launch(Dispatchers.Default) { b.acquire() }
        eventually("b queued") { a.status().waiters.isNotEmpty() }
        val s = a.statusBlocking()
        assertEquals(2, s.initial)
        assertEquals(2, s.capacity)
        assertEquals(0, s.available)
        assertEquals(listOf(a.holderId, a.holderId), s.holders.map { it.holder })
        assertEquals(a.held.map { it.token }.toSet(), s.holders.map { it.token }.toSet())
        assertEquals(listOf(Waiter(s.waiters[0].id, 1, b.holderId)), s.waiters)
        a.release(2)
        waiting.join()
        b.release()
    }

    @Test
    fun `permits released by another holder are reported lost`() = runBlocking<Unit> {
        val key = uniqueKey()
        val a = open(key)
        val b = open(key)
        assertTrue(a.acquire())
        val token = a.fencingToken!!
        b.release() // fungible: takes a's permit
        a.refresh()
        assertEquals(listOf(token), a.takeLostPermits().map { it.token })
        assertTrue(a.takeLostPermits().isEmpty())
        assertNull(a.fencingToken)
    }

    @Test
    fun `operators change the number of permits`() = runBlocking<Unit> {
        val sem = open(uniqueKey(), value = 1)
        assertEquals(3, sem.addPermits(2))
        assertEquals(3, sem.value())
        assertEquals(2, sem.setPermitsBlocking(2))
        assertEquals(2, sem.value())
    }

    @Test
    fun `closing a handle gives its permits back`() = runBlocking<Unit> {
        val key = uniqueKey()
        val other = open(key)
        val sem = DistributedSemaphore.open(config(key))
        assertEquals(key, sem.key)
        assertEquals(10_000, sem.leaseMillis)
        assertEquals(10.seconds, sem.lease)
        assertTrue(sem.acquire())
        assertEquals(0, other.value())
        sem.close()
        eventually("the permit came back") { other.value() == 1L }
        assertThrows<IllegalStateException> { sem.valueBlocking() }
    }

    /**
     * The handle's first acquire is served after close(); a second one, queued behind another
     * handle's waiter, keeps the native handle open meanwhile, so only the SDK's give-back (not
     * the handle's end) can pass that permit on to the waiter between them.
     */
    @Test
    fun `an acquire that returns after close gives its permits back and says so`() = runBlocking<Unit> {
        val key = uniqueKey()
        val other = open(key)
        assertTrue(other.acquire())
        val sem = DistributedSemaphore.open(config(key))
        val served = async(Dispatchers.IO) { runCatching { sem.acquireBlocking() } }
        eventually("queued") { other.status().waiters.size == 1 }
        val between = open(key)
        val betweenGot = async(Dispatchers.Default) { between.acquire(timeout = 20.seconds) }
        eventually("queued") { other.status().waiters.size == 2 }
        val keepsOpen = async(Dispatchers.IO) { runCatching { sem.acquireBlocking(1, java.time.Duration.ofSeconds(20)) } }
        eventually("queued") { other.status().waiters.size == 3 }
        sem.close()
        other.release()
        val result = served.await()
        assertTrue(result.exceptionOrNull() is IllegalStateException, "returned $result after close()")
        assertEquals(true, withTimeoutOrNull(3.seconds) { betweenGot.await() }, "the permit served after close() was not given back")
        between.release()
        assertTrue(keepsOpen.await().exceptionOrNull() is IllegalStateException, "the second acquire returned after close()")
        eventually("the permit came back") { other.value() == 1L }
    }

    @Test
    fun `close gives back the permits the handle holds while an acquire of it waits`() = runBlocking<Unit> {
        val key = uniqueKey()
        val other = open(key)
        val sem = DistributedSemaphore.open(config(key))
        assertTrue(sem.acquire())
        // Queued behind the handle's own permit: before, close() left both as they were (the
        // waiting acquire kept the native handle alive), the permit held and refreshed for good.
        val waiting = async(Dispatchers.Default) { runCatching { sem.acquire() } }
        try {
            eventually("queued") { other.status().waiters.size == 1 }
            sem.close()
            val result = withTimeoutOrNull(5.seconds) { waiting.await() }
            assertTrue(result?.exceptionOrNull() is IllegalStateException, "the waiter: $result")
            eventually("the permit came back") { other.value() == 1L }
            assertTrue(other.status().waiters.isEmpty(), "the waiter stayed queued")
        } finally {
            waiting.cancel()
        }
    }

    @Test
    fun `close gives back more permits than one release may name`() = runBlocking<Unit> {
        val key = uniqueKey()
        val permits = 10_001L
        val other = open(key, value = permits)
        val sem = DistributedSemaphore.open(config(key, value = permits))
        assertTrue(sem.acquire(6_000) && sem.acquire(4_001))
        // A blocking acquire in flight keeps the native handle alive (close() does not interrupt
        // it), so only close() itself gives them back. Before, it named all 10,001 in one
        // release, which the host refused whole: the permits stayed held, the waiter waited.
        val waiting = async(Dispatchers.IO) { runCatching { sem.acquireBlocking(1, java.time.Duration.ofSeconds(10)) } }
        eventually("queued") { other.status().waiters.size == 1 }
        sem.close()
        eventually("the permits came back") { other.value() == permits }
        // Served by that release after close(): it gives the permit back and says so.
        assertTrue(waiting.await().exceptionOrNull() is IllegalStateException)
    }

    @Test
    fun `a bad count is an argument error`() {
        val sem = DistributedSemaphore.openBlocking(config(uniqueKey()))
        assertThrows<SemaphoreException.InvalidArgument> { sem.acquireBlocking(0) }
        assertThrows<SemaphoreException.InvalidArgument> { sem.releaseBlocking(-1) }
        sem.close()
    }

    @Test
    fun `closing a handle waits for a running withPermit block`() = runBlocking<Unit> {
        val key = uniqueKey()
        val other = open(key, value = 2)
        val sem = DistributedSemaphore.open(config(key, value = 2))
        val entered = CompletableDeferred<Unit>()
        val finish = CompletableDeferred<Unit>()
        val running = launch(Dispatchers.Default) {
            sem.withPermit {
                entered.complete(Unit)
                finish.await()
            }
        }
        entered.await()
        sem.close()
        // No block starts once close() was called (it fails before it acquires).
        var ran = false
        assertThrows<IllegalStateException> { sem.withPermitBlocking { ran = true } }
        assertFalse(ran)
        // Nor any other call, while the block still keeps the handle open: a release() would
        // give back the block's own permit, the only one the handle holds, as it runs.
        assertThrows<IllegalStateException> { sem.valueBlocking() }
        assertThrows<IllegalStateException> { sem.releaseBlocking() }
        assertThrows<IllegalStateException> { runBlocking { sem.release() } }
        assertThrows<IllegalStateException> { sem.statusBlocking() }
        // Giving the permits back on close takes a round trip: had it happened, it would show.
        delay(300)
        assertEquals(1, other.value(), "the running block's permit was given back while it ran")
        finish.complete(Unit)
        running.join()
        eventually("both permits came back") { other.value() == 2L }
        assertThrows<IllegalStateException> { sem.valueBlocking() }
    }

    @Test
    fun `closing a handle while its release is under way leaves the release to give back its own`() = runBlocking<Unit> {
        val key = uniqueKey()
        val other = open(key, value = 2)
        assertTrue(other.acquire())
        val sem = DistributedSemaphore.open(config(key, value = 2))
        assertTrue(sem.acquire())
        // Writes wait for a while: the release is on its way when close() comes.
        assertTrue(server.command("CLIENT", "PAUSE", "600", "WRITE").startsWith("+OK"))
        val releasing = async(Dispatchers.IO) { runCatching { sem.releaseBlocking() } }
        delay(150)
        // Had close() given back the handle's permit itself, it would have waited for Redis too,
        // and the release, finding none of its own, would have taken the other holder's.
        val closing = System.nanoTime()
        sem.close()
        val closeTook = (System.nanoTime() - closing) / 1_000_000
        assertTrue(closeTook < 200, "close() waited ${closeTook} ms for Redis instead of leaving it to the release")
        assertTrue(releasing.await().isSuccess, "the release under way failed")
        other.refreshBlocking()
        assertTrue(other.takeLostPermits().isEmpty(), "the other holder's permit was released")
        assertEquals(1, other.value(), "the handle's own permit was given back, once")
        assertThrows<IllegalStateException> { sem.valueBlocking() }
        assertThrows<IllegalStateException> { sem.held }
    }

    @Test
    fun `a withPermit still waiting does not hold close up, and its block does not run`() = runBlocking<Unit> {
        val key = uniqueKey()
        val other = open(key)
        assertTrue(other.acquire())
        val sem = DistributedSemaphore.open(config(key))
        var ran = false
        val waiting = async(Dispatchers.Default) { runCatching { sem.withPermit { ran = true } } }
        eventually("queued") { other.status().waiters.isNotEmpty() }
        sem.close()
        other.release()
        assertTrue(waiting.await().exceptionOrNull() is IllegalStateException)
        assertFalse(ran, "the block ran on a closed handle")
        eventually("the permit came back") { other.value() == 1L }
    }

    @Test
    fun `a release that fails after the block failed does not hide the block's exception`() = runBlocking<Unit> {
        val own = RedisServer()
        try {
            val sem = DistributedSemaphore.openBlocking(
                SemaphoreConfig(url = own.url, key = uniqueKey()).withGuardFreshServer(false),
            )
            val thrown = assertThrows<IllegalStateException> {
                sem.withPermitBlocking<Unit> {
                    own.close() // Redis goes away: the release on the way out fails too
                    error("boom")
                }
            }
            assertEquals("boom", thrown.message)
            assertTrue(thrown.suppressed.single() is SemaphoreException.Unreachable, "suppressed: ${thrown.suppressed.toList()}")
            sem.close()
        } finally {
            own.close()
        }
    }

    @Test
    fun `errors map to their own exceptions`() = runBlocking<Unit> {
        val key = uniqueKey()
        val sem = open(key, value = 2)
        assertThrows<SemaphoreException.InvalidArgument> { sem.acquire(0) }
        assertThrows<SemaphoreException.InvalidArgument> { sem.acquire(3) }
        assertThrows<SemaphoreException.InvalidArgument> { sem.acquire(timeout = (-500).milliseconds) }
        assertThrows<SemaphoreException.InvalidArgument> { sem.release(0) }
        assertThrows<SemaphoreException.InvalidArgument> { sem.releaseBlocking(-1) }
        assertEquals(2, sem.value())
        assertThrows<SemaphoreException.InvalidArgument> { DistributedSemaphore.open(config(uniqueKey(), value = -1)) }
        assertThrows<SemaphoreException.InvalidArgument> { DistributedSemaphore.open(config("k".repeat(2000))) }
        assertThrows<SemaphoreException.InvalidArgument> { DistributedSemaphore.open(config(uniqueKey(), leaseMillis = -1)) }
        // Text with no UTF-8 form (an emoji cut in half): not the encoder's MalformedInputException.
        val cut = "job-" + "\uD83D\uDE00".take(1)
        assertThrows<SemaphoreException.InvalidArgument> { DistributedSemaphore.open(config(cut)) }
        assertThrows<SemaphoreException.InvalidArgument> { DistributedSemaphore.openBlocking(config(cut)) }
        assertThrows<SemaphoreException.InvalidArgument> {
            DistributedSemaphore.openBlocking(config(uniqueKey()).withMoreMasters(listOf("redis://h\uDCFF:6379")))
        }
        assertThrows<SemaphoreException.Unreachable> {
            DistributedSemaphore.openBlocking(SemaphoreConfig("redis://127.0.0.1:1", uniqueKey(), guardFreshServer = false))
        }
        val typed = uniqueKey()
        assertTrue(server.command("SET", "pottery-semaphore:{$typed}:meta", "x").startsWith("+OK"))
        val wrong = assertThrows<SemaphoreException.WrongType> { DistributedSemaphore.open(config(typed)) }
        assertTrue(wrong.message!!.startsWith("wrong type: "), wrong.message)
        val missing = assertThrows<SemaphoreException.InvalidArgument> {
            DistributedSemaphore.openBlocking(config(uniqueKey()).withCreate(false))
        }
        assertTrue(missing.message!!.contains("no semaphore"), "create = false on a missing key: ${missing.message}")
    }

    @Test
    fun `a wrong password is an authentication error`() = runBlocking<Unit> {
        RedisServer("--requirepass", "s3cret").use { guarded ->
            val key = uniqueKey()
            assertThrows<SemaphoreException.Auth> {
                DistributedSemaphore.open(SemaphoreConfig("redis://:wrong@127.0.0.1:${guarded.port}", key, guardFreshServer = false))
            }
            DistributedSemaphore.open(SemaphoreConfig("redis://:s3cret@127.0.0.1:${guarded.port}", key, guardFreshServer = false)).use {
                assertTrue(it.tryAcquire())
            }
        }
    }
}
