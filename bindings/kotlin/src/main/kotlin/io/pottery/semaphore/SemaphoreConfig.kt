package io.pottery.semaphore

import io.pottery.semaphore.ffi.ReplicaAck
import io.pottery.semaphore.ffi.SemaphoreOptions

/**
 * What to open: the semaphore [key] on the Redis server at [url] (`redis://[user:password@]host:port[/db]`,
 * `rediss://` for TLS).
 *
 * @property value the number of permits when this opener creates the semaphore (the first opener
 *   sets it; later ones adopt the value Redis holds).
 * @property bounded whether releasing above the initial value fails ([SemaphoreException.Bounded]).
 * @property leaseMillis how long a permit lives unless refreshed; the handle refreshes its permits
 *   in the background, so a lease only runs out when the holder dies or loses Redis.
 * @property guardFreshServer withhold grants for one lease after Redis (re)started, so that
 *   permits held before a restart that lost them (or reloaded older state) cannot be granted
 *   twice. Turn off only for servers that persist every write (`appendfsync always`) or for
 *   tests on throwaway servers.
 * @property create when false, opening a semaphore that does not exist fails instead of creating it.
 * @property moreMasters independent masters besides [url]: with any, each permit is a slot held on
 *   a majority of all of them (Redlock mode; no FIFO queue).
 * @property raiseOnRedisErrors with several masters, an acquire that finds so many of them failing
 *   that no majority is left throws [SemaphoreException.Quorum] instead of returning false.
 * @property cluster [url] and [moreMasters] are seed nodes of one Redis Cluster.
 * @property replicaAck wait for this many replicas (`WAIT`, or `WAITAOF`) after every grant and
 *   release; a grant they do not acknowledge in time is given back and
 *   [SemaphoreException.NotReplicated] thrown. For a primary with replicas (managed Redis;
 *   a Sentinel fail-over is not followed: reopen on the new primary).
 *
 * Kotlin: `SemaphoreConfig(url, "jobs", value = 3)`. Java: `new SemaphoreConfig(url, "jobs").withValue(3)`.
 */
data class SemaphoreConfig @JvmOverloads constructor(
    val url: String,
    val key: String,
    val value: Long = 1,
    val bounded: Boolean = true,
    val leaseMillis: Long = 10_000,
    val guardFreshServer: Boolean = true,
    val create: Boolean = true,
    val moreMasters: List<String> = emptyList(),
    val raiseOnRedisErrors: Boolean = false,
    val cluster: Boolean = false,
    val replicaAck: ReplicaAck? = null,
) {
    fun withValue(value: Long) = copy(value = value)

    fun withBounded(bounded: Boolean) = copy(bounded = bounded)

    fun withLeaseMillis(leaseMillis: Long) = copy(leaseMillis = leaseMillis)

    fun withGuardFreshServer(guardFreshServer: Boolean) = copy(guardFreshServer = guardFreshServer)

    fun withCreate(create: Boolean) = copy(create = create)

    fun withMoreMasters(moreMasters: List<String>) = copy(moreMasters = moreMasters)

    fun withRaiseOnRedisErrors(raiseOnRedisErrors: Boolean) = copy(raiseOnRedisErrors = raiseOnRedisErrors)

    fun withCluster(cluster: Boolean) = copy(cluster = cluster)

    @JvmOverloads
    fun withReplicaAck(replicas: Int, timeoutMillis: Long, aof: Boolean = false): SemaphoreConfig {
        // The native record is unsigned: a negative number would wrap to a huge one there.
        if (replicas < 0 || timeoutMillis < 0) {
            throw SemaphoreException.InvalidArgument(
                "replica acknowledgement needs replicas >= 0 and a time-out >= 0, not $replicas and $timeoutMillis ms",
            )
        }
        return copy(replicaAck = ReplicaAck(replicas.toUInt(), timeoutMillis.toULong(), aof))
    }

    /** As a data class prints itself, with the passwords in [url] and [moreMasters] hidden: configs end up in logs. */
    override fun toString(): String =
        "SemaphoreConfig(url=${redacted(url)}, key=$key, value=$value, bounded=$bounded, leaseMillis=$leaseMillis, " +
            "guardFreshServer=$guardFreshServer, create=$create, moreMasters=${moreMasters.map(::redacted)}, " +
            "raiseOnRedisErrors=$raiseOnRedisErrors, cluster=$cluster, replicaAck=$replicaAck)"

    internal fun toOptions(): SemaphoreOptions {
        // The native record takes the lease unsigned: a negative one is an argument error here
        // rather than a huge lease there.
        if (leaseMillis <= 0) {
            throw SemaphoreException.InvalidArgument("the lease must be positive, not $leaseMillis ms")
        }
        // Text crosses as UTF-8; a lone surrogate (a String cut inside a pair) has no encoding.
        checkText(key, "the key ${key.take(64)}")
        (listOf(url) + moreMasters).forEach { checkText(it, "a master's URL") } // not shown: it may hold a password
        return SemaphoreOptions(
            url = url,
            moreMasters = moreMasters,
            raiseOnRedisErrors = raiseOnRedisErrors,
            cluster = cluster,
            replicaAck = replicaAck,
            key = key,
            value = value,
            bounded = bounded,
            leaseMs = leaseMillis.toULong(),
            guardFreshServer = guardFreshServer,
            create = create,
        )
    }
}

