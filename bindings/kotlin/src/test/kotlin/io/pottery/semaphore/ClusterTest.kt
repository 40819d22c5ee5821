package io.pottery.semaphore

import java.time.Duration
import java.util.UUID
import java.util.concurrent.CompletableFuture
import java.util.concurrent.TimeUnit
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test

/** A three-primary Redis Cluster: with `cluster` set, the seeds are nodes of one cluster. */
class ClusterTest {
    @Test
    fun `a semaphore lives in one slot and serves holders that know different seeds`() {
        val nodes = startServers(3) { clusterNode() }
        try {
            joinCluster(nodes)
            val key = "kt-cluster-" + UUID.randomUUID().toString().take(12)
            val everySeed = SemaphoreConfig(nodes[0].url, key, value = 2, guardFreshServer = false)
                .withMoreMasters(nodes.drop(1).map { it.url })
                .withCluster(true)
            // The second handle knows one node only and finds the slot's owner itself.
            val oneSeed = SemaphoreConfig(nodes[2].url, key, value = 2, guardFreshServer = false).withCluster(true)
            DistributedSemaphore.openBlocking(everySeed).use { a ->
                DistributedSemaphore.openBlocking(oneSeed).use { b ->
                    assertTrue(a.tryAcquireBlocking())
                    assertTrue(a.tryAcquireBlocking())
                    assertFalse(b.tryAcquireBlocking(), "two permits, both held")
                    assertEquals(0L, b.valueBlocking())

                    val waiter = CompletableFuture.supplyAsync { b.acquirePermitsBlocking(1, Duration.ofSeconds(10)) }
                    while (b.statusBlocking().waiters.isEmpty() && !waiter.isDone) Thread.sleep(5)
                    val released = System.nanoTime()
                    a.releaseBlocking()
                    val woken = waiter.get(10, TimeUnit.SECONDS)
                    val tookMs = (System.nanoTime() - released) / 1_000_000
                    // Woken by the release's push, not by a heartbeat (every 3.3 s with this lease).
                    assertTrue(tookMs < 1_000, "the waiter took $tookMs ms to be served")
                    assertEquals(1, woken.size, "the waiter was served by the release")
                    assertTrue(woken[0].token > a.held.maxOf { it.token }, "fencing tokens increase across holders")
                    assertKeysInOneSlot(nodes, key)
                    b.releaseBlocking()
                    a.releaseBlocking()
                    assertEquals(2L, b.valueBlocking())
                }
            }
        } finally {
            nodes.forEach { it.close() }
        }
    }

    /** The semaphore's state (its hash and its leases, at least) is on the node that owns its
     * hash tag's slot, and no other node holds a key at all. */
    private fun assertKeysInOneSlot(nodes: List<RedisServer>, key: String) {
        val meta = "pottery-semaphore:{$key}:meta"
        val (owners, others) = nodes.partition { it.command("EXISTS", meta) == ":1" }
        assertEquals(1, owners.size, "the state is on exactly one node")
        val slot = owners[0].command("CLUSTER", "KEYSLOT", meta).removePrefix(":")
        assertTrue(owners[0].command("CLUSTER", "COUNTKEYSINSLOT", slot).removePrefix(":").toInt() >= 2)
        for (node in others) assertEquals("*0", node.command("KEYS", "*"), "node ${node.port} holds keys")
    }

    // The bus port defaults to port + 10000, which overflows for high ephemeral ports.
    private fun clusterNode(): RedisServer =
        RedisServer("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-port", "{freePort}")

    /** Joins `nodes` into one cluster, slots spread evenly, and waits until each node agrees. */
    private fun joinCluster(nodes: List<RedisServer>) {
        val create = ProcessBuilder(
            listOf("redis-cli", "--cluster", "create") + nodes.map { "127.0.0.1:${it.port}" } +
                listOf("--cluster-replicas", "0", "--cluster-yes"),
        ).redirectErrorStream(true).start()
        val output = create.inputStream.bufferedReader().readText()
        check(create.waitFor(60, TimeUnit.SECONDS) && create.exitValue() == 0) { "redis-cli --cluster create failed:\n$output" }
        val deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30)
        for (node in nodes) {
            while (true) {
                val info = node.bulk("CLUSTER", "INFO")
                val ok = "cluster_state:ok" in info && "cluster_slots_assigned:16384" in info &&
                    "cluster_known_nodes:${nodes.size}" in info
                if (ok) break
                check(System.nanoTime() < deadline) { "node ${node.port} not ok:\n$info" }
                Thread.sleep(50)
            }
        }
    }
}
