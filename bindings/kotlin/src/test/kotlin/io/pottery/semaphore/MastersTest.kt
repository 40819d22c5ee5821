package io.pottery.semaphore

import java.util.UUID
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

/** Several independent masters: each permit a slot held on a majority (Redlock mode). */
class MastersTest {
    @Test
    fun `a permit needs a majority and a lost majority is a quorum error`() {
        val servers = startServers(3)
        try {
            val key = "kt-mm-" + UUID.randomUUID().toString().take(12)
            val config = SemaphoreConfig(servers[0].url, key, value = 2, guardFreshServer = false)
                .withMoreMasters(servers.drop(1).map { it.url })
            DistributedSemaphore.openBlocking(config).use { sem ->
                assertTrue(sem.tryAcquireBlocking())
                assertEquals(1L, sem.valueBlocking())
                servers[2].close()
                assertTrue(sem.tryAcquireBlocking(), "two of three masters are a majority")
                sem.releaseBlocking(2)
                servers[1].close()
                assertFalse(sem.tryAcquireBlocking(), "no majority: not acquired")
            }
            // Opening needs a majority too, so with two masters down the open already reports it.
            val e = assertThrows<SemaphoreException.Quorum> {
                DistributedSemaphore.openBlocking(config.withRaiseOnRedisErrors(true)).use { it.tryAcquireBlocking() }
            }
            assertTrue(e.detail.contains("2 of 3 masters failed"), e.detail)
        } finally {
            servers.forEach { it.close() }
        }
    }
}

/** A primary and its replica: every grant waits for the replica's acknowledgement. */
class ReplicaAckTest {
    @Test
    fun `grants wait for the replica and bad time-outs are refused`() {
        RedisServer().use { primary ->
            RedisServer("--replicaof", "127.0.0.1", "${primary.port}").use { replica ->
                val deadline = System.nanoTime() + 10_000_000_000L
                while (!replica.info("replication").contains("master_link_status:up")) {
                    check(System.nanoTime() < deadline) { "the replica did not connect" }
                    Thread.sleep(50)
                }
                val key = "kt-ack-" + UUID.randomUUID().toString().take(12)
                val config = SemaphoreConfig(primary.url, key, guardFreshServer = false).withReplicaAck(1, 200)
                DistributedSemaphore.openBlocking(config).use { sem ->
                    // The setting reached the native side: the grant and the release each wait.
                    val beforeGrant = waitCalls(primary)
                    assertTrue(sem.tryAcquireBlocking())
                    val beforeRelease = waitCalls(primary)
                    assertTrue(beforeRelease > beforeGrant, "the grant ran no WAIT")
                    assertEquals(0L, sem.valueBlocking())
                    sem.releaseBlocking()
                    assertTrue(waitCalls(primary) > beforeRelease, "the release ran no WAIT")
                }
                assertThrows<SemaphoreException.InvalidArgument> {
                    DistributedSemaphore.openBlocking(config.withReplicaAck(1, 10_000)).close()
                }
            }
        }
    }
}

/** WAIT commands the server has run (`INFO commandstats`). */
private fun waitCalls(server: RedisServer): Long =
    Regex("cmdstat_wait:calls=(\\d+)").find(server.info("commandstats"))?.groupValues?.get(1)?.toLong() ?: 0L
