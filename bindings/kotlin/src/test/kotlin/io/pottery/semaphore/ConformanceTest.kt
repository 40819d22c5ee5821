package io.pottery.semaphore

import kotlin.time.Duration
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.runBlocking
import kotlinx.serialization.json.Json
import kotlinx.serialization.json.JsonObject
import kotlinx.serialization.json.JsonPrimitive
import kotlinx.serialization.json.booleanOrNull
import kotlinx.serialization.json.doubleOrNull
import kotlinx.serialization.json.int
import kotlinx.serialization.json.jsonArray
import kotlinx.serialization.json.jsonObject
import kotlinx.serialization.json.jsonPrimitive
import kotlinx.serialization.json.long
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.fail
import org.junit.jupiter.api.DynamicTest
import org.junit.jupiter.api.TestFactory

/**
 * The shared conformance scenarios (tests/conformance/scenarios.json) through the Kotlin SDK; the
 * Rust and Python suites run the same file, so the SDKs cannot drift apart.
 */
class ConformanceTest : RedisTest() {

    @TestFactory
    fun scenarios(): List<DynamicTest> {
        val root = Json.parseToJsonElement(Workspace.scenarios.readText()).jsonObject
        return root.getValue("scenarios").jsonArray.map { it.jsonObject }.map { scenario ->
            DynamicTest.dynamicTest(scenario.getValue("name").jsonPrimitive.content) { runBlocking { run(scenario) } }
        }
    }

    private fun JsonObject.long(name: String, default: Long): Long = this[name]?.jsonPrimitive?.long ?: default

    private fun kind(e: Throwable): String = when (e) {
        is SemaphoreException.Bounded -> "bounded"
        is SemaphoreException.InvalidArgument -> "invalid_argument"
        is SemaphoreException.WrongType -> "wrong_type"
        is SemaphoreException.Unreachable -> "unreachable"
        is SemaphoreException.Auth -> "auth"
        else -> e.javaClass.name
    }

    private suspend fun open(key: String, spec: JsonObject): DistributedSemaphore {
        val realKey = spec["key_length"]?.let { "k".repeat(it.jsonPrimitive.int) } ?: key
        val bounded = spec["bounded"]?.jsonPrimitive?.booleanOrNull ?: true
        val sem = DistributedSemaphore.open(config(realKey, value = spec.long("value", 1), bounded = bounded))
        return sem
    }

    /** The step's time-out: absent or -1 waits forever. */
    private fun timeout(step: JsonObject): Duration? {
        val t = step["timeout"]?.jsonPrimitive ?: return null
        // A NaN time-out cannot be built as a Duration: the type refuses it. The SDK never sees it.
        if (t.isString && t.content == "nan") return Double.NaN.seconds
        val seconds = t.doubleOrNull ?: fail("bad timeout $t")
        return if (seconds == -1.0) null else seconds.seconds
    }

    private suspend fun step(handles: List<DistributedSemaphore>, key: String, step: JsonObject): Any? {
        val op = step.getValue("op").jsonPrimitive.content
        if (op == "open") {
            open(key, step).close()
            return null
        }
        val sem = handles[step.getValue("handle").jsonPrimitive.int]
        val n = step.long("n", 1).toInt()
        return when (op) {
            "acquire" -> {
                val blocking = step["blocking"]?.jsonPrimitive?.booleanOrNull ?: true
                if (blocking) sem.acquire(n, timeout(step)) else sem.tryAcquire(n)
            }
            "release" -> sem.release(n)
            "value" -> sem.value()
            "initial_value" -> sem.initialValue()
            "locked" -> sem.locked()
            "held" -> sem.permits().size.toLong()
            else -> fail("unknown op $op")
        }
    }

    private fun expected(v: JsonPrimitive): Any = v.booleanOrNull ?: v.long

    private suspend fun run(scenario: JsonObject) {
        val key = "conformance-" + uniqueKey()
        val handles = scenario.getValue("handles").jsonArray.map { open(key, it.jsonObject) }
        try {
            scenario.getValue("steps").jsonArray.map { it.jsonObject }.forEachIndexed { i, s ->
                val at = "step $i: $s"
                val error = s["error"]?.jsonPrimitive?.content
                if (error != null) {
                    val e = runCatching { step(handles, key, s) }.exceptionOrNull() ?: fail("$at: no error")
                    // The NaN time-out is refused by kotlin.time.Duration before the SDK is called.
                    val got = if (e is IllegalArgumentException && s["timeout"]?.jsonPrimitive?.content == "nan") {
                        "invalid_argument"
                    } else {
                        kind(e)
                    }
                    assertEquals(error, got, "$at: $e")
                    if (error == "bounded") {
                        e as SemaphoreException.Bounded
                        assertEquals(s.long("current", -1) to s.long("initial", -1), e.current to e.initial, at)
                    }
                } else {
                    val got = step(handles, key, s)
                    s["expect"]?.let { assertEquals(expected(it.jsonPrimitive), got, at) }
                }
            }
        } finally {
            handles.forEach { it.close() }
        }
    }
}
