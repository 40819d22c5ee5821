// A Kotlin worker of `cargo xtask demo` (not part of the SDK): ROUNDS acquire/hold/release
// rounds on the demo's semaphore, printing `span <start µs> <end µs> <token>` per hold, relative
// to EPOCH_US (Unix µs, the clock every worker reads), so the demo draws every worker on one
// timeline and checks that no more than `permits` held at once.
package io.pottery.semaphore

import java.time.Instant
import kotlinx.coroutines.delay
import kotlinx.coroutines.runBlocking

fun main(args: Array<String>) = runBlocking {
    val (url, key, permits, rounds, epochUs, seed) = args
    val config = SemaphoreConfig(url, key, value = permits.toLong(), guardFreshServer = false)
    DistributedSemaphore.open(config).use { sem ->
        repeat(rounds.toInt()) { r ->
            sem.withPermit {
                val start = nowMicros() - epochUs.toLong()
                delay(40L + (seed.toInt() * 37 + r * 53) % 90)
                val end = nowMicros() - epochUs.toLong()
                println("span $start $end ${sem.fencingToken}")
            }
        }
    }
}

/** The real-time clock to the microsecond (System.currentTimeMillis stops at milliseconds). */
private fun nowMicros(): Long = Instant.now().let { it.epochSecond * 1_000_000 + it.nano / 1_000 }

private operator fun <T> Array<T>.component6(): T = this[5]
