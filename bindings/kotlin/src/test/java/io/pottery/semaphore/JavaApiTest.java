package io.pottery.semaphore;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

/** The blocking API as Java sees it. */
class JavaApiTest extends RedisTest {

    private SemaphoreConfig javaConfig(String key) {
        return new SemaphoreConfig(getServer().getUrl(), key).withValue(2).withGuardFreshServer(false);
    }

    @Test
    void blockingCallsFromJava() throws Exception {
        String key = uniqueKey();
        try (DistributedSemaphore sem = DistributedSemaphore.openBlocking(javaConfig(key));
             DistributedSemaphore other = DistributedSemaphore.openBlocking(javaConfig(key))) {
            assertEquals(2L, sem.valueBlocking());
            assertTrue(sem.acquireBlocking());
            assertTrue(sem.acquireBlocking(1, Duration.ofSeconds(1)));
            assertTrue(sem.lockedBlocking());
            assertFalse(other.tryAcquireBlocking());
            assertFalse(other.acquireBlocking(1, Duration.ofMillis(100)));
            assertEquals(2, sem.getHeld().size());
            sem.releaseBlocking(2);
            List<Permit> permits = other.acquirePermitsBlocking(2);
            assertEquals(2, permits.size());
            assertEquals(permits, other.releasePermitsBlocking(permits));
            assertEquals(2L, other.valueBlocking());

            SemaphoreException.Bounded e = assertThrows(SemaphoreException.Bounded.class, () -> sem.releaseBlocking());
            assertEquals(key, e.getKey());
            assertEquals(2L, e.getCurrent());
            assertEquals(2L, e.getInitial());
        }
    }

    @Test
    void threadsShareOneHandle() throws Exception {
        try (DistributedSemaphore sem = DistributedSemaphore.openBlocking(javaConfig(uniqueKey()))) {
            AtomicInteger inside = new AtomicInteger();
            AtomicInteger most = new AtomicInteger();
            ExecutorService pool = Executors.newFixedThreadPool(8);
            try {
                Future<?>[] done = new Future<?>[8];
                for (int t = 0; t < done.length; t++) {
                    done[t] = pool.submit(() -> {
                        for (int i = 0; i < 10; i++) {
                            sem.withPermitBlocking(() -> {
                                most.accumulateAndGet(inside.incrementAndGet(), Math::max);
                                inside.decrementAndGet();
                                return null;
                            });
                        }
                    });
                }
                for (Future<?> f : done) {
                    f.get(60, TimeUnit.SECONDS);
                }
            } finally {
                pool.shutdownNow();
            }
            assertTrue(most.get() <= 2, "at most " + most.get() + " inside");
            assertEquals(2L, sem.valueBlocking());
        }
    }
}
