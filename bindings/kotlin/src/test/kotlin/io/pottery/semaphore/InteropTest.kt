package io.pottery.semaphore

import java.io.File
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit
import kotlin.time.Duration.Companion.milliseconds
import kotlin.time.Duration.Companion.seconds
import kotlin.time.TimeSource
import kotlinx.coroutines.delay
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Assertions.fail
import org.junit.jupiter.api.Test

/** A Python SDK process (bindings/python/tests/_worker.py) whose output lines can be awaited. */
class PythonWorker(vararg args: String) : AutoCloseable {
    private val stderr: File = File.createTempFile("pottery-semaphore-py-worker-", ".log")
    private val lines = LinkedBlockingQueue<String>()
    private val process: Process

    init {
        val python = Workspace.python
        if (!python.canExecute()) {
            fail<Unit>("$python is missing: run `cargo xtask python` from the workspace root (or set -Dpottery.python)")
        }
        process = ProcessBuilder(python.path, Workspace.pythonWorker.path, *args)
            .redirectError(stderr)
            .start()
        Thread {
            process.inputStream.bufferedReader().forEachLine { lines.put(it) }
        }.apply { isDaemon = true }.start()
    }

    /** The next line the worker prints, waiting up to [seconds]. */
    fun nextLine(seconds: Long = 60): String =
        lines.poll(seconds, TimeUnit.SECONDS)
            ?: fail("the Python worker printed nothing in $seconds s (alive: ${process.isAlive}); stderr:\n${stderr.readText()}")

    fun kill() {
        process.destroyForcibly()
        process.waitFor(10, TimeUnit.SECONDS)
    }

    fun exitCode(seconds: Long = 30): Int {
        check(process.waitFor(seconds, TimeUnit.SECONDS)) { "the Python worker did not exit" }
        return process.exitValue()
    }

    override fun close() {
        kill()
        stderr.delete()
    }
}

/** The Kotlin SDK and the Python SDK on one semaphore. */
class InteropTest : RedisTest() {

    @Test
    fun `a Kotlin holder blocks a Python waiter until it releases`() = runBlocking<Unit> {
        val key = uniqueKey()
        val sem = open(key)
        assertTrue(sem.acquire())
        PythonWorker("wait", server.url, key, "30").use { worker ->
            assertEquals("waiting", worker.nextLine())
            eventually("the Python waiter queued", 30.seconds) { sem.status().waiters.size == 1 }
            delay(300)
            assertEquals(0, sem.value(), "the Python waiter still waits")
            val released = TimeSource.Monotonic.markNow()
            sem.release()
            val line = worker.nextLine()
            val handOff = released.elapsedNow()
            val words = line.split(" ")
            assertEquals("acquired", words[0], line)
            assertTrue(words[1].toLong() >= 300, "the Python side waited ${words[1]} ms")
            println("Kotlin release -> Python 'acquired' line: $handOff")
            // Woken by the release's push, not found by a heartbeat (every 3.3 s with this lease).
            assertTrue(handOff < 1.seconds, "the Python waiter took $handOff to see the release")
            assertEquals(0, worker.exitCode())
        }
        eventually("the Python worker released") { sem.value() == 1L }
    }

    @Test
    fun `a Python holder blocks Kotlin until its lease runs out`() = runBlocking<Unit> {
        val key = uniqueKey()
        val lease = 2.seconds
        PythonWorker("hold", server.url, key, "${lease.inWholeSeconds}").use { worker ->
            val line = worker.nextLine()
            assertTrue(line.startsWith("held "), line)
            val pythonToken = line.removePrefix("held ").trim().toLong()
            val sem = open(key)
            assertFalse(sem.tryAcquire())
            assertFalse(sem.acquire(timeout = 300.milliseconds))
            assertEquals(1, sem.status().holders.size)
            worker.kill() // no release: only the lease can free the permit
            val killed = TimeSource.Monotonic.markNow()
            assertTrue(sem.acquire(timeout = lease + 3.seconds), "Kotlin got the permit after the Python holder died")
            val waited = killed.elapsedNow()
            println("Python holder killed -> Kotlin acquired: $waited (lease $lease)")
            assertTrue(waited <= lease + 1.seconds, "waited $waited for a $lease lease")
            assertTrue(sem.fencingToken!! > pythonToken, "token ${sem.fencingToken} after Python's $pythonToken")
            sem.release()
        }
    }
}
