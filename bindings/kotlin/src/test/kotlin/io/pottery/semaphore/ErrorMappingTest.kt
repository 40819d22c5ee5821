package io.pottery.semaphore

import io.pottery.semaphore.ffi.InternalException
import io.pottery.semaphore.ffi.SemaphoreException as NativeError
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Assertions.assertSame
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

/** Every case of the generated error maps to its own exception, detail and message intact. */
class ErrorMappingTest {
    private inline fun <reified T : SemaphoreException> check(native: NativeError, message: String): T {
        val mapped = SemaphoreException.from(native)
        assertEquals(T::class, mapped::class)
        assertEquals(message, mapped.message)
        assertSame(native, mapped.cause)
        return mapped as T
    }

    @Test
    fun `each case maps to its own exception`() {
        assertEquals("x", check<SemaphoreException.InvalidArgument>(NativeError.InvalidArgument("x"), "invalid argument: x").detail)
        val bounded = check<SemaphoreException.Bounded>(
            NativeError.Bounded("k", 2uL, 3uL),
            "cannot release: semaphore \"k\" would exceed its initial value 3 (2 available)",
        )
        assertEquals(Triple("k", 2L, 3L), Triple(bounded.key, bounded.current, bounded.initial))
        check<SemaphoreException.WrongType>(NativeError.WrongType("x"), "wrong type: x")
        check<SemaphoreException.Unreachable>(NativeError.Unreachable("x"), "Redis is unreachable: x")
        check<SemaphoreException.Auth>(NativeError.Auth("x"), "Redis refused the credentials: x")
        check<SemaphoreException.Cancelled>(NativeError.Cancelled(), "cancelled")
        check<SemaphoreException.Forbidden>(NativeError.Forbidden("x"), "forbidden by the host sandbox: x")
        check<SemaphoreException.Redis>(NativeError.Redis("x"), "Redis error: x")
        check<SemaphoreException.Quorum>(NativeError.Quorum("x"), "no quorum: x")
        check<SemaphoreException.NotReplicated>(NativeError.NotReplicated("x"), "not replicated: x")
        check<SemaphoreException.Guest>(NativeError.Guest("x"), "the protocol component failed: x")
        check<SemaphoreException.Runtime>(NativeError.Runtime("x"), "runtime error: x")
    }

    @Test
    fun `a panic of the native library is one of ours too`() {
        val e = assertThrows<SemaphoreException.Runtime> { translated<Unit> { throw InternalException("boom") } }
        assertEquals("runtime error: boom", e.message)
    }

    @Test
    fun `a negative replica count or time-out is an argument error, not a huge unsigned one`() {
        val config = SemaphoreConfig("redis://127.0.0.1:1", "k")
        assertThrows<SemaphoreException.InvalidArgument> { config.withReplicaAck(-1, 100) }
        assertThrows<SemaphoreException.InvalidArgument> { config.withReplicaAck(1, -100) }
        assertEquals(1u, config.withReplicaAck(1, 100).replicaAck?.replicas)
    }

    @Test
    fun `a config prints itself without its passwords`() {
        val config = SemaphoreConfig("redis://app:s3cret@h:6379/0", "k", moreMasters = listOf("unix:///r.sock?db=0&pass=hunter2"))
        val printed = config.toString()
        assertFalse("s3cret" in printed || "hunter2" in printed, printed)
        assertTrue("redis://app:***@h:6379/0" in printed && "pass=***" in printed, printed)
        // The URL parser splits user-info at its last `@`: a raw `@` may sit in either part.
        val secrets = mapOf(
            "redis://ops@corp.com:hunter2@h:6379/0" to "redis://ops@corp.com:***@h:6379/0",
            "redis://app:p@ssw0rd@h/0" to "redis://app:***@h/0",
            "rediss://:a@b@h" to "rediss://:***@h",
            "redis://app:p#ss@h:6379" to "redis://app:***@h:6379",
            "redis://app:p?ss@h/0" to "redis://app:***@h/0",
            "redis://app:ab/cd+ef==@h:6379/0" to "redis://app:***@h:6379/0",
            "redis://:Zx9/Qw==@h" to "redis://:***@h",
            "redis://app:p@ss/w@h/0" to "redis://app:***@h/0",
            "redis://app:a/b?c@h" to "redis://app:***@h",
            "unix:///r.sock?pass=a&pass=b&db=1" to "unix:///r.sock?pass=***&pass=***&db=1",
            "unix:///r.sock?%70ass=hunter2&db=1" to "unix:///r.sock?%70ass=***&db=1",
            "unix:///r.sock?p%61%73s=hunter2" to "unix:///r.sock?p%61%73s=***",
            "unix:///r.sock?pass=hun#ter2" to "unix:///r.sock?pass=***",
            "unix:///r.sock?pass=hun&ter2&db=1" to "unix:///r.sock?pass=***&db=1",
            "unix:///r.sock?tls&pass=x" to "unix:///r.sock?tls&pass=***",
            "unix:///r.sock?passive=1&bypass=2&pass%=3" to "unix:///r.sock?passive=1&bypass=2&pass%=3",
        )
        for ((url, shown) in secrets) assertEquals(shown, redacted(url))
        assertEquals("redis://u@h:1/0?x=a:b@c", redacted("redis://u@h:1/0?x=a:b@c"))
    }
}
