//! The state machine against a scripted fake transport: which scripts run, with what, in what
//! order, and how replies become results. Script semantics are tested against real Redis in
//! `tests/`.

use super::*;
use crate::{Reply, Scalar};
use std::cell::RefCell;
use std::collections::VecDeque;

#[derive(Debug, Clone, PartialEq)]
enum Call {
    Eval(&'static str, Vec<String>),
    Command(String),
    /// Key, time-out, and whether it must be kept to the millisecond.
    Pop(String, u64, bool),
    Wait,
}

#[derive(Default, Debug)]
struct Fake {
    calls: RefCell<Vec<Call>>,
    replies: RefCell<VecDeque<Result<Reply, Error>>>,
    pops: RefCell<VecDeque<Result<Option<String>, Error>>>,
    /// Answers of `wait_replicas`; acknowledged when none is scripted.
    waits: RefCell<VecDeque<Result<(), Error>>>,
    now_ns: RefCell<u64>,
    /// How much longer than asked a pop lasts (Redis ends pops on its timer).
    pop_overrun_ms: RefCell<u64>,
    /// How long each script's round trip takes.
    eval_ms: RefCell<u64>,
    /// The initial value the last script was told (the scope's second leading argument).
    told_initial: RefCell<String>,
}

fn ints(items: &[i64]) -> Result<Reply, Error> {
    Ok(Reply::Array(items.iter().map(|i| Scalar::Int(*i)).collect()))
}

impl Transport for &Fake {
    fn eval(&self, script: &Script, scope: &Scope, args: &Args) -> Result<Reply, Error> {
        assert_eq!(scope.keys.len(), 4);
        assert_eq!(scope.leading.len(), 3, "holder, initial value, lease");
        *self.told_initial.borrow_mut() = scope.leading[1].clone();
        let args = args.iter().map(|a| String::from_utf8(a.to_vec()).expect("text")).collect();
        self.calls.borrow_mut().push(Call::Eval(script.name, args));
        *self.now_ns.borrow_mut() += *self.eval_ms.borrow() * 1_000_000;
        self.replies.borrow_mut().pop_front().expect("unexpected script")
    }
    fn command(&self, name: &str, _key: &str, _args: &[String]) -> Result<Reply, Error> {
        self.calls.borrow_mut().push(Call::Command(name.to_string()));
        self.replies.borrow_mut().pop_front().expect("unexpected command")
    }
    fn blocking_pop(&self, key: &str, timeout_ms: u64, exact: bool) -> Result<Option<String>, Error> {
        self.calls.borrow_mut().push(Call::Pop(key.to_string(), timeout_ms, exact));
        *self.now_ns.borrow_mut() += (timeout_ms + *self.pop_overrun_ms.borrow()) * 1_000_000;
        self.pops.borrow_mut().pop_front().expect("unexpected pop")
    }
    fn wait_replicas(&self) -> Result<(), Error> {
        self.calls.borrow_mut().push(Call::Wait);
        self.waits.borrow_mut().pop_front().unwrap_or(Ok(()))
    }
    fn monotonic_now_ns(&self) -> u64 {
        *self.now_ns.borrow()
    }
    fn sleep(&self, ms: u64) -> Result<(), Error> {
        *self.now_ns.borrow_mut() += ms * 1_000_000;
        Ok(())
    }
}

fn open(fake: &Fake) -> Semaphore<&Fake> {
    open_with(fake, false)
}

fn open_with(fake: &Fake, replicate: bool) -> Semaphore<&Fake> {
    open_leased(fake, replicate, 3000)
}

fn open_leased(fake: &Fake, replicate: bool, lease_ms: i64) -> Semaphore<&Fake> {
    fake.replies.borrow_mut().push_back(ints(&[3, 1]));
    let config = Config { key: "k".into(), value: 3, bounded: true, lease_ms, holder: "h".into(), guard_fresh_server: true, existed: false, create: true, masters: 1, raise_on_redis_errors: false, replicate };
    let (sem, opened) = Semaphore::open(fake, config).expect("open");
    assert_eq!(opened, Opened { initial: 3, created: true });
    let expected = if replicate { vec![eval("init.lua", &["1", "1"]), Call::Wait] } else { vec![eval("init.lua", &["1", "1"])] };
    assert_eq!(*fake.calls.borrow(), expected, "creating waits for replicas only when asked to");
    fake.calls.borrow_mut().clear();
    sem
}

fn eval(name: &'static str, args: &[&str]) -> Call {
    Call::Eval(name, args.iter().map(|s| s.to_string()).collect())
}

#[test]
fn uncontended_acquire_is_one_script() {
    let fake = Fake::default();
    let sem = open(&fake);
    fake.replies.borrow_mut().push_back(ints(&[1, 5000, 41, 42]));
    let permits = sem.acquire(2, true, None).expect("acquire");
    assert_eq!(permits.iter().map(|p| p.token).collect::<Vec<_>>(), vec![41, 42]);
    assert_eq!(*fake.calls.borrow(), vec![eval("acquire.lua", &["2", "1", "1"])]);
}

/// A 300 ms lease's waiter woken by a push more than a third of a lease after the script
/// before its pop was sent, whatever made it late (`delay` sets that on the fake): the push is
/// claimed by poll.lua with a fresh lease, not returned as it came (valid, by the host's clock,
/// only from that script, it could end before the holder's first refresh).
fn assert_a_late_push_is_claimed_with_a_fresh_lease(delay: impl FnOnce(&Fake)) {
    let fake = Fake::default();
    let sem = open_leased(&fake, false, 300);
    delay(&fake);
    fake.replies.borrow_mut().push_back(ints(&[2, 7, 60_000]));
    fake.pops.borrow_mut().push_back(Ok(Some("9000 43".into())));
    fake.replies.borrow_mut().push_back(ints(&[1, 9100, 43]));
    let permits = sem.acquire(1, true, None).expect("acquire");
    assert_eq!(permits.iter().map(|p| (p.token, p.deadline_ms)).collect::<Vec<_>>(), vec![(43, 9100)]);
    let pop = Call::Pop("pottery-semaphore:{k}:wake:7".into(), 100, false);
    assert_eq!(*fake.calls.borrow(), vec![eval("acquire.lua", &["1", "1", "1"]), pop, eval("poll.lua", &["7", "1", "1"])]);
}

/// A pop Redis ended late: the third of a lease spent in the pop.
#[test]
fn a_push_after_a_third_of_a_lease_is_claimed_with_a_fresh_lease() {
    assert_a_late_push_is_claimed_with_a_fresh_lease(|fake| *fake.pop_overrun_ms.borrow_mut() = 50);
}

/// A slow round trip: the third of a lease spent mostly in the script that queued the waiter.
#[test]
fn a_push_a_third_of_a_lease_after_a_slow_script_is_claimed_with_a_fresh_lease() {
    assert_a_late_push_is_claimed_with_a_fresh_lease(|fake| *fake.eval_ms.borrow_mut() = 60);
}

#[test]
fn non_blocking_and_zero_timeout_never_queue() {
    let fake = Fake::default();
    let sem = open(&fake);
    fake.replies.borrow_mut().extend([ints(&[0]), ints(&[0])]);
    assert!(sem.acquire(1, false, None).expect("acquire").is_empty());
    assert!(sem.acquire(1, true, Some(0.0)).expect("acquire").is_empty());
    assert_eq!(*fake.calls.borrow(), vec![eval("acquire.lua", &["1", "0", "1"]), eval("acquire.lua", &["1", "0", "1"])]);
}

#[test]
fn waiter_sleeps_on_its_wake_key_and_the_push_carries_its_permits() {
    let fake = Fake::default();
    let sem = open(&fake);
    fake.replies.borrow_mut().push_back(ints(&[2, 7, 60_000]));
    fake.pops.borrow_mut().push_back(Ok(Some("9000 43 44".into())));
    let permits = sem.acquire(2, true, None).expect("acquire");
    assert_eq!(permits.iter().map(|p| (p.token, p.deadline_ms)).collect::<Vec<_>>(), vec![(43, 9000), (44, 9000)]);
    let calls = fake.calls.borrow();
    // The pop is capped by the heartbeat (lease / 3), not by the 60 s hint; no claim follows.
    assert_eq!(*calls, vec![eval("acquire.lua", &["2", "1", "1"]), Call::Pop("pottery-semaphore:{k}:wake:7".into(), 1000, false)]);
}

#[test]
fn a_waiter_beats_every_few_seconds_however_long_its_lease() {
    let fake = Fake::default();
    let sem = open_leased(&fake, false, 600_000);
    fake.replies.borrow_mut().extend([ints(&[2, 7, 600_000]), ints(&[1, 9000, 43])]);
    fake.pops.borrow_mut().push_back(Ok(None));
    assert_eq!(sem.acquire(1, true, None).expect("acquire")[0].token, 43);
    // A third of the 10 s a waiter keeps its place without a beat (queue.lua), not of the lease.
    assert_eq!(fake.calls.borrow()[1], Call::Pop("pottery-semaphore:{k}:wake:7".into(), 3333, false));
}

#[test]
fn a_pop_that_would_end_just_before_the_deadline_is_timed_exactly() {
    let fake = Fake::default();
    let sem = open(&fake);
    fake.replies.borrow_mut().extend([ints(&[2, 7, 60_000]), ints(&[2, 7, 60_000]), ints(&[0])]);
    fake.pops.borrow_mut().extend([Ok(None), Ok(None)]);
    // 1.1 s: the first heartbeat pop (1 s) would end 100 ms before the deadline, within what
    // Redis may add to a pop it times, so the host times it; the second ends at the deadline.
    assert!(sem.acquire(1, true, Some(1.1)).expect("acquire").is_empty());
    let calls = fake.calls.borrow();
    assert_eq!(calls[1], Call::Pop("pottery-semaphore:{k}:wake:7".into(), 1000, true));
    assert_eq!(calls[3], Call::Pop("pottery-semaphore:{k}:wake:7".into(), 100, true));
}

#[test]
fn a_heartbeat_poll_claims_a_grant_whose_push_was_missed() {
    let fake = Fake::default();
    let sem = open(&fake);
    fake.replies.borrow_mut().extend([ints(&[2, 7, 60_000]), ints(&[1, 9000, 43])]);
    fake.pops.borrow_mut().push_back(Ok(None));
    assert_eq!(sem.acquire(1, true, None).expect("acquire")[0].token, 43);
    assert_eq!(fake.calls.borrow()[2], eval("poll.lua", &["7", "1", "1"]));
}

#[test]
fn pop_is_capped_by_the_next_lease_deadline_and_the_timeout() {
    let fake = Fake::default();
    let sem = open(&fake);
    fake.replies.borrow_mut().extend([ints(&[2, 7, 120]), ints(&[2, 7, 5000]), ints(&[0])]);
    // acquire queues; the pop ends at the lease hint; poll; the pop ends at the time-out; cancel.
    fake.pops.borrow_mut().extend([Ok(None), Ok(None)]);
    assert!(sem.acquire(1, true, Some(0.5)).expect("acquire").is_empty());
    let calls = fake.calls.borrow();
    // The lease hint may end a little late; the last pop ends at the caller's deadline, exactly.
    assert_eq!(calls[1], Call::Pop("pottery-semaphore:{k}:wake:7".into(), 120, false));
    assert_eq!(calls[3], Call::Pop("pottery-semaphore:{k}:wake:7".into(), 380, true));
    // Timed out: leaves the queue but keeps a grant that raced in.
    assert_eq!(calls[4], eval("cancel.lua", &["7", "1"]));
}

#[test]
fn cancelled_wait_leaves_the_queue_and_gives_back_grants() {
    let fake = Fake::default();
    let sem = open(&fake);
    fake.replies.borrow_mut().extend([ints(&[2, 9, 1000]), ints(&[0])]);
    fake.pops.borrow_mut().push_back(Err(Error::Cancelled));
    assert_eq!(sem.acquire(1, true, None), Err(Error::Cancelled));
    assert_eq!(fake.calls.borrow()[2], eval("cancel.lua", &["9", "0"]));
}

#[test]
fn redis_lost_mid_wait_is_reported_after_a_best_effort_cleanup() {
    let fake = Fake::default();
    let sem = open(&fake);
    let down = Error::Unreachable("connection refused".into());
    fake.replies.borrow_mut().extend([ints(&[2, 9, 1000]), Err(down.clone())]);
    fake.pops.borrow_mut().push_back(Err(down.clone()));
    assert_eq!(sem.acquire(1, true, None), Err(down));
    assert_eq!(fake.calls.borrow().last(), Some(&eval("cancel.lua", &["9", "0"])), "the clean-up tried to leave the queue");
}

#[test]
fn a_failed_poll_leaves_the_queue_too() {
    let fake = Fake::default();
    let sem = open(&fake);
    let broke = Error::Unreachable("connection reset".into());
    fake.replies.borrow_mut().extend([ints(&[2, 9, 1000]), Err(broke.clone()), ints(&[0])]);
    fake.pops.borrow_mut().push_back(Ok(None));
    assert_eq!(sem.acquire(1, true, None), Err(broke));
    let calls = fake.calls.borrow();
    assert_eq!(calls[2], eval("poll.lua", &["9", "1", "1"]));
    assert_eq!(calls[3], eval("cancel.lua", &["9", "0"]), "the waiter left the queue, giving back any grant");
}

#[test]
fn bad_arguments_fail_before_any_io() {
    let fake = Fake::default();
    let sem = open(&fake);
    assert_eq!(sem.acquire(0, true, None), Err(Error::InvalidArgument("n must be >= 1".into())));
    assert!(matches!(sem.acquire(1, true, Some(f64::NAN)), Err(Error::InvalidArgument(_))));
    assert!(matches!(sem.acquire(1, true, Some(-1.0)), Err(Error::InvalidArgument(_))));
    assert_eq!(sem.release(0, &[], 0), Err(Error::InvalidArgument("n must be >= 1".into())));
    assert!(fake.calls.borrow().is_empty());
    for config in [
        Config { key: String::new(), value: 1, bounded: true, lease_ms: 1000, holder: "h".into(), guard_fresh_server: true, existed: false, create: true, masters: 1, raise_on_redis_errors: false, replicate: false },
        Config { key: "k".into(), value: -1, bounded: true, lease_ms: 1000, holder: "h".into(), guard_fresh_server: true, existed: false, create: true, masters: 1, raise_on_redis_errors: false, replicate: false },
        Config { key: "k".into(), value: 1, bounded: true, lease_ms: 0, holder: "h".into(), guard_fresh_server: true, existed: false, create: true, masters: 1, raise_on_redis_errors: false, replicate: false },
        Config { key: "k".repeat(1 << 20), value: 1, bounded: true, lease_ms: 1000, holder: "h".into(), guard_fresh_server: true, existed: false, create: true, masters: 1, raise_on_redis_errors: false, replicate: false },
    ] {
        assert!(matches!(Semaphore::open(&fake, config), Err(Error::InvalidArgument(_))));
    }
    assert!(fake.calls.borrow().is_empty());
}

#[test]
fn replies_map_to_typed_results() {
    let fake = Fake::default();
    let sem = open(&fake);
    fake.replies.borrow_mut().extend([
        ints(&[-1, 3]),
        ints(&[-2, 3, 3]),
        ints(&[1, 1, 2, 41]),
        Ok(Reply::Scalar(Scalar::Bulk(b"3".to_vec()))),
        Ok(Reply::Scalar(Scalar::Nil)),
    ]);
    assert!(matches!(sem.acquire(4, true, None), Err(Error::InvalidArgument(m)) if m.contains("capacity")));
    assert_eq!(sem.release(1, &[], 0), Err(Error::Bounded { key: "k".into(), current: 3, initial: 3 }));
    assert_eq!(sem.release(4, &[41, 40], 7), Ok(Released { own: vec![41], others: 1, added: 2 }));
    // The caller's own permits go to the script in the caller's order, after n, bounded and the
    // request id (none: '').
    assert_eq!(fake.calls.borrow()[1], eval("release.lua", &["1", "1", ""]));
    assert_eq!(fake.calls.borrow()[2], eval("release.lua", &["4", "1", "7", "41", "40"]));
    assert_eq!(sem.initial_value(), Ok(3));
    assert_eq!(sem.initial_value(), Ok(3), "state vanished: falls back to the value opened with");
}

#[test]
fn an_unacknowledged_grant_is_given_back_and_reported() {
    let fake = Fake::default();
    let sem = open_with(&fake, true);
    let lagging = Error::NotReplicated("0 of 1 replicas acknowledged within 100 ms".into());
    fake.replies.borrow_mut().extend([ints(&[1, 5000, 41, 42]), ints(&[41, 42])]);
    fake.waits.borrow_mut().push_back(Err(lagging.clone()));
    assert_eq!(sem.acquire(2, true, None), Err(lagging));
    assert_eq!(
        *fake.calls.borrow(),
        vec![eval("acquire.lua", &["2", "1", "1"]), Call::Wait, eval("release_permits.lua", &["41", "42"])]
    );
    // Acknowledged: handed out after the wait, nothing given back.
    fake.calls.borrow_mut().clear();
    fake.replies.borrow_mut().push_back(ints(&[1, 5000, 43]));
    assert_eq!(sem.acquire(1, true, None).expect("acquire")[0].token, 43);
    assert_eq!(*fake.calls.borrow(), vec![eval("acquire.lua", &["1", "1", "1"]), Call::Wait]);
}

#[test]
fn a_replicated_waiter_claims_its_pushed_grant_with_poll_before_waiting() {
    let fake = Fake::default();
    let sem = open_with(&fake, true);
    let lagging = Error::NotReplicated("replica down".into());
    fake.replies.borrow_mut().extend([ints(&[2, 7, 60_000]), ints(&[1, 9000, 43]), ints(&[43])]);
    fake.pops.borrow_mut().push_back(Ok(Some("9000 43".into())));
    fake.waits.borrow_mut().push_back(Err(lagging.clone()));
    assert_eq!(sem.acquire(1, true, None), Err(lagging));
    let calls = fake.calls.borrow();
    assert_eq!(calls[2], eval("poll.lua", &["7", "1", "1"]), "the grant is claimed on this connection");
    assert_eq!(calls[3..], [Call::Wait, eval("release_permits.lua", &["43"])]);
}

#[test]
fn a_timed_out_waiter_keeping_a_raced_grant_waits_for_replicas_too() {
    let fake = Fake::default();
    let sem = open_with(&fake, true);
    fake.replies.borrow_mut().extend([ints(&[2, 7, 60_000]), ints(&[1, 9000, 43])]);
    fake.pops.borrow_mut().push_back(Ok(None));
    assert_eq!(sem.acquire(1, true, Some(0.1)).expect("acquire")[0].token, 43);
    assert_eq!(fake.calls.borrow()[2..], [eval("cancel.lua", &["7", "1"]), Call::Wait]);
}

#[test]
fn changes_wait_for_replicas_only_when_asked_to_and_reads_never_do() {
    for replicate in [false, true] {
        let fake = Fake::default();
        let sem = open_with(&fake, replicate);
        fake.replies.borrow_mut().extend([
            ints(&[1, 0, 0, 41]),
            ints(&[42]),
            ints(&[]),
            ints(&[3, 5]),
            ints(&[3, 6]),
            ints(&[3, 3, 3]),
            ints(&[0]),
            ints(&[-2, 3, 3]),
            ints(&[9000, 41]),
            ints(&[9000]),
        ]);
        sem.release(1, &[], 0).expect("release");
        assert_eq!(sem.release_permits(&[42]).expect("release"), vec![42]);
        assert!(sem.release_permits(&[99]).expect("nothing released").is_empty());
        assert_eq!(sem.set_permits(5, 0), Ok(5));
        assert_eq!(sem.add_permits(1, 0), Ok(6));
        assert_eq!(sem.value(), Ok(3));
        assert!(sem.acquire(1, false, None).expect("acquire").is_empty());
        assert!(matches!(sem.release(1, &[], 0), Err(Error::Bounded { .. })));
        assert_eq!(sem.refresh(&[41]).expect("refresh").len(), 1);
        assert!(sem.refresh(&[40]).expect("refresh").is_empty(), "nothing extended, nothing to wait for");
        let waits = fake.calls.borrow().iter().filter(|c| **c == Call::Wait).count();
        assert_eq!(waits, if replicate { 5 } else { 0 }, "release, release_permits, set, add and a refresh that extended");
    }
}

#[test]
fn a_delta_beyond_the_limit_is_refused_before_any_script() {
    let fake = Fake::default();
    let sem = open(&fake);
    let before = fake.calls.borrow().len();
    for delta in [i64::MIN, i64::MAX, -validate::MAX_VALUE - 1] {
        assert!(matches!(sem.add_permits(delta, 0), Err(Error::InvalidArgument(_))), "{delta}");
    }
    assert_eq!(fake.calls.borrow().len(), before);
}

/// release_fast.lua answers a bare 1: the first n permits named, all the caller's own.
#[test]
fn the_fast_releases_answer_means_the_first_n_named_permits() {
    let fake = Fake::default();
    let sem = open(&fake);
    fake.replies.borrow_mut().extend([Ok(Reply::Scalar(Scalar::Int(1))), Ok(Reply::Scalar(Scalar::Int(1)))]);
    assert_eq!(sem.release(2, &[40, 41, 42], 0), Ok(Released { own: vec![40, 41], others: 0, added: 0 }));
    assert!(matches!(sem.release(2, &[40], 0), Err(Error::Redis(m)) if m.contains("named")), "more released than named is a protocol error");
}

/// Scripts are told the initial value Redis holds, not the one this handle asked for.
#[test]
fn scripts_after_open_are_told_the_initial_value_redis_holds() {
    let fake = Fake::default();
    fake.replies.borrow_mut().extend([ints(&[2, 0]), ints(&[0])]);
    let config = Config { key: "k".into(), value: 5, bounded: true, lease_ms: 3000, holder: "h".into(), guard_fresh_server: true, existed: false, create: true, masters: 1, raise_on_redis_errors: false, replicate: false };
    let (sem, opened) = Semaphore::open(&fake, config).expect("open");
    assert_eq!(opened, Opened { initial: 2, created: false });
    assert_eq!(*fake.told_initial.borrow(), "5", "init.lua creates with the value asked for");
    assert_eq!(sem.acquire(1, false, None), Ok(vec![]));
    assert_eq!(*fake.told_initial.borrow(), "2");
}
