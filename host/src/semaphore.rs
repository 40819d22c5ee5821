//! The async API. A handle owns a small pool of guest instances (calls run concurrently, each on
//! its own instance), tracks the permits it holds, refreshes their leases in the background and
//! reports the ones it lost.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

use pottery_semaphore_core::validate::{self, MAX_PERMITS_PER_CALL};
use pottery_semaphore_core::{Permit, Status};
use tokio::sync::Notify;

use crate::bindings::api;
use crate::cancel::{CancelFlag, CancelOnDrop};
use crate::instance::Instance;
use crate::options::{Options, ReplicaAck};
use crate::runtime::Runtime;
use crate::transport::{Connections, Masters};
use crate::Error;

/// Idle instances a handle keeps; more are created while more calls run at once.
const IDLE_INSTANCES: usize = 8;
/// WAIT must answer within the connection's response time-out (5 s), or look like a dead server.
const MAX_REPLICA_TIMEOUT: Duration = Duration::from_secs(4);

/// A distributed counting semaphore. Cheap to clone; clones share one holder identity, so a
/// permit acquired through one clone can be released through another.
#[derive(Debug, Clone)]
pub struct Semaphore {
    inner: Arc<Inner>,
    /// Run calls in the caller's own future instead of a task on the runtime. Only for
    /// [`crate::BlockingSemaphore`], whose futures are never dropped half-way: it saves a thread
    /// hand-off per call, but a dropped future would skip the clean-up a task guarantees.
    inline: bool,
}

#[derive(Debug)]
struct Inner {
    rt: &'static Runtime,
    masters: Masters,
    config: api::Config,
    replicas: Option<ReplicaAck>,
    initial: u64,
    created: bool,
    idle: Mutex<Vec<Instance>>,
    /// Instances for the blocking API, called on the caller's thread; only with one plain
    /// server (`caller_thread`), where every import can run there.
    idle_sync: Mutex<Vec<Instance>>,
    caller_thread: bool,
    held: Mutex<BTreeMap<u64, Permit>>,
    /// Held permits that `release` takes only after the others (see `Semaphore::acquire_n_spared`).
    /// Where both are locked, `held` first: a grant enters both at once.
    spared: Mutex<BTreeSet<u64>>,
    /// When each held permit's lease ends by this process's clock: its validity counted from
    /// before the call that granted or last extended it. Past that, with Redis out of reach, the
    /// permit is reported lost without waiting for Redis to answer again (see `lease_watch`).
    valid_until: Mutex<BTreeMap<u64, Instant>>,
    /// Wakes the lease watch for a new permit that ends before the watch means to wake.
    /// Shared with the watch, which must not keep the handle alive.
    new_permit: Arc<Notify>,
    /// When the lease watch means to wake next; `None` while it looks at `valid_until`. A grant
    /// wakes it only when it must (a wake-up is a thread switch in the hand-off to a waiter).
    watch_wakes_at: Mutex<Option<Instant>>,
    /// Permits whose release failed (Redis unreachable): no longer refreshed, and released
    /// again by the refresher until that works or their lease is over.
    unreleased: Mutex<Vec<Unreleased>>,
    /// The background refresher's last attempt failed (see `Semaphore::refresh_failing`).
    refresh_failed: std::sync::atomic::AtomicBool,
    /// Permits a release of this handle is giving back right now (with how many releases name
    /// each): a refresh that no longer finds them has not seen a lost lease.
    releasing: Mutex<BTreeMap<u64, usize>>,
    /// Held by a release from choosing its permits until it has settled `held`: each release
    /// of this handle names its permits from what the one before left (two at once would both
    /// target the lowest, and a failure of one would leave what it meant held and refreshed).
    releases: tokio::sync::Mutex<()>,
    lost: Mutex<Vec<Permit>>,
    lost_signal: Notify,
}

/// A permit the refresher releases in the background (see `Inner::unreleased`).
#[derive(Debug)]
struct Unreleased {
    token: u64,
    since: Instant,
    /// A caller named it in a release that failed: naming it again (as Python's `__exit__` does
    /// after each signal's handler that raises) would only wait on the same Redis, so it is not
    /// sent again; the refresher retries it, for [`CALLER_FAILED_KEPT`] if that is longer than a
    /// lease (a short lease would otherwise forget it before the next Ctrl-C).
    failed_for_caller: bool,
}

/// How long a permit whose release by name failed is kept from being sent again by a caller.
const CALLER_FAILED_KEPT: Duration = Duration::from_secs(60);

/// Marks permits as being released for as long as it lives (see `Inner::releasing`): it lives in
/// the release's own work, which settles `held` before it ends (`Semaphore::release_with`).
struct Releasing {
    inner: Arc<Inner>,
    tokens: Vec<u64>,
    /// Set once the release answered, when it may have left one of `tokens` held.
    may_keep: bool,
}

impl Releasing {
    fn new(inner: &Arc<Inner>, tokens: &[u64]) -> Self {
        let mut releasing = lock(&inner.releasing);
        for token in tokens {
            *releasing.entry(*token).or_default() += 1;
        }
        drop(releasing);
        Releasing { inner: inner.clone(), tokens: tokens.to_vec(), may_keep: false }
    }
}

