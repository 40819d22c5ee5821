//! The independent oracle of the fault tests: a protected resource that knows nothing of the
//! semaphore's protocol. It runs in a Redis server of its own (never faulted), as one Lua script
//! that every worker process calls, so its judgement is atomic and shared.
//!
//! Semantics, per call (the oracle's clock is the machine's wall clock, which every process of
//! a test shares, read as `TIME` by the oracle's server):
//! - `enter(holder, slot, token, valid_until)` and `op(holder, slot, token)` are rejected as
//!   *stale* when `token` is older than the last token accepted for `slot`, and as *expired*
//!   when the holder has no live entry (an entry lives until `valid_until`: a resource that
//!   honours leases) — for `enter`, when `valid_until` has already passed.
//! - Otherwise they are accepted and the slot's last token becomes the newer of the two.
//! - Concurrent accepted holders are the entries entered and neither left nor expired; the
//!   maximum is recorded, and every accepted call made while there are more than `permits` is a
//!   *violation* (counted, with details).
//! - `leave(holder)` ends the holder's entry.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Flavor, Server};

/// How a deployment numbers its fencing tokens, which decides what the oracle fences on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One server: every grant takes the next token of the semaphore.
    Single,
    /// Redis Cluster: the semaphore lives on one node at a time, tokens as with one server.
    Cluster,
    /// Independent masters: a permit is a numbered slot held on a majority;
    /// its token is `epoch << 16 | slot`, strictly increasing per slot.
    MultiMaster,
}

impl Mode {
    pub fn of(masters: usize, cluster: bool) -> Mode {
        match (masters, cluster) {
            (_, true) => Mode::Cluster,
            (1, false) => Mode::Single,
            _ => Mode::MultiMaster,
        }
    }
}

/// The permit slot the oracle fences `token` on. With several masters it is the permit's slot
/// (`token & 0xFFFF`): a newer epoch of a slot makes the older holder of that slot stale. With
/// one server or a cluster, tokens are unique and increasing per semaphore and no slot number
/// exists, so the slot is the token itself (then only a token replayed below a newer one of the
/// same grant could be stale; the count of holders is what guards the bound there).
pub fn oracle_slot(token: u64, mode: Mode) -> u64 {
    match mode {
        Mode::MultiMaster => token & 0xFFFF,
        Mode::Single | Mode::Cluster => token,
    }
}

const KEYS: [&str; 5] = ["oracle:last", "oracle:live", "oracle:stats", "oracle:log", "oracle:config"];

/// Tokens are compared as decimal strings (shorter is older): Lua numbers are doubles, exact
/// only below 2^53, and `epoch << 16 | slot` may be above.
const SCRIPT: &str = r#"
local LAST, LIVE, STATS, LOG, CONFIG = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local kind, holder, slot, token, valid_until = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', LIVE, '-inf', now)
if kind == 'leave' then
  redis.call('ZREM', LIVE, holder)
  redis.call('HINCRBY', STATS, 'leaves', 1)
  return 'left'
end
local function older(a, b) return #a < #b or (#a == #b and a < b) end
redis.call('HINCRBY', STATS, kind .. 's', 1)
local last = redis.call('HGET', LAST, slot)
if last and older(token, last) then
  redis.call('HINCRBY', STATS, 'stale_rejected', 1)
  return 'stale'
end
if kind == 'enter' then
  if tonumber(valid_until) <= now then
    redis.call('HINCRBY', STATS, 'expired_rejected', 1)
    return 'expired'
  end
  redis.call('ZADD', LIVE, valid_until, holder)
elseif not redis.call('ZSCORE', LIVE, holder) then
  redis.call('HINCRBY', STATS, 'expired_rejected', 1)
  return 'expired'
end
if not last or older(last, token) then redis.call('HSET', LAST, slot, token) end
redis.call('HINCRBY', STATS, 'accepted_' .. kind .. 's', 1)
local live = redis.call('ZCARD', LIVE)
if live > tonumber(redis.call('HGET', STATS, 'max_concurrent') or '0') then
  redis.call('HSET', STATS, 'max_concurrent', live)
end
if live > tonumber(redis.call('HGET', CONFIG, 'permits')) then
  redis.call('HINCRBY', STATS, 'violations', 1)
  local holders = redis.call('ZRANGE', LIVE, 0, -1, 'WITHSCORES')
  redis.call('RPUSH', LOG, string.format('at %d: %s by %s (slot %s, token %s) with %d holders: %s',
    now, kind, holder, slot, token, live, table.concat(holders, ' ')))
  return 'violation'
end
return 'ok'
"#;

/// What the oracle answered to an `enter` or `op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    Stale,
    Expired,
    /// Accepted, but more than `permits` holders were in at that moment.
    Violation,
}

/// The oracle's server, owned by the test.
#[derive(Debug)]
pub struct Oracle {
    server: Server,
}

/// Everything the oracle counted.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub enters: u64,
    pub accepted_enters: u64,
    pub ops: u64,
    pub accepted_ops: u64,
    pub leaves: u64,
    pub stale_rejected: u64,
    pub expired_rejected: u64,
    pub max_concurrent: u64,
    pub violations: u64,
    /// One line per violation: when, who, and every live entry with its end.
    pub details: Vec<String>,
}

