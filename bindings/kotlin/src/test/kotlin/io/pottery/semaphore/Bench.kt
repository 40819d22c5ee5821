// The Kotlin SDK's benchmark (not part of the SDK): the uncontended acquire+release cycle and
// the contended scenario (8 threads, 2 permits, 10 ms hold) against a throwaway redis-server,
// printed and, with BENCH_JSON set, written in bench/README.md's format for `cargo xtask report`.
package io.pottery.semaphore

import java.io.File
import java.util.concurrent.ConcurrentLinkedQueue
import java.util.concurrent.atomic.AtomicLong
import kotlin.concurrent.thread

private fun percentile(sorted: List<Double>, p: Double): Double =
    if (sorted.isEmpty()) 0.0 else sorted[Math.round((sorted.size - 1) * p).toInt()]

private fun fmt(x: Double) = "%.1f".format(java.util.Locale.ROOT, x)

fun main() {
    val iters = System.getenv("BENCH_ITERS")?.toInt() ?: 2000
    val seconds = System.getenv("BENCH_SECONDS")?.toDouble() ?: 6.0
    RedisServer().use { server ->
        val config = SemaphoreConfig(server.url, "bench-kotlin-cycle", value = 1, guardFreshServer = false)
        val cycle = DistributedSemaphore.openBlocking(config).use { sem ->
            repeat(200) { sem.acquireBlocking(); sem.releaseBlocking() }
            List(iters) {
                val t0 = System.nanoTime()
                sem.acquireBlocking()
                sem.releaseBlocking()
                (System.nanoTime() - t0) / 1000.0
            }.sorted()
        }
        val contended = SemaphoreConfig(server.url, "bench-kotlin-contended", value = 2, guardFreshServer = false)
        val handles = List(8) { DistributedSemaphore.openBlocking(contended) }
        val heldNanos = AtomicLong()
        val waits = ConcurrentLinkedQueue<Double>()
        val start = System.nanoTime() + 500_000_000L
        val until = start + (seconds * 1e9).toLong()
        handles.map { sem ->
            thread {
                while (System.nanoTime() < start) Thread.sleep(1)
                while (System.nanoTime() < until) {
                    val t0 = System.nanoTime()
                    sem.acquireBlocking()
                    val h0 = System.nanoTime()
                    waits.add((h0 - t0) / 1e6)
                    Thread.sleep(10)
                    heldNanos.addAndGet(System.nanoTime() - h0)
                    sem.releaseBlocking()
                }
            }
        }.forEach { it.join() }
        // Over the run as it went: the last cycles end after `until`, and their holds count.
        val wallSeconds = (System.nanoTime() - start) / 1e9
        handles.forEach { it.close() }
        val sortedWaits = waits.toList().sorted()
        val utilisation = heldNanos.get() / 1e9 / (2 * wallSeconds) * 100
        println("| Kotlin SDK acquire+release | mean ${fmt(cycle.average())} µs, p50 ${fmt(percentile(cycle, .5))} µs, p99 ${fmt(percentile(cycle, .99))} µs |")
        println("| contended, 8 threads, 2 permits, 10 ms hold | utilisation ${fmt(utilisation)} %, ${sortedWaits.size} grants, wait p50 ${fmt(percentile(sortedWaits, .5))} ms, p99 ${fmt(percentile(sortedWaits, .99))} ms |")
        val version = Regex("redis_version:(\\S+)").find(server.info("server"))?.groupValues?.get(1) ?: "?"
        System.getenv("BENCH_JSON")?.let { path ->
            val client = "\"client\": \"Kotlin (DistributedSemaphore, blocking)\""
            val json = """
                |{"benchmark": "bindings/kotlin/src/test/kotlin/io/pottery/semaphore/Bench.kt", "redis_server": "$version", "rows": [
                |  {"name": "DistributedSemaphore acquire+release", "implementation": "Kotlin SDK", $client,
                |   "scenario": "uncontended cycle", "mean_us": ${cycle.average()}, "p50_us": ${percentile(cycle, .5)},
                |   "p99_us": ${percentile(cycle, .99)}, "samples": ${cycle.size}},
                |  {"name": "contended, 8 threads, 2 permits, 10 ms hold", "implementation": "Kotlin SDK", $client,
                |   "scenario": "contended", "workers": 8, "worker_kind": "threads", "permits": 2, "hold_ms": 10.0,
                |   "seconds": $seconds, "wall_seconds": $wallSeconds, "utilisation_pct": $utilisation, "grants": ${sortedWaits.size},
                |   "wait_p50_ms": ${percentile(sortedWaits, .5)}, "wait_p99_ms": ${percentile(sortedWaits, .99)},
                |   "wait_mean_ms": ${sortedWaits.average()}, "wait_samples_ms": [${sortedWaits.joinToString(", ")}]}
                |]}
            """.trimMargin()
            File(path).writeText(json + "\n")
        }
    }
}