impl Drop for Releasing {
    fn drop(&mut self) {
        let mut releasing = lock(&self.inner.releasing);
        for token in &self.tokens {
            if let Some(count) = releasing.get_mut(token) {
                *count -= 1;
                if *count == 0 {
                    releasing.remove(token);
                }
            }
        }
        drop(releasing);
        // A marked permit the release left held (refused, or Redis gave back another) may have
        // ended meanwhile: the lease watch passed over it, and would look again only a period
        // later. (Locked after `releasing`, let go: `held` comes first in the lock order.)
        if !self.may_keep {
            return;
        }
        let kept = {
            let held = lock(&self.inner.held);
            self.tokens.iter().any(|t| held.contains_key(t))
        };
        if kept {
            self.inner.new_permit.notify_one();
        }
    }
}

type OpFuture<'a, R> = Pin<Box<dyn Future<Output = Result<R, Error>> + Send + 'a>>;

/// Gives a release's call its signature (a closure's is not inferred as higher-ranked when it
/// is returned from another closure).
fn release_op<F>(op: F) -> F
where
    F: for<'a> FnOnce(&'a mut Instance) -> OpFuture<'a, Vec<u64>>,
{
    op
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A random holder id: std's per-process random hash keys, mixed with pid, time and a counter.
fn new_holder_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let word = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u32(std::process::id());
        h.write_u128(nanos);
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.finish()
    };
    format!("{:016x}{:016x}", word(1), word(2))
}

/// Permits granted to a caller that may have gone away: unless `keep` is called, they are given
/// back, so a dropped acquire future never leaks a permit.
struct Granted {
    inner: Arc<Inner>,
    permits: Vec<Permit>,
    /// When at the earliest they were granted (see `HostState::script_before_pop`).
    granted_after: Instant,
    /// Kept as spared (see `Semaphore::acquire_n_spared`).
    spared: bool,
}

impl Granted {
    /// Records the permits as held and returns them; with replica acknowledgement, none whose
    /// lease ended before the replicas acknowledged the grant (a replica that stalled for longer
    /// than a lease): another holder may have it by now. Those are given back (`drop`).
    fn keep(mut self) -> Result<Vec<Permit>, Error> {
        if self.inner.replicas.is_some() && self.permits.iter().any(|p| self.granted_after + validity(p.ttl_ms) <= Instant::now()) {
            return Err(Error::NotReplicated(format!(
                "the replicas acknowledged the grant only after its lease ({} ms) had ended",
                self.inner.config.lease_ms
            )));
        }
        let permits = std::mem::take(&mut self.permits);
        let mut held = lock(&self.inner.held);
        held.extend(permits.iter().map(|p| (p.token, *p)));
        // Under the same lock as `held`: no release sees these permits before they are spared.
        if self.spared {
            lock(&self.inner.spared).extend(permits.iter().map(|p| p.token));
        }
        let after = self.granted_after;
        let mut valid_until = lock(&self.inner.valid_until);
        valid_until.extend(permits.iter().map(|p| (p.token, after + validity(p.ttl_ms))));
        let first_end = permits.iter().map(|p| after + validity(p.ttl_ms)).min();
        drop((held, valid_until));
        // After the insert: a watch looking now either sees these permits or has not yet
        // published when it will wake (`None`), and is woken.
        if watch_must_wake(first_end, *lock(&self.inner.watch_wakes_at)) {
            self.inner.new_permit.notify_one();
        }
        Ok(permits)
    }
}

/// Whether a permit ending at `first_end` (none: no permit) needs the lease watch, which means
/// to wake at `wakes_at` (none: it is looking now, and may have missed the permit), woken early.
fn watch_must_wake(first_end: Option<Instant>, wakes_at: Option<Instant>) -> bool {
    first_end.is_some_and(|end| wakes_at.is_none_or(|at| end < at))
}

/// An argument error found by the host, before it opens an instance: that reaches Redis first,
/// and an unreachable Redis would answer for the bad argument (the guest checks them again).
/// Mapped as the guest's errors are, through the WIT error.
fn checked<T>(r: Result<T, pottery_semaphore_core::Error>) -> Result<T, Error> {
    r.map_err(|e| crate::bindings::types::Error::from(e).into())
}

/// How long a permit of `ttl_ms` stays valid by this process's clock: less 1 % and 2 ms for
/// clock drift (as the several-master mode allows).
fn validity(ttl_ms: u64) -> Duration {
    Duration::from_millis(ttl_ms.saturating_sub(ttl_ms / 100 + 2))
}

impl Drop for Granted {
    fn drop(&mut self) {
        if !self.permits.is_empty() {
            self.inner.release_in_background(self.permits.iter().map(|p| p.token).collect());
        }
    }
}

impl Inner {
    /// Releases these permits on the runtime's threads; the refresher tries again if that fails.
    fn release_in_background(self: &Arc<Self>, tokens: Vec<u64>) {
        let inner = self.clone();
        self.rt.tokio.spawn(async move {
            let retry = tokens.clone();
            if inner.with_instance(move |i| Box::pin(async move { i.release_permits(&tokens).await })).await.is_err() {
                inner.release_later(retry, false);
            }
        });
    }

    async fn checkout(&self, on_caller_thread: bool) -> Result<Instance, Error> {
        let pool = if on_caller_thread { &self.idle_sync } else { &self.idle };
        let idle = lock(pool).pop();
        match idle {
            Some(instance) => Ok(instance),
            None => Ok(Instance::open(self.rt, self.masters.clone(), &self.config, self.replicas, on_caller_thread).await?.0),
        }
    }

