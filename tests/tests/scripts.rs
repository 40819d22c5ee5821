//! The protocol's scripts driven step by step on a real Redis (and Valkey), for interleavings
//! and rates that clients reach only by chance: a waiter's grant partly released by another
//! holder before the waiter claimed it (all of a grant is kept or none, so the rest must come
//! back); permits served to a waiter that never took its push; fencing epochs of a
//! several-master semaphore after a burst of grants and a wipe.

use pottery_semaphore_core::keys::Keys;
use pottery_semaphore_core::scripts::{self, Script};
use pottery_semaphore_tests::{Flavor, Server, eval_script, key};
use redis::Value;

const LEASE_MS: u64 = 60_000;

struct Sem {
    conn: redis::Connection,
    keys: Vec<String>,
    meta: String,
    /// What every key of the semaphore starts with (`Keys::prefix`).
    prefix: String,
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
        Sem { conn, meta: keys.meta(), prefix: keys.prefix().to_string(), keys: keys.script_keys() }
    }

    /// The name of the semaphore's key `suffix` (those scripts build, such as `wake:<id>`).
    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    fn run(&mut self, script: &Script, holder: &str, args: &[String]) -> Value {
        eval_script(&mut self.conn, script, &self.keys, holder, 2, LEASE_MS, args).unwrap_or_else(|e| panic!("{}: {e}", script.name))
    }

    /// Permits held now, as "token:holder".
    fn leases(&mut self) -> Vec<String> {
        redis::cmd("ZRANGE").arg(&self.keys[1]).arg(0).arg(-1).query(&mut self.conn).expect("ZRANGE")
    }

    fn queued(&mut self) -> Vec<String> {
        redis::cmd("ZRANGE").arg(&self.keys[2]).arg(0).arg(-1).query(&mut self.conn).expect("ZRANGE")
    }

    /// The server's clock in ms, as the scripts read it.
    fn server_ms(&mut self) -> u64 {
        redis::cmd("TIME").query::<(u64, u64)>(&mut self.conn).map(|(s, us)| s * 1000 + us / 1000).expect("TIME")
    }

    fn capacity(&mut self) -> u64 {
        redis::cmd("HGET").arg(&self.meta).arg("capacity").query(&mut self.conn).expect("HGET")
    }
}

/// A several-master semaphore of one slot on this server, as the opening script leaves it (no
/// quarantine), with its fencing epoch at 0.
fn one_slot_on(conn: &mut redis::Connection, keys: &Keys) {
    let _: () = redis::cmd("HSET")
        .arg(keys.meta())
        .arg(&[("initial", "1"), ("capacity", "1"), ("epoch", "0"), ("quarantine", "0"), ("mode", "slots")])
        .query(conn)
        .expect("HSET");
}

fn ints(v: &Value) -> Vec<i64> {
    match v {
        Value::Array(items) => items.iter().map(|i| redis::from_redis_value(i.clone()).expect("integer")).collect(),
        Value::Int(i) => vec![*i],
        other => panic!("unexpected reply {other:?}"),
    }
}

