//! Acquiring in the several-master mode: claim the lowest free slots on every master at once,
//! keep those a majority granted (confirm), give back the rest, and wait or retry when no `n`
//! slots have a majority.

use std::collections::BTreeMap;

use super::{token, Attempt, Claim, HoldersOf, Semaphore};
use crate::protocol::Permit;
use crate::scripts;
use crate::{validate, Error, Transport};

/// Longest wait between two attempts while nothing wakes the waiter.
const MAX_WAIT_MS: u64 = 2_000;
/// Pauses shorter than this are timed to the millisecond (see `Transport::blocking_pop`): Redis's
/// timer could stretch them several times over.
const EXACT_BELOW_MS: u64 = 500;
/// How many times a wake-up is handed on at most (see `hand_on`): enough to get past the
/// waiters for more slots queued before one for fewer, and then it stops going round.
const MAX_HANDED_ON: u64 = 16;

/// A wake-up taken: how many times it was handed on, and whether this waiter did so last.
#[derive(Debug, Clone, Copy)]
struct Wake {
    handed: u64,
    by_me: bool,
}

/// Who hands a wake-up on: one acquire, not the handle (whose concurrent acquires share its
/// holder id): the holder and when the acquire started.
fn signature(holder: &str, started_ns: u64) -> String {
    format!("{holder}.{started_ns}")
}

/// A push popped from a wake list: a release's `1`, or `<times handed on>:<signature>`.
fn wake(push: &str, me: &str) -> Wake {
    let (handed, by) = push.split_once(':').unwrap_or((push, ""));
    Wake { handed: handed.parse().unwrap_or(MAX_HANDED_ON), by_me: by == me }
}

