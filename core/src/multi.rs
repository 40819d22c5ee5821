//! Several-master mode: Redlock with one lock per permit. The semaphore's `capacity` permits are
//! numbered slots; a holder holds a slot when it owns it on a majority of the independent masters,
//! for a validity of lease − elapsed − clock drift. Two majorities always share a master, and a
//! master lets one holder own a slot at a time, so no slot has two holders: at most `capacity`
//! holders, whatever the masters' counts say (a vote over per-master counters would not give that).
//!
//! Fencing: a grant's epoch is the highest of the claiming masters' epochs, and confirming it
//! raises the epoch of every master it reaches. A later grant of the same slot needs a majority,
//! which includes a master that confirmed the earlier grant before the slot freed there, so its
//! epoch is larger. A permit's token is `epoch << 16 | slot`: strictly increasing per slot. A
//! master's epoch never falls below its server time × 16, so one that lost its state does not
//! start below what it issued (`scripts/multi/prelude.lua`).
//!
//! There is no queue: a waiter retries when a release pushes to the wake list of the master it
//! waits on, when the nearest lease may have ended, or after a short random delay when votes
//! split. So waiters are not served in arrival order.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use crate::protocol::{Config, Holder, Identity, Opened, Permit, Released, Status};
use crate::reply::Cursor;
use crate::scripts::{self, Script};
use crate::{validate, Args, Error, Reply, Scope, Transport};

mod acquire;

/// Slots are 16 bits of the fencing token.
pub const MAX_SLOTS: u64 = 1 << SLOT_BITS;
const SLOT_BITS: u32 = 16;

/// The fencing token of slot `slot` granted under `epoch`.
pub fn token(epoch: u64, slot: u64) -> u64 {
    epoch << SLOT_BITS | slot
}

/// The slot a token of the several-master mode stands for.
pub fn slot_of(token: u64) -> u64 {
    token & (MAX_SLOTS - 1)
}

fn epoch_of(token: u64) -> u64 {
    token >> SLOT_BITS
}

/// The tokens of a reply's remaining (slot, epoch) pairs.
fn slot_epoch_tokens(r: Cursor) -> Result<Vec<u64>, Error> {
    let pairs = r.rest_u64()?;
    if pairs.len() % 2 != 0 {
        return Err(Error::protocol("an odd number of slot and epoch values"));
    }
    Ok(pairs.chunks_exact(2).map(|p| token(p[1], p[0])).collect())
}

/// Masters that failed a round, with their errors.
type Failures = Vec<(u32, Error)>;

/// Permits named per release.lua call: every master's answer to a call is in the guest's memory
/// at once (10,000 on five masters ran it out of memory).
const DROP_CHUNK: usize = 2_000;

/// One master's part of a grant.
#[derive(Debug)]
struct Claim {
    master: u32,
    epoch: u64,
    deadline_ms: u64,
    slots: Vec<u64>,
}

/// What one attempt at acquiring came to.
#[derive(Debug)]
enum Attempt {
    Granted(Vec<Permit>),
    /// Not enough free slots on a majority; something may change in this many ms. `refused_by`:
    /// the masters that answered busy, where the release that frees a slot will push its
    /// wake-up (one that granted may already have had that release, and its push taken), those
    /// in quarantine left out unless there are no others (no release pushes there).
    /// `with_room`: those of them with a slot free, though fewer than asked for.
    Busy { wait_ms: u64, refused_by: Vec<u32>, with_room: Vec<u32> },
    /// Enough masters granted, but not the same slots: retry after a short random delay,
    /// claiming first the slots free on a majority (see `after_split`).
    Split,
    /// So many masters failed that no majority is left.
    NoQuorum(Failures),
}

/// A slot as one master reports it.
#[derive(Debug, Clone)]
struct LiveSlot {
    slot: u64,
    holder: String,
    epoch: u64,
    ttl_ms: u64,
}

#[derive(Debug, Default)]
struct MasterView {
    initial: u64,
    capacity: u64,
    quarantined: bool,
    now_ms: u64,
    /// The live slots, lowest first.
    slots: Vec<u64>,
    /// Those of them whose holders were asked for ([`Semaphore::view`]), with their holders.
    live: Vec<LiveSlot>,
}

/// What a [`Semaphore::view`] reads of who holds which slot.
#[derive(Clone, Copy)]
enum HoldersOf<'a> {
    /// Every live slot's holder: four fields a slot from each master, too many for the guest's
    /// memory with tens of thousands held (see README).
    All,
    /// Nobody's: the live slots alone, enough to count the free ones.
    Nobody,
    /// Whether the caller holds these slots, read [`NAMED_CHUNK`] at a time, and nothing else:
    /// the view's `available` and `free` are not counted.
    Named(&'a [u64]),
}

/// Slots a status.lua call asks about by name.
const NAMED_CHUNK: usize = 2_000;

/// The semaphore as a majority of masters sees it.
#[derive(Debug)]
struct View {
    initial: u64,
    capacity: u64,
    available: u64,
    /// The available slots, lowest first.
    free: Vec<u64>,
    /// Permits held on a majority, with the deadline a majority still holds them to.
    holders: Vec<(Holder, u64)>,
    /// Every master answered: a permit held on a majority is in `holders`. Otherwise one that
    /// a master which did not answer holds may be missing there.
    complete: bool,
}

#[derive(Debug)]
pub struct Semaphore<T> {
    transport: T,
    id: Identity,
    scope: Scope,
    masters: u32,
    raise_on_redis_errors: bool,
    /// The deadline (monotonic ns) of the acquire under way, if it has one: its rounds end by
    /// then (see `round_timeout_now`).
    round_deadline_ns: Cell<Option<u64>>,
}

/// The shortest round of an acquire near its deadline: enough for masters that answer.
const MIN_ROUND_MS: u64 = 50;

impl<T: Transport> Semaphore<T> {
    /// Validates `config` and creates the semaphore on every master that lacks it. Succeeds
    /// when a majority answers.
    ///
    /// Two rounds when some master lacks it: first every master only reports, so that copies
    /// missing beside existing ones are known to be lost (FLUSHALL, eviction, a fail-over to a
    /// replica without them) and are recreated quarantined for a lease, whatever the fresh-server
    /// guard says. Created without quarantine, such a copy could join a minority still holding a
    /// slot in a new majority for it. A semaphore missing everywhere is new, and so is one whose
    /// existing copies never saw a claim (another opener is creating it right now), but only if
    /// every master answered: one that did not may hold a copy that saw claims. So a semaphore
    /// first created while a master does not answer grants nothing for a lease.
    pub fn open(transport: T, config: Config) -> Result<(Self, Opened), Error> {
        let id = Identity::validate(&config)?;
        if id.initial > MAX_SLOTS {
            return Err(Error::invalid(format!("with several masters a semaphore has at most {MAX_SLOTS} permits")));
        }
        if config.masters < 2 {
            return Err(Error::invalid("the several-master mode needs at least two masters"));
        }
        let mut sem = Semaphore {
            transport,
            scope: Scope::new(id.keys.multi_script_keys(&config.holder), id.leading_args()),
            id,
            masters: config.masters,
            raise_on_redis_errors: config.raise_on_redis_errors,
            round_deadline_ns: Cell::new(None),
        };
        let guard = u8::from(config.guard_fresh_server).to_string();
        let (mut initials, mut created, mut missing, mut claimed) = (Vec::new(), false, Vec::new(), false);
        let (replies, mut failures) = sem.answers(&scripts::MULTI_INIT, &[guard.clone(), "0".into()])?;
        for (master, reply) in replies {
            claimed |= sem.init_reply(master, Ok(reply), &mut initials, &mut created, &mut missing)?;
        }
        if config.create && !missing.is_empty() {
            // '2': quarantine whatever the server's age (see init.lua). A master that did not
            // answer may hold a copy that saw a claim (even if every copy seen is missing: a
            // flushed one beside one the semaphore never reached): as good as claimed. A handle
            // that opened the semaphore before (`existed`) knows missing copies were wiped.
            let lost = if claimed || config.existed || !failures.is_empty() { "2".into() } else { guard };
            let calls = std::mem::take(&mut missing).into_iter().map(|m| (m, vec![lost.clone(), "1".into()])).collect();
            for (master, reply) in sem.run_each(&scripts::MULTI_INIT, calls) {
                match reply.and_then(Cursor::new) {
                    Err(e) if !Self::is_fatal(&e) => failures.push((master, e)),
                    reply => {
                        sem.init_reply(master, reply, &mut initials, &mut created, &mut missing)?;
                    }
                }
            }
        }
        sem.check_quorum(failures)?;
        if initials.len() < sem.quorum() && !missing.is_empty() {
            return Err(Error::invalid(format!("no semaphore named {:?} exists", sem.id.key)));
        }
        let initial = sem.agreed(initials);
        sem.id.adopt_initial(initial, &mut sem.scope);
        Ok((sem, Opened { initial, created }))
    }

    /// Reads master `master`'s answer to init.lua into what `open` gathers; true when that copy
    /// has seen a claim (one whose epoch field is missing, from an older client, counts so).
    fn init_reply(&self, master: u32, reply: Result<Cursor, Error>, initials: &mut Vec<u64>, created: &mut bool, missing: &mut Vec<u32>) -> Result<bool, Error> {
        let mut reply = reply?;
        match reply.i64()? {
            -2 => Err(Error::invalid(format!(
                "semaphore {:?} was created on one server: it cannot be opened with several masters",
                self.id.key
            ))),
            -1 => {
                missing.push(master);
                Ok(false)
            }
            initial => {
                initials.push(initial as u64);
                *created |= reply.u64()? == 1;
                let _capacity = reply.u64()?;
                Ok(reply.u64().map_or(true, |never| never == 0))
            }
        }
    }