/// A refresh that extends a lease writes something replicas must acknowledge even when the new
/// deadline is the one already set (the same refresh sent again within the millisecond, after a
/// lost reply): a ZADD that changes no score is not replicated, and WAIT on the new connection
/// would then cover nothing while the holder counted the extension as acknowledged.
#[test]
fn a_refresh_in_the_same_millisecond_still_writes() {
    let server = Server::start(Flavor::Redis);
    let mut sem = Sem::new(&server, "refresh-twice", 1);
    let token = ints(&sem.run(&scripts::ACQUIRE, "H", &["1".into(), "0".into(), "1".into()]))[2].to_string();
    let refresh = || {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(scripts::REFRESH.source).arg(sem.keys.len()).arg(&sem.keys).arg("H").arg(2).arg(LEASE_MS).arg(&token);
        cmd
    };
    let changes = |info: &str| info.lines().find_map(|l| l.strip_prefix("rdb_changes_since_last_save:")).and_then(|n| n.trim().parse::<u64>().ok()).expect("INFO persistence");
    let mut pipe = redis::pipe();
    pipe.add_command(refresh()).cmd("INFO").arg("persistence").add_command(refresh()).cmd("INFO").arg("persistence");
    for _ in 0..200 {
        let (first, before, second, after): (Value, String, Value, String) = pipe.query(&mut sem.conn).expect("pipeline");
        if ints(&first)[0] == ints(&second)[0] {
            assert!(changes(&after) > changes(&before), "the second refresh wrote nothing");
            return;
        }
    }
    panic!("no two refreshes ran within one millisecond in 200 tries");
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
    sem.run(&scripts::RELEASE, "H", &["2".into(), "1".into(), String::new(), own[0].clone(), own[1].clone()]);
    assert_eq!(sem.leases().len(), 2, "both permits were handed to W");
    assert!(sem.leases().iter().all(|l| l.ends_with(":W")), "{:?}", sem.leases());
    let released = ints(&sem.run(&scripts::RELEASE, "Z", &["1".into(), "1".into(), String::new()]));
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

/// Capacity 3: A holds one, H queues for 3 and X for 1 behind it. An operator lowers the
/// capacity to 2: one permit is free, but H holds up the queue. H's heartbeat finds it can never
/// be served and leaves; the same call must serve X, not leave the permit idle until X beats.
#[test]
fn a_waiter_that_leaves_for_a_lowered_capacity_lets_those_behind_it_through() {
    for flavor in Flavor::all() {
        let server = Server::start(flavor);
        let mut sem = Sem::new(&server, "lowered", 3);
        sem.run(&scripts::ACQUIRE, "A", &["1".into(), "1".into(), "1".into()]);
        let h = ints(&sem.run(&scripts::ACQUIRE, "H", &["3".into(), "1".into(), "1".into()]))[1].to_string();
        let x = ints(&sem.run(&scripts::ACQUIRE, "X", &["1".into(), "1".into(), "1".into()]));
        assert_eq!(x[0], 2, "{flavor:?}: X queued behind H: {x:?}");
        sem.run(&scripts::SET_CAPACITY, "O", &["set".into(), "2".into(), String::new(), "1000".into()]);
        assert_eq!(sem.leases().len(), 1, "{flavor:?}: H still holds up the queue");
        let left = ints(&sem.run(&scripts::POLL, "H", &[h, "3".into(), "1".into()]));
        assert_eq!(left, [-1, 2], "{flavor:?}: H can never be served");
        let leases = sem.leases();
        assert!(leases.iter().any(|l| l.ends_with(":X")), "{flavor:?}: X was served at once: {leases:?}");
        assert!(sem.queued().is_empty(), "{flavor:?}: {:?}", sem.queued());
    }
}

/// Capacity 3: H holds all, W queues for 3 and X for 2 behind it. H's release serves W, and
/// Z's release takes one of W's unclaimed permits; X still waits (one free). An operator lowers
/// the capacity to 2, below W's 3: W's heartbeat gives back the two left of its grant and
/// leaves. Those two must go to X in the same call, not idle until X's heartbeat (seconds).
#[test]
fn a_served_waiter_that_leaves_for_a_lowered_capacity_hands_what_it_gives_back_on() {
    for flavor in Flavor::all() {
        let server = Server::start(flavor);
        let mut sem = Sem::new(&server, "lowered-served", 3);
        let held = ints(&sem.run(&scripts::ACQUIRE, "H", &["3".into(), "1".into(), "1".into()]));
        let w = ints(&sem.run(&scripts::ACQUIRE, "W", &["3".into(), "1".into(), "1".into()]))[1].to_string();
        let x = ints(&sem.run(&scripts::ACQUIRE, "X", &["2".into(), "1".into(), "1".into()]));
        assert_eq!(x[0], 2, "{flavor:?}: X queued behind W: {x:?}");
        let own: Vec<String> = held[2..].iter().map(i64::to_string).collect();
        sem.run(&scripts::RELEASE, "H", &[vec!["3".into(), "1".into(), String::new()], own].concat());
        sem.run(&scripts::RELEASE, "Z", &["1".into(), "1".into(), String::new()]);
        assert_eq!(sem.leases().len(), 2, "{flavor:?}: two of W's three permits left");
        assert_eq!(sem.queued().len(), 1, "{flavor:?}: X waits");
        sem.run(&scripts::SET_CAPACITY, "O", &["set".into(), "2".into(), String::new(), "1000".into()]);
        let left = ints(&sem.run(&scripts::POLL, "W", &[w, "3".into(), "1".into()]));
        assert_eq!(left, [-1, 2], "{flavor:?}: W can never be served");
        let leases = sem.leases();
        assert_eq!(leases.iter().filter(|l| l.ends_with(":X")).count(), 2, "{flavor:?}: X was not served at once: {leases:?}");
        assert!(sem.queued().is_empty(), "{flavor:?}: {:?}", sem.queued());
    }
}

/// Capacity 1: H holds it, W and V queue; H's release serves W, whose push is left untaken
/// (W died). Within 3 s nothing changes; after that, the next script that serves (V's
/// heartbeat) takes W's permit back and hands it to V. V takes its push, so it keeps the permit
/// past the same grace.
#[test]
fn permits_served_to_a_waiter_that_never_takes_its_push_come_back_after_three_seconds() {
    for flavor in Flavor::all() {
        let server = Server::start(flavor);
        let mut sem = Sem::new(&server, "unwoken", 1);
        let held = ints(&sem.run(&scripts::ACQUIRE, "H", &["1".into(), "1".into(), "1".into()]));
        let w = ints(&sem.run(&scripts::ACQUIRE, "W", &["1".into(), "1".into(), "1".into()]))[1].to_string();
        let v = ints(&sem.run(&scripts::ACQUIRE, "V", &["1".into(), "1".into(), "1".into()]))[1].to_string();
        sem.run(&scripts::RELEASE, "H", &["1".into(), "1".into(), String::new(), held[2].to_string()]);
        assert!(sem.leases()[0].ends_with(":W"), "{flavor:?}: W was served: {:?}", sem.leases());
        // V beats as a live waiter does (more often than every 3 s).
        for _ in 0..2 {
            let beat = ints(&sem.run(&scripts::POLL, "V", &[v.clone(), "1".into(), "1".into()]));
            assert_eq!(beat[0], 2, "{flavor:?}: within the grace W keeps what it was served: {beat:?}");
            std::thread::sleep(std::time::Duration::from_millis(1_600));
        }
        let beat = ints(&sem.run(&scripts::POLL, "V", &[v.clone(), "1".into(), "1".into()]));
        assert_eq!(beat[0], 1, "{flavor:?}: V got W's untaken permit: {beat:?}");
        assert_eq!(sem.leases().len(), 1);
        assert!(sem.leases()[0].ends_with(":V"), "{:?}", sem.leases());
        let wake_w = sem.key(&format!("wake:{w}"));
        let exists: bool = redis::cmd("EXISTS").arg(&wake_w).query(&mut sem.conn).expect("EXISTS");
        assert!(!exists, "{flavor:?}: W's push went with its permit");

        // X queues behind V's permit, is served by V's release and takes its push at once.
        let x = ints(&sem.run(&scripts::ACQUIRE, "X", &["1".into(), "1".into(), "1".into()]))[1].to_string();
        sem.run(&scripts::RELEASE, "V", &["1".into(), "1".into(), String::new(), beat[2].to_string()]);
        let wake_x = sem.key(&format!("wake:{x}"));
        let pushed: Option<(String, String)> = redis::cmd("BLPOP").arg(&wake_x).arg(1).query(&mut sem.conn).expect("BLPOP");
        assert!(pushed.is_some(), "{flavor:?}: X was served");
        std::thread::sleep(std::time::Duration::from_millis(3_100));
        let other = ints(&sem.run(&scripts::ACQUIRE, "Y", &["1".into(), "0".into(), "1".into()]));
        assert_eq!(other, [0], "{flavor:?}: X took its push and keeps its permit past the grace");
        assert!(sem.leases()[0].ends_with(":X"), "{:?}", sem.leases());
    }
}

/// A restart that reloads older state can bring back a push its waiter had already taken (a
/// snapshot made between the serve and the pop). The waiter holds the permit and refreshes it
/// after the restart; once its grace is over, the push still there must not make the next
/// serve take back the permit it refreshed (and then grant it to another: two holders).
#[test]
fn a_push_a_restart_brought_back_takes_back_no_permit_its_waiter_refreshed() {
    for flavor in Flavor::all() {
        let server = Server::start(flavor);
        let mut sem = Sem::new(&server, "restored-push", 1);
        let held = ints(&sem.run(&scripts::ACQUIRE, "H", &["1".into(), "1".into(), "1".into()]));
        let w = ints(&sem.run(&scripts::ACQUIRE, "W", &["1".into(), "1".into(), "1".into()]))[1].to_string();
        sem.run(&scripts::RELEASE, "H", &["1".into(), "1".into(), String::new(), held[2].to_string()]);
        // The push as the snapshot has it: W took it before the crash, the reload brought it back.
        let pushed: Vec<String> = redis::cmd("LRANGE").arg(sem.key(&format!("wake:{w}"))).arg(0).arg(-1).query(&mut sem.conn).expect("LRANGE");
        let token = pushed[0].split(' ').nth(1).expect("a token pushed").to_string();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let refreshed = sem.run(&scripts::REFRESH, "W", std::slice::from_ref(&token));
        assert_eq!(ints(&refreshed).len(), 2, "{flavor:?}: W holds its permit: {refreshed:?}");
        // W's grace is over (3 s of it), and the look at served waiters is due.
        let _: () = redis::cmd("ZADD").arg(sem.key("served")).arg(0).arg(&w).query(&mut sem.conn).expect("ZADD");
        let _: () = redis::cmd("HSET").arg(&sem.meta).arg("reclaimed").arg(0).query(&mut sem.conn).expect("HSET");
        sem.run(&scripts::VALUE, "X", &[]);
        assert_eq!(sem.leases(), [format!("{token}:W")], "{flavor:?}: the permit W refreshed was taken back");
        let granted = ints(&sem.run(&scripts::ACQUIRE, "Y", &["1".into(), "0".into(), "1".into()]));
        assert_eq!(granted, [0], "{flavor:?}: a second holder got W's permit");
    }
}

/// A busy queue leaves many served waiters to look at; each script looks at 200 at most and the
/// next goes on (not a second later), so the backlog never outgrows the check. 250 waiters
/// served 4 s ago, the last of which never took its push (a permit of capacity 1): the first
/// script looks at 200, the second at the rest and takes the untaken permit back.
#[test]
fn served_waiters_are_looked_at_in_batches_until_none_is_due() {
    for flavor in Flavor::all() {
        let server = Server::start(flavor);
        let mut sem = Sem::new(&server, "batches", 1);
        let served = sem.key("served");
        let now_ms = sem.server_ms();
        for w in 1..=250u64 {
            let _: () = redis::cmd("ZADD").arg(&served).arg(now_ms - 4_000 + w).arg(w).query(&mut sem.conn).expect("ZADD");
        }
        let _: () = redis::cmd("ZADD").arg(&sem.keys[1]).arg(now_ms + 60_000).arg("7:D").query(&mut sem.conn).expect("ZADD");
        let _: () = redis::cmd("SET").arg(sem.key("grant:250")).arg("D 7").query(&mut sem.conn).expect("SET");
        let _: () = redis::cmd("RPUSH").arg(sem.key("wake:250")).arg(format!("{} 7", now_ms + 60_000)).query(&mut sem.conn).expect("RPUSH");
        // And one of a holder whose id is all digits, in the first batch.
        let _: () = redis::cmd("ZADD").arg(&sem.keys[1]).arg(now_ms + 60_000).arg("8:123").query(&mut sem.conn).expect("ZADD");
        let _: () = redis::cmd("SET").arg(sem.key("grant:100")).arg("123 8").query(&mut sem.conn).expect("SET");
        let _: () = redis::cmd("RPUSH").arg(sem.key("wake:100")).arg(format!("{} 8", now_ms + 60_000)).query(&mut sem.conn).expect("RPUSH");
        let left = |sem: &mut Sem| -> u64 { redis::cmd("ZCARD").arg(&served).query(&mut sem.conn).expect("ZCARD") };
        sem.run(&scripts::VALUE, "X", &[]);
        assert_eq!(left(&mut sem), 50, "{flavor:?}: one batch looked at");
        assert_eq!(sem.leases(), ["7:D"], "{flavor:?}: the untaken permit is in the next batch");
        sem.run(&scripts::VALUE, "X", &[]);
        assert_eq!(left(&mut sem), 0, "{flavor:?}: the next script went on at once");
        assert!(sem.leases().is_empty(), "{flavor:?}: the permit D never took came back: {:?}", sem.leases());
    }
}

/// A grant record written before records named their holder ("token...") is still claimed by
/// its waiter (during an upgrade).
#[test]
fn a_grant_record_without_a_holder_is_still_claimed() {
    for flavor in Flavor::all() {
        let server = Server::start(flavor);
        let mut sem = Sem::new(&server, "old-record", 1);
        sem.run(&scripts::ACQUIRE, "H", &["1".into(), "1".into(), "1".into()]);
        let w = ints(&sem.run(&scripts::ACQUIRE, "W", &["1".into(), "1".into(), "1".into()]))[1].to_string();
        // As the old scripts served W: H's permit gone, W's lease, its record and push.
        let _: () = redis::cmd("DEL").arg(&sem.keys[1]).query(&mut sem.conn).expect("DEL");
        let _: () = redis::cmd("ZADD").arg(&sem.keys[1]).arg("+inf").arg("5000:W").query(&mut sem.conn).expect("ZADD");
        let _: () = redis::cmd("ZREM").arg(&sem.keys[2]).arg(&w).query(&mut sem.conn).expect("ZREM");
        let _: () = redis::cmd("SET").arg(sem.key(&format!("grant:{w}"))).arg("5000").query(&mut sem.conn).expect("SET");
        let reply = ints(&sem.run(&scripts::POLL, "W", &[w, "1".into(), "1".into()]));
        assert_eq!((reply[0], reply[2]), (1, 5000), "{flavor:?}: W claimed its grant: {reply:?}");
    }
}

/// Several masters, one of them here: a burst of grants (faster than one per ms) and then the
/// state wiped (a restart without persistence). The recreated semaphore must start above every
/// epoch it issued, or a later grant of a slot could carry a smaller token than an earlier one.
#[test]
fn a_wiped_master_starts_its_fencing_epochs_above_those_of_a_burst_of_grants() {
    for flavor in Flavor::all() {
        let server = Server::start(flavor);
        let keys = Keys::new(&key("epochs"));
        let multi_keys = keys.multi_script_keys("H");
        let mut conn = server.connection();
        let mut run = |script: &Script, lease_ms: u64, args: &[String]| -> Vec<i64> {
            ints(&eval_script(&mut conn, script, &multi_keys, "H", 1, lease_ms, args).unwrap_or_else(|e| panic!("{}: {e}", script.name)))
        };
        // Created by the scripts themselves, quarantined for the creating call's lease: 100 ms,
        // the shortest the scripts take.
        assert_eq!(run(&scripts::MULTI_CLAIM, 100, &["1".into()])[0], 0, "{flavor:?}: a new semaphore is quarantined");
        std::thread::sleep(std::time::Duration::from_millis(110));
        let started = std::time::Instant::now();
        let mut last = 0;
        for _ in 0..3000 {
            let claim = run(&scripts::MULTI_CLAIM, LEASE_MS, &["1".into()]);
            assert_eq!(claim[0], 1, "{flavor:?}: the only slot is free: {claim:?}");
            assert!(claim[1] > last, "{flavor:?}: epochs increase");
            last = claim[1];
            // Unconfirmed: it goes by its claim ('c' and the claim's epoch).
            run(&scripts::MULTI_RELEASE, LEASE_MS, &["0".into(), claim[3].to_string(), format!("c{}", claim[1]), "H".into()]);
        }
        let took = started.elapsed();
        // A restart takes longer than the millisecond the floor needs to pass the last epoch.
        std::thread::sleep(std::time::Duration::from_millis(2));
        let _: () = redis::cmd("FLUSHALL").query(&mut server.connection()).expect("FLUSHALL");
        // The next claim finds the state gone and recreates it (quarantined: it grants nothing).
        let claim = run(&scripts::MULTI_CLAIM, LEASE_MS, &["1".into()]);
        assert_eq!(claim[0], 0, "{flavor:?}: quarantined after the wipe: {claim:?}");
        let epoch: i64 = redis::cmd("HGET").arg(keys.meta()).arg("epoch").query(&mut server.connection()).expect("HGET");
        assert!(epoch > last, "{flavor:?}: recreated at epoch {epoch}, below {last} issued before ({took:?} for 3000 grants)");
    }
}

/// Several masters, one of them here. H's grant of slot 0 ends unrefreshed; Z holds the slot and
/// gives it back; another task of H's handle claims it anew. A refresh of the ended grant, late,
/// must not take that claim for it: it would report as alive a permit that ended, under an epoch
/// older than Z's, and spoil the new claim's confirmation.
#[test]
fn a_late_refresh_does_not_bring_back_an_ended_grant_through_a_newer_claim() {
    for flavor in Flavor::all() {
        let server = Server::start(flavor);
        let keys = Keys::new(&key("late-refresh"));
        let mut conn = server.connection();
        one_slot_on(&mut conn, &keys);
        let mut run = |script: &Script, holder: &str, lease_ms: u64, args: &[String]| -> Vec<i64> {
            let multi_keys = keys.multi_script_keys(holder);
            ints(&eval_script(&mut conn, script, &multi_keys, holder, 1, lease_ms, args).unwrap_or_else(|e| panic!("{}: {e}", script.name)))
        };
        // One master: the grant's epoch is this master's claim epoch.
        let confirm = |epoch: i64| vec![epoch.to_string(), epoch.to_string(), "1".into(), "0".into()];
        // H's grant, with the shortest lease, which then ends.
        let first = run(&scripts::MULTI_CLAIM, "H", 100, &["1".into()]);
        assert_eq!(run(&scripts::MULTI_CONFIRM, "H", 100, &confirm(first[1])), [1]);
        std::thread::sleep(std::time::Duration::from_millis(130));
        // Z takes the slot and releases it.
        let z = run(&scripts::MULTI_CLAIM, "Z", LEASE_MS, &["1".into()]);
        assert_eq!(z[0], 1, "{flavor:?}: the slot was free again: {z:?}");
        assert_eq!(run(&scripts::MULTI_CONFIRM, "Z", LEASE_MS, &confirm(z[1])), [1]);
        run(&scripts::MULTI_RELEASE, "Z", LEASE_MS, &["0".into(), "0".into(), z[1].to_string(), "Z".into()]);
        // H claims it again (not confirmed yet) and the late refresh of the first grant arrives.
        let again = run(&scripts::MULTI_CLAIM, "H", LEASE_MS, &["1".into()]);
        assert_eq!(again[0], 1, "{flavor:?}: {again:?}");
        let refreshed = run(&scripts::MULTI_REFRESH, "H", LEASE_MS, &["0".into(), first[1].to_string()]);
        assert_eq!(refreshed.len(), 1, "{flavor:?}: the ended grant (epoch {}) was extended: {refreshed:?}", first[1]);
        assert_eq!(run(&scripts::MULTI_CONFIRM, "H", LEASE_MS, &confirm(again[1])), [1], "{flavor:?}: the new claim confirms");
        assert!(first[1] < z[1] && z[1] < again[1], "{flavor:?}: epochs increase");
        // Both grants named at once: the reply names the slot with the epoch extended, the
        // new one's, so that the ended grant's token does not pass for extended too.
        let both = run(&scripts::MULTI_REFRESH, "H", LEASE_MS, &["0".into(), first[1].to_string(), "0".into(), again[1].to_string()]);
        assert_eq!(both[1..], [0, again[1]], "{flavor:?}: {both:?}");
        let dropped = run(&scripts::MULTI_RELEASE, "H", LEASE_MS, &["0".into(), "0".into(), first[1].to_string(), "H".into(), "0".into(), again[1].to_string(), "H".into()]);
        assert_eq!(dropped, [0, again[1]], "{flavor:?}: only the live grant was dropped");
    }
}

/// Several masters, one of them here. An attempt of H's handle claims slot 0 and never confirms
/// (its give-back failed); another attempt of the same handle, which claimed the slot elsewhere
/// under another epoch, confirms or releases it here. The copy is the first attempt's: the other
/// must neither count it towards its majority (the copy ends with the first claim's lease, so
/// that majority would not last) nor drop it.
#[test]
fn an_unconfirmed_copy_belongs_to_its_own_claim_not_to_every_attempt_of_its_holder() {
    for flavor in Flavor::all() {
        let server = Server::start(flavor);
        let keys = Keys::new(&key("claim-identity"));
        let mut conn = server.connection();
        one_slot_on(&mut conn, &keys);
        let multi_keys = keys.multi_script_keys("H");
        let mut run = |script: &Script, args: &[String]| -> Vec<i64> {
            ints(&eval_script(&mut conn, script, &multi_keys, "H", 1, LEASE_MS, args).unwrap_or_else(|e| panic!("{}: {e}", script.name)))
        };
        let claim = run(&scripts::MULTI_CLAIM, &["1".into()]);
        assert_eq!(claim[0], 1, "{flavor:?}: {claim:?}");
        let other_epoch = (claim[1] + 7).to_string();
        // The other attempt claimed nothing here.
        assert_eq!(run(&scripts::MULTI_CONFIRM, &[other_epoch.clone(), String::new(), "1".into(), "0".into()]), [0], "{flavor:?}: confirmed for another attempt");
        assert_eq!(run(&scripts::MULTI_RELEASE, &["0".into(), "0".into(), other_epoch.clone(), "H".into()]), Vec::<i64>::new(), "{flavor:?}: dropped for another attempt");
        // An attempt that claimed here under another epoch, its grant's epoch equal to this
        // copy's claim epoch (claim epochs are per master): not its copy either.
        let another_claim = (claim[1] + 3).to_string();
        assert_eq!(run(&scripts::MULTI_CONFIRM, &[claim[1].to_string(), another_claim, "1".into(), "0".into()]), [0], "{flavor:?}: a grant epoch taken for a claim");
        // Its own claim confirms, under the grant's epoch (here the other's, higher one).
        assert_eq!(run(&scripts::MULTI_CONFIRM, &[other_epoch, claim[1].to_string(), "1".into(), "0".into()]), [1], "{flavor:?}: its own claim confirms");
        // A client of the version before kept unconfirmed claims as 'c' and the epoch in tokens:
        // status reads such a copy as unconfirmed (epoch 0) instead of failing to parse it.
        let _: () = redis::cmd("HSET").arg(&multi_keys[4]).arg(0).arg("c123").query(&mut server.connection()).expect("HSET");
        let status = eval_script(&mut server.connection(), &scripts::MULTI_STATUS, &multi_keys, "H", 1, LEASE_MS, &[]).expect("status");
        let Value::Array(fields) = &status else { panic!("{status:?}") };
        assert_eq!(fields[7], Value::Int(0), "{flavor:?}: {status:?}");
    }
}

/// Key names the scripts build from their arguments take no braces: with them, a waiter id or a
/// holder could name a key of another semaphore, one whose name extends this one's
/// (`mine}:grant:x`), which the host's check of the scope's keys does not see.
#[test]
fn key_names_built_from_arguments_stay_within_the_semaphore() {
    let server = Server::start(Flavor::Redis);
    let mut sem = Sem::new(&server, "key-parts", 1);
    let refused = |sem: &mut Sem, keys: &[String], script: &Script, holder: &str, args: &[String]| {
        eval_script(&mut sem.conn, script, keys, holder, 1, LEASE_MS, args).expect_err("refused").to_string()
    };
    let own = sem.keys.clone();
    let err = refused(&mut sem, &own, &scripts::CANCEL, "W", &["x}:grant:5".into(), "0".into()]);
    assert!(err.contains("bad key part"), "{err}");
    let err = refused(&mut sem, &own, &scripts::POLL, "W", &["x}:meta".into(), "1".into(), "1".into()]);
    assert!(err.contains("bad key part"), "{err}");
    // A request id and the holder name the record of a call's answer (done.lua).
    let err = refused(&mut sem, &own, &scripts::RELEASE, "W", &["1".into(), "1".into(), "5}:meta".into()]);
    assert!(err.contains("bad request id"), "{err}");
    let err = refused(&mut sem, &own, &scripts::SET_CAPACITY, "W}:x", &["add".into(), "1".into(), "5".into(), "9".into()]);
    assert!(err.contains("bad request id"), "{err}");
    // Several masters: a holder names its held set.
    let keys = Keys::new(&key("key-parts-multi"));
    one_slot_on(&mut sem.conn, &keys);
    let err = refused(&mut sem, &keys.multi_script_keys("h"), &scripts::MULTI_CLAIM, "h}:x", &["1".into()]);
    assert!(err.contains("bad key part"), "{err}");
    // ...and so does an owner read back from the semaphore's own hash, when its lease ends.
    let multi_keys = keys.multi_script_keys("h");
    let _: () = redis::cmd("HSET").arg(&multi_keys[2]).arg("0").arg("x}:y").query(&mut sem.conn).expect("HSET");
    let _: () = redis::cmd("ZADD").arg(&multi_keys[1]).arg(1).arg("0").query(&mut sem.conn).expect("ZADD");
    let err = refused(&mut sem, &multi_keys, &scripts::MULTI_CLAIM, "h", &["1".into()]);
    assert!(err.contains("bad key part"), "{err}");
}

/// A call sent a second time after its reply was lost (a cluster client does so by itself)
/// carries the same request id: the second run gives the first one's answer and changes nothing.
/// Without the id the second release would give back another holder's permit, the second
/// addition would add again, and a second setting would undo a change made in between. Both release paths: the fast one (only the caller's own permit, the
/// queue empty) and the full one (beyond the caller's own).
#[test]
fn a_call_run_again_with_its_request_id_repeats_its_answer_and_changes_nothing() {
    for flavor in Flavor::all() {
        let server = Server::start(flavor);
        let mut sem = Sem::new(&server, "request-id", 3);
        let acquire = |sem: &mut Sem, holder: &str| ints(&sem.run(&scripts::ACQUIRE, holder, &["1".into(), "0".into(), "1".into()]))[2];
        let (mine, _, _) = (acquire(&mut sem, "A"), acquire(&mut sem, "B"), acquire(&mut sem, "C"));
        let fast = || vec!["1".to_string(), "1".into(), "41".into(), mine.to_string()];
        assert_eq!(ints(&sem.run(&scripts::RELEASE, "A", &fast())), [1], "{flavor:?}: the fast path released A's own");
        let record = sem.key("done:41:A");
        let _: () = redis::cmd("PEXPIRE").arg(&record).arg(5_000).query(&mut sem.conn).expect("PEXPIRE");
        assert_eq!(ints(&sem.run(&scripts::RELEASE, "A", &fast())), [1], "{flavor:?}: the same answer again");
        let ttl: i64 = redis::cmd("PTTL").arg(&record).query(&mut sem.conn).expect("PTTL");
        assert!(ttl > 5_000, "{flavor:?}: a replay writes (the record's expiry), so a replica wait after it covers the first run");
        assert_eq!(sem.leases().len(), 2, "{flavor:?}: B's and C's permits stay: {:?}", sem.leases());

        let beyond = || vec!["1".to_string(), "1".into(), "42".into()];
        let first = sem.run(&scripts::RELEASE, "A", &beyond());
        assert_eq!(ints(&first)[..3], [1, 1, 0], "{flavor:?}: A, holding nothing, released another holder's");
        assert_eq!(sem.run(&scripts::RELEASE, "A", &beyond()), first, "{flavor:?}: the same answer again");
        assert_eq!(sem.leases().len(), 1, "{flavor:?}: one other permit released, not two: {:?}", sem.leases());
        // Another request of the same holder acts anew, and the same id of another holder too.
        let again = ints(&sem.run(&scripts::RELEASE, "A", &["1".into(), "1".into(), "43".into()]));
        assert_eq!(again[..3], [1, 1, 0], "{flavor:?}");

        let add = || vec!["add".to_string(), "2".into(), "44".into(), "1000".into()];
        let added = sem.run(&scripts::SET_CAPACITY, "O", &add());
        assert_eq!(ints(&added)[..2], [5, 5], "{flavor:?}");
        assert_eq!(sem.run(&scripts::SET_CAPACITY, "O", &add()), added, "{flavor:?}: the same answer again");
        assert_eq!(sem.capacity(), 5, "{flavor:?}: added once");
        let other = ints(&sem.run(&scripts::SET_CAPACITY, "P", &add()));
        assert_eq!(other[..2], [7, 7], "{flavor:?}: the same id from another holder is another request");
        // A setting run again must not undo what came between (here an addition).
        let set = || vec!["set".to_string(), "3".into(), "45".into(), "1000".into()];
        let first = sem.run(&scripts::SET_CAPACITY, "O", &set());
        sem.run(&scripts::SET_CAPACITY, "O", &["add".into(), "1".into(), String::new(), "1000".into()]);
        assert_eq!(sem.run(&scripts::SET_CAPACITY, "O", &set()), first, "{flavor:?}: the same answer again");
        assert_eq!(sem.capacity(), 4, "{flavor:?}: the addition after the setting stands");
    }
}

/// Leases down to 100 ms are allowed, and Redis may end a waiter's heartbeat pop 200 ms late. A
/// waiter keeps its place for at least a second between heartbeats, so one with a short lease is
/// not dropped from the head of the queue just as a release would serve it.
#[test]
fn a_waiter_with_a_short_lease_keeps_its_place_between_heartbeats() {
    for flavor in Flavor::all() {
        let server = Server::start(flavor);
        let mut sem = Sem::new(&server, "short-lease-waiter", 1);
        let held = ints(&sem.run(&scripts::ACQUIRE, "H", &["1".into(), "1".into(), "1".into()]));
        assert_eq!(held[0], 1, "{flavor:?}: H got the permit: {held:?}");
        let wait = ["1".to_string(), "1".into(), "1".into()];
        let queued = ints(&eval_script(&mut sem.conn, &scripts::ACQUIRE, &sem.keys, "W", 1, 150, &wait).expect("acquire"));
        assert_eq!(queued[0], 2, "{flavor:?}: W queued: {queued:?}");
        // Later than W's 150 ms lease, within a second: a heartbeat pop that Redis ended late.
        std::thread::sleep(std::time::Duration::from_millis(400));
        sem.run(&scripts::RELEASE, "H", &["1".into(), "1".into(), String::new(), held[2].to_string()]);
        let leases = sem.leases();
        assert!(leases.len() == 1 && leases[0].ends_with(":W"), "{flavor:?}: W was dropped, not served: {leases:?}");
        assert!(sem.queued().is_empty(), "{flavor:?}: served waiters leave the queue");
    }
}

/// The restart check: a run id other than the one meta saw means the server restarted, perhaps
/// from older state. A check time ahead of the server's clock (a clock stepped back) does not put
/// the next check off: the fast acquire defers to the full script, which quarantines (the server
/// started less than a lease ago) and moves tokens above server time. A several-master claim
/// checks too, with its own counters (its epochs have their floor at server time): a master
/// quarantined there lends no vote.
#[test]
fn a_new_run_id_is_caught_even_when_the_last_check_is_dated_ahead() {
    for flavor in Flavor::all() {
        let server = Server::start(flavor);
        let mut sem = Sem::new(&server, "run-id", 1);
        let ahead = sem.server_ms() + 60_000;
        let fields = [("run", "0123456789abcdef".to_string()), ("checked", ahead.to_string())];
        let _: () = redis::cmd("HSET").arg(&sem.meta).arg(&fields).query(&mut sem.conn).expect("HSET");
        let reply = ints(&sem.run(&scripts::ACQUIRE, "H", &["1".into(), "0".into(), "1".into()]));
        assert_eq!(reply, [0], "{flavor:?}: granted on a server that restarted less than a lease ago");
        let token: u64 = redis::cmd("HGET").arg(&sem.meta).arg("token").query(&mut sem.conn).expect("HGET");
        assert!(token > ahead, "{flavor:?}: tokens were not moved above server time x 1000: {token}");

        let run_id: String = redis::cmd("HGET").arg(&sem.meta).arg("run").query(&mut sem.conn).expect("HGET");
        let mut claim = |name: &str, guard: &str| {
            let keys = Keys::new(&key(name));
            one_slot_on(&mut sem.conn, &keys);
            let fields = [("run", "0123456789abcdef".to_string()), ("checked", ahead.to_string()), ("guard", guard.into())];
            let _: () = redis::cmd("HSET").arg(keys.meta()).arg(&fields).query(&mut sem.conn).expect("HSET");
            let claim = eval_script(&mut sem.conn, &scripts::MULTI_CLAIM, &keys.multi_script_keys("h"), "h", 1, LEASE_MS, &["1".into()]);
            let fields = ["run", "token", "waiter"];
            let kept: Vec<Option<String>> = redis::cmd("HMGET").arg(keys.meta()).arg(&fields).query(&mut sem.conn).expect("HMGET");
            (ints(&claim.expect("claim"))[0], kept)
        };
        let (granted, kept) = claim("run-id-multi", "1");
        assert_eq!(granted, 0, "{flavor:?}: a master that restarted less than a lease ago lent its vote");
        assert_eq!(kept, [Some(run_id.clone()), None, None], "{flavor:?}: the several-master meta: {kept:?}");
        // A creator that declared every write persisted (guard off) is not quarantined.
        assert_eq!(claim("run-id-multi-unguarded", "0").0, 1, "{flavor:?}: quarantined with the guard off");
        // The opening scripts of both modes record what the creator chose.
        for (init, keys, guard) in [
            (&scripts::INIT, Keys::new(&key("guard-off")).script_keys(), "0"),
            (&scripts::MULTI_INIT, Keys::new(&key("guard-off-multi")).multi_script_keys("h"), "0"),
            (&scripts::MULTI_INIT, Keys::new(&key("guard-on-multi")).multi_script_keys("h"), "1"),
        ] {
            let args = [guard.to_string(), "1".into()];
            eval_script(&mut sem.conn, init, &keys, "h", 1, LEASE_MS, &args).expect("init");
            let kept: String = redis::cmd("HGET").arg(&keys[0]).arg("guard").query(&mut sem.conn).expect("HGET");
            assert_eq!(kept, guard, "{flavor:?}: {} recorded the guard as {kept}", init.name);
        }
    }
}

/// A restart check that falls due during a steady stream of acquires finds the same server: the
/// fast acquire notes the check and grants by itself, without the full script (whose purge
/// would show as a ZREMRANGEBYSCORE).
#[test]
fn a_due_restart_check_on_the_same_server_stays_on_the_fast_path() {
    for flavor in Flavor::all() {
        let server = Server::start(flavor);
        let mut sem = Sem::new(&server, "same-run", 1);
        let info: String = redis::cmd("INFO").arg("server").query(&mut sem.conn).expect("INFO");
        let run = info.lines().find_map(|l| l.strip_prefix("run_id:")).expect("run_id").trim().to_string();
        let _: () = redis::cmd("HSET").arg(&sem.meta).arg(&[("run", run.as_str()), ("checked", "0")]).query(&mut sem.conn).expect("HSET");
        let purges = |conn: &mut redis::Connection| {
            let stats: String = redis::cmd("INFO").arg("commandstats").query(conn).expect("INFO");
            stats.lines().find_map(|l| l.strip_prefix("cmdstat_zremrangebyscore:calls=")).map_or(0, |rest| {
                rest.split(',').next().and_then(|n| n.parse::<u64>().ok()).expect("calls")
            })
        };
        let before = purges(&mut sem.conn);
        let started = sem.server_ms();
        let reply = ints(&sem.run(&scripts::ACQUIRE, "H", &["1".into(), "0".into(), "1".into()]));
        assert_eq!(reply[0], 1, "{flavor:?}: not granted: {reply:?}");
        assert_eq!(purges(&mut sem.conn), before, "{flavor:?}: the acquire took the full script");
        let checked: u64 = redis::cmd("HGET").arg(&sem.meta).arg("checked").query(&mut sem.conn).expect("HGET");
        assert!(checked >= started, "{flavor:?}: the check was not noted: {checked} < {started}");
    }
}

/// A semaphore created on a server that started less than a lease ago grants nothing until a
/// lease after that start. INFO's uptime may read a second more than the real one (it subtracts
/// two clocks read in whole seconds): the server is started just before a second begins and
/// asked just after, when that reading is likely, and the quarantine must still reach a lease
/// past the moment the server was started (both clocks are this machine's).
#[test]
fn the_fresh_server_quarantine_never_ends_before_a_lease_after_the_start() {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    let now = || SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    for flavor in Flavor::all() {
        // 100 ms before a second begins (the server then starts within that second, unless slow).
        let into_second = now().subsec_millis() as u64;
        std::thread::sleep(Duration::from_millis((900 + 1000 - into_second) % 1000));
        let before_start = now();
        let server = Server::start(flavor);
        let next_second = Duration::from_secs(before_start.as_secs() + 1) + Duration::from_millis(50);
        std::thread::sleep(next_second.saturating_sub(now()));
        let keys = Keys::new(&key("fresh-start"));
        let mut conn = server.connection();
        let guard_and_create = ["1".to_string(), "1".into()];
        let opened = eval_script(&mut conn, &scripts::INIT, &keys.script_keys(), "h", 1, LEASE_MS, &guard_and_create).expect("init");
        assert_eq!(ints(&opened), [1, 1], "{flavor:?}: created");
        let until: u64 = redis::cmd("HGET").arg(keys.meta()).arg("quarantine").query(&mut conn).expect("HGET");
        let lease_after_start = before_start.as_millis() as u64 + LEASE_MS;
        assert!(until >= lease_after_start, "{flavor:?}: quarantined until {until}, {} ms short", lease_after_start - until);
    }
}

/// A client the ACL refuses INFO (no @dangerous): creating with the fresh-server guard on fails
/// (its quarantine cannot be judged), without it the semaphore is created, and the restart
/// check is skipped rather than failing every script.
#[test]
fn a_client_refused_info_creates_only_without_the_guard_and_skips_the_restart_check() {
    for flavor in Flavor::all() {
        let server = Server::start(flavor);
        let rules = ["on", ">pw", "~*", "&*", "+@all", "-info"];
        let _: () = redis::cmd("ACL").arg("SETUSER").arg("app").arg(&rules).query(&mut server.connection()).expect("ACL");
        let url = server.url().replacen("redis://", "redis://app:pw@", 1);
        let mut conn = redis::Client::open(url).expect("url").get_connection().expect("connect");
        let keys = Keys::new(&key("no-info"));
        let init = |conn: &mut redis::Connection, guard: &str| {
            eval_script(conn, &scripts::INIT, &keys.script_keys(), "h", 1, LEASE_MS, &[guard.into(), "1".into()])
        };
        assert!(init(&mut conn, "1").is_err(), "{flavor:?}: created with the guard on, without INFO");
        assert_eq!(ints(&init(&mut conn, "0").expect("init")), [1, 1], "{flavor:?}: not created with the guard off");
        // A check due now: the acquire takes the full script, which asks INFO.
        let _: () = redis::cmd("HSET").arg(keys.meta()).arg("checked").arg(0).query(&mut server.connection()).expect("HSET");
        let granted = eval_script(&mut conn, &scripts::ACQUIRE, &keys.script_keys(), "h", 1, LEASE_MS, &["1".into(), "0".into(), "1".into()]);
        assert_eq!(ints(&granted.expect("acquire"))[0], 1, "{flavor:?}: the restart check failed the acquire");
    }
}

/// The host runs only these scripts, but with whatever arguments its guest sends, and a script
/// blocks every client of Redis while it runs: a modified guest must not make one run long (a
/// billion grants in one call) or set bounds that later scripts would loop to. Each refuses
/// what the guest itself would never send, at once.
#[test]
fn the_scripts_refuse_arguments_no_guest_sends() {
    use pottery_semaphore_core::validate::{MAX_PERMITS_PER_CALL, MAX_VALUE};
    let server = Server::start(Flavor::Redis);
    let mut sem = Sem::new(&server, "bounds", 2);
    let too_many = (MAX_PERMITS_PER_CALL + 1).to_string();
    let refused = |r: redis::RedisResult<Value>, what: &str| {
        assert!(matches!(&r, Err(e) if e.to_string().contains("argument out of range")), "{what}: {r:?}");
    };
    let mut eval = |script: &Script, initial: u64, lease_ms: u64, args: &[String]| {
        let started = std::time::Instant::now();
        let r = eval_script(&mut sem.conn, script, &sem.keys, "H", initial, lease_ms, args);
        assert!(started.elapsed() < std::time::Duration::from_millis(500), "{}: ran {:?}", script.name, started.elapsed());
        r
    };
    refused(eval(&scripts::ACQUIRE, 2, LEASE_MS, &[too_many.clone(), "0".into(), "0".into()]), "acquire of too many");
    refused(eval(&scripts::POLL, 2, LEASE_MS, &["1".into(), too_many.clone(), "0".into()]), "poll for too many");
    refused(eval(&scripts::RELEASE, 2, LEASE_MS, &[too_many.clone(), "0".into(), String::new()]), "release of too many");
    refused(eval(&scripts::ACQUIRE, 2, 1, &["1".into(), "0".into(), "0".into()]), "a 1 ms lease");
    refused(eval(&scripts::ACQUIRE, (MAX_VALUE + 1) as u64, LEASE_MS, &["1".into(), "0".into(), "0".into()]), "an initial value too high");
    let tokens: Vec<String> = (0..3 * MAX_PERMITS_PER_CALL + 10).map(|t| t.to_string()).collect();
    refused(eval(&scripts::REFRESH, 2, LEASE_MS, &tokens), "a refresh of too many tokens");
    // A capacity above the bound, whatever maximum the guest names, changes nothing.
    let huge = (MAX_VALUE as u64 * 10).to_string();
    let set = eval(&scripts::SET_CAPACITY, 2, LEASE_MS, &["set".into(), huge.clone(), String::new(), huge]).expect("set_capacity");
    assert_eq!(ints(&set)[0], -1, "{set:?}");
    assert_eq!(sem.capacity(), 2);
    // NaN fails every comparison: it must not pass a range check for a number in range.
    let mut nan_initial = redis::cmd("EVAL");
    nan_initial.arg(scripts::ACQUIRE.source).arg(sem.keys.len()).arg(&sem.keys).arg("H").arg("nan").arg(LEASE_MS).arg(&["1", "0", "0"]);
    refused(nan_initial.query(&mut sem.conn), "a NaN initial value");
    let nan = eval_script(&mut sem.conn, &scripts::SET_CAPACITY, &sem.keys, "H", 2, LEASE_MS, &["set".into(), "nan".into(), String::new(), "1000".into()]);
    assert_eq!(ints(&nan.expect("set_capacity"))[0], -1, "a NaN capacity");
    assert_eq!(sem.capacity(), 2);
    // An unbounded release grows the capacity by its excess, up to the most a semaphore has;
    // one that would pass it is refused and drops nothing (not even the caller's own permit).
    let held = ints(&sem.run(&scripts::ACQUIRE, "H", &["1".into(), "0".into(), "0".into()]));
    assert_eq!(held[0], 1, "{held:?}");
    let _: () = redis::cmd("HSET").arg(&sem.meta).arg("capacity").arg(MAX_VALUE - 3).query(&mut sem.conn).unwrap();
    let own = held[2].to_string();
    let refused_growth = sem.run(&scripts::RELEASE, "H", &["5".into(), "0".into(), String::new(), own.clone()]);
    assert_eq!(ints(&refused_growth), vec![-3, MAX_VALUE - 3], "growth past the maximum");
    assert_eq!(sem.capacity(), (MAX_VALUE - 3) as u64);
    assert_eq!(sem.leases(), vec![format!("{own}:H")], "a refused release dropped a permit");
    let grown = sem.run(&scripts::RELEASE, "H", &["4".into(), "0".into(), String::new(), own]);
    assert_eq!(ints(&grown), vec![1, 0, 3, held[2]], "growth up to the maximum");
    assert_eq!(sem.capacity(), MAX_VALUE as u64);
    // Several masters: claims loop over the slots, so no more than MAX_SLOTS of them.
    let keys = Keys::new(&key("bounds-multi"));
    let multi_keys = keys.multi_script_keys("H");
    let mut conn = server.connection();
    let slots = pottery_semaphore_core::multi::MAX_SLOTS + 1;
    refused(eval_script(&mut conn, &scripts::MULTI_CLAIM, &multi_keys, "H", slots, LEASE_MS, &["1".into()]), "more slots than a semaphore has");
    refused(eval_script(&mut conn, &scripts::MULTI_CLAIM, &multi_keys, "H", 1, LEASE_MS, &[too_many]), "a claim of too many");
}

/// Redis 7.2.0-7.2.4 (and Valkey up to 7.2.5) write a Lua number argument in scientific notation
/// when it ends in 8 zeros or more ("1e+8"): a capacity stored so is no integer any more (an
/// unbounded release's HINCRBY fails, the host cannot read the initial value). So no script may
/// hand a number to a command that stores or adds it; they go as `int()` strings. Checked on
/// every path that writes counts, through a `redis.call` that refuses numbers to those commands.
#[test]
fn the_scripts_store_no_lua_number_that_a_server_may_write_as_1e8() {
    const GUARD: &str = r#"
local real_redis = redis
local redis = setmetatable({
  call = function(cmd, ...)
    local c = string.upper(cmd)
    if c == 'HSET' or c == 'HINCRBY' or c == 'HSETNX' or c == 'HMSET' or c == 'SET' then
      for i = 1, select('#', ...) do
        if type((select(i, ...))) == 'number' then error('a Lua number given to ' .. c) end
      end
    end
    return real_redis.call(cmd, ...)
  end,
}, {__index = real_redis})
"#;
    let server = Server::start(Flavor::Redis);
    let mut conn = server.connection();
    let mut eval = |script: &Script, keys: &[String], initial: u64, args: &[&str]| -> Value {
        let source = format!("{GUARD}{}", script.source);
        redis::cmd("EVAL")
            .arg(source)
            .arg(keys.len())
            .arg(keys)
            .arg("H")
            .arg(initial)
            .arg(LEASE_MS)
            .arg(args)
            .query(&mut conn)
            .unwrap_or_else(|e| panic!("{}: {e}", script.name))
    };
    let hundred_million = 100_000_000;
    // One server: created by an acquire; capacity set and added to, grown by a release.
    eval(&scripts::ACQUIRE, &Keys::new(&key("no-numbers-created")).script_keys(), hundred_million, &["1", "0", "0"]);
    let keys = Sem::new(&server, "no-numbers", hundred_million).keys;
    eval(&scripts::SET_CAPACITY, &keys, hundred_million, &["set", "200000000", "", "1000000000"]);
    eval(&scripts::SET_CAPACITY, &keys, hundred_million, &["add", "100000000", "", "1000000000"]);
    let own = eval(&scripts::ACQUIRE, &keys, hundred_million, &["1", "0", "0"]);
    let token = ints(&own)[2].to_string();
    eval(&scripts::RELEASE, &keys, hundred_million, &["2", "0", "", &token]);
    let grown: u64 = redis::cmd("HGET").arg(&keys[0]).arg("capacity").query(&mut server.connection()).unwrap();
    assert_eq!(grown, 300_000_001);
    // Several masters: created by a claim, capacity set and grown.
    let multi = Keys::new(&key("no-numbers-multi")).multi_script_keys("H");
    eval(&scripts::MULTI_CLAIM, &multi, 1000, &["1"]);
    eval(&scripts::MULTI_SET_CAPACITY, &multi, 1000, &["set", "2000", "65536"]);
    eval(&scripts::MULTI_SET_CAPACITY, &multi, 1000, &["grow", "1000", "65536"]);
}

/// However many permits a raised capacity frees for however many waiters, one script grants at
/// most as many as one call may take (the rest go to the next script, a waiter's heartbeat at
/// the latest): it would otherwise run for as long as there are permits to hand out.
#[test]
fn one_script_serves_at_most_one_calls_worth_of_permits() {
    use pottery_semaphore_core::validate::MAX_PERMITS_PER_CALL;
    let server = Server::start(Flavor::Redis);
    let mut sem = Sem::new(&server, "serve-budget", 0);
    let half = (MAX_PERMITS_PER_CALL / 2).to_string();
    let waiters: Vec<i64> = (0..3)
        .map(|_| {
            let queued = ints(&sem.run(&scripts::ACQUIRE, "W", &[half.clone(), "1".into(), "0".into()]));
            assert_eq!(queued[0], 2, "queued: {queued:?}");
            queued[1]
        })
        .collect();
    let total = (3 * MAX_PERMITS_PER_CALL / 2).to_string();
    sem.run(&scripts::SET_CAPACITY, "O", &["set".into(), total, String::new(), "1000000000".into()]);
    assert_eq!(sem.leases().len() as i64, MAX_PERMITS_PER_CALL, "the first two waiters, no more");
    assert_eq!(sem.queued(), [waiters[2].to_string()]);
    // The third is served by its own poll, or at its time-out by cancel.lua, which serves
    // before it leaves the queue (a waiter whose time-out comes before its heartbeat polls no
    // more): either way it gets the permits left free for it.
    let served_by = |sem: &mut Sem, script: &Script, args: &[String]| ints(&sem.run(script, "W", args))[0];
    let (poll, cancel) = (
        vec![waiters[2].to_string(), half.clone(), "0".into()],
        vec![waiters[2].to_string(), "1".into()],
    );
    let mut other = Sem::new(&server, "serve-budget-cancel", 0);
    assert_eq!(served_by(&mut sem, &scripts::POLL, &poll), 1, "served by its poll");
    assert!(sem.queued().is_empty());
    let queued: Vec<i64> = (0..3).map(|_| ints(&other.run(&scripts::ACQUIRE, "W", &[half.clone(), "1".into(), "0".into()]))[1]).collect();
    other.run(&scripts::SET_CAPACITY, "O", &["set".into(), (3 * MAX_PERMITS_PER_CALL / 2).to_string(), String::new(), "1000000000".into()]);
    let cancel = vec![queued[2].to_string(), cancel[1].clone()];
    assert_eq!(served_by(&mut other, &scripts::CANCEL, &cancel), 1, "served as it timed out");
    // Spent as the queue empties, the budget holds up no newcomer: the queue is empty.
    let mut last = Sem::new(&server, "serve-budget-empty", 0);
    assert_eq!(ints(&last.run(&scripts::ACQUIRE, "W", &[MAX_PERMITS_PER_CALL.to_string(), "1".into(), "0".into()]))[0], 2);
    let _: () = redis::cmd("HSET").arg(&last.meta).arg("capacity").arg(MAX_PERMITS_PER_CALL + 1).query(&mut last.conn).unwrap();
    let newcomer = ints(&last.run(&scripts::ACQUIRE, "X", &["1".into(), "0".into(), "0".into()]));
    assert_eq!(newcomer[0], 1, "granted: the waiter was served and the queue is empty: {newcomer:?}");
}

/// The serve budget is the script's, not each serve()'s: a poll that serves, then queues its
/// waiter again at the tail and serves once more, grants no more in all than one call's worth.
#[test]
fn a_poll_that_serves_twice_shares_one_budget() {
    use pottery_semaphore_core::validate::MAX_PERMITS_PER_CALL;
    let server = Server::start(Flavor::Redis);
    let mut sem = Sem::new(&server, "serve-budget-poll", 0);
    let half = (MAX_PERMITS_PER_CALL / 2).to_string();
    let queued: Vec<String> = (0..3)
        .map(|_| {
            let queued = ints(&sem.run(&scripts::ACQUIRE, "W", &[half.clone(), "1".into(), "0".into()]));
            assert_eq!(queued[0], 2, "queued: {queued:?}");
            queued[1].to_string()
        })
        .collect();
    // Permits for all three, freed behind the scripts' back so that none has served them yet.
    let _: () = redis::cmd("HSET").arg(&sem.meta).arg("capacity").arg(3 * MAX_PERMITS_PER_CALL / 2 + 1).query(&mut sem.conn).unwrap();
    // A poll for an entry that is gone queues its waiter again and serves a second time.
    let polled = ints(&sem.run(&scripts::POLL, "P", &["1".into(), "1".into(), "0".into()]));
    assert_eq!(polled[0], 2, "queued again: {polled:?}");
    assert_eq!(sem.leases().len() as i64, MAX_PERMITS_PER_CALL, "the first two waiters, no more");
    assert_eq!(sem.queued(), [queued[2].clone(), polled[1].to_string()]);
}

/// A waiter timing out is served before it leaves, even when the waiters ahead of it spent the
/// script's serve budget in that same script: it would leave with permits free for it.
#[test]
fn a_waiter_timing_out_behind_a_spent_budget_is_still_served() {
    use pottery_semaphore_core::validate::MAX_PERMITS_PER_CALL;
    let server = Server::start(Flavor::Redis);
    let mut sem = Sem::new(&server, "cancel-budget", 2 * MAX_PERMITS_PER_CALL as u64);
    let whole = MAX_PERMITS_PER_CALL.to_string();
    for _ in 0..2 {
        let held = eval_script(&mut sem.conn, &scripts::ACQUIRE, &sem.keys, "X", 2, 1_000, &[whole.clone(), "0".into(), "0".into()]);
        assert_eq!(ints(&held.expect("acquire"))[0], 1);
    }
    assert_eq!(ints(&sem.run(&scripts::ACQUIRE, "A", &[whole.clone(), "1".into(), "0".into()]))[0], 2);
    let w = ints(&sem.run(&scripts::ACQUIRE, "W", &["1".into(), "1".into(), "0".into()]));
    assert_eq!(w[0], 2);
    // X's leases end with no script running: W's time-out is the first to find the permits free.
    std::thread::sleep(std::time::Duration::from_millis(1_200));
    let got = ints(&sem.run(&scripts::CANCEL, "W", &[w[1].to_string(), "1".into()]));
    assert_eq!(got[0], 1, "left with a permit free for it: {got:?}");
    assert!(sem.queued().is_empty());
}

/// Pushes nobody took are taken back once their grace is over, by whichever script comes next:
/// no more of their permits per script than one call's worth either (a thousand waiters of
/// 10 000 would otherwise be ten million deletions in one script), a grant that does not fit
/// left whole for the next script.
#[test]
fn one_script_takes_back_at_most_one_calls_worth_of_unwoken_permits() {
    use pottery_semaphore_core::validate::MAX_PERMITS_PER_CALL;
    let server = Server::start(Flavor::Redis);
    let mut sem = Sem::new(&server, "reclaim-budget", 0);
    // Three grants of 60 % of a call's worth: one fits in a script's budget, two do not.
    let each = MAX_PERMITS_PER_CALL * 6 / 10;
    for _ in 0..3 {
        assert_eq!(ints(&sem.run(&scripts::ACQUIRE, "W", &[each.to_string(), "1".into(), "0".into()]))[0], 2);
    }
    // Served one per script (the serve budget), by scripts that are not the waiters' own polls
    // (which would claim the push): three pushes nobody takes.
    sem.run(&scripts::SET_CAPACITY, "O", &["set".into(), (3 * each).to_string(), String::new(), "1000000000".into()]);
    sem.run(&scripts::VALUE, "O", &[]);
    sem.run(&scripts::VALUE, "O", &[]);
    assert!(sem.queued().is_empty());
    assert_eq!(sem.leases().len() as i64, 3 * each, "all three served, none woken");
    // Past the grace (3 s) of the three pushes nobody popped: one grant taken back per script.
    std::thread::sleep(std::time::Duration::from_millis(3_200));
    for left in [2, 1, 0] {
        sem.run(&scripts::VALUE, "O", &[]);
        assert_eq!(sem.leases().len() as i64, left * each, "one grant taken back per script");
    }
}

/// A script that serves twice (a poll, a waiter timing out) after its first taking back spent
/// that budget: the second finds the budget spent and must leave the rest due, not forget them
/// (their permits would then stay taken until their lease ends).
#[test]
fn pushes_left_due_by_a_spent_budget_stay_due() {
    use pottery_semaphore_core::validate::MAX_PERMITS_PER_CALL;
    let server = Server::start(Flavor::Redis);
    let mut sem = Sem::new(&server, "reclaim-twice", 0);
    let half = (MAX_PERMITS_PER_CALL / 2).to_string();
    for _ in 0..3 {
        assert_eq!(ints(&sem.run(&scripts::ACQUIRE, "W", &[half.clone(), "1".into(), "0".into()]))[0], 2);
    }
    sem.run(&scripts::SET_CAPACITY, "O", &["set".into(), (3 * MAX_PERMITS_PER_CALL / 2).to_string(), String::new(), "1000000000".into()]);
    sem.run(&scripts::VALUE, "O", &[]);
    // A waiter queued behind the full semaphore, timing out once the three pushes are due.
    let d = ints(&sem.run(&scripts::ACQUIRE, "D", &["1".into(), "1".into(), "0".into()]));
    assert_eq!(d[0], 2);
    std::thread::sleep(std::time::Duration::from_millis(3_200));
    let got = ints(&sem.run(&scripts::CANCEL, "D", &[d[1].to_string(), "1".into()]));
    assert_eq!(got[0], 1, "served from what was taken back, as it timed out: {got:?}");
    let served: i64 = redis::cmd("ZCARD").arg(sem.key("served")).query(&mut sem.conn).unwrap();
    assert_eq!(served, 1, "the third push is still due");
    sem.run(&scripts::VALUE, "O", &[]);
    assert_eq!(sem.leases().len(), 1, "the third's permits taken back by the next script; D's kept");
}