impl Oracle {
    /// A fresh oracle guarding a resource of `permits` concurrent holders.
    pub fn start(permits: u64) -> Oracle {
        let server = Server::start(Flavor::Redis);
        let _: () = redis::cmd("HSET").arg(KEYS[4]).arg("permits").arg(permits).query(&mut server.connection()).expect("oracle config");
        Oracle { server }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The holders whose entry is live now: entered, not left, and their grant still valid.
    pub fn live_holders(&self) -> Vec<String> {
        let mut conn = self.server.connection();
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query(&mut conn).expect("TIME");
        let now = secs * 1000 + micros / 1000;
        redis::cmd("ZRANGEBYSCORE").arg(KEYS[1]).arg(format!("({now}")).arg("+inf").query(&mut conn).expect("oracle live")
    }

    pub fn stats(&self) -> Stats {
        let mut conn = self.server.connection();
        let map: std::collections::HashMap<String, u64> = redis::cmd("HGETALL").arg(KEYS[2]).query(&mut conn).expect("oracle stats");
        let get = |k: &str| map.get(k).copied().unwrap_or(0);
        Stats {
            enters: get("enters"),
            accepted_enters: get("accepted_enters"),
            ops: get("ops"),
            accepted_ops: get("accepted_ops"),
            leaves: get("leaves"),
            stale_rejected: get("stale_rejected"),
            expired_rejected: get("expired_rejected"),
            max_concurrent: get("max_concurrent"),
            violations: get("violations"),
            details: redis::cmd("LRANGE").arg(KEYS[3]).arg(0).arg(-1).query(&mut conn).expect("oracle log"),
        }
    }
}

/// One process's connection to the oracle.
pub struct OracleClient {
    conn: redis::Connection,
    script: redis::Script,
}

impl std::fmt::Debug for OracleClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OracleClient").finish_non_exhaustive()
    }
}

impl OracleClient {
    pub fn connect(url: &str) -> OracleClient {
        let conn = redis::Client::open(url).and_then(|c| c.get_connection()).expect("oracle connection");
        OracleClient { conn, script: redis::Script::new(SCRIPT) }
    }

    fn call(&mut self, kind: &str, holder: &str, slot: u64, token: u64, valid_until_ms: u64) -> String {
        let mut invocation = self.script.prepare_invoke();
        for key in KEYS {
            invocation.key(key);
        }
        invocation.arg(kind).arg(holder).arg(slot).arg(token).arg(valid_until_ms);
        invocation.invoke(&mut self.conn).expect("the oracle answers")
    }

    fn verdict(reply: String) -> Verdict {
        match reply.as_str() {
            "ok" => Verdict::Accepted,
            "stale" => Verdict::Stale,
            "expired" => Verdict::Expired,
            "violation" => Verdict::Violation,
            other => panic!("oracle replied {other:?}"),
        }
    }

    /// Enters `holder` with a lease of `ttl_ms` counted from `since`, an instant no later than
    /// the grant (the start of the acquire call): so the entry ends no later than the lease
    /// does, however long the message takes to arrive (a SIGSTOPped sender included).
    pub fn enter(&mut self, holder: &str, slot: u64, token: u64, ttl_ms: u64, since: SystemTime) -> Verdict {
        let since_ms = since.duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis() as u64;
        Self::verdict(self.call("enter", holder, slot, token, since_ms + ttl_ms))
    }

    /// One use of the resource under `token`.
    pub fn op(&mut self, holder: &str, slot: u64, token: u64) -> Verdict {
        Self::verdict(self.call("op", holder, slot, token, 0))
    }

    pub fn leave(&mut self, holder: &str) {
        self.call("leave", holder, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn judges_tokens_leases_and_the_bound() {
        let oracle = Oracle::start(1);
        let mut c = OracleClient::connect(&oracle.url());
        let now = SystemTime::now();
        assert_eq!(c.enter("a", 7, 100, 60_000, now), Verdict::Accepted);
        assert_eq!(c.op("a", 7, 100), Verdict::Accepted);
        // A second holder while the first is in: accepted, but a violation of the bound of 1.
        assert_eq!(c.enter("b", 8, 200, 60_000, now), Verdict::Violation);
        c.leave("b");
        // A newer token for slot 7 makes the old one stale (compared beyond 2^53 exactly).
        assert_eq!(c.op("a", 7, 101), Verdict::Accepted);
        assert_eq!(c.op("a", 7, 100), Verdict::Stale);
        assert_eq!(c.enter("c", 9, 9_007_199_254_740_993, 60_000, now), Verdict::Violation);
        c.leave("c");
        assert_eq!(c.op("c", 9, 9_007_199_254_740_992), Verdict::Stale);
        c.leave("a");
        // Leases end by the oracle's clock; an op needs a live entry.
        assert_eq!(c.enter("d", 1, 1, 0, now - Duration::from_secs(1)), Verdict::Expired);
        assert_eq!(c.enter("e", 2, 2, 150, SystemTime::now()), Verdict::Accepted);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(c.op("e", 2, 2), Verdict::Expired);
        assert_eq!(c.op("nobody", 3, 3), Verdict::Expired);
        let s = oracle.stats();
        assert_eq!((s.enters, s.accepted_enters, s.ops, s.accepted_ops), (5, 4, 6, 2));
        assert_eq!((s.stale_rejected, s.expired_rejected, s.max_concurrent, s.violations), (2, 3, 2, 2));
        assert_eq!(s.details.len(), 2, "{:?}", s.details);
    }
}
