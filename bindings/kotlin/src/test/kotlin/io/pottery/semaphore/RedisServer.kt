package io.pottery.semaphore

import java.io.File
import java.net.InetSocketAddress
import java.net.ServerSocket
import java.net.Socket
import java.nio.file.Files
import java.nio.file.Path
import java.util.UUID
import java.util.concurrent.TimeUnit
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.BeforeAll
import org.junit.jupiter.api.TestInstance

/**
 * A redis-server process on a free loopback port, owned by the tests and stopped after them.
 * `{freePort}` in [extra] stands for another free port (a cluster node's bus).
 */
class RedisServer(vararg extra: String) : AutoCloseable {
    val port: Int
    private val dir: Path
    private val process: Process

    init {
        // A port found free can be taken before the server binds it (by another server, or as a
        // client connection's own port): the server then exits at once and starts on another.
        var started: Triple<Int, Path, Process>? = null
        for (attempt in 1..3) {
            started = start(freePort(), extra)
            if (started != null) break
        }
        checkNotNull(started) { "redis-server exited at start on three ports in a row" }
        port = started.first
        dir = started.second
        process = started.third
    }

    val url: String get() = "redis://127.0.0.1:$port"

    /** Sends one command and returns the raw reply's first line (enough for SET and the like). */
    fun command(vararg args: String): String = Socket("127.0.0.1", port).use { socket ->
        send(socket, args)
        socket.getInputStream().bufferedReader().readLine()
    }

    /** Sends one command that answers with a bulk string (`INFO`, `CLUSTER INFO`) and returns it. */
    fun bulk(vararg args: String): String = Socket("127.0.0.1", port).use { socket ->
        send(socket, args)
        val input = socket.getInputStream().bufferedReader()
        val length = input.readLine().removePrefix("$").toInt()
        val body = CharArray(length)
        var read = 0
        while (read < length) read += input.read(body, read, length - read)
        String(body)
    }

    /** The text of `INFO section`. */
    fun info(section: String): String = bulk("INFO", section)

    private fun send(socket: Socket, args: Array<out String>) {
        val request = StringBuilder("*${args.size}\r\n")
        for (a in args) request.append("$").append(a.toByteArray().size).append("\r\n").append(a).append("\r\n")
        socket.getOutputStream().apply {
            write(request.toString().toByteArray())
            flush()
        }
    }

    private companion object {
        /** Whether the server answers a PING (any answer: NOAUTH too): it started all it has. */
        fun answers(port: Int): Boolean = try {
            Socket().use { socket ->
                socket.connect(InetSocketAddress("127.0.0.1", port), 1000)
                socket.soTimeout = 1000
                socket.getOutputStream().apply { write("PING\r\n".toByteArray()); flush() }
                socket.getInputStream().read() >= 0
            }
        } catch (e: java.io.IOException) {
            false
        }

        fun freePort(): Int = ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress()).use { it.localPort }

        /**
         * Starts a server on [port]; null when it exited at once (a port of its was taken). Ready
         * means this process bound the port, and answers: redis-server creates its unix socket,
         * in a directory of its own, only after binding its TCP port (so a foreign server on that
         * port cannot pass), and answers only once it started all (a cluster bus port included).
         */
        fun start(port: Int, extra: Array<out String>): Triple<Int, Path, Process>? {
            val dir = Files.createTempDirectory("pottery-semaphore-kt-")
            val ready = dir.resolve("ready.sock").toFile()
            val other = if (extra.any { "{freePort}" in it }) "${freePort()}" else ""
            val args = extra.map { it.replace("{freePort}", other) }
            val command = listOf(
                "redis-server", "--port", "$port", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", dir.toString(), "--unixsocket", ready.path, *args.toTypedArray(),
            )
            val process = try {
                ProcessBuilder(command)
                    .redirectOutput(ProcessBuilder.Redirect.DISCARD)
                    .redirectError(ProcessBuilder.Redirect.DISCARD)
                    .start()
            } catch (e: java.io.IOException) {
                throw IllegalStateException("cannot start redis-server (bash .ci/run installs it)", e)
            }
            val deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10)
            while (process.isAlive) {
                if (ready.exists() && answers(port)) return Triple(port, dir, process)
                if (System.nanoTime() >= deadline) {
                    process.destroyForcibly()
                    throw IllegalStateException("redis-server did not start on port $port")
                }
                Thread.sleep(10)
            }
            dir.toFile().deleteRecursively()
            return null
        }
    }

    override fun close() {
        process.destroyForcibly()
        process.waitFor(10, TimeUnit.SECONDS)
        dir.toFile().deleteRecursively()
    }
}

/** [count] servers made by [make]; if one fails to start, those already started are stopped. */
fun startServers(count: Int, make: () -> RedisServer = { RedisServer() }): List<RedisServer> {
    val started = mutableListOf<RedisServer>()
    try {
        repeat(count) { started += make() }
    } catch (e: Throwable) {
        started.forEach { runCatching { it.close() } }
        throw e
    }
    return started
}

/** One redis-server for the test class; semaphores on it skip the fresh-server guard. */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
abstract class RedisTest {
    lateinit var server: RedisServer
    private val opened = mutableListOf<DistributedSemaphore>()

    @BeforeAll
    fun startServer() {
        server = RedisServer()
    }

    @AfterAll
    fun stopServer() {
        synchronized(opened) { opened.forEach { it.close() } }
        server.close()
    }

    fun uniqueKey(): String = "kt-" + UUID.randomUUID().toString().take(12)

    /** A config for a fresh server: the guard would withhold grants for one lease by design. */
    fun config(key: String, value: Long = 1, bounded: Boolean = true, leaseMillis: Long = 10_000) =
        SemaphoreConfig(server.url, key, value = value, bounded = bounded, leaseMillis = leaseMillis, guardFreshServer = false)

    /** Opens a handle, closed with the server. */
    fun open(key: String, value: Long = 1, bounded: Boolean = true, leaseMillis: Long = 10_000): DistributedSemaphore =
        DistributedSemaphore.openBlocking(config(key, value, bounded, leaseMillis)).also { synchronized(opened) { opened += it } }
}

/** Paths of the workspace, as the build passes them. */
object Workspace {
    val root: File = File(System.getProperty("pottery.workspace") ?: "../..").canonicalFile

    val python: File = File(System.getProperty("pottery.python") ?: root.resolve("target/py/venv/bin/python").path)

    val pythonWorker: File = root.resolve("bindings/python/tests/_worker.py")

    val scenarios: File = root.resolve("tests/conformance/scenarios.json")
}
