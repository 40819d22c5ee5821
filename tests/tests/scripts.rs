//! The one-server scripts driven step by step on a real Redis, for interleavings that clients
//! reach only by chance: a waiter's grant partly released by another holder before the waiter
//! claimed it. All of a grant is kept or none (n permits at once), so the rest must come back.

use pottery_semaphore_core::keys::Keys;
use pottery_semaphore_core::scripts::{self, Script};
use pottery_semaphore_tests::{Flavor, Server, key};
use redis::Value;

const LEASE_MS: u64 = 60_000;

struct Sem {
    conn: redis::Connection,
    keys: Vec<String>,
    meta: String,
}

impl Sem {
    /// A semaphore of `capacity` permits, written as the opening script leaves a fresh one
    /// (no quarantine: the server is not new).
    fn new(server: &Server, name: &str, capacity: u64) -> Sem {
        let keys = Keys::new(&key(name));
        let mut conn = server.connection();
        let _: () = redis::cmd("HSET")
            .arg(keys.meta())
            .arg(&[("initial", capacity), ("capacity", capacity), ("token", 1000), ("waiter", 1000), ("quarantine", 0)])
            .query(&mut conn)
            .expect("HSET");
        Sem { conn, meta: keys.meta(), keys: keys.script_keys() }
    }

    fn run(&mut self, script: &Script, holder: &str, args: &[String]) -> Value {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script.source).arg(self.keys.len()).arg(&self.keys).arg(holder).arg(2).arg(LEASE_MS).arg(args);
        cmd.query(&mut self.conn).unwrap_or_else(|e| panic!("{}: {e}", script.name))
    }

    /// Permits held now, as "token:holder".
    fn leases(&mut self) -> Vec<String> {
        redis::cmd("ZRANGE").arg(&self.keys[1]).arg(0).arg(-1).query(&mut self.conn).expect("ZRANGE")
    }

    fn queued(&mut self) -> Vec<String> {
        redis::cmd("ZRANGE").arg(&self.keys[2]).arg(0).arg(-1).query(&mut self.conn).expect("ZRANGE")
    }

    fn capacity(&mut self) -> u64 {
        redis::cmd("HGET").arg(&self.meta).arg("capacity").query(&mut self.conn).expect("HGET")
    }
}

fn ints(v: &Value) -> Vec<i64> {
    match v {
        Value::Array(items) => items.iter().map(|i| redis::from_redis_value(i.clone()).expect("integer")).collect(),
        Value::Int(i) => vec![*i],
        other => panic!("unexpected reply {other:?}"),
    }
}

/// Capacity 2: H holds both, W queues for 2, H's release hands both to W, then Z (holding
/// nothing) releases one, which takes the lowest of W's unclaimed tokens. Returns W's waiter id.
fn grant_then_release_one_of_it(sem: &mut Sem) -> String {
    let held = ints(&sem.run(&scripts::ACQUIRE, "H", &["2".into(), "1".into(), "1".into()]));
    assert_eq!(held[0], 1, "H got both permits: {held:?}");
    let queued = ints(&sem.run(&scripts::ACQUIRE, "W", &["2".into(), "1".into(), "1".into()]));
    assert_eq!(queued[0], 2, "W queued: {queued:?}");
    let waiter = queued[1].to_string();
    let own = [held[2].to_string(), held[3].to_string()];
    sem.run(&scripts::RELEASE, "H", &["2".into(), "1".into(), own[0].clone(), own[1].clone()]);
    assert_eq!(sem.leases().len(), 2, "both permits were handed to W");
    assert!(sem.leases().iter().all(|l| l.ends_with(":W")), "{:?}", sem.leases());
    let released = ints(&sem.run(&scripts::RELEASE, "Z", &["1".into(), "1".into()]));
    assert_eq!(released[..2], [1, 1], "Z released one permit of another holder: {released:?}");
    assert_eq!(sem.leases().len(), 1);
    waiter
}

#[test]
fn a_waiter_that_gives_up_returns_what_is_left_of_a_grant_released_in_part() {
    for flavor in Flavor::all() {
        let server = Server::start(flavor);
        let mut sem = Sem::new(&server, "partial-grant-cancel", 2);
        let waiter = grant_then_release_one_of_it(&mut sem);
        // W gives up (time-out), keeping a grant that raced in if it is whole: it is not.
        let reply = ints(&sem.run(&scripts::CANCEL, "W", &[waiter, "1".into()]));
        assert_eq!(reply, [0], "{flavor:?}: no permits for W");
        assert_eq!(sem.leases(), Vec::<String>::new(), "{flavor:?}: the rest of W's grant came back");
        assert_eq!(sem.capacity(), 2);
    }
}

#[test]
fn a_waiter_that_polls_returns_what_is_left_of_a_grant_released_in_part_and_is_served_again() {
    for flavor in Flavor::all() {
        let server = Server::start(flavor);
        let mut sem = Sem::new(&server, "partial-grant-poll", 2);
        let waiter = grant_then_release_one_of_it(&mut sem);
        // W's heartbeat: its grant is not whole, so it goes back and W queues again; both permits
        // are free and nobody else waits, so the same call serves it, its wake-up push carrying them.
        let reply = ints(&sem.run(&scripts::POLL, "W", &[waiter, "2".into(), "1".into()]));
        assert_eq!(reply[0], 2, "{flavor:?}: W queued again: {reply:?}");
        let leases = sem.leases();
        assert_eq!(leases.len(), 2, "{flavor:?}: W was served both permits anew: {leases:?}");
        assert!(leases.iter().all(|l| l.ends_with(":W")), "{leases:?}");
        assert!(sem.queued().is_empty(), "served waiters leave the queue");
    }
}