/** An argument error for text with no UTF-8 form (a lone surrogate), as the native layer needs. */
private fun checkText(text: String, what: String) {
    if (!Charsets.UTF_8.newEncoder().canEncode(text)) {
        throw SemaphoreException.InvalidArgument("$what is not valid Unicode text (a lone surrogate)")
    }
}

/**
 * [url] with the password of its user-info (`user:password@`) and any `pass` parameter hidden.
 * The user-info ends at the authority's last `@`, as the URL parser reads it, so a raw `@` in a
 * password is hidden too. A raw `/`, `?` or `#` in a password (which breaks the URL) does not
 * end the search either, so such a URL, logged because it failed, does not show its password:
 * the user-info ends at the later of the last `@` before the first `/` and the last `@` before
 * the first `?` or `#`, or else at the last `@` of all (which may hide more than the password,
 * never less). A parameter is `pass` as the URL parser reads its name (`%70ass` too), and its
 * value runs, for the same reason, past a `#` and past any `&` but one that starts another
 * parameter (`name=…`).
 */
internal fun redacted(url: String): String {
    val authority = url.indexOf("://").let { if (it < 0) 0 else it + 3 }
    fun lastAtBefore(end: Int) = url.lastIndexOf('@', (if (end < 0) url.length else end) - 1)
    val beforePath = lastAtBefore(url.indexOf('/', authority))
    val beforeQuery = lastAtBefore(url.indexOfAny(charArrayOf('?', '#'), authority))
    val at = maxOf(beforePath, beforeQuery).takeIf { it >= authority } ?: url.lastIndexOf('@')
    val colon = url.indexOf(':', authority)
    val hidden = if (at >= authority && colon in authority until at) url.substring(0, colon + 1) + "***" + url.substring(at) else url
    val query = hidden.indexOf('?').takeIf { it >= 0 } ?: return hidden
    // A part without `=` goes on with the value before it (a raw `&` in it).
    val parts = hidden.substring(query + 1).split('&').fold(mutableListOf<String>()) { params, part ->
        if (params.isNotEmpty() && '=' !in part) params[params.size - 1] += "&$part" else params += part
        params
    }
    val params = parts.map { param ->
        val name = param.substringBefore('=', missingDelimiterValue = "")
        if (formDecoded(name) == "pass") "$name=***" else param
    }
    return hidden.substring(0, query + 1) + params.joinToString("&")
}

/** A query parameter's name as the URL parser reads it; as it is where it is not well-formed. */
private fun formDecoded(name: String): String =
    try {
        java.net.URLDecoder.decode(name, Charsets.UTF_8)
    } catch (_: IllegalArgumentException) {
        name
    }