    /// Masters a decision needs.
    fn quorum(&self) -> usize {
        self.masters as usize / 2 + 1
    }

    /// Clock drift allowed between masters and this process over one lease (as Redlock: 1 %
    /// plus 2 ms for the granularity of the masters' clocks).
    fn drift_ms(&self) -> u64 {
        self.id.lease_ms / 100 + 2
    }

    /// How long a round waits for a master: a tenth of the lease (100 ms to 2 s). A master that
    /// is slower (paused, cut off) is left out of that round rather than stalling it, as
    /// Redlock's per-instance time-out. Short enough for a grant's validity (the lease less
    /// two rounds) to outlast its first refresh even beside a silent master: up to a round
    /// under way, then a third of the lease, then the refresh's own round.
    fn round_timeout_ms(&self) -> u64 {
        (self.id.lease_ms / 10).clamp(100, 2_000)
    }

    /// The round time-out, cut to what is left before the deadline of an acquire under way (at
    /// least `MIN_ROUND_MS`): beside a silent master every round waits its time-out out, which
    /// held a short acquire time-out up by rounds of up to 2 s.
    fn round_timeout_now(&self) -> u64 {
        match self.round_deadline_ns.get() {
            Some(deadline) => {
                let left_ms = deadline.saturating_sub(self.transport.monotonic_now_ns()) / 1_000_000;
                self.round_timeout_ms().min(left_ms.max(MIN_ROUND_MS))
            }
            None => self.round_timeout_ms(),
        }
    }

    /// Errors that more masters would not change: the caller's own mistake or setup.
    fn is_fatal(e: &Error) -> bool {
        matches!(e, Error::WrongType(_) | Error::Auth(_) | Error::InvalidArgument(_) | Error::Forbidden(_) | Error::Cancelled)
    }

    /// The largest value a majority reports at least (the `quorum`-th largest).
    fn agreed(&self, mut values: Vec<u64>) -> u64 {
        values.sort_unstable_by(|a, b| b.cmp(a));
        values.get(self.quorum() - 1).or(values.last()).copied().unwrap_or(0)
    }

    fn quorum_error(&self, failures: &[(u32, Error)]) -> Error {
        let detail: Vec<String> = failures.iter().map(|(m, e)| format!("master {m}: {e}")).collect();
        Error::Quorum(format!("{} of {} masters failed ({})", failures.len(), self.masters, detail.join("; ")))
    }

    /// `Err(Quorum)` when so many masters failed that no majority is left.
    fn check_quorum(&self, failures: Failures) -> Result<(), Error> {
        if failures.len() > self.masters as usize - self.quorum() { Err(self.quorum_error(&failures)) } else { Ok(()) }
    }

    /// Runs `script` on each master of `calls` at once; replies in the same order.
    fn run_each(&self, script: &Script, calls: Vec<(u32, Vec<String>)>) -> Vec<(u32, Result<Reply, Error>)> {
        let calls: Vec<(u32, Args)> = calls.into_iter().map(|(m, extra)| (m, extra.into_iter().collect())).collect();
        let replies = self.transport.eval_each(script, &self.scope, &calls, self.round_timeout_now());
        calls.iter().map(|(m, _)| *m).zip(replies).collect()
    }

    fn run_all(&self, script: &Script, extra: &[String]) -> Vec<(u32, Result<Cursor, Error>)> {
        let calls = (0..self.masters).map(|m| (m, extra.to_vec())).collect();
        self.run_each(script, calls).into_iter().map(|(m, r)| (m, r.and_then(Cursor::new))).collect()
    }

    /// `script` on every master: the replies, and the masters that failed. An error that more
    /// masters would not change (wrong type, bad credentials...) is returned instead.
    fn answers(&self, script: &Script, extra: &[String]) -> Result<(Vec<(u32, Cursor)>, Failures), Error> {
        let (replies, failures, fatal) = self.all_answers(script, extra);
        fatal.map_or(Ok((replies, failures)), Err)
    }

    /// [`Self::answers`], with the other masters' replies also when one failed for good: what
    /// they did (a claim) may need undoing.
    fn all_answers(&self, script: &Script, extra: &[String]) -> (Vec<(u32, Cursor)>, Failures, Option<Error>) {
        let (mut replies, mut failures, mut fatal) = (Vec::new(), Vec::new(), None);
        for (master, reply) in self.run_all(script, extra) {
            match reply {
                Ok(r) => replies.push((master, r)),
                Err(e) if Self::is_fatal(&e) => {
                    fatal.get_or_insert(e);
                }
                Err(e) => failures.push((master, e)),
            }
        }
        (replies, failures, fatal)
    }

    /// Drops these permits of `holder` on every master; returns the tokens dropped on at least
    /// one, and the failures.
    fn release_tokens(&self, tokens: &[u64], holder: &str, wake: bool) -> (Vec<u64>, Failures) {
        let (dropped, failures) = self.dropped(wake, tokens.iter().map(|t| (*t, holder)));
        let released = tokens.iter().copied().filter(|t| dropped.contains(t)).collect();
        (released, failures)
    }

