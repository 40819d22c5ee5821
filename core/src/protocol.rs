//! The acquire/wait/release/lease state machine over a [`Transport`]. One uncontended acquire and
//! one release are one script each; a waiter sleeps in BLPOP on its own wake key and is pushed to
//! by whichever script frees permits for it.

use std::cell::RefCell;

use crate::keys::Keys;
use crate::reply::Cursor;
use crate::scripts::{self, Script};
use crate::{validate, Arg, Args, Error, Reply, Scalar, Scope, Transport};

/// How long a queued waiter keeps its place without a heartbeat: its lease, within these bounds;
/// it beats every third of that. Capped, so that a waiter that dies at the head of the queue
/// holds up the others for seconds, not a long lease; floored, because Redis may end a heartbeat
/// pop up to `REDIS_TIMER_SLACK_MS` late, and a waiter with a shorter window would be dropped
/// from the head while alive. `queue.lua` has the same.
const WAITER_WINDOW_MS: u64 = 10_000;
const MIN_WAITER_WINDOW_MS: u64 = 1_000;

/// How late Redis may end a blocking pop it times itself (one tick of its timer at `hz 10`, with
/// room): pops that end closer than this to the caller's deadline are timed by the host.
const REDIS_TIMER_SLACK_MS: u64 = 200;

/// A pop of up to `pop_ms` before the caller's `deadline` (monotonic ns), at `now`: how long it
/// may last, and whether the host must time it (it ends at, or Redis's timer could stretch it
/// past, the deadline). `None` once the deadline has passed.
pub(crate) fn pop_before(pop_ms: u64, now: u64, deadline: u64) -> Option<(u64, bool)> {
    let left_ms = deadline.checked_sub(now).filter(|ns| *ns > 0)?.div_ceil(1_000_000);
    Some((pop_ms.min(left_ms), left_ms <= pop_ms + REDIS_TIMER_SLACK_MS))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub key: String,
    pub value: i64,
    pub bounded: bool,
    pub lease_ms: i64,
    pub holder: String,
    /// See `guard-fresh-server` in the WIT.
    pub guard_fresh_server: bool,
    /// See `existed` in the WIT.
    pub existed: bool,
    /// Create the semaphore when it does not exist (false: opening a missing one is an error).
    pub create: bool,
    /// Independent masters the host reaches (indices 0..masters); more than one selects the
    /// several-master mode ([`crate::multi`]).
    pub masters: u32,
    /// Several masters: an acquire that finds so many of them failing that no majority is left raises
    /// [`Error::Quorum`] instead of answering "not acquired".
    pub raise_on_redis_errors: bool,
    /// Wait for replicas after every change that matters (see `replicate` in the WIT).
    pub replicate: bool,
}

/// The validated part of a [`Config`] both modes keep: which semaphore, who holds through this
/// handle, and the value, lease and boundedness every script is told.
#[derive(Debug)]
pub(crate) struct Identity {
    pub(crate) key: String,
    pub(crate) keys: Keys,
    pub(crate) holder: String,
    /// The value opened with, then the one Redis holds.
    pub(crate) initial: u64,
    pub(crate) lease_ms: u64,
    pub(crate) bounded: bool,
}

impl Identity {
    pub(crate) fn validate(config: &Config) -> Result<Self, Error> {
        validate::key(&config.key)?;
        let initial = validate::value(config.value)?;
        let lease_ms = validate::lease_ms(config.lease_ms)?;
        validate::holder(&config.holder)?;
        Ok(Identity {
            key: config.key.clone(),
            keys: Keys::new(&config.key),
            holder: config.holder.clone(),
            initial,
            lease_ms,
            bounded: config.bounded,
        })
    }

    /// The ARGV every script starts with (head.lua): holder, initial value and lease.
    pub(crate) fn leading_args(&self) -> Vec<String> {
        vec![self.holder.clone(), self.initial.to_string(), self.lease_ms.to_string()]
    }