    fn checkin<R>(&self, instance: Instance, result: &Result<R, Error>) {
        // A trapped store is poisoned; a fresh instance replaces it on demand.
        if matches!(result, Err(Error::Guest(_))) {
            return;
        }
        let mut idle = lock(if instance.is_sync() { &self.idle_sync } else { &self.idle });
        if idle.len() < IDLE_INSTANCES {
            idle.push(instance);
        }
    }

    /// Runs `op` on an idle instance (or a new one), on the runtime's threads.
    async fn with_instance<R, F>(&self, op: F) -> Result<R, Error>
    where
        F: for<'a> FnOnce(&'a mut Instance) -> OpFuture<'a, R>,
    {
        let mut instance = self.checkout(false).await?;
        let result = op(&mut instance).await;
        self.checkin(instance, &result);
        result
    }

    /// Runs `op` on the caller's thread with blocking I/O: for futures that are driven to
    /// completion there ([`crate::BlockingSemaphore`]), never for ones on an executor.
    async fn with_instance_blocking<R, F>(&self, op: F) -> Result<R, Error>
    where
        F: for<'a> FnOnce(&'a mut Instance) -> OpFuture<'a, R>,
    {
        let mut instance = self.checkout(self.caller_thread).await?;
        instance.set_blocking_io(true);
        let result = op(&mut instance).await;
        instance.set_blocking_io(false);
        self.checkin(instance, &result);
        result
    }

    /// Moves permits that vanished from Redis (expired, or released by another holder) from
    /// `held` to `lost`. Only permits held both before and after the refresh are judged. Their
    /// new validity counts from `extended_at` (see `HostState::granted_after`).
    fn reconcile(&self, before: &[u64], alive: Vec<Permit>, extended_at: Instant) {
        let alive: BTreeMap<u64, Permit> = alive.into_iter().map(|p| (p.token, p)).collect();
        let mut held = lock(&self.held);
        let releasing = lock(&self.releasing);
        let mut valid_until = lock(&self.valid_until);
        let mut newly_lost = Vec::new();
        for token in before {
            match alive.get(token) {
                Some(p) => {
                    if let Some(h) = held.get_mut(token) {
                        *h = *p;
                        // Never earlier than before: with several masters a slow refresh's ttl
                        // is cut by its own duration, and may end before the grant's bound,
                        // which still holds on the grant's majority.
                        let until = extended_at + validity(p.ttl_ms);
                        let kept = valid_until.entry(*token).or_insert(until);
                        *kept = (*kept).max(until);
                    }
                }
                // Gone because our own release took it: that release settles `held`.
                None if releasing.contains_key(token) => {}
                None => newly_lost.extend(held.remove(token)),
            }
        }
        drop((held, releasing, valid_until));
        // With several masters a lost permit may keep copies on a minority, which the refresh
        // just extended: they are given back rather than left to block the slot for a lease.
        self.release_later(newly_lost.iter().map(|p| p.token), false);
        self.report_lost(newly_lost);
    }

    /// Has the refresher release these permits, from now until a lease has passed;
    /// `failed_for_caller`: see [`Unreleased`].
    fn release_later(&self, tokens: impl IntoIterator<Item = u64>, failed_for_caller: bool) {
        let since = Instant::now();
        lock(&self.unreleased).extend(tokens.into_iter().map(|token| Unreleased { token, since, failed_for_caller }));
    }

    fn report_lost(&self, lost: Vec<Permit>) {
        if !lost.is_empty() {
            lock(&self.lost).extend(lost);
            self.lost_signal.notify_waiters();
        }
    }

    /// Reports as lost the held permits whose lease has ended by this process's clock (those a
    /// release is giving back excepted: it settles them) and has the refresher give them back,
    /// in case a refresh answered too late extended them after all; returns when the next one
    /// ends.
    fn expire_unrefreshed(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut held = lock(&self.held);
        let releasing = lock(&self.releasing);
        let mut valid_until = lock(&self.valid_until);
        valid_until.retain(|token, _| held.contains_key(token));
        let ended: Vec<u64> = valid_until.iter().filter(|(t, at)| **at <= now && !releasing.contains_key(t)).map(|(t, _)| *t).collect();
        let lost: Vec<Permit> = ended.iter().filter_map(|t| valid_until.remove(t).and(held.remove(t))).collect();
        let next = valid_until.iter().filter(|(t, at)| **at > now && !releasing.contains_key(t)).map(|(_, at)| *at).min();
        drop((held, releasing, valid_until));
        self.release_later(lost.iter().map(|p| p.token), false);
        self.report_lost(lost);
        next
    }

    /// Releases again the permits whose release failed, as long as their lease may still run
    /// (those a caller named are kept longer: see `Unreleased::failed_for_caller`).
    async fn retry_releases(&self) {
        let lease = Duration::from_millis(self.config.lease_ms as u64);
        let tokens: Vec<u64> = {
            let mut unreleased = lock(&self.unreleased);
            unreleased.retain(|u| u.since.elapsed() < lease.max(if u.failed_for_caller { CALLER_FAILED_KEPT } else { Duration::ZERO }));
            unreleased.iter().map(|u| u.token).collect()
        };
        if tokens.is_empty() {
            return;
        }
        for chunk in tokens.chunks(MAX_PERMITS_PER_CALL as usize) {
            let retry = chunk.to_vec();
            if self.with_instance(move |i| Box::pin(async move { i.release_permits(&retry).await })).await.is_ok() {
                lock(&self.unreleased).retain(|u| !chunk.contains(&u.token));
            }
        }
    }

    /// Settles `held` after a release (see `Semaphore::release_with`), so that the refresher
    /// neither keeps alive what the caller gave up nor reports it lost.
    ///
    /// Argument errors and a refused bounded release changed nothing. After any other error the
    /// release may have happened (Redis out of reach, an error after the script ran); one that
    /// was not replicated did, on the primary, which a fail-over may still undo. Either way the
    /// targeted permits stop being refreshed, so they end within a lease at the latest, and the
    /// refresher releases them again meanwhile. A release that was not replicated also lost its
    /// reply (which of our permits went): of the others it may have taken, those Redis no longer
    /// lists leave `held` and are reported lost (another holder's release took them).
    ///
    /// `exact`: the caller named exactly the permits it gives up (`release_permits`): those it
    /// named and Redis no longer held leave `held` too, without a loss report. The answer says
    /// which were still held, and a resent call (its first reply lost) answers none.
    async fn settle_release(&self, result: Result<Vec<u64>, Error>, targeted: &[u64], judged: &[u64], exact: bool) -> Result<Vec<u64>, Error> {
        let e = match result {
            Ok(released) => {
                let mut held = lock(&self.held);
                for token in released.iter().chain(if exact { targeted } else { &[] }) {
                    held.remove(token);
                }
                return Ok(released);
            }
            Err(e) => e,
        };
        if !matches!(e, Error::InvalidArgument(_) | Error::Bounded { .. }) {
            let mut held = lock(&self.held);
            let gone: Vec<u64> = targeted.iter().copied().filter(|t| held.remove(t).is_some()).collect();
            drop(held);
            if exact {
                // Every token named, also those the handle no longer held (reported lost while
                // Redis was out of reach): naming them again would only wait on the same Redis
                // (see `Unreleased::failed_for_caller`).
                let mut unreleased = lock(&self.unreleased);
                let since = Instant::now();
                for token in targeted {
                    match unreleased.iter_mut().find(|u| u.token == *token) {
                        Some(u) => (u.failed_for_caller, u.since) = (true, since),
                        None => unreleased.push(Unreleased { token: *token, since, failed_for_caller: true }),
                    }
                }
            } else {
                self.release_later(gone, true);
            }
        }
        if matches!(e, Error::NotReplicated(_))
            && let Ok(alive) = self.with_instance(|i| Box::pin(i.permits())).await
        {
            let alive: std::collections::BTreeSet<u64> = alive.iter().map(|p| p.token).collect();
            let mut held = lock(&self.held);
            let lost: Vec<Permit> = judged.iter().filter(|t| !alive.contains(t) && !targeted.contains(t)).filter_map(|t| held.remove(t)).collect();
            drop(held);
            if !lost.is_empty() {
                lock(&self.lost).extend(lost);
                self.lost_signal.notify_waiters();
            }
        }
        Err(e)
    }

    /// Extends every held permit's lease, at most `MAX_PERMITS_PER_CALL` to a call (the guest
    /// refuses more: a handle holding more would otherwise let all its leases lapse unreported).
    async fn refresh_once(&self) -> Result<(), Error> {
        let held: Vec<u64> = lock(&self.held).keys().copied().collect();
        for before in held.chunks(MAX_PERMITS_PER_CALL as usize) {
            let tokens = before.to_vec();
            let (alive, extended_at) = self.with_instance(move |i| Box::pin(async move { i.refresh(&tokens).await })).await?;
            self.reconcile(before, alive, extended_at);
        }
        Ok(())
    }
}