impl<T: Transport> Semaphore<T> {
    /// Takes `n` permits (slots) at once or none. Returns the permits; empty means not acquired.
    pub fn acquire(&self, n: i64, blocking: bool, timeout: Option<f64>) -> Result<Vec<Permit>, Error> {
        let n = validate::count(n)?;
        let timeout_ms = validate::timeout(blocking, timeout)?;
        let started = self.transport.monotonic_now_ns();
        let deadline = timeout_ms.map(|ms| started.saturating_add(ms.saturating_mul(1_000_000)));
        let waits = blocking && timeout_ms != Some(0);
        // Rounds end by the deadline (a non-blocking acquire has none: it takes its rounds).
        struct RoundsUntil<'a>(&'a std::cell::Cell<Option<u64>>);
        impl Drop for RoundsUntil<'_> {
            fn drop(&mut self) {
                self.0.set(None);
            }
        }
        self.round_deadline_ns.set(deadline.filter(|_| waits));
        let _rounds_until = RoundsUntil(&self.round_deadline_ns);
        let mut attempt: u64 = 0;
        // Slots free on a majority, to claim first after a split vote (see `after_split`).
        let mut preferred = Vec::new();
        // The master whose wake-up the last pause took, and that wake-up.
        let mut woken: Option<(u32, Wake)> = None;
        let me = signature(&self.id.holder, started);
        loop {
            let mut wait_on = Vec::new();
            let outcome = self.attempt(n, waits, &std::mem::take(&mut preferred))?;
            let took = woken.take();
            let pause_ms = match outcome {
                Attempt::Granted(permits) => return Ok(permits),
                Attempt::Busy { wait_ms, refused_by, with_room } => {
                    wait_on = refused_by;
                    if let Some((master, wake)) = took.filter(|(m, w)| w.handed < MAX_HANDED_ON && !w.by_me && with_room.contains(m)) {
                        self.hand_on(master, wake.handed, &me);
                        // Not where it went: this waiter would take it back.
                        if wait_on.len() > 1 {
                            wait_on.retain(|m| *m != master);
                        }
                    }
                    wait_ms.min(MAX_WAIT_MS)
                }
                Attempt::Split => match self.after_split(n) {
                    Some(free) => {
                        preferred = free;
                        if !waits && attempt == 0 {
                            // Not a wait: the one retry that the slots free on a majority allow.
                            attempt += 1;
                            continue;
                        }
                        1 + self.jitter(attempt) % (2 + 2 * attempt.min(10))
                    }
                    // Nothing to grant on a majority: wait for a release like a refused claim.
                    None => MAX_WAIT_MS,
                },
                Attempt::NoQuorum(failures) => {
                    if self.raise_on_redis_errors {
                        return Err(self.quorum_error(&failures));
                    }
                    50 + self.jitter(attempt) % 50
                }
            };
            if !waits {
                return Ok(Vec::new());
            }
            let mut pause_ms = pause_ms.max(1);
            // Short back-offs and the caller's deadline need the millisecond; a long wait for
            // a push may end a little late and keep its connection.
            let mut exact = pause_ms < EXACT_BELOW_MS;
            if let Some(deadline) = deadline {
                let Some((before_ms, at_deadline)) = crate::protocol::pop_before(pause_ms, self.transport.monotonic_now_ns(), deadline) else {
                    return Ok(Vec::new());
                };
                (pause_ms, exact) = (before_ms, exact || at_deadline);
            }
            woken = self.pause(attempt, pause_ms, exact, &wait_on)?.map(|(master, push)| (master, wake(&push, &me)));
            attempt += 1;
        }
    }

    /// A wake-up this waiter took on `master` and could not use, though a slot is free there
    /// (it asks for more): pushed back there for the next waiter, who may ask for fewer. (The
    /// masters serve the longest-blocked pop first, so one waiting for more slots would
    /// otherwise keep a waiter for fewer asleep for a whole pause.) Signed (`me`), so that it is
    /// not handed on again by this acquire, which takes it back only when nobody else waited.
    /// What fails is left to the pauses' end.
    fn hand_on(&self, master: u32, handed: u64, me: &str) {
        let push = format!("{}:{me}", handed + 1);
        let _ = self.run_each(&scripts::MULTI_WAKE, vec![(master, vec![push])]);
    }

    /// Waits up to `ms` for a release pushed to one master's wake list: one of `wait_on` when
    /// given, else any (a different master each time, so one that is down does not stall
    /// waiters); sleeps if that master cannot be reached.
    ///
    /// A release reaches the masters one by one. A waiter woken by its push on the first may
    /// find the others still held, and must then wait where the release has yet to arrive: on
    /// the master whose push it took, nothing more would come until `MAX_WAIT_MS`.
    /// Returns the master and the push it took, if it took one.
    fn pause(&self, attempt: u64, ms: u64, exact: bool, wait_on: &[u32]) -> Result<Option<(u32, String)>, Error> {
        let pick = attempt + self.jitter(0);
        let master = match wait_on {
            [] => (pick % u64::from(self.masters)) as u32,
            some => some[(pick % some.len() as u64) as usize],
        };
        let started = self.transport.monotonic_now_ns();
        match self.transport.blocking_pop_on(master, &self.id.keys.multi_wake(), ms, exact) {
            Ok(popped) => Ok(popped.map(|push| (master, push))),
            Err(Error::Cancelled) => Err(Error::Cancelled),
            // What is left of the pause: a pop can fail late (a connection that timed out), and
            // `ms` may already be cut to the caller's deadline.
            Err(_) => {
                let spent_ms = self.transport.monotonic_now_ns().saturating_sub(started) / 1_000_000;
                self.transport.sleep(ms.saturating_sub(spent_ms)).map(|()| None)
            }
        }
    }

    /// A small pseudo-random number, different per holder and call, so split votes do not repeat.
    fn jitter(&self, salt: u64) -> u64 {
        let mut x = self.transport.monotonic_now_ns() ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for b in self.id.holder.bytes() {
            x = (x ^ u64::from(b)).wrapping_mul(0x100_0000_01B3);
        }
        x ^= x >> 33;
        x
    }

    /// After a split vote: the slots free on a majority when there are `n` of them, else `None`.
    /// Each master claims its lowest free slots, so masters whose free slots differ (after an
    /// outage during grants) could split on every attempt, although a slot is free on a majority;
    /// claiming those first makes them agree. With fewer than `n`, the semaphore is full: the
    /// waiter waits for a release instead of voting again and again.
    /// Only the lowest few go: enough to agree on, without a long argument list per master. A
    /// failed read retries as before (at random).
    fn after_split(&self, n: u64) -> Option<Vec<u64>> {
        let Ok(view) = self.view(HoldersOf::Nobody) else { return Some(Vec::new()) };
        let mut free = view.free;
        free.truncate(2 * n as usize + 8);
        (free.len() as u64 >= n).then_some(free)
    }

    /// One round: claim on every master (the `preferred` slots first where free), keep the slots
    /// a majority granted, confirm their epoch.
    /// `waits`: a blocking acquire with time to wait, which a request above a bounded
    /// capacity fails (as on one server, a zero time-out only answers "not acquired").
    fn attempt(&self, n: u64, waits: bool, preferred: &[u64]) -> Result<Attempt, Error> {
        let started = self.transport.monotonic_now_ns();
        let (mut claims, mut busy_ms, mut refused_by, mut too_many) = (Vec::new(), MAX_WAIT_MS, Vec::new(), 0);
        let (mut quarantined, mut with_room) = (Vec::new(), Vec::new());
        let args: Vec<String> = std::iter::once(n).chain(preferred.iter().copied()).map(|v| v.to_string()).collect();
        let (replies, failures, fatal) = self.all_answers(&scripts::MULTI_CLAIM, &args);
        // Every answer is read, also after one that cannot be: what the others granted must be
        // known to go back.
        let mut malformed = None;
        for (master, mut reply) in replies {
            let read = || -> Result<(), Error> {
                match reply.i64()? {
                    1 => claims.push(Claim { master, epoch: reply.u64()?, deadline_ms: reply.u64()?, slots: reply.rest_u64()? }),
                    0 => {
                        busy_ms = busy_ms.min(reply.u64()?);
                        // Free slots here, and whether it is quarantined.
                        match reply.rest_u64()?[..] {
                            [_, 1] => quarantined.push(master),
                            [room, _] if room > 0 => {
                                with_room.push(master);
                                refused_by.push(master);
                            }
                            _ => refused_by.push(master),
                        }
                    }
                    -1 => too_many += 1,
                    other => return Err(Error::protocol(format!("unknown claim status {other}"))),
                }
                Ok(())
            };
            if let Err(e) = read() {
                malformed.get_or_insert(e);
            }
        }
        // Failing for good, or for a request no majority could grant: what others granted goes back.
        if let Some(e) = fatal.or(malformed) {
            self.give_back(&claims);
            return Err(e);
        }
        if too_many >= self.quorum() && waits && self.id.bounded {
            self.give_back(&claims);
            return Err(Error::invalid(format!(
                "n exceeds the capacity of a bounded semaphore: a blocking acquire would wait for another handle to add permits ({n} permits asked)"
            )));
        }
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for slot in claims.iter().flat_map(|c| &c.slots) {
            *votes.entry(*slot).or_default() += 1;
        }
        let chosen: Vec<u64> = votes.iter().filter(|(_, v)| **v >= self.quorum()).map(|(s, _)| *s).take(n as usize).collect();
        if chosen.len() as u64 == n {
            if let Some(permits) = self.confirm(&claims, &chosen, started)? {
                return Ok(Attempt::Granted(permits));
            }
            return Ok(Attempt::Split);
        }
        self.give_back(&claims);
        if failures.len() > self.masters as usize - self.quorum() {
            Ok(Attempt::NoQuorum(failures))
        } else if claims.len() >= self.quorum() {
            Ok(Attempt::Split)
        } else {
            if refused_by.is_empty() {
                refused_by = quarantined;
            }
            Ok(Attempt::Busy { wait_ms: busy_ms, refused_by, with_room })
        }
    }

    /// Confirms `chosen` under the grant's epoch on every master and gives back the other claimed
    /// slots. `None` when fewer than a majority confirmed in time; the slots are then released.
    fn confirm(&self, claims: &[Claim], chosen: &[u64], started_ns: u64) -> Result<Option<Vec<Permit>>, Error> {
        let epoch = claims.iter().map(|c| c.epoch).max().unwrap_or(0);
        let calls = (0..self.masters)
            .map(|m| {
                let claim = claims.iter().find(|c| c.master == m);
                let claimed_under = claim.map(|c| c.epoch.to_string()).unwrap_or_default();
                let mut extra = vec![epoch.to_string(), claimed_under, chosen.len().to_string()];
                extra.extend(chosen.iter().map(u64::to_string));
                if let Some(claim) = claim {
                    extra.extend(claim.slots.iter().filter(|s| !chosen.contains(s)).map(u64::to_string));
                }
                (m, extra)
            })
            .collect();
        // Each chosen slot must be confirmed on a majority, not each master confirm them all:
        // masters whose free slots differ claim different sets, each chosen slot on a majority,
        // and no master may hold every one (it then split on every attempt until their copies
        // elsewhere ended). A master confirms the chosen slots this attempt claimed there; one
        // that confirmed fewer (a copy lost meanwhile, which it does not say) counts for none.
        let mut confirmations: BTreeMap<u64, usize> = BTreeMap::new();
        for (master, reply) in self.run_each(&scripts::MULTI_CONFIRM, calls) {
            let Some(claim) = claims.iter().find(|c| c.master == master) else { continue };
            let here: Vec<u64> = chosen.iter().copied().filter(|s| claim.slots.contains(s)).collect();
            if matches!(reply.and_then(|r| r.into_scalar()).and_then(|s| s.as_u64()), Ok(k) if k == here.len() as u64) {
                here.into_iter().for_each(|slot| *confirmations.entry(slot).or_default() += 1);
            }
        }
        let confirmed = chosen.iter().all(|slot| confirmations.get(slot).is_some_and(|&on| on >= self.quorum()));
        let elapsed_ms = (self.transport.monotonic_now_ns().saturating_sub(started_ns)).div_ceil(1_000_000);
        let validity = self.id.lease_ms.saturating_sub(elapsed_ms + self.drift_ms());
        let tokens: Vec<u64> = chosen.iter().map(|s| token(epoch, *s)).collect();
        if !confirmed || validity == 0 {
            // Confirmed copies go by the grant's epoch, unconfirmed ones by their claim; both
            // wake whoever they held up, as any slot given back does.
            self.release_tokens(&tokens, &self.id.holder, true);
            self.give_back(claims);
            return Ok(None);
        }
        let deadline_ms = claims.iter().map(|c| c.deadline_ms).min().unwrap_or(0).saturating_sub(self.drift_ms() + elapsed_ms);
        Ok(Some(tokens.into_iter().map(|token| Permit { token, deadline_ms, ttl_ms: validity }).collect()))
    }

    /// Gives back what an attempt claimed but does not keep, waking waiters there: a claim that
    /// won only a minority of the masters made the others' claims fail on those (waiters that
    /// split the masters between them), and they wait there for a push.
    fn give_back(&self, claims: &[Claim]) {
        let calls: Vec<(u32, Vec<String>)> = claims
            .iter()
            .filter(|c| !c.slots.is_empty())
            .map(|c| {
                let mut extra = vec!["1".to_string()];
                for slot in &c.slots {
                    // Unconfirmed copies go by their claim (see multi/prelude.lua's mm_owns).
                    extra.extend([slot.to_string(), format!("c{}", c.epoch), self.id.holder.clone()]);
                }
                (c.master, extra)
            })
            .collect();
        if !calls.is_empty() {
            // What fails to go back expires with its lease.
            let _ = self.run_each(&scripts::MULTI_RELEASE, calls);
        }
    }
}