    /// Takes the initial value Redis holds, which later scripts are told through a new scope
    /// (transports keep one copy per scope), made only when it differs from the value asked for.
    pub(crate) fn adopt_initial(&mut self, initial: u64, scope: &mut Scope) {
        if initial != self.initial {
            self.initial = initial;
            *scope = Scope::new(scope.keys.clone(), self.leading_args());
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    pub initial: u64,
    pub created: bool,
}

/// A permit held by this holder; its fencing token doubles as its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    pub token: u64,
    pub deadline_ms: u64,
    pub ttl_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Released {
    pub own: Vec<u64>,
    pub others: u32,
    pub added: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub token: u64,
    pub holder: String,
    pub ttl_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiter {
    pub id: u64,
    pub n: u32,
    pub holder: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub initial: u64,
    pub capacity: u64,
    pub available: u64,
    pub holders: Vec<Holder>,
    pub waiters: Vec<Waiter>,
}

/// Outcome of acquire.lua, poll.lua and cancel.lua.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Granted(Vec<Permit>),
    Unavailable,
    Queued { waiter: u64, wait_ms: u64 },
}

#[derive(Debug)]
pub struct Semaphore<T> {
    transport: T,
    id: Identity,
    scope: Scope,
    argv: RefCell<Args>,
    replicate: bool,
}

impl<T: Transport> Semaphore<T> {
    /// Validates `config` and creates the semaphore in Redis unless it already exists there.
    pub fn open(transport: T, config: Config) -> Result<(Self, Opened), Error> {
        let id = Identity::validate(&config)?;
        let scope = Scope::new(id.keys.script_keys(), id.leading_args());
        let mut sem = Semaphore { transport, id, scope, argv: RefCell::default(), replicate: config.replicate };
        // '2': missing state was wiped, not new (see opening.lua).
        let guard = if config.existed { "2" } else { flag(config.guard_fresh_server) };
        let mut reply = sem.run(&scripts::INIT, &[&guard, &flag(config.create)])?;
        let initial = reply.i64()?;
        if initial == -2 {
            return Err(Error::invalid(format!("semaphore {:?} was created on several masters: open it with all of them", sem.id.key)));
        }
        if initial < 0 {
            return Err(Error::invalid(format!("no semaphore named {:?} exists", sem.id.key)));
        }
        let opened = Opened { initial: initial as u64, created: reply.u64()? == 1 };
        sem.id.adopt_initial(opened.initial, &mut sem.scope);
        if opened.created {
            sem.replicated()?;
        }
        Ok((sem, opened))
    }

    /// After a change on the primary: waits until the configured replicas have it, so a
    /// fail-over cannot lose it (no-op unless `replicate`).
    fn replicated(&self) -> Result<(), Error> {
        if self.replicate { self.transport.wait_replicas() } else { Ok(()) }
    }

    /// Hands out granted permits only once the replicas have them: a fail-over to a replica
    /// without them would grant them again. Unacknowledged permits are given back at once (and
    /// if that fails too, they expire with their lease: the caller never learns their tokens).
    fn acknowledged(&self, permits: Vec<Permit>) -> Result<Vec<Permit>, Error> {
        if permits.is_empty() {
            return Ok(permits);
        }
        match self.replicated() {
            Ok(()) => Ok(permits),
            Err(err) => {
                let tokens: Vec<&dyn Arg> = permits.iter().map(|p| &p.token as &dyn Arg).collect();
                let _ = self.run(&scripts::RELEASE_PERMITS, &tokens);
                Err(err)
            }
        }
    }

    fn eval(&self, script: &Script, extra: &[&dyn Arg]) -> Result<Reply, Error> {
        let mut argv = self.argv.borrow_mut();
        argv.clear();
        extra.iter().for_each(|arg| argv.push_arg(*arg));
        self.transport.eval(script, &self.scope, &argv)
    }

    fn run(&self, script: &Script, extra: &[&dyn Arg]) -> Result<Cursor, Error> {
        Cursor::new(self.eval(script, extra)?)
    }

    /// Takes `n` permits at once or none. Returns the permits; empty means not acquired.
    pub fn acquire(&self, n: i64, blocking: bool, timeout: Option<f64>) -> Result<Vec<Permit>, Error> {
        let n = validate::count(n)?;
        let timeout_ms = validate::timeout(blocking, timeout)?;
        let waits = blocking && timeout_ms != Some(0);
        // The clock is a host call: read it only for a call that may wait (its time-out, and
        // how long a grant pushed to it has been valid, count from here).
        let started = if waits { self.transport.monotonic_now_ns() } else { 0 };
        let first = self.run(&scripts::ACQUIRE, &[&n, &flag(waits), &flag(self.id.bounded)])?;
        match self.step(first)? {
            Step::Granted(permits) => self.acknowledged(permits),
            Step::Unavailable => Ok(Vec::new()),
            Step::Queued { waiter, wait_ms } => {
                let deadline = timeout_ms.map(|ms| started.saturating_add(ms.saturating_mul(1_000_000)));
                self.wait(n, waiter, wait_ms, deadline, started)
            }
        }
    }

    /// Sleeps in BLPOP until served, timed out or cancelled. The push that wakes it carries its
    /// permits, so being served costs no further round trip. Each pop is capped by the next lease
    /// deadline (expired permits are reclaimed without a release) and by a heartbeat that keeps
    /// this waiter's place in the queue (see [`WAITER_WINDOW_MS`]); a waiter that stops beating
    /// is dropped by the others. `script_started`: when the script that queued it was sent.
    fn wait(&self, n: u64, mut waiter: u64, mut wait_ms: u64, deadline: Option<u64>, mut script_started: u64) -> Result<Vec<Permit>, Error> {
        // At most a third of a lease too: a grant pushed during a pop is valid, by the host's
        // clock, from the script before the pop, and needs two thirds of its lease left for
        // the holder's first refresh (a third of a lease away at most) to reach it in time.
        // One that came later than that after the script (a slow script, a pop Redis ended
        // late) is claimed with a fresh lease instead (see below).
        let heartbeat_ms = (self.id.lease_ms.clamp(MIN_WAITER_WINDOW_MS, WAITER_WINDOW_MS) / 3).min(self.id.lease_ms / 3);
        loop {
            let mut pop_ms = wait_ms.min(heartbeat_ms);
            // Only the caller's deadline needs the millisecond; a heartbeat or a lease's end
            // may come a little late, and such a pop keeps its connection.
            let mut exact = false;
            let popping_since = self.transport.monotonic_now_ns();
            if let Some(deadline) = deadline {
                let Some(before) = pop_before(pop_ms, popping_since, deadline) else {
                    return self.leave_queue(waiter, true);
                };
                (pop_ms, exact) = before;
            }
            match self.transport.blocking_pop(&self.id.keys.wake(waiter), pop_ms.max(1), exact) {
                Ok(Some(pushed)) if !self.replicate && !self.outlasted_a_third_of_a_lease(script_started) => {
                    return self.served(&pushed);
                }
                // Replicated: the grant was written by another client, which WAIT on this
                // connection does not cover. Or more than a third of a lease passed since the
                // script before the pop was sent (a slow round trip; Redis ends a pop on its
                // timer, up to REDIS_TIMER_SLACK_MS late, however short the lease): the grant,
                // valid by the host's clock from that script, could end before the first refresh
                // reaches it. poll.lua claims it (a write of ours, after it), with a fresh lease.
                Ok(Some(_)) => {}
                // Time is up: cancel.lua both leaves the queue and keeps a grant that raced in.
                Ok(None) if deadline.is_some_and(|d| self.transport.monotonic_now_ns() >= d) => {
                    return self.leave_queue(waiter, true);
                }
                Ok(None) => {}
                Err(err) => {
                    // Leave the queue and give back anything that raced in; if Redis is gone the
                    // entry and any grant expire by themselves within a lease.
                    let _ = self.leave_queue(waiter, false);
                    return Err(err);
                }
            }
            script_started = self.transport.monotonic_now_ns();
            let polled = self.run(&scripts::POLL, &[&waiter, &n, &flag(self.id.bounded)]).and_then(|reply| self.step(reply));
            let step = match polled {
                Ok(step) => step,
                // As for a failed pop: the caller gets the error, so the entry must not keep
                // its place (nor a grant that raced in) for a heartbeat window.
                Err(err) => {
                    let _ = self.leave_queue(waiter, false);
                    return Err(err);
                }
            };
            match step {
                Step::Granted(permits) => return self.acknowledged(permits),
                Step::Queued { waiter: w, wait_ms: ms } => (waiter, wait_ms) = (w, ms),
                Step::Unavailable => return Err(Error::protocol("poll answered unavailable")),
            }
        }
    }

    /// Whether more than a third of a lease passed since `since` (monotonic ns).
    fn outlasted_a_third_of_a_lease(&self, since: u64) -> bool {
        self.transport.monotonic_now_ns().saturating_sub(since) > self.id.lease_ms / 3 * 1_000_000
    }

    /// Permits from a wake-up push: `"<deadline> <token>..."`.
    fn served(&self, pushed: &str) -> Result<Vec<Permit>, Error> {
        let mut fields = pushed.split(' ').map(|f| f.parse::<u64>().map_err(|_| Error::protocol(format!("wake-up {pushed:?}"))));
        let deadline_ms = fields.next().ok_or_else(|| Error::protocol("empty wake-up"))??;
        fields.map(|token| Ok(Permit { token: token?, deadline_ms, ttl_ms: self.id.lease_ms })).collect()
    }

    fn leave_queue(&self, waiter: u64, keep_grant: bool) -> Result<Vec<Permit>, Error> {
        let reply = self.run(&scripts::CANCEL, &[&waiter, &flag(keep_grant)])?;
        match self.step(reply)? {
            Step::Granted(permits) => self.acknowledged(permits),
            _ => Ok(Vec::new()),
        }
    }

    fn step(&self, mut reply: Cursor) -> Result<Step, Error> {
        match reply.i64()? {
            1 => {
                let deadline_ms = reply.u64()?;
                let permits = reply
                    .rest_u64()?
                    .into_iter()
                    .map(|token| Permit { token, deadline_ms, ttl_ms: self.id.lease_ms })
                    .collect();
                Ok(Step::Granted(permits))
            }
            0 => Ok(Step::Unavailable),
            2 => Ok(Step::Queued { waiter: reply.u64()?, wait_ms: reply.u64()? }),
            -1 => Err(Error::invalid(format!(
                "n exceeds the capacity ({}) of a bounded semaphore: a blocking acquire would wait for another handle to add permits",
                reply.u64()?
            ))),
            other => Err(Error::protocol(format!("unknown acquire status {other}"))),
        }
    }

    /// Releases `n` permits: this holder's own first (`own`, in that order: the caller names
    /// them), then, as permits are fungible, other holders' (earliest lease deadline first). A
    /// bounded semaphore refuses to go beyond its initial value and changes nothing; an unbounded
    /// one grows. `request`: see [`request_arg`].
    pub fn release(&self, n: i64, own: &[u64], request: u64) -> Result<Released, Error> {
        let n = validate::count(n)?;
        let bounded = flag(self.id.bounded);
        let request = request_arg(request);
        let request = request.as_str();
        let mut args: Vec<&dyn Arg> = vec![&n, &bounded, &request];
        args.extend(Self::token_args(own)?);
        let reply = self.eval(&scripts::RELEASE, &args)?;
        // The fast path's answer: the first n named permits, all of them this holder's own.
        if reply == Reply::Scalar(Scalar::Int(1)) {
            let named = own.get(..n as usize).ok_or_else(|| Error::protocol("released more permits than were named"))?;
            let released = Released { own: named.to_vec(), ..Released::default() };
            self.replicated()?;
            return Ok(released);
        }
        let mut reply = Cursor::new(reply)?;
        match reply.i64()? {
            1 => {
                let others = reply.u64()? as u32;
                let added = reply.u64()? as u32;
                let released = Released { others, added, own: reply.rest_u64()? };
                self.replicated()?;
                Ok(released)
            }
            -2 => Err(Error::Bounded { key: self.id.key.clone(), current: reply.u64()?, initial: reply.u64()? }),
            -3 => Err(Error::invalid(format!(
                "releasing {n} would take the semaphore beyond the {} permits it can have (it has {}); nothing was released",
                validate::MAX_VALUE,
                reply.u64()?
            ))),
            other => Err(Error::protocol(format!("unknown release status {other}"))),
        }
    }

    /// Releases exactly these permits if this holder still holds them; returns those released.
    pub fn release_permits(&self, tokens: &[u64]) -> Result<Vec<u64>, Error> {
        let tokens = Self::token_args(tokens)?;
        let released = self.run(&scripts::RELEASE_PERMITS, &tokens)?.rest_u64()?;
        if !released.is_empty() {
            self.replicated()?;
        }
        Ok(released)
    }

    fn token_args(tokens: &[u64]) -> Result<Vec<&dyn Arg>, Error> {
        validate::tokens(tokens)?;
        Ok(tokens.iter().map(|t| t as &dyn Arg).collect())
    }

    /// Extends these permits by a lease if this holder still holds them; an ended lease stays
    /// ended. Returns the permits still held. With replicas to wait for, an extension counts
    /// only once they have it (else `NotReplicated`, and the holder's bound stays the last
    /// acknowledged one): a replica promoted with the older deadline frees the permit then.
    pub fn refresh(&self, tokens: &[u64]) -> Result<Vec<Permit>, Error> {
        let tokens = Self::token_args(tokens)?;
        let mut reply = self.run(&scripts::REFRESH, &tokens)?;
        let deadline_ms = reply.u64()?;
        let ttl_ms = self.id.lease_ms;
        let alive: Vec<Permit> = reply.rest_u64()?.into_iter().map(|token| Permit { token, deadline_ms, ttl_ms }).collect();
        if !alive.is_empty() {
            self.replicated()?;
        }
        Ok(alive)
    }

    pub fn permits(&self) -> Result<Vec<Permit>, Error> {
        let mut reply = self.run(&scripts::PERMITS, &[])?;
        let now = reply.u64()?;
        let pairs = reply.rest_u64()?;
        let mut permits: Vec<Permit> = pairs
            .chunks_exact(2)
            .map(|p| Permit { token: p[0], deadline_ms: p[1], ttl_ms: p[1].saturating_sub(now) })
            .collect();
        permits.sort_by_key(|p| p.token);
        Ok(permits)
    }

    /// Permits available now (0 while the semaphore is quarantined after losing its state).
    pub fn value(&self) -> Result<u64, Error> {
        let mut reply = self.run(&scripts::VALUE, &[])?;
        let (_initial, _capacity) = (reply.u64()?, reply.u64()?);
        reply.u64()
    }

    /// The value the semaphore was created with, as Redis holds it.
    /// One plain HGET; a semaphore whose state vanished reports the value this handle opened with.
    pub fn initial_value(&self) -> Result<u64, Error> {
        let field = ["initial".to_string()];
        match self.transport.command("HGET", &self.id.keys.meta(), &field)?.into_scalar()? {
            Scalar::Nil => Ok(self.id.initial),
            s => s.as_u64(),
        }
    }

    pub fn locked(&self) -> Result<bool, Error> {
        Ok(self.value()? == 0)
    }

    /// Sets the number of permits (operators). Permits in use are never taken away: below them,
    /// nothing is granted until enough are released. Returns the new capacity.
    /// `request`: see [`request_arg`].
    pub fn set_permits(&self, value: i64, request: u64) -> Result<u64, Error> {
        let value = validate::value(value)?;
        self.change_capacity("set", value as i64, request)
    }

    /// Adds `delta` permits (negative removes); the result may not go below zero. `request`: see
    /// [`request_arg`].
    pub fn add_permits(&self, delta: i64, request: u64) -> Result<u64, Error> {
        self.change_capacity("add", validate::delta(delta)?, request)
    }

    fn change_capacity(&self, mode: &str, amount: i64, request: u64) -> Result<u64, Error> {
        let request = request_arg(request);
        let mut reply = self.run(&scripts::SET_CAPACITY, &[&mode, &amount, &request.as_str(), &validate::MAX_VALUE])?;
        match reply.i64()? {
            -1 => Err(Error::invalid(format!(
                "the number of permits must stay between 0 and {} (it is {})",
                validate::MAX_VALUE,
                reply.u64()?
            ))),
            _initial => {
                let capacity = reply.u64()?;
                self.replicated()?;
                Ok(capacity)
            }
        }
    }

    pub fn status(&self) -> Result<Status, Error> {
        let mut r = self.run(&scripts::STATUS, &[])?;
        let (initial, capacity, available) = (r.u64()?, r.u64()?, r.u64()?);
        let holders = (0..r.u64()?)
            .map(|_| Ok(Holder { token: r.u64()?, holder: r.string()?, ttl_ms: r.u64()? }))
            .collect::<Result<_, Error>>()?;
        let waiters = (0..r.u64()?)
            .map(|_| Ok(Waiter { id: r.u64()?, n: r.u64()? as u32, holder: r.string()? }))
            .collect::<Result<_, Error>>()?;
        Ok(Status { initial, capacity, available, holders, waiters })
    }
}

/// The script argument for a call's request id (`done.lua`): '' when the transport never runs a
/// call twice (0), so that nothing is recorded.
fn request_arg(request: u64) -> String {
    if request == 0 { String::new() } else { request.to_string() }
}

/// A script's 1/0 argument.
fn flag(on: bool) -> &'static str {
    if on { "1" } else { "0" }
}

#[cfg(test)]
mod tests;