impl Drop for Inner {
    /// The last handle is gone: give its permits back now instead of letting them expire,
    /// those whose release failed too (nobody retries them any more).
    fn drop(&mut self) {
        let mut tokens: Vec<u64> = lock(&self.held).keys().copied().collect();
        tokens.extend(lock(&self.unreleased).iter().map(|u| u.token));
        if tokens.is_empty() {
            return;
        }
        let idle = lock(&self.idle).pop();
        // For a fresh instance when a guest trap discarded every one (a semaphore gone from
        // Redis meanwhile is not created again: there is nothing to give back then).
        let (rt, masters, replicas) = (self.rt, self.masters.clone(), self.replicas);
        let config = api::Config { create: false, ..self.config.clone() };
        self.rt.tokio.spawn(async move {
            let mut instance = match idle {
                Some(instance) => instance,
                None => match Instance::open(rt, masters, &config, replicas, false).await {
                    Ok((instance, _)) => instance,
                    Err(_) => return,
                },
            };
            for chunk in tokens.chunks(MAX_PERMITS_PER_CALL as usize) {
                let _ = instance.release_permits(chunk).await;
            }
        });
    }
}

/// The lease watch never wakes more often than this.
const LEASE_WATCH_MIN_SLEEP: Duration = Duration::from_millis(1);

/// Wakes when the next held permit's lease ends by this process's clock and reports it lost if
/// no refresh extended it meanwhile: with Redis out of reach, refreshes fail (each after up to a
/// response time-out) and Redis cannot say the lease ended, but the holder must stop using the
/// permit all the same, as another process may hold it by then.
async fn lease_watch(weak: Weak<Inner>, period: Duration, new_permit: Arc<Notify>) {
    loop {
        let wake_at = {
            let Some(inner) = weak.upgrade() else { return };
            *lock(&inner.watch_wakes_at) = None;
            let next = inner.expire_unrefreshed();
            let now = Instant::now();
            let wait = next.map_or(period, |at| at.saturating_duration_since(now).min(period));
            let wake_at = now + wait.max(LEASE_WATCH_MIN_SLEEP);
            *lock(&inner.watch_wakes_at) = Some(wake_at);
            wake_at
        };
        // A permit kept since the look above left its wake-up stored (notify_one): not missed.
        tokio::select! {
            () = tokio::time::sleep_until(wake_at.into()) => {}
            () = new_permit.notified() => {}
        }
    }
}

