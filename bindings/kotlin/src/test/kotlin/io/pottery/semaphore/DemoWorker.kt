// A Kotlin worker of `cargo xtask demo` (not part of the SDK): ROUNDS acquire/hold/release
// rounds on the demo's semaphore, printing `span <start ms> <end ms> <token>` per hold, relative
// to EPOCH_MS (Unix ms), so the demo draws every worker on one timeline.
package io.pottery.semaphore

import kotlinx.coroutines.delay
import kotlinx.coroutines.runBlocking

fun main(args: Array<String>) = runBlocking {
    val (url, key, permits, rounds, epochMs, seed) = args
    val config = SemaphoreConfig(url, key, value = permits.toLong(), guardFreshServer = false)
    DistributedSemaphore.open(config).use { sem ->
        repeat(rounds.toInt()) { r ->
            sem.withPermit {
                val start = System.currentTimeMillis() - epochMs.toLong()
                delay(40L + (seed.toInt() * 37 + r * 53) % 90)
                val end = System.currentTimeMillis() - epochMs.toLong()
                println("span $start $end ${sem.fencingToken}")
            }
        }
    }
}

private operator fun <T> Array<T>.component6(): T = this[5]