    /// Runs release.lua on every master for these (token, holder) permits, [`DROP_CHUNK`] at a
    /// time: the tokens dropped anywhere, and the failures of the call that had the most (each
    /// permit went to the masters of its own call: different masters failing different calls
    /// do not add up).
    fn dropped<'a>(&self, wake: bool, permits: impl Iterator<Item = (u64, &'a str)>) -> (BTreeSet<u64>, Failures) {
        let permits: Vec<(u64, &str)> = permits.collect();
        let (mut dropped, mut worst): (BTreeSet<u64>, Failures) = (BTreeSet::new(), Vec::new());
        for chunk in permits.chunks(DROP_CHUNK) {
            let mut extra = vec![u8::from(wake).to_string()];
            for (token, holder) in chunk {
                extra.extend([slot_of(*token).to_string(), epoch_of(*token).to_string(), holder.to_string()]);
            }
            let mut failures = Vec::new();
            for (master, reply) in self.run_all(&scripts::MULTI_RELEASE, &extra) {
                match reply.and_then(slot_epoch_tokens) {
                    Ok(tokens) => dropped.extend(tokens),
                    Err(e) => failures.push((master, e)),
                }
            }
            if failures.len() > worst.len() {
                worst = failures;
            }
        }
        (dropped, worst)
    }

    /// Releases exactly these permits of this holder; returns those that were still held.
    pub fn release_permits(&self, tokens: &[u64]) -> Result<Vec<u64>, Error> {
        validate::tokens(tokens)?;
        let (released, failures) = self.release_tokens(tokens, &self.id.holder, true);
        self.check_quorum(failures)?;
        Ok(released)
    }

    /// Extends the leases of these permits where this holder still holds them. A permit stays
    /// held when a majority extended it; an ended lease stays ended.
    pub fn refresh(&self, tokens: &[u64]) -> Result<Vec<Permit>, Error> {
        validate::tokens(tokens)?;
        // Once each: a master answers once per token named, and one named twice would count
        // as two masters towards the majority.
        let mut seen = BTreeSet::new();
        let tokens: Vec<u64> = tokens.iter().copied().filter(|t| seen.insert(*t)).collect();
        let tokens = tokens.as_slice();
        let started = self.transport.monotonic_now_ns();
        let extra: Vec<String> = tokens.iter().flat_map(|t| [slot_of(*t).to_string(), epoch_of(*t).to_string()]).collect();
        // Counted per token, not per slot: two of the handle's tokens may share a slot.
        let mut extended: BTreeMap<u64, usize> = BTreeMap::new();
        let mut failures = Vec::new();
        let mut deadline_ms = u64::MAX;
        for (master, reply) in self.run_all(&scripts::MULTI_REFRESH, &extra) {
            let live = reply.and_then(|mut r| {
                deadline_ms = deadline_ms.min(r.u64()?);
                slot_epoch_tokens(r)
            });
            match live {
                Ok(live) => live.into_iter().for_each(|t| *extended.entry(t).or_default() += 1),
                Err(e) => failures.push((master, e)),
            }
        }
        self.check_quorum(failures)?;
        let elapsed_ms = self.transport.monotonic_now_ns().saturating_sub(started).div_ceil(1_000_000);
        let validity = self.id.lease_ms.saturating_sub(elapsed_ms + self.drift_ms());
        if validity == 0 {
            return Ok(Vec::new());
        }
        let held = tokens.iter().filter(|t| extended.get(t).is_some_and(|v| *v >= self.quorum()));
        let deadline_ms = deadline_ms.saturating_sub(self.drift_ms() + elapsed_ms);
        Ok(held.map(|&token| Permit { token, deadline_ms, ttl_ms: validity }).collect())
    }

    /// A master's status.lua answer; `caller`: this holder, whom a 'slots' answer names by a flag.
    fn master_view(mut r: Cursor, of: HoldersOf, caller: &str) -> Result<MasterView, Error> {
        let mut view = MasterView { initial: r.u64()?, capacity: r.u64()?, quarantined: r.u64()? == 1, now_ms: r.u64()?, ..MasterView::default() };
        let live_slot = |r: &mut Cursor| -> Result<LiveSlot, Error> { Ok(LiveSlot { slot: r.u64()?, holder: r.string()?, epoch: r.u64()?, ttl_ms: r.u64()? }) };
        match of {
            HoldersOf::All => {
                for _ in 0..r.u64()? {
                    let live = live_slot(&mut r)?;
                    view.slots.push(live.slot);
                    view.live.push(live);
                }
            }
            HoldersOf::Nobody | HoldersOf::Named(_) => {
                for _ in 0..r.u64()? {
                    view.slots.push(r.u64()?);
                }
                // Others' holders go unnamed (""): only the caller's own are told apart.
                for _ in 0..r.u64()? {
                    let slot = r.u64()?;
                    let holder = if r.u64()? == 1 { caller.to_string() } else { String::new() };
                    view.live.push(LiveSlot { slot, holder, epoch: r.u64()?, ttl_ms: r.u64()? });
                }
            }
        }
        view.slots.sort_unstable();
        Ok(view)
    }

    /// Reads every master and combines what a majority agrees on, with the holders `of` these
    /// slots (`holders` has only those).
    fn view(&self, of: HoldersOf) -> Result<View, Error> {
        let requests: Vec<Vec<String>> = match of {
            HoldersOf::All => vec![Vec::new()],
            HoldersOf::Nobody => vec![vec!["slots".to_string()]],
            HoldersOf::Named([]) => vec![vec!["named".to_string()]],
            HoldersOf::Named(slots) => slots
                .chunks(NAMED_CHUNK)
                .map(|chunk| std::iter::once("named".to_string()).chain(chunk.iter().map(u64::to_string)).collect())
                .collect(),
        };
        // Each master's answers to the requests together; one that failed any is left out.
        let (mut by_master, mut failures): (BTreeMap<u32, MasterView>, Failures) = (BTreeMap::new(), Vec::new());
        for extra in &requests {
            let (replies, failed) = self.answers(&scripts::MULTI_STATUS, extra)?;
            for (master, e) in failed {
                if failures.iter().all(|(m, _)| *m != master) {
                    failures.push((master, e));
                }
            }
            for (master, r) in replies {
                let view = Self::master_view(r, of, &self.id.holder)?;
                match by_master.entry(master) {
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(view);
                    }
                    std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().live.extend(view.live),
                }
            }
        }
        by_master.retain(|master, _| failures.iter().all(|(m, _)| m != master));
        let complete = failures.is_empty();
        self.check_quorum(failures)?;
        let views: Vec<MasterView> = by_master.into_values().collect();
        let q = self.quorum();
        let initial = self.agreed(views.iter().map(|v| v.initial).collect());
        let capacity = self.agreed(views.iter().map(|v| v.capacity).collect());
        // The slots acquires would get one after another. A master that answered and is not
        // quarantined claims while its live slots leave room under its capacity (claim.lua;
        // slots held above a lowered capacity count too), a slot it counts and has nobody on; a
        // slot a majority claims is granted, and every master that claimed it keeps it. Room
        // only shrinks, so a slot passed over stays so: one pass, lowest slot first.
        let mut claimers: Vec<(u64, u64, &[u64])> = views
            .iter()
            .filter(|v| !v.quarantined)
            .map(|v| (v.capacity, v.capacity.saturating_sub(v.slots.len() as u64), v.slots.as_slice()))
            .collect();
        let mut free = Vec::new();
        let counted = !matches!(of, HoldersOf::Named(_));
        for slot in (0..capacity).take_while(|_| counted) {
            let claims = |(cap, room, live): &(u64, u64, &[u64])| *room > 0 && slot < *cap && live.binary_search(&slot).is_err();
            if claimers.iter().filter(|m| claims(m)).count() >= q {
                claimers.iter_mut().filter(|m| claims(m)).for_each(|m| m.1 -= 1);
                free.push(slot);
            } else if claimers.iter().filter(|m| m.1 > 0).count() < q {
                break;
            }
        }
        let available = free.len() as u64;
        // A holder holds a slot under one confirmed epoch on a majority (unconfirmed copies count).
        let mut by_slot: BTreeMap<u64, Vec<(&LiveSlot, u64)>> = BTreeMap::new();
        for v in &views {
            for s in &v.live {
                by_slot.entry(s.slot).or_default().push((s, v.now_ms));
            }
        }
        let mut holders = Vec::new();
        for (slot, copies) in by_slot {
            // The grant a majority holds, not merely the newest copy: a failed attempt's copy
            // left on a minority may carry a higher epoch than the grant that holds the slot.
            let mut grants: Vec<(u64, &str)> = copies.iter().filter(|(s, _)| s.epoch > 0).map(|(s, _)| (s.epoch, s.holder.as_str())).collect();
            grants.sort_unstable_by(|a, b| b.cmp(a));
            grants.dedup();
            let held = grants.into_iter().find_map(|(epoch, holder)| {
                let ttls: Vec<(u64, u64)> = copies
                    .iter()
                    .filter(|(s, _)| s.holder == holder && (s.epoch == epoch || s.epoch == 0))
                    .map(|(s, now)| (s.ttl_ms, now + s.ttl_ms))
                    .collect();
                (ttls.len() >= q).then_some((epoch, holder, ttls))
            });
            let Some((epoch, holder, mut ttls)) = held else { continue };
            ttls.sort_unstable_by(|a, b| b.cmp(a));
            let (ttl, deadline) = ttls[q - 1];
            let ttl_ms = ttl.saturating_sub(self.drift_ms());
            holders.push((Holder { token: token(epoch, slot), holder: holder.to_string(), ttl_ms }, deadline.saturating_sub(self.drift_ms())));
        }
        Ok(View { initial, capacity, available, free, holders, complete })
    }

    /// Permits this holder holds on a majority, with their leases.
    pub fn permits(&self) -> Result<Vec<Permit>, Error> {
        let view = self.view(HoldersOf::All)?;
        let mut permits: Vec<Permit> = view
            .holders
            .into_iter()
            .filter(|(h, _)| h.holder == self.id.holder)
            .map(|(h, deadline_ms)| Permit { token: h.token, deadline_ms, ttl_ms: h.ttl_ms })
            .collect();
        permits.sort_by_key(|p| p.token);
        Ok(permits)
    }

    /// Slots a majority would grant now.
    pub fn value(&self) -> Result<u64, Error> {
        Ok(self.view(HoldersOf::Nobody)?.available)
    }

    pub fn initial_value(&self) -> Result<u64, Error> {
        Ok(self.view(HoldersOf::Nobody)?.initial)
    }

    pub fn locked(&self) -> Result<bool, Error> {
        Ok(self.value()? == 0)
    }

    /// Holders of the slots; `waiters` is always empty, as this mode has no queue.
    pub fn status(&self) -> Result<Status, Error> {
        let view = self.view(HoldersOf::All)?;
        Ok(Status {
            initial: view.initial,
            capacity: view.capacity,
            available: view.available,
            holders: view.holders.into_iter().map(|(h, _)| h).collect(),
            waiters: Vec::new(),
        })
    }

    /// Releases `n` permits: those the caller names as its own first, then other holders'
    /// (earliest lease end first). Two round trips: read all masters, then release on all (more
    /// when named permits turned out gone and others are released in their place).
    /// Named, not all this holder's permits: the caller's books settle only what it named.
    /// `_request`: masters are plain connections, which never send a release twice (it is
    /// `once`), unlike a cluster client.
    pub fn release(&self, n: i64, named: &[u64], _request: u64) -> Result<Released, Error> {
        let n = validate::count(n)? as usize;
        // Most releases give back the first n permits the caller names, which it still holds:
        // that needs the holders of their slots alone, and everyone's (too many for the guest's
        // memory with tens of thousands held) only when the view does not show all n, or
        // stand-ins run out. Each slot once: a master's copy named twice would count as two.
        let mut named_slots: Vec<u64> = named.iter().take(n).map(|t| slot_of(*t)).collect();
        named_slots.sort_unstable();
        named_slots.dedup();
        let mine = |h: &Holder| h.holder == self.id.holder && named.contains(&h.token);
        let mut view = self.view(HoldersOf::Named(&named_slots))?;
        // Whether `view` holds everyone's holders (and counted the available permits).
        let mut others_read = false;
        let mut counted = false;
        // (A master that did not answer changes nothing here: what a majority of those that did
        // shows held is held, and the spares go out unchecked either way.)
        if view.holders.iter().filter(|(h, _)| mine(h)).count() < n {
            view = self.view(HoldersOf::All)?;
            (others_read, counted) = (true, true);
        }
        // As on one server: the permits the caller names as its own first, in its order, whether
        // or not the view shows them (a master that did not answer in time can hide one held on a
        // majority; release.lua drops only exact matches, so naming one that is gone is
        // harmless). Then everyone else's, this holder's unnamed ones included (one whose
        // release failed and is being retried, say), earliest lease end first.
        let own: Vec<u64> = named.iter().take(n).copied().collect();
        let (seen_own, mut others): (Vec<Holder>, Vec<Holder>) = view.holders.into_iter().map(|(h, _)| h).partition(|h| mine(h));
        if !others_read {
            // Holders of the named slots only: not everyone's. Read if needed, below.
            others.clear();
        }
        others.sort_by_key(|h| h.ttl_ms);
        // Named permits beyond the first n: the first to stand in for named ones that turn out
        // gone, before anyone else's (one server tries every named one). Those the view shows,
        // or, when a master did not answer or their holders were not read, any (one that is
        // gone is not dropped, so naming it is harmless).
        let spare_own: Vec<u64> = named[own.len()..]
            .iter()
            .copied()
            .filter(|t| !(view.complete && others_read) || seen_own.iter().any(|h| h.token == *t))
            .collect();
        // Judged by what the view shows, as before anything changes: a bounded semaphore refuses
        // to release more than are held (a named permit that is gone is not held). A view some
        // master did not answer may hide the caller's own: the first n named count as held then.
        // (Without everyone's holders, the view showed n named ones: these checks pass.)
        let named_held = if view.complete { seen_own.len() } else { own.len() + spare_own.len() };
        if self.id.bounded && named_held.min(n) + others.len() < n {
            return Err(Error::Bounded { key: self.id.key.clone(), current: view.available, initial: view.initial });
        }
        // An unbounded one grows by the rest, up to the mode's maximum: refused before anything
        // is dropped, as a refusal after would report a release that happened as one that did not.
        let growth = n.saturating_sub(named_held.min(n) + others.len()) as u64;
        if !self.id.bounded && growth > 0 && view.capacity + growth > MAX_SLOTS {
            return Err(Error::invalid(format!(
                "releasing {n} would add {growth} permits to {}, beyond the {MAX_SLOTS} a semaphore on several masters can have",
                view.capacity
            )));
        }
        let first_others = others.len().min(n - own.len());
        let own_permits = own.iter().map(|t| (*t, self.id.holder.as_str()));
        let (dropped, failures) = self.dropped(true, own_permits.chain(others[..first_others].iter().map(|h| (h.token, h.holder.as_str()))));
        self.check_quorum(failures)?;
        let mut own_tokens: Vec<u64> = own.iter().copied().filter(|t| dropped.contains(t)).collect();
        let mut others_released = others[..first_others].iter().filter(|h| dropped.contains(&h.token)).count();
        // Permits that were gone (another holder's release took them, their lease ended): the
        // caller's other named ones in their place, then others', as on one server; round after
        // round while stand-ins turn out gone too.
        let mut missing = own.len() + first_others - own_tokens.len() - others_released;
        let mut stand_ins: std::collections::VecDeque<(u64, String)> = spare_own
            .iter()
            .map(|t| (*t, self.id.holder.clone()))
            .chain(others.drain(first_others..).map(|h| (h.token, h.holder)))
            .collect();
        while missing > 0 {
            if stand_ins.is_empty() && !others_read {
                others_read = true;
                let mut everyone: Vec<Holder> = self.view(HoldersOf::All)?.holders.into_iter().map(|(h, _)| h).filter(|h| !mine(h)).collect();
                everyone.sort_by_key(|h| h.ttl_ms);
                stand_ins.extend(everyone.into_iter().map(|h| (h.token, h.holder)));
            }
            let instead: Vec<(u64, String)> = stand_ins.drain(..missing.min(stand_ins.len())).collect();
            if instead.is_empty() {
                break;
            }
            let (dropped, failures) = self.dropped(true, instead.iter().map(|(t, h)| (*t, h.as_str())));
            self.check_quorum(failures)?;
            for (token, holder) in instead.iter().filter(|(t, _)| dropped.contains(t)) {
                if *holder == self.id.holder && spare_own.contains(token) { own_tokens.push(*token) } else { others_released += 1 }
                missing -= 1;
            }
        }
        let released = own_tokens.len() + others_released;
        // Nothing was held to release after all (the named permits a silent master seemed to
        // hide were gone): refused, as on one server, and nothing changed.
        if self.id.bounded && released == 0 {
            // (A view of the named slots alone did not count the available ones.)
            let current = if counted { view.available } else { self.value().unwrap_or(0) };
            return Err(Error::Bounded { key: self.id.key.clone(), current, initial: view.initial });
        }
        // Beyond what was held, an unbounded semaphore grows.
        let excess = n.saturating_sub(released);
        let mut added = 0;
        if excess > 0 && !self.id.bounded {
            // Refused only when stand-ins the view showed were gone: the release happened
            // (permits were dropped), so this is not the caller's argument error.
            self.change_capacity("grow", excess as i64).map_err(|e| match e {
                Error::InvalidArgument(refused) => Error::Redis(format!("released {released} permits, but could not add {excess}: {refused}")),
                other => other,
            })?;
            added = excess as u32;
        }
        Ok(Released { own: own_tokens, others: others_released as u32, added })
    }

    pub fn set_permits(&self, value: i64, _request: u64) -> Result<u64, Error> {
        let value = validate::value(value)?;
        self.change_capacity("set", value as i64)
    }

    pub fn add_permits(&self, delta: i64, _request: u64) -> Result<u64, Error> {
        if delta.unsigned_abs() > MAX_SLOTS {
            return Err(Error::invalid(format!("delta must be within ±{MAX_SLOTS}")));
        }
        self.change_capacity("add", delta)
    }

    fn change_capacity(&self, mode: &str, amount: i64) -> Result<u64, Error> {
        let extra = [mode.to_string(), amount.to_string(), MAX_SLOTS.to_string()];
        let mut capacities = Vec::new();
        let (replies, failures) = self.answers(&scripts::MULTI_SET_CAPACITY, &extra)?;
        let mut refused = None;
        for (_, mut reply) in replies {
            match reply.i64()? {
                -1 => refused = Some(reply.u64()?),
                capacity => capacities.push(capacity as u64),
            }
        }
        // Masters whose capacities differ (one restarted with the initial value) can answer
        // differently: what a majority did stands. Refused there, it is the caller's error.
        // A majority unknown (failures) may have made it: then it is not known to be refused.
        if let Some(is) = refused
            && capacities.len() + failures.len() < self.quorum()
        {
            return Err(Error::invalid(format!("the number of permits must stay between 0 and {MAX_SLOTS} with several masters (it is {is})")));
        }
        if capacities.len() < self.quorum() {
            return Err(self.quorum_error(&failures));
        }
        Ok(self.agreed(capacities))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Scalar;
    use std::cell::{Cell, RefCell};

    /// Three masters in the middle of a release: master 0 has had it (its slot is free), 1 and 2
    /// not yet. Records where the waiter then waits, and ends the acquire there.
    #[derive(Default)]
    struct HalfReleased {
        now_ns: Cell<u64>,
        waited_on: RefCell<Vec<u32>>,
    }

    /// A one-permit semaphore of `holder` on three masters, as the fakes below answer for.
    fn three_masters(holder: &str) -> Config {
        Config {
            key: "k".into(),
            value: 1,
            bounded: true,
            lease_ms: 10_000,
            holder: holder.into(),
            guard_fresh_server: false,
            existed: false,
            create: true,
            masters: 3,
            raise_on_redis_errors: false,
            replicate: false,
        }
    }

    fn ints(items: &[i64]) -> Result<Reply, Error> {
        Ok(Reply::Array(items.iter().map(|i| Scalar::Int(*i)).collect()))
    }

    impl Transport for &HalfReleased {
        fn eval(&self, _: &Script, _: &Scope, _: &Args) -> Result<Reply, Error> {
            unreachable!("several masters run scripts through eval_each")
        }
        fn eval_each(&self, script: &Script, _: &Scope, calls: &[(u32, Args)], _: u64) -> Vec<Result<Reply, Error>> {
            let answer = |master: u32| match script.name {
                "multi/init.lua" => ints(&[1, 0, 1, 1]),
                "multi/claim.lua" if master == 0 => ints(&[1, 7, 10_000, 0]),
                "multi/claim.lua" => ints(&[0, 500]),
                "multi/release.lua" => ints(&[0]),
                other => unreachable!("{other}"),
            };
            calls.iter().map(|(master, _)| answer(*master)).collect()
        }
        fn command(&self, _: &str, _: &str, _: &[String]) -> Result<Reply, Error> {
            unreachable!("no commands")
        }
        fn blocking_pop(&self, _: &str, _: u64, _: bool) -> Result<Option<String>, Error> {
            unreachable!("several masters pop through blocking_pop_on")
        }
        fn blocking_pop_on(&self, master: u32, _: &str, _: u64, _: bool) -> Result<Option<String>, Error> {
            self.waited_on.borrow_mut().push(master);
            Err(Error::Cancelled)
        }
        fn wait_replicas(&self) -> Result<(), Error> {
            Ok(())
        }
        fn monotonic_now_ns(&self) -> u64 {
            self.now_ns.get()
        }
        fn sleep(&self, _: u64) -> Result<(), Error> {
            Ok(())
        }
    }

    /// A waiter whose claim only the master the release already reached granted waits for the
    /// release's push on a master it has yet to reach, whatever its random pick.
    #[test]
    fn a_waiter_caught_mid_release_waits_where_the_release_is_still_to_come() {
        for i in 0..48u64 {
            let fake = HalfReleased::default();
            fake.now_ns.set(i * 7_919_000_003);
            let (sem, _) = Semaphore::open(&fake, three_masters(&format!("h{i}"))).expect("open");
            assert_eq!(sem.acquire(1, true, None), Err(Error::Cancelled));
            assert_eq!(fake.waited_on.borrow().len(), 1);
            assert_ne!(fake.waited_on.borrow()[0], 0, "waited where the push was already taken");
        }
    }

    /// Masters that refuse every claim as `refusal(master)` says, each with `pushes` in its
    /// wake list at first; wake.lua adds to it, and a pop that finds it empty ends the acquire
    /// (`Cancelled`). Records where it popped and the wake-ups handed on.
    struct Woken<F> {
        refusal: F,
        lists: RefCell<BTreeMap<u32, std::collections::VecDeque<String>>>,
        popped: RefCell<Vec<u32>>,
        handed_on: RefCell<Vec<(u32, String)>>,
    }

    fn woken<F: Fn(u32) -> [i64; 4]>(refusal: F, pushes: &[&str]) -> Woken<F> {
        let lists = (0..3).map(|m| (m, pushes.iter().map(|p| p.to_string()).collect())).collect();
        Woken { refusal, lists: RefCell::new(lists), popped: RefCell::default(), handed_on: RefCell::default() }
    }

    impl<F: Fn(u32) -> [i64; 4]> Transport for &Woken<F> {
        fn eval(&self, _: &Script, _: &Scope, _: &Args) -> Result<Reply, Error> {
            unreachable!("several masters run scripts through eval_each")
        }
        fn eval_each(&self, script: &Script, _: &Scope, calls: &[(u32, Args)], _: u64) -> Vec<Result<Reply, Error>> {
            calls
                .iter()
                .map(|(master, args)| match script.name {
                    "multi/init.lua" => ints(&[3, 0, 3, 1]),
                    "multi/claim.lua" => ints(&(self.refusal)(*master)),
                    "multi/wake.lua" => {
                        let push = args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>().join(" ");
                        self.lists.borrow_mut().get_mut(master).expect("a master").push_back(push.clone());
                        self.handed_on.borrow_mut().push((*master, push));
                        Ok(Reply::Scalar(Scalar::Int(1)))
                    }
                    other => unreachable!("{other}"),
                })
                .collect()
        }
        fn command(&self, _: &str, _: &str, _: &[String]) -> Result<Reply, Error> {
            unreachable!("no commands")
        }
        fn blocking_pop(&self, _: &str, _: u64, _: bool) -> Result<Option<String>, Error> {
            unreachable!("several masters pop through blocking_pop_on")
        }
        fn blocking_pop_on(&self, master: u32, _: &str, _: u64, _: bool) -> Result<Option<String>, Error> {
            self.popped.borrow_mut().push(master);
            self.lists.borrow_mut().get_mut(&master).and_then(|l| l.pop_front()).map(Some).ok_or(Error::Cancelled)
        }
        fn wait_replicas(&self) -> Result<(), Error> {
            Ok(())
        }
        fn monotonic_now_ns(&self) -> u64 {
            0
        }
        fn sleep(&self, _: u64) -> Result<(), Error> {
            Ok(())
        }
    }

    /// A waiter for 2 slots woken where 1 is free: the masters serve the longest-blocked pop
    /// first, so a waiter for 1 behind it slept its whole pause while the slot was free. It
    /// hands the wake-up on there (signed by this acquire: holder "h", started at 0 ns), and
    /// waits elsewhere itself. A release's push on each master: each is handed on once, and
    /// one that comes back to it is dropped (a lone waiter bounced them 16 times each).
    #[test]
    fn a_wake_up_the_waiter_cannot_use_is_handed_on_once_where_a_slot_is_free() {
        let fake = woken(|_| [0, 500, 1, 0], &["1"]);
        let (sem, _) = Semaphore::open(&fake, Config { value: 3, ..three_masters("h") }).expect("open");
        assert_eq!(sem.acquire(2, true, None), Err(Error::Cancelled));
        let (popped, handed_on) = (fake.popped.borrow(), fake.handed_on.borrow());
        assert_eq!(handed_on[0], (popped[0], "2:h.0".to_string()));
        assert_ne!(popped[1], popped[0], "waited where it handed the wake-up on");
        assert!(handed_on.len() <= 3 && handed_on.iter().all(|(_, push)| push == "2:h.0"), "{handed_on:?}");
    }

    /// Handed on by another acquire of the same handle (its holder id is the handle's): this
    /// one hands it on again, as the next waiter there may ask for fewer.
    #[test]
    fn a_wake_up_handed_on_by_another_acquire_of_the_handle_goes_on() {
        let fake = woken(|_| [0, 500, 1, 0], &["2:h.5"]);
        let (sem, _) = Semaphore::open(&fake, Config { value: 3, ..three_masters("h") }).expect("open");
        assert_eq!(sem.acquire(2, true, None), Err(Error::Cancelled));
        let (popped, handed_on) = (fake.popped.borrow(), fake.handed_on.borrow());
        assert_eq!(handed_on[0], (popped[0], "3:h.0".to_string()));
    }

    /// Not when no slot is free there (nobody could use it), once handed on often enough, nor
    /// when this acquire handed it on last.
    #[test]
    fn a_wake_up_is_not_handed_on_without_a_free_slot_or_endlessly() {
        for (room, push) in [(0, "1"), (1, "16:x.1"), (1, "3:h.0")] {
            let fake = woken(|_| [0, 500, room, 0], &[push]);
            let (sem, _) = Semaphore::open(&fake, Config { value: 3, ..three_masters("h") }).expect("open");
            assert_eq!(sem.acquire(2, true, None), Err(Error::Cancelled));
            assert!(fake.handed_on.borrow().is_empty(), "room {room}, push {push}: {:?}", fake.handed_on.borrow());
        }
    }

    /// A master in quarantine refuses every claim, and no release pushes there (it holds no
    /// slot): a waiter waiting there slept its whole pause. Not while others refused too.
    #[test]
    fn a_waiter_does_not_wait_on_a_quarantined_master() {
        for i in 0..48 {
            let fake = woken(|m| if m == 2 { [0, 500, 0, 1] } else { [0, 500, 0, 0] }, &[]);
            let (sem, _) = Semaphore::open(&fake, Config { value: 3, ..three_masters(&format!("h{i}")) }).expect("open");
            assert_eq!(sem.acquire(1, true, None), Err(Error::Cancelled));
            assert!(!fake.popped.borrow().contains(&2), "waited on the quarantined master: {:?}", fake.popped.borrow());
        }
    }

    /// Masters that refuse every claim (the semaphore is full) and whose pops fail once their
    /// whole time is spent (a master stopped mid-connection), on a clock that only pops and
    /// sleeps move.
    #[derive(Default)]
    struct Stalling {
        now_ns: Cell<u64>,
    }

    impl Transport for &Stalling {
        fn eval(&self, _: &Script, _: &Scope, _: &Args) -> Result<Reply, Error> {
            unreachable!("several masters run scripts through eval_each")
        }
        fn eval_each(&self, script: &Script, _: &Scope, calls: &[(u32, Args)], _: u64) -> Vec<Result<Reply, Error>> {
            let answer = match script.name {
                "multi/init.lua" => ints(&[1, 0, 1, 1]),
                "multi/claim.lua" => ints(&[0, 500]),
                "multi/release.lua" => ints(&[]),
                other => unreachable!("{other}"),
            };
            calls.iter().map(|_| answer.clone()).collect()
        }
        fn command(&self, _: &str, _: &str, _: &[String]) -> Result<Reply, Error> {
            unreachable!("no commands")
        }
        fn blocking_pop(&self, _: &str, _: u64, _: bool) -> Result<Option<String>, Error> {
            unreachable!("several masters pop through blocking_pop_on")
        }
        fn blocking_pop_on(&self, _: u32, _: &str, ms: u64, _: bool) -> Result<Option<String>, Error> {
            self.sleep(ms)?;
            Err(Error::Unreachable("connecting timed out".into()))
        }
        fn wait_replicas(&self) -> Result<(), Error> {
            Ok(())
        }
        fn monotonic_now_ns(&self) -> u64 {
            self.now_ns.get()
        }
        fn sleep(&self, ms: u64) -> Result<(), Error> {
            self.now_ns.set(self.now_ns.get() + ms * 1_000_000);
            Ok(())
        }
    }

    /// A pause whose pop fails only once its time is spent sleeps no more after it: before, it
    /// slept its whole length again, and `acquire(timeout 0.3 s)` took 0.6 s.
    #[test]
    fn a_pause_whose_pop_failed_late_does_not_outlast_the_deadline() {
        let fake = Stalling::default();
        let (sem, _) = Semaphore::open(&fake, three_masters("h")).expect("open");
        assert_eq!(sem.acquire(1, true, Some(0.3)), Ok(Vec::new()));
        let took_ms = fake.now_ns.get() / 1_000_000;
        assert!(took_ms <= 310, "a 300 ms time-out took {took_ms} ms");
    }

    /// Masters that answer every script by `answer(script, master, args)`, and never pop.
    /// Masters answering as the closure says; its status.lua answers list every holder, and
    /// are cut down as status.lua's 'slots' and 'named' modes answer.
    struct Answering<F>(F);

    /// `caller`: the holder asking, whose slots the answer flags.
    fn compact(reply: Result<Reply, Error>, with_slots: bool, named: &[String], caller: &str) -> Result<Reply, Error> {
        let Ok(Reply::Array(items)) = reply else { return reply };
        let (head, live) = items.split_at(5.min(items.len()));
        let details: Vec<&[Scalar]> = live.chunks(4).filter(|d| named.iter().any(|n| Scalar::Bulk(n.clone().into_bytes()) == d[0] || n.parse().map(Scalar::Int).ok().as_ref() == Some(&d[0]))).collect();
        let mut out: Vec<Scalar> = head[..4].to_vec();
        if with_slots {
            out.push(head[4].clone());
            out.extend(live.iter().step_by(4).cloned());
        } else {
            out.push(Scalar::Int(0));
        }
        out.push(Scalar::Int(details.len() as i64));
        for d in details {
            let mine = d[1] == Scalar::Bulk(caller.as_bytes().to_vec());
            out.extend([d[0].clone(), Scalar::Int(i64::from(mine)), d[2].clone(), d[3].clone()]);
        }
        Ok(Reply::Array(out))
    }

    impl<F: Fn(&str, u32, &Args) -> Result<Reply, Error>> Transport for &Answering<F> {
        fn eval(&self, _: &Script, _: &Scope, _: &Args) -> Result<Reply, Error> {
            unreachable!("several masters run scripts through eval_each")
        }
        fn eval_each(&self, script: &Script, scope: &Scope, calls: &[(u32, Args)], _: u64) -> Vec<Result<Reply, Error>> {
            calls
                .iter()
                .map(|(master, args)| {
                    let reply = (self.0)(script.name, *master, args);
                    let args: Vec<String> = args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
                    match args.split_first() {
                        Some((mode, named)) if script.name == "multi/status.lua" && (mode == "slots" || mode == "named") => {
                            compact(reply, mode == "slots", named, &scope.leading[0])
                        }
                        _ => reply,
                    }
                })
                .collect()
        }
        fn command(&self, _: &str, _: &str, _: &[String]) -> Result<Reply, Error> {
            unreachable!("no commands")
        }
        fn blocking_pop(&self, _: &str, _: u64, _: bool) -> Result<Option<String>, Error> {
            unreachable!("no pops")
        }
        fn wait_replicas(&self) -> Result<(), Error> {
            Ok(())
        }
        fn monotonic_now_ns(&self) -> u64 {
            0
        }
        fn sleep(&self, _: u64) -> Result<(), Error> {
            Ok(())
        }
    }

    /// Two tokens of one slot: the masters extend (or drop) only the grant live there, and only
    /// that token may come back as held (or released). Counting by slot brought the ended grant
    /// back to life beside the newer one: two holders of one permit.
    #[test]
    fn of_two_tokens_of_one_slot_only_the_live_grant_counts() {
        // Every master holds slot 0 for this holder under epoch 9 only: an older grant of the
        // same slot (epoch 5, ended, not yet known as lost) is named too.
        let masters = Answering(|script: &str, _: u32, _: &Args| match script {
            "multi/init.lua" => ints(&[1, 0, 1, 1]),
            "multi/refresh.lua" => ints(&[20_000, 0, 9]),
            "multi/release.lua" => ints(&[0, 9]),
            other => unreachable!("{other}"),
        });
        let (sem, _) = Semaphore::open(&masters, three_masters("h")).expect("open");
        let (ended, live) = (token(5, 0), token(9, 0));
        let held: Vec<u64> = sem.refresh(&[ended, live]).expect("refresh").iter().map(|p| p.token).collect();
        assert_eq!(held, [live]);
        assert_eq!(sem.release_permits(&[ended, live]), Ok(vec![live]));
    }

    /// Capacity lowered to 2 below slots still held (1 and 2): no master grants until two of
    /// them go, though slot 0 is free everywhere. value() said 1, and locked() false.
    #[test]
    fn slots_held_above_a_lowered_capacity_count_against_the_value() {
        let masters = Answering(|script: &str, _: u32, _: &Args| match script {
            "multi/init.lua" => ints(&[3, 0, 2, 0]),
            "multi/status.lua" => {
                let mut items: Vec<Scalar> = [3, 2, 0, 1_000, 2].map(Scalar::Int).to_vec();
                for slot in [1, 2] {
                    items.extend([Scalar::Int(slot), Scalar::Bulk("h".into()), Scalar::Int(6), Scalar::Int(8_000)]);
                }
                Ok(Reply::Array(items))
            }
            other => unreachable!("{other}"),
        });
        let (sem, _) = Semaphore::open(&masters, Config { value: 3, ..three_masters("x") }).expect("open");
        assert_eq!(sem.value(), Ok(0));
        assert_eq!(sem.locked(), Ok(true));
    }

    /// Stale copies of slot 0 on master 0 and of slot 1 on master 1 (releases they missed):
    /// each slot is free on a majority, so `value` counts both as available, though no single
    /// master has room for both.
    #[test]
    fn stale_copies_on_different_masters_leave_both_slots_available() {
        let masters = Answering(|script: &str, master: u32, _: &Args| match script {
            "multi/init.lua" => ints(&[2, 0, 2, 0]),
            "multi/status.lua" => {
                let mut items: Vec<Scalar> = [2, 2, 0, 1_000].map(Scalar::Int).to_vec();
                let live: &[i64] = match master {
                    0 => &[0],
                    1 => &[1],
                    _ => &[],
                };
                items.push(Scalar::Int(live.len() as i64));
                for slot in live {
                    items.extend([Scalar::Int(*slot), Scalar::Bulk("gone".into()), Scalar::Int(6), Scalar::Int(8_000)]);
                }
                Ok(Reply::Array(items))
            }
            other => unreachable!("{other}"),
        });
        let (sem, _) = Semaphore::open(&masters, Config { value: 2, ..three_masters("x") }).expect("open");
        assert_eq!(sem.value(), Ok(2));
    }

    /// Capacity lowered to 2 while slot 2 is held on masters 0 and 1 only (master 2 missed
    /// its grant), slots 0 and 1 free everywhere: the first acquire takes slot 0 on all three,
    /// and then masters 0 and 1 have no room left. One, not 2.
    #[test]
    fn a_slot_held_above_a_lowered_capacity_on_some_masters_leaves_one() {
        let masters = Answering(|script: &str, master: u32, _: &Args| match script {
            "multi/init.lua" => ints(&[3, 0, 2, 0]),
            "multi/status.lua" => {
                let mut items: Vec<Scalar> = [3, 2, 0, 1_000].map(Scalar::Int).to_vec();
                if master < 2 {
                    items.extend([Scalar::Int(1), Scalar::Int(2), Scalar::Bulk("h".into()), Scalar::Int(6), Scalar::Int(8_000)]);
                } else {
                    items.push(Scalar::Int(0));
                }
                Ok(Reply::Array(items))
            }
            other => unreachable!("{other}"),
        });
        let (sem, _) = Semaphore::open(&masters, Config { value: 3, ..three_masters("x") }).expect("open");
        assert_eq!(sem.value(), Ok(1));
    }

    /// A token named twice counts once: master 0 alone, answering for both, is no majority.
    #[test]
    fn a_token_named_twice_is_refreshed_by_a_majority_or_not_at_all() {
        let masters = Answering(|script: &str, master: u32, args: &Args| match script {
            "multi/init.lua" => ints(&[1, 0, 1, 1]),
            // As refresh.lua: one (slot, epoch) pair per named pair that is live there.
            "multi/refresh.lua" if master == 0 => {
                let pairs = args.len() / 2;
                ints(&std::iter::once(20_000).chain(std::iter::repeat_n([0, 9], pairs).flatten()).collect::<Vec<_>>())
            }
            "multi/refresh.lua" => ints(&[20_000]),
            other => unreachable!("{other}"),
        });
        let (sem, _) = Semaphore::open(&masters, three_masters("h")).expect("open");
        assert_eq!(sem.refresh(&[token(9, 0), token(9, 0)]), Ok(vec![]));
    }

    /// A blocking acquire with a zero time-out above a bounded capacity answers "not acquired",
    /// as on one server (where it never waits, so nothing is refused as impossible).
    #[test]
    fn a_zero_time_out_above_the_capacity_is_not_acquired_rather_than_refused() {
        let masters = Answering(|script: &str, _: u32, _: &Args| match script {
            "multi/init.lua" => ints(&[1, 0, 1, 1]),
            "multi/claim.lua" => ints(&[-1, 1]),
            other => unreachable!("{other}"),
        });
        let (sem, _) = Semaphore::open(&masters, three_masters("h")).expect("open");
        assert_eq!(sem.acquire(2, true, Some(0.0)), Ok(vec![]));
        assert!(matches!(sem.acquire(2, true, Some(1.0)), Err(Error::InvalidArgument(_))));
    }

    /// A confirmation that failed drops the copies it had confirmed (only their grant epoch
    /// names them now) and wakes whoever those copies held up, as any slot given back does:
    /// else those waiters sleep until the nearest lease ends while the slot is free.
    #[test]
    fn copies_dropped_after_a_failed_confirmation_wake_the_waiters() {
        // Every master grants the claim of slot 0; only master 0 confirms it. The wake flag
        // (ARGV 4) of every release.lua call is kept.
        let release_wakes = RefCell::new(Vec::new());
        let masters = Answering(|script: &str, master: u32, args: &Args| match script {
            "multi/init.lua" => ints(&[1, 0, 1, 1]),
            "multi/claim.lua" => ints(&[1, 7, 10_000, 0]),
            "multi/confirm.lua" => Ok(Reply::Scalar(Scalar::Int(i64::from(master == 0)))),
            "multi/release.lua" => {
                let wake = args.iter().next().map(|a| String::from_utf8_lossy(a).into_owned()).unwrap_or_default();
                release_wakes.borrow_mut().push(wake);
                ints(&[0])
            }
            _ => Err(Error::Cancelled),
        });
        let (sem, _) = Semaphore::open(&masters, three_masters("h")).expect("open");
        let _ = sem.acquire(1, false, None);
        let wakes = release_wakes.borrow();
        assert!(!wakes.is_empty(), "nothing dropped after the failed confirmation");
        assert!(wakes.iter().all(|w| w == "1"), "dropped without a wake-up: {wakes:?}");
    }

    /// Masters whose free slots differ (copies left on one master each) claim different pairs:
    /// slots 0 and 1 win a majority each, but no master claimed both. Each is confirmed on a
    /// majority, which is what a grant needs; counting only masters that confirmed both, the
    /// attempt split, and the next claimed the same, until the copies' leases ended.
    #[test]
    fn slots_confirmed_each_on_a_majority_are_granted_though_no_master_holds_all() {
        let claimed = |master: u32| -> &'static [i64] {
            match master {
                0 => &[0, 1],
                1 => &[0, 2],
                _ => &[1, 2],
            }
        };
        let masters = Answering(|script: &str, master: u32, args: &Args| match script {
            "multi/init.lua" => ints(&[3, 0, 3, 1]),
            "multi/claim.lua" => ints(&[&[1, 7, 10_000][..], claimed(master)].concat()),
            "multi/confirm.lua" => {
                let args: Vec<i64> = args.iter().map(|a| String::from_utf8_lossy(a).parse().unwrap_or(-1)).collect();
                let k = args[2] as usize;
                Ok(Reply::Scalar(Scalar::Int(args[3..3 + k].iter().filter(|s| claimed(master).contains(s)).count() as i64)))
            }
            "multi/release.lua" => ints(&[]),
            other => unreachable!("{other}"),
        });
        let (sem, _) = Semaphore::open(&masters, Config { value: 3, ..three_masters("h") }).expect("open");
        let granted: Vec<u64> = sem.acquire(2, false, None).expect("acquire").iter().map(|p| slot_of(p.token)).collect();
        assert_eq!(granted, [0, 1]);
    }

    /// An unbounded release beyond what is held, at the mode's maximum number of permits: refused
    /// before anything is dropped. Before, it dropped the caller's permit, then the addition was
    /// refused and the call reported an argument error, which means "nothing changed": the host
    /// kept the permit in its books and later reported it lost.
    #[test]
    fn an_unbounded_release_that_cannot_grow_is_refused_before_it_drops_anything() {
        let max = MAX_SLOTS as i64;
        let dropped = Cell::new(false);
        let masters = Answering(|script: &str, _: u32, _: &Args| match script {
            "multi/init.lua" => ints(&[max, 0, max, 1]),
            "multi/status.lua" => {
                let mut items: Vec<Scalar> = [max, max, 0, 1_000, 1, 0].map(Scalar::Int).to_vec();
                items.extend([Scalar::Bulk("h".into()), Scalar::Int(5), Scalar::Int(8_000)]);
                Ok(Reply::Array(items))
            }
            "multi/release.lua" => {
                dropped.set(true);
                ints(&[0, 5])
            }
            "multi/set_capacity.lua" => ints(&[-1, max]),
            other => unreachable!("{other}"),
        });
        let config = Config { value: max, bounded: false, ..three_masters("h") };
        let (sem, _) = Semaphore::open(&masters, config).expect("open");
        let released = sem.release(2, &[token(5, 0)], 0);
        assert!(matches!(released, Err(Error::InvalidArgument(_))), "{released:?}");
        assert!(!dropped.get(), "the release dropped a permit before it was refused");
    }

    /// A claim answer the guest cannot read (another version's script, say) fails the acquire,
    /// and what the other masters granted goes back at once. Before, the error returned before
    /// the give-back, and their slots stayed taken for a lease.
    #[test]
    fn a_claim_answer_that_cannot_be_read_gives_back_what_the_others_granted() {
        let given_back = RefCell::new(Vec::new());
        let masters = Answering(|script: &str, master: u32, _: &Args| match script {
            "multi/init.lua" => ints(&[1, 0, 1, 1]),
            "multi/claim.lua" if master == 1 => ints(&[7]),
            "multi/claim.lua" => ints(&[1, 7, 10_000, 0]),
            "multi/release.lua" => {
                given_back.borrow_mut().push(master);
                ints(&[0])
            }
            other => unreachable!("{other}"),
        });
        let (sem, _) = Semaphore::open(&masters, three_masters("h")).expect("open");
        let acquired = sem.acquire(1, false, None);
        assert!(matches!(&acquired, Err(Error::Redis(m)) if m.contains("claim status 7")), "{acquired:?}");
        assert_eq!(*given_back.borrow(), [0, 2]);
    }

    /// The slot's holder is the grant on a majority: taking the newest copy's owner ("x", on one
    /// master) hid "h"'s permit, so its release found nothing of its own (a bounded error, or
    /// on an unbounded semaphore one more permit while "h" kept refreshing its own).
    #[test]
    fn a_slot_is_held_by_the_grant_a_majority_holds_not_the_newest_copy() {
        // Slot 0 is held by "h" under epoch 5 on masters 0 and 1; master 2 keeps a copy a failed
        // attempt of "x" left there under the higher epoch 9.
        let masters = Answering(|script: &str, master: u32, _: &Args| match script {
            "multi/init.lua" => ints(&[1, 0, 1, 1]),
            "multi/status.lua" => {
                let (holder, epoch) = if master == 2 { ("x", 9) } else { ("h", 5) };
                let mut items: Vec<Scalar> = [1, 1, 0, 1_000, 1, 0].map(Scalar::Int).to_vec();
                items.extend([Scalar::Bulk(holder.into()), Scalar::Int(epoch), Scalar::Int(8_000)]);
                Ok(Reply::Array(items))
            }
            "multi/release.lua" => ints(&[0, 5]),
            other => unreachable!("{other}"),
        });
        let (sem, _) = Semaphore::open(&masters, three_masters("h")).expect("open");
        assert_eq!(sem.permits().expect("permits").iter().map(|p| p.token).collect::<Vec<_>>(), [token(5, 0)]);
        let released = sem.release(1, &[token(5, 0)], 0).expect("release");
        assert_eq!((released.own, released.added), (vec![token(5, 0)], 0));
    }

    /// A master that does not answer in time can hide a permit of the caller's from the view
    /// (it holds one of the two copies of a majority). The release still drops the permits the
    /// caller names: before, it found none of its own and released another holder's instead,
    /// and the caller's stayed held, and refreshed, for as long as the handle lived.
    #[test]
    fn a_release_drops_the_named_permits_though_a_silent_master_hides_them() {
        // Slot 0: "h" under epoch 5 on masters 0 and 1. Slot 1: "x" under epoch 6 on all three.
        // Master 1 does not answer the status round.
        let held = |master: u32| if master == 2 { vec![(1, "x", 6)] } else { vec![(0, "h", 5), (1, "x", 6)] };
        let released = RefCell::new(Vec::new());
        let masters = Answering(|script: &str, master: u32, args: &Args| match script {
            "multi/init.lua" => ints(&[2, 0, 2, 1]),
            "multi/status.lua" if master == 1 => Err(Error::Unreachable("slow".into())),
            "multi/status.lua" => {
                let live = held(master);
                let mut items: Vec<Scalar> = [2, 2, 0, 1_000, live.len() as i64].map(Scalar::Int).to_vec();
                for (slot, holder, epoch) in live {
                    items.extend([Scalar::Int(slot), Scalar::Bulk(holder.into()), Scalar::Int(epoch), Scalar::Int(8_000)]);
                }
                Ok(Reply::Array(items))
            }
            "multi/release.lua" => {
                let args: Vec<String> = args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
                let mut out = Vec::new();
                for named in args[1..].chunks(3) {
                    let (slot, epoch) = (named[0].parse::<i64>().expect("slot"), named[1].parse::<i64>().expect("epoch"));
                    if held(master).contains(&(slot, named[2].as_str(), epoch)) {
                        released.borrow_mut().push(named[2].clone());
                        out.extend([slot, epoch]);
                    }
                }
                ints(&out)
            }
            other => unreachable!("{other}"),
        });
        let (sem, _) = Semaphore::open(&masters, three_masters("h")).expect("open");
        let r = sem.release(1, &[token(5, 0)], 0).expect("release");
        assert_eq!((r.own, r.others, r.added), (vec![token(5, 0)], 0, 0));
        assert!(!released.borrow().iter().any(|h| h == "x"), "another holder's permit was released: {:?}", released.borrow());
    }

    /// A named permit that is gone (another holder's release took it) is made up for with
    /// another holder's, as on one server, in a round of its own.
    #[test]
    fn a_release_whose_named_permit_is_gone_releases_another_in_its_place() {
        let released = RefCell::new(Vec::new());
        let masters = Answering(|script: &str, _: u32, args: &Args| match script {
            "multi/init.lua" => ints(&[2, 0, 2, 1]),
            "multi/status.lua" => {
                let mut items: Vec<Scalar> = [2, 2, 0, 1_000, 1].map(Scalar::Int).to_vec();
                items.extend([Scalar::Int(1), Scalar::Bulk("x".into()), Scalar::Int(6), Scalar::Int(8_000)]);
                Ok(Reply::Array(items))
            }
            "multi/release.lua" => {
                let args: Vec<String> = args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
                released.borrow_mut().push(args[1..].join(" "));
                if args[1..] == ["1", "6", "x"] { ints(&[1, 6]) } else { ints(&[]) }
            }
            other => unreachable!("{other}"),
        });
        let (sem, _) = Semaphore::open(&masters, three_masters("h")).expect("open");
        let r = sem.release(1, &[token(5, 0)], 0).expect("release");
        assert_eq!((r.own, r.others, r.added), (vec![], 1, 0), "rounds: {:?}", released.borrow());
    }

    /// Masters that answer the status round with `live` (slot, holder, epoch) on a semaphore
    /// of `capacity` (also its value), all but `silent` (which fails it), and drop on
    /// release.lua what they hold of the named permits; `released` records each round's
    /// holders that some master dropped.
    fn releasing<'a>(
        capacity: i64,
        silent: Option<u32>,
        live: impl Fn(u32) -> Vec<(i64, &'static str, i64)> + 'a,
        released: &'a RefCell<Vec<Vec<String>>>,
    ) -> impl Fn(&str, u32, &Args) -> Result<Reply, Error> + 'a {
        move |script: &str, master: u32, args: &Args| match script {
            "multi/init.lua" => ints(&[capacity, 0, capacity, 1]),
            "multi/status.lua" if Some(master) == silent => Err(Error::Unreachable("slow".into())),
            "multi/status.lua" => {
                let live = live(master);
                let mut items: Vec<Scalar> = [capacity, capacity, 0, 1_000, live.len() as i64].map(Scalar::Int).to_vec();
                for (slot, holder, epoch) in live {
                    items.extend([Scalar::Int(slot), Scalar::Bulk(holder.into()), Scalar::Int(epoch), Scalar::Int(8_000)]);
                }
                Ok(Reply::Array(items))
            }
            "multi/release.lua" => {
                let args: Vec<String> = args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
                let (mut out, mut round) = (Vec::new(), Vec::new());
                for named in args[1..].chunks(3) {
                    let (slot, epoch) = (named[0].parse::<i64>().expect("slot"), named[1].parse::<i64>().expect("epoch"));
                    if live(master).contains(&(slot, named[2].as_str(), epoch)) {
                        round.push(format!("{}@{slot}", named[2]));
                        out.extend([slot, epoch]);
                    }
                }
                if master == 0 {
                    released.borrow_mut().push(round);
                }
                ints(&out)
            }
            other => unreachable!("{other}"),
        }
    }

    /// The first named permit is gone (another holder's release took it): the caller's next
    /// named one, which the view shows, goes in its place, not another holder's.
    #[test]
    fn a_release_whose_named_permit_is_gone_releases_the_callers_next_one_first() {
        // "h" holds slot 1 (epoch 6); its slot 0 (epoch 5) is gone. "y" holds slot 2.
        let released = RefCell::new(Vec::new());
        let masters = Answering(releasing(3, None, |_| vec![(1, "h", 6), (2, "y", 7)], &released));
        let (sem, _) = Semaphore::open(&masters, Config { value: 3, ..three_masters("h") }).expect("open");
        let r = sem.release(1, &[token(5, 0), token(6, 1)], 0).expect("release");
        assert_eq!((r.own, r.others, r.added), (vec![token(6, 1)], 0, 0), "rounds: {:?}", released.borrow());
        assert!(!released.borrow().concat().iter().any(|h| h.starts_with('y')), "another holder's permit was released: {:?}", released.borrow());
    }

    /// As above, with the caller's next named permit hidden by a master that did not answer (it
    /// is on masters 0 and 1, master 1 silent): it still goes before another holder's.
    #[test]
    fn a_release_whose_named_permit_is_gone_releases_the_callers_hidden_next_one_first() {
        let released = RefCell::new(Vec::new());
        let live = |m: u32| if m < 2 { vec![(1, "h", 6), (2, "y", 7)] } else { vec![(2, "y", 7)] };
        let masters = Answering(releasing(3, Some(1), live, &released));
        let (sem, _) = Semaphore::open(&masters, Config { value: 3, ..three_masters("h") }).expect("open");
        let r = sem.release(1, &[token(5, 0), token(6, 1)], 0).expect("release");
        assert_eq!((r.own, r.others, r.added), (vec![token(6, 1)], 0, 0), "rounds: {:?}", released.borrow());
        assert!(!released.borrow().concat().iter().any(|h| h.starts_with('y')), "another holder's permit was released: {:?}", released.borrow());
    }

    /// The caller's first named permit is gone and so is its next one, which a master that did
    /// not answer may have hidden: another holder's permit goes in their place, in a round of
    /// its own (the release gave up after the caller's, and refused as Bounded).
    #[test]
    fn a_release_whose_stand_in_is_gone_too_releases_another_holders() {
        let released = RefCell::new(Vec::new());
        let masters = Answering(releasing(3, Some(1), |_| vec![(2, "y", 7)], &released));
        let (sem, _) = Semaphore::open(&masters, Config { value: 3, ..three_masters("h") }).expect("open");
        let r = sem.release(1, &[token(5, 0), token(6, 1)], 0).expect("release");
        assert_eq!((r.own, r.others, r.added), (vec![], 1, 0), "rounds: {:?}", released.borrow());
    }

    /// Bounded, a master that did not answer hiding the caller's permit (held on masters 0 and
    /// 1, master 1 silent), and nobody else holding one: the permit is released, not refused.
    #[test]
    fn a_bounded_release_of_a_permit_a_silent_master_hides_is_not_refused() {
        let released = RefCell::new(Vec::new());
        let masters = Answering(releasing(1, Some(1), |m| if m == 2 { vec![] } else { vec![(0, "h", 5)] }, &released));
        let (sem, _) = Semaphore::open(&masters, three_masters("h")).expect("open");
        let r = sem.release(1, &[token(5, 0)], 0).expect("release");
        assert_eq!((r.own, r.others, r.added), (vec![token(5, 0)], 0, 0));
    }

    /// The same with the named permit gone everywhere: nothing to release, so refused (as on one
    /// server), and nothing changed.
    #[test]
    fn a_bounded_release_of_a_gone_permit_behind_a_silent_master_is_refused() {
        let released = RefCell::new(Vec::new());
        let masters = Answering(releasing(1, Some(1), |_| vec![], &released));
        let (sem, _) = Semaphore::open(&masters, three_masters("h")).expect("open");
        let r = sem.release(1, &[token(5, 0)], 0);
        assert!(matches!(r, Err(Error::Bounded { .. })), "{r:?}");
        assert!(released.borrow().concat().is_empty(), "{:?}", released.borrow());
    }

    /// A change of capacity one master refuses (its capacity differs: it restarted with the
    /// initial value) but a majority makes is made: before, the caller heard InvalidArgument,
    /// which reads as "nothing changed", and a retry changed the majority again.
    #[test]
    fn a_capacity_change_a_majority_made_is_not_reported_refused() {
        let masters = Answering(|script: &str, master: u32, _: &Args| match script {
            "multi/init.lua" => ints(&[1, 0, 5, 1]),
            "multi/set_capacity.lua" if master == 0 => ints(&[-1, 1]),
            "multi/set_capacity.lua" => ints(&[3]),
            other => unreachable!("{other}"),
        });
        let (sem, _) = Semaphore::open(&masters, three_masters("h")).expect("open");
        assert_eq!(sem.add_permits(-2, 0), Ok(3));
    }

    /// A bounded release whose named permit is gone, with nobody else holding one, is refused
    /// as on one server (released more than held). The first version of the named-first
    /// release answered Ok, having released nothing.
    #[test]
    fn a_bounded_release_of_a_gone_permit_with_no_other_holder_is_refused() {
        let masters = Answering(|script: &str, _: u32, _: &Args| match script {
            "multi/init.lua" => ints(&[1, 0, 1, 1]),
            "multi/status.lua" => ints(&[1, 1, 0, 1_000, 0]),
            other => unreachable!("{other}: nothing may change"),
        });
        let (sem, _) = Semaphore::open(&masters, three_masters("h")).expect("open");
        assert!(matches!(sem.release(1, &[token(5, 0)], 0), Err(Error::Bounded { .. })));
    }

    /// A change one master refused and one did not answer may have been made by the other two:
    /// not known to be refused, it is a quorum error, not InvalidArgument.
    #[test]
    fn a_capacity_change_refused_by_one_and_unknown_on_one_is_not_called_refused() {
        let masters = Answering(|script: &str, master: u32, _: &Args| match script {
            "multi/init.lua" => ints(&[1, 0, 5, 1]),
            "multi/set_capacity.lua" if master == 0 => ints(&[-1, 1]),
            "multi/set_capacity.lua" if master == 2 => Err(Error::Unreachable("slow".into())),
            "multi/set_capacity.lua" => ints(&[3]),
            other => unreachable!("{other}"),
        });
        let (sem, _) = Semaphore::open(&masters, three_masters("h")).expect("open");
        assert!(matches!(sem.add_permits(-2, 0), Err(Error::Quorum(_))), "{:?}", sem.add_permits(-2, 0));
    }

    #[test]
    fn tokens_carry_the_slot_and_grow_with_the_epoch() {
        let a = token(1_700_000_000_000, 5);
        assert_eq!(slot_of(a), 5);
        assert_eq!(epoch_of(a), 1_700_000_000_000);
        assert!(token(1_700_000_000_001, 0) > token(1_700_000_000_000, MAX_SLOTS - 1));
        assert!(token(u64::MAX >> SLOT_BITS, MAX_SLOTS - 1) == u64::MAX, "epochs up to 2^48 fit");
    }
}