/// Several masters must be as many servers: one listed twice (`redis://h:6379` and
/// `redis://h:6379/0` name the same server and database) would vote twice with the same keys,
/// so a claim could never reach its quorum (each copy's slot is taken by the claim's own vote on
/// the other), and losing that server would lose two votes. URLs that do not parse are left to
/// the connection's own error.
fn refuse_a_master_listed_twice(urls: &[String]) -> Result<(), Error> {
    use redis::IntoConnectionInfo;
    let mut seen = std::collections::HashMap::new();
    for url in urls {
        let Ok(info) = url.as_str().into_connection_info() else { continue };
        // Host names are case-blind; a unix socket's path is not.
        let addr = match info.addr() {
            redis::ConnectionAddr::Unix(path) => path.display().to_string(),
            tcp => tcp.to_string().to_ascii_lowercase(),
        };
        let place = format!("{addr} db {}", info.redis_settings().db());
        if let Some(first) = seen.insert(place, url) {
            let (url, first) = (crate::redacted_url(url), crate::redacted_url(first));
            return Err(Error::InvalidArgument(format!("the master {url} is listed twice (also as {first})")));
        }
    }
    Ok(())
}

async fn refresher(weak: Weak<Inner>, period: Duration) {
    loop {
        tokio::time::sleep(period).await;
        let Some(inner) = weak.upgrade() else { return };
        inner.retry_releases().await;
        // A failed refresh (Redis down) is retried next period; leases that end meanwhile are
        // reported as lost (see `Inner::expire_unrefreshed`).
        let failed = inner.refresh_once().await.is_err();
        inner.refresh_failed.store(failed, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Semaphore {
    /// Connects, validates the options and creates the semaphore in Redis unless it exists.
    pub async fn open(options: Options) -> Result<Self, Error> {
        // Here, not only in the guest: a key larger than the guest's memory traps it when copied in.
        checked(validate::key(&options.key))?;
        let rt = match options.runtime {
            Some(rt) => rt,
            None => Runtime::global_async().await?,
        };
        let lease_ms = i64::try_from(options.lease.as_millis()).unwrap_or(i64::MAX);
        let config = api::Config {
            key: options.key,
            value: options.value,
            bounded: options.bounded,
            lease_ms,
            holder: new_holder_id(),
            guard_fresh_server: options.guard_fresh_server,
            existed: false,
            create: options.create,
            // A cluster is one logical master: its keys share one slot.
            masters: if options.cluster { 1 } else { u32::try_from(options.masters.len()).unwrap_or(u32::MAX) },
            raise_on_redis_errors: options.raise_on_redis_errors,
            replicate: options.replicas.is_some(),
        };
        let replicas = options.replicas;
        if let Some(ack) = replicas
            && !(Duration::from_millis(1)..MAX_REPLICA_TIMEOUT).contains(&ack.timeout)
        {
            return Err(Error::InvalidArgument(format!(
                "the replica acknowledgement time-out must be at least 1 ms and below {MAX_REPLICA_TIMEOUT:?}"
            )));
        }
        let (urls, cluster) = (options.masters, options.cluster);
        match (urls.len(), cluster) {
            (0, _) => return Err(Error::InvalidArgument("no Redis URL given".into())),
            (n, false) if n > 1 && replicas.is_some() => {
                return Err(Error::InvalidArgument(
                    "replica acknowledgement is for one server or a cluster; several masters are their own redundancy".into(),
                ));
            }
            (n, false) if n > 1 => refuse_a_master_listed_twice(&urls)?,
            _ => {}
        }
        rt.run(async move {
            let masters: Masters = if cluster {
                vec![Connections::for_cluster(&urls)?].into()
            } else {
                urls.iter().map(|url| Connections::for_url(url)).collect::<Result<Vec<_>, _>>()?.into()
            };
            let (instance, opened) = Instance::open(rt, masters.clone(), &config, replicas, false).await?;
            // Every later instance of this handle opens a semaphore it has seen exist.
            let config = api::Config { existed: true, ..config };
            let caller_thread = masters.len() == 1 && masters[0].serves_caller_thread();
            let period = Duration::from_millis((config.lease_ms / 3).max(1) as u64);
            let inner = Arc::new(Inner {
                rt,
                masters,
                config,
                replicas,
                initial: opened.initial,
                created: opened.created,
                idle: Mutex::new(vec![instance]),
                idle_sync: Mutex::new(Vec::new()),
                caller_thread,
                held: Mutex::new(BTreeMap::new()),
                spared: Mutex::new(BTreeSet::new()),
                valid_until: Mutex::new(BTreeMap::new()),
                new_permit: Arc::new(Notify::new()),
                watch_wakes_at: Mutex::new(None),
                unreleased: Mutex::new(Vec::new()),
                refresh_failed: std::sync::atomic::AtomicBool::new(false),
                releasing: Mutex::new(BTreeMap::new()),
                releases: tokio::sync::Mutex::new(()),
                lost: Mutex::new(Vec::new()),
                lost_signal: Notify::new(),
            });
            tokio::spawn(refresher(Arc::downgrade(&inner), period));
            tokio::spawn(lease_watch(Arc::downgrade(&inner), period, inner.new_permit.clone()));
            Ok(Semaphore { inner, inline: false })
        })
        .await?
    }

    /// This handle with calls made in the caller's future (see `inline`).
    pub(crate) fn inline(&self) -> Semaphore {
        Semaphore { inner: self.inner.clone(), inline: true }
    }

    pub(crate) fn runtime(&self) -> &'static Runtime {
        self.inner.rt
    }

    /// True when blocking calls may use instances called on the caller's thread.
    pub(crate) fn serves_caller_thread(&self) -> bool {
        self.inner.caller_thread
    }

    async fn run<R, F>(&self, op: F) -> Result<R, Error>
    where
        R: Send + 'static,
        F: for<'a> FnOnce(&'a mut Instance) -> OpFuture<'a, R> + Send + 'static,
    {
        if self.inline {
            return self.inner.with_instance_blocking(op).await;
        }
        let inner = self.inner.clone();
        self.inner.rt.run(async move { inner.with_instance(op).await }).await?
    }

    /// Takes one permit. `blocking = false` answers at once; `timeout = None` waits forever.
    pub async fn acquire(&self, blocking: bool, timeout: Option<Duration>) -> Result<bool, Error> {
        Ok(!self.acquire_n(1, blocking, timeout.map(|t| t.as_secs_f64())).await?.is_empty())
    }

    /// Takes `n` permits at once or none, waiting in FIFO order. `timeout` is in seconds (NaN and
    /// negatives are rejected). Returns the permits; empty means not acquired.
    ///
    /// Cancellation-safe: dropping the future makes the waiter leave the queue and gives back
    /// anything granted meanwhile; the handle stays usable.
    pub async fn acquire_n(&self, n: i64, blocking: bool, timeout: Option<f64>) -> Result<Vec<Permit>, Error> {
        self.acquire_granted(n, blocking, timeout, false).await
    }

    /// As [`Semaphore::acquire_n`], for a caller that gives back exactly these permits itself
    /// ([`Semaphore::release_permits`]; the SDKs' `with` and `withPermit` blocks): from the grant
    /// on, [`Semaphore::release`] takes them only after this handle's other permits, until they
    /// are released or [`Semaphore::unspare`]d. A `release` beside the block that took one would
    /// leave the block nothing to give back, and the permit it meant to release held. Spared
    /// as they are granted, not once the caller records them: a `release` in between would see
    /// them as any others.
    pub async fn acquire_n_spared(&self, n: i64, blocking: bool, timeout: Option<f64>) -> Result<Vec<Permit>, Error> {
        self.acquire_granted(n, blocking, timeout, true).await
    }

    pub(crate) async fn acquire_granted(&self, n: i64, blocking: bool, timeout: Option<f64>, spared: bool) -> Result<Vec<Permit>, Error> {
        checked(validate::count(n).and_then(|_| validate::timeout(blocking, timeout)))?;
        if self.inline {
            let inner = self.inner.clone();
            let (permits, granted_after) = self.run(move |i| Box::pin(i.acquire(n, blocking, timeout, CancelFlag::default()))).await?;
            return Granted { inner, permits, granted_after, spared }.keep();
        }
        let cancel = CancelFlag::default();
        let on_drop = CancelOnDrop::new(cancel.clone());
        let inner = self.inner.clone();
        let granted = self
            .inner
            .rt
            .run(async move {
                let (permits, granted_after) = inner.with_instance(|i| Box::pin(i.acquire(n, blocking, timeout, cancel))).await?;
                Ok::<_, Error>(Granted { inner, permits, granted_after, spared })
            })
            .await;
        on_drop.disarm();
        granted??.keep()
    }

    /// As [`Semaphore::acquire_n`] (`spared`: [`Semaphore::acquire_n_spared`]), ending with
    /// [`Error::Cancelled`] as soon as `stop` completes: the waiter then leaves the queue, and
    /// permits granted meanwhile are given back, as when the future is dropped. A result that
    /// was ready first is returned; a `stop` complete before it starts sends nothing. For
    /// callers whose executor does not drop a cancelled call (Swift's tasks, gevent).
    pub async fn acquire_n_until(
        &self,
        n: i64,
        blocking: bool,
        timeout: Option<f64>,
        spared: bool,
        stop: impl Future<Output = ()>,
    ) -> Result<Vec<Permit>, Error> {
        let (mut acquire, mut stop) = (std::pin::pin!(self.acquire_granted(n, blocking, timeout, spared)), std::pin::pin!(stop));
        let mut started = false;
        std::future::poll_fn(|cx| {
            // Stopped already (a task cancelled before it asked): no acquire is started.
            if !std::mem::replace(&mut started, true) && stop.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(Error::Cancelled));
            }
            if let Poll::Ready(result) = acquire.as_mut().poll(cx) {
                return Poll::Ready(result);
            }
            if stop.as_mut().poll(cx).is_ready() { Poll::Ready(Err(Error::Cancelled)) } else { Poll::Pending }
        })
        .await
    }

    /// Ends the sparing of these permits (see [`Semaphore::acquire_n_spared`]): `release`
    /// takes them as any others from now on.
    pub fn unspare(&self, tokens: &[u64]) {
        let mut spared = lock(&self.inner.spared);
        for token in tokens {
            spared.remove(token);
        }
    }

    /// Releases `n` permits: this handle's own first, then (permits are fungible, as with
    /// `threading.Semaphore`) other holders', whose owners then see them as lost.
    ///
    /// Any error but `InvalidArgument` and `Bounded` (which change nothing) means the release
    /// may or may not have happened (`NotReplicated`: it did, on the primary). The handle
    /// finishes it for its own permits: those it targeted stop being refreshed and are released
    /// again in the background until Redis answers or their lease ends. Do not call `release`
    /// again for them: that would release another permit. What it would have taken beyond them
    /// (other holders' permits, added capacity) is not repeated.
    ///
    /// Permits granted spared (see [`Semaphore::acquire_n_spared`]) go only after the others.
    pub async fn release(&self, n: i64) -> Result<(), Error> {
        checked(validate::count(n))?;
        let plan = move |held: &BTreeMap<u64, Permit>, spared: &BTreeSet<u64>| {
            // Lowest token first, spared ones last; the guest can only release as ours the
            // permits it is told of.
            let limit = MAX_PERMITS_PER_CALL as usize;
            let own: Vec<u64> = if spared.is_empty() {
                held.keys().take(limit).copied().collect()
            } else {
                let (last, first): (Vec<u64>, Vec<u64>) = held.keys().partition(|t| spared.contains(t));
                first.into_iter().chain(last).take(limit).collect()
            };
            let targeted: Vec<u64> = own.iter().take(usize::try_from(n).unwrap_or(0)).copied().collect();
            let judged = own.clone();
            (targeted, judged, release_op(move |i| Box::pin(async move { i.release(n, &own).await })))
        };
        self.release_with(plan, false).await.map(drop)
    }

    /// Lets go of these permits of this handle at once and releases them in the background:
    /// for a caller that must not wait on Redis (an event loop) giving back a grant it never
    /// took. From this call on no `release` picks them, and no refresh extends them.
    pub fn give_back_soon(&self, tokens: Vec<u64>) {
        let tokens: Vec<u64> = {
            let mut held = lock(&self.inner.held);
            let mut spared = lock(&self.inner.spared);
            let mut given_back = Vec::new();
            for token in tokens {
                spared.remove(&token);
                if held.remove(&token).is_some() {
                    given_back.push(token);
                }
            }
            given_back
        };
        if !tokens.is_empty() {
            self.inner.release_in_background(tokens);
        }
    }

    /// Releases exactly these permits of this handle (those it still holds).
    ///
    /// Those a caller's release already failed to give back are not sent again (the refresher
    /// retries them): naming them again, as a caller interrupted mid-release does, answers at
    /// once rather than wait on a Redis that may still be out of reach. Any other is sent,
    /// also one the handle no longer counts (lost): a late refresh may have kept it.
    pub async fn release_permits(&self, tokens: Vec<u64>) -> Result<Vec<u64>, Error> {
        checked(validate::tokens(&tokens))?;
        let tokens: Vec<u64> = {
            let unreleased = lock(&self.inner.unreleased);
            tokens.into_iter().filter(|t| !unreleased.iter().any(|u| u.token == *t && u.failed_for_caller)).collect()
        };
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let plan = move |_: &BTreeMap<u64, Permit>, _: &BTreeSet<u64>| {
            (tokens.clone(), tokens.clone(), release_op(move |i| Box::pin(async move { i.release_permits(&tokens).await })))
        };
        self.release_with(plan, true).await
    }

    /// Runs a release and settles `held` after it, in one piece: on the runtime's threads
    /// unless inline, so that dropping the caller's future leaves neither undone, and one
    /// release of this handle at a time (see `Inner::releases`). `plan` says, from `held` as
    /// the release finds it (and which of those are spared), which permits it gives back
    /// (marked meanwhile, before `held` is let go: neither a refresh that misses them nor the
    /// lease watch takes them for lost), which it may have taken, and the call; `exact` as for
    /// `settle_release`.
    async fn release_with<P, F>(&self, plan: P, exact: bool) -> Result<Vec<u64>, Error>
    where
        P: FnOnce(&BTreeMap<u64, Permit>, &BTreeSet<u64>) -> (Vec<u64>, Vec<u64>, F) + Send + 'static,
        F: for<'a> FnOnce(&'a mut Instance) -> OpFuture<'a, Vec<u64>> + Send + 'static,
    {
        let (inner, inline) = (self.inner.clone(), self.inline);
        let work = async move {
            let _one_at_a_time = inner.releases.lock().await;
            let (targeted, judged, op, mut releasing) = {
                let held = lock(&inner.held);
                let spared = {
                    // Those no longer held (released, lost, given back) are spared no more.
                    let mut spared = lock(&inner.spared);
                    spared.retain(|t| held.contains_key(t));
                    spared.clone()
                };
                let (targeted, judged, op) = plan(&held, &spared);
                let releasing = Releasing::new(&inner, &targeted);
                (targeted, judged, op, releasing)
            };
            let result = if inline { inner.with_instance_blocking(op).await } else { inner.with_instance(op).await };
            // Whether it may leave a targeted permit held (see `Releasing::drop`).
            releasing.may_keep = match &result {
                Ok(released) => !exact && targeted.iter().any(|t| !released.contains(t)),
                Err(_) => true,
            };
            inner.settle_release(result, &targeted, &judged, exact).await
        };
        if inline { work.await } else { self.inner.rt.run(work).await? }
    }

    /// Available permits.
    pub async fn value(&self) -> Result<u64, Error> {
        self.run(|i| Box::pin(i.value())).await
    }

    /// The value the semaphore was created with, as Redis holds it.
    pub async fn initial_value(&self) -> Result<u64, Error> {
        self.run(|i| Box::pin(i.initial_value())).await
    }

    /// True when no permit is available.
    pub async fn locked(&self) -> Result<bool, Error> {
        self.run(|i| Box::pin(i.locked())).await
    }

    /// This handle's permits as Redis holds them (token, lease deadline, time left).
    pub async fn permits(&self) -> Result<Vec<Permit>, Error> {
        self.run(|i| Box::pin(i.permits())).await
    }

    /// Capacity, availability, every holder and the queue of waiters.
    pub async fn status(&self) -> Result<Status, Error> {
        self.run(|i| Box::pin(i.status())).await
    }

    /// Operators: sets the number of permits (and the initial value). Permits in use are never
    /// taken away; below them nothing is granted until enough are released.
    pub async fn set_permits(&self, value: i64) -> Result<u64, Error> {
        checked(validate::value(value))?;
        self.run(move |i| Box::pin(i.set_permits(value))).await
    }

    /// Operators: adds permits (a negative delta removes them); returns the new number.
    pub async fn add_permits(&self, delta: i64) -> Result<u64, Error> {
        checked(validate::delta(delta))?;
        self.run(move |i| Box::pin(i.add_permits(delta))).await
    }

    /// Extends the leases of held permits now (the background refresher does this every third
    /// of a lease) and moves vanished ones to [`Semaphore::take_lost`].
    pub async fn refresh(&self) -> Result<(), Error> {
        if self.inline {
            return self.inner.refresh_once().await;
        }
        let inner = self.inner.clone();
        self.inner.rt.run(async move { inner.refresh_once().await }).await?
    }

    /// For tests: empties the pools of idle guest instances, as guest traps would (a trapped
    /// instance is discarded, and a new one opened on demand).
    #[doc(hidden)]
    pub fn discard_idle_instances(&self) {
        lock(&self.inner.idle).clear();
        lock(&self.inner.idle_sync).clear();
    }

    /// Permits this handle believes it holds.
    pub fn held(&self) -> Vec<Permit> {
        lock(&self.inner.held).values().copied().collect()
    }

    /// Until when, by this process's clock, every permit this handle holds is surely still
    /// its own: the earliest lease end as last extended, less a margin for clock drift; `None`
    /// when it holds none. Refreshes move it on; when they fail, another process may be granted
    /// a permit from this instant, so what it guards must stop by then.
    pub fn valid_until(&self) -> Option<Instant> {
        let held = lock(&self.inner.held);
        lock(&self.inner.valid_until).iter().filter(|(token, _)| held.contains_key(token)).map(|(_, at)| *at).min()
    }

    /// Whether the background refresher's last attempt failed (Redis out of reach, say): until
    /// one succeeds, [`Semaphore::valid_until`] does not move on. (A refresh still waiting for
    /// its answer has not failed yet.)
    pub fn refresh_failing(&self) -> bool {
        self.inner.refresh_failed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Permits this handle held and lost (lease ended, or released by another holder) since the
    /// last call. A holder that finds one here must stop using the resource it guarded.
    pub fn take_lost(&self) -> Vec<Permit> {
        std::mem::take(&mut *lock(&self.inner.lost))
    }

    /// Resolves when a permit is lost.
    pub async fn lost(&self) {
        let notified = self.inner.lost_signal.notified();
        if !lock(&self.inner.lost).is_empty() {
            return;
        }
        notified.await;
    }

    pub fn key(&self) -> &str {
        &self.inner.config.key
    }

    pub fn holder_id(&self) -> &str {
        &self.inner.config.holder
    }

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.inner.config.lease_ms as u64)
    }

    /// The initial value Redis reported when this handle opened the semaphore.
    pub fn opened_initial(&self) -> u64 {
        self.inner.initial
    }

    /// True when this handle's `open` created the semaphore in Redis.
    pub fn created(&self) -> bool {
        self.inner.created
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_wakes_the_lease_watch_only_for_a_permit_ending_before_the_watch_wakes() {
        let now = Instant::now();
        let (soon, later) = (now + Duration::from_millis(10), now + Duration::from_secs(1));
        assert!(watch_must_wake(Some(soon), Some(later)), "the permit would end unwatched");
        assert!(!watch_must_wake(Some(later), Some(soon)), "the watch wakes before the permit ends anyway");
        assert!(!watch_must_wake(Some(soon), Some(soon)), "the watch wakes right when it ends");
        assert!(watch_must_wake(Some(later), None), "a watch that is looking may have missed it");
        assert!(!watch_must_wake(None, None), "no permit, nothing to watch");
    }

    /// Same host (whatever its case), port and database: one server. A unix socket's path is
    /// case-sensitive, and another database holds other keys.
    #[test]
    fn a_master_listed_twice_is_told_by_host_port_and_database() {
        let twice = |urls: &[&str]| refuse_a_master_listed_twice(&urls.iter().map(|u| u.to_string()).collect::<Vec<_>>()).is_err();
        assert!(twice(&["redis://H:7000", "redis://h:7000/0"]));
        assert!(twice(&["unix:///tmp/r.sock", "unix:///tmp/r.sock?db=0"]));
        assert!(!twice(&["unix:///tmp/A.sock", "unix:///tmp/a.sock"]));
        assert!(!twice(&["redis://h:7000", "redis://h:7000/1", "redis://h:7001"]));
        let refused = refuse_a_master_listed_twice(&["redis://:s3cret@h:1".into(), "redis://:s3cret@h:1/0".into()]);
        assert!(matches!(&refused, Err(Error::InvalidArgument(m)) if !m.contains("s3cret")), "{refused:?}");
    }
}
