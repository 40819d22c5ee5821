//! One guest instance: a Store with its limits and sandbox, and the guest's semaphore resource.
//! A handle keeps a few of these so that concurrent calls never queue behind a waiting acquire.

use std::time::{Duration, Instant};

use pottery_semaphore_core::{validate, Holder, Permit, Status, Waiter};
use wasmtime::component::ResourceAny;
use wasmtime::{Store, UpdateDeadline};

use crate::bindings::{api, sync, types, Guest};
use crate::cancel::CancelFlag;
use crate::error::guest_trap;
use crate::runtime::{Runtime, EPOCH_TICK};
use crate::options::ReplicaAck;
use crate::transport::{HostState, Masters, CALL_TIME_LIMIT};
use crate::Error;

/// A call that waits for nothing but Redis (see `Instance::begin`).
const NO_WAIT: Option<Duration> = Some(Duration::ZERO);

/// The guest's exports through one of the two sets of bindings.
enum Bindings {
    /// Called on a fiber, imports async: the async API, and blocking calls that need tokio.
    Async(Guest),
    /// Called straight on the caller's thread, imports sync: the blocking API on one server.
    Sync(sync::Guest),
}

pub(crate) struct Instance {
    store: Store<HostState>,
    guest: Bindings,
    sem: ResourceAny,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance").field("keys", &self.store.data().keys).field("sync", &self.is_sync()).finish_non_exhaustive()
    }
}

fn permit(p: types::Permit) -> Permit {
    Permit { token: p.token, deadline_ms: p.deadline_ms, ttl_ms: p.ttl_ms }
}

/// `wasmtime::Result<Result<T, wit error>>` to the host's one error type.
fn flatten<T>(r: wasmtime::Result<Result<T, types::Error>>) -> Result<T, Error> {
    r.map_err(guest_trap)?.map_err(Error::from)
}

/// Calls the semaphore method `$method` through whichever bindings the instance has (awaited
/// when async) and turns the result into one type with `$lift`, written once and expanded for
/// each set of bindings, whose record types differ.
macro_rules! call {
    ($self:ident . $method:ident ( $($arg:expr),* ) $(, $lift:expr)?) => {
        match &$self.guest {
            Bindings::Async(g) => {
                let r = flatten(g.pottery_semaphore_api().semaphore().$method(&mut $self.store, $self.sem $(, $arg)*).await);
                r $(.map($lift))?
            }
            Bindings::Sync(g) => {
                let r = flatten(g.pottery_semaphore_api().semaphore().$method(&mut $self.store, $self.sem $(, $arg)*));
                r $(.map($lift))?
            }
        }
    };
}

/// The status record of either set of bindings as the host's.
macro_rules! status {
    () => {
        |s| Status {
            initial: s.initial,
            capacity: s.capacity,
            available: s.available,
            holders: s.holders.into_iter().map(|h| Holder { token: h.token, holder: h.holder, ttl_ms: h.ttl_ms }).collect(),
            waiters: s.waiters.into_iter().map(|w| Waiter { id: w.id, n: w.n, holder: w.holder }).collect(),
        }
    };
}

/// The open configuration in the sync bindings' own record type.
fn sync_config(c: &api::Config) -> sync::api::Config {
    sync::api::Config {
        key: c.key.clone(),
        value: c.value,
        bounded: c.bounded,
        lease_ms: c.lease_ms,
        holder: c.holder.clone(),
        guard_fresh_server: c.guard_fresh_server,
        existed: c.existed,
        create: c.create,
        masters: c.masters,
        raise_on_redis_errors: c.raise_on_redis_errors,
        replicate: c.replicate,
    }
}

impl Instance {
    /// Instantiates the component and opens the semaphore (creating it in Redis if needed).
    /// `on_caller_thread`: a sync instance for the blocking API, whose calls run on the
    /// caller's thread over its own connections (one plain server only, see
    /// `Connections::serves_caller_thread`).
    pub(crate) async fn open(
        rt: &Runtime,
        masters: Masters,
        config: &api::Config,
        replicas: Option<ReplicaAck>,
        on_caller_thread: bool,
    ) -> Result<(Self, api::Opened), Error> {
        let mut state = HostState::new(masters, &config.key, rt.options.memory_limit);
        state.replicas = replicas;
        state.blocking_io = on_caller_thread;
        let mut store = Store::new(&rt.engine, state);
        store.limiter(|s| &mut s.limits);
        // What one import may make the host copy out of the guest: no more than the guest's own
        // memory (wasmtime's default, 128 MiB, is eight times it: a list of a million entries
        // naming one string is copied a million times before any check of ours sees it).
        store.set_hostcall_fuel(rt.options.memory_limit);
        let budget = rt.options.cpu_budget;
        let budget_ticks = u32::try_from(budget.as_millis().div_ceil(EPOCH_TICK.as_millis())).unwrap_or(u32::MAX);
        // Time spent in host imports (Redis, blocking pops) does not count: `resumed_at` moves
        // every time an import returns. Nor the time a call spends yielded (only a call on a
        // fiber can yield) waiting for a busy runtime: the budget counts the ticks the guest
        // ran across, each seen by this callback once, not the wall clock.
        store.epoch_deadline_callback(move |mut ctx| {
            let data = ctx.data_mut();
            if data.ticks_run.0 != data.resumed_at {
                data.ticks_run = (data.resumed_at, 0);
            }
            data.ticks_run.1 += 1;
            if data.ticks_run.1 > budget_ticks {
                Err(wasmtime::Error::msg(format!("guest ran for more than {budget:?} without yielding")))
            } else if ctx.data().blocking_io {
                Ok(UpdateDeadline::Continue(1))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store.set_epoch_deadline(1);
        store.data_mut().call_deadline = Some(Instant::now() + CALL_TIME_LIMIT);
        if on_caller_thread {
            let guest = rt.pre_sync.instantiate(&mut store).map_err(guest_trap)?;
            store.data_mut().resumed_at = Instant::now();
            let (sem, opened) = flatten(guest.pottery_semaphore_api().semaphore().call_open(&mut store, &sync_config(config)))?;
            let opened = api::Opened { initial: opened.initial, created: opened.created };
            return Ok((Instance { store, guest: Bindings::Sync(guest), sem }, opened));
        }
        let guest = rt.pre.instantiate_async(&mut store).await.map_err(guest_trap)?;
        store.data_mut().resumed_at = Instant::now();
        let (sem, opened) = flatten(guest.pottery_semaphore_api().semaphore().call_open(&mut store, config).await)?;
        Ok((Instance { store, guest: Bindings::Async(guest), sem }, opened))
    }

    /// True for an instance whose calls run on the caller's thread (see [`Instance::open`]).
    pub(crate) fn is_sync(&self) -> bool {
        matches!(self.guest, Bindings::Sync(_))
    }

    /// Calls that follow run on the caller's thread and may block it (see `HostState::query`).
    pub(crate) fn set_blocking_io(&mut self, on: bool) {
        self.store.data_mut().blocking_io = on || self.is_sync();
    }

    /// Per-call state of the store, fresh for the call about to start. `waits`: how long the
    /// call may wait by the caller's wish (`None`: as long as it takes), beyond which its
    /// imports are refused after `CALL_TIME_LIMIT` more.
    fn begin(&mut self, cancel: Option<CancelFlag>, waits: Option<Duration>) {
        let data = self.store.data_mut();
        data.cancel = cancel;
        data.resumed_at = Instant::now();
        data.call_deadline = waits.and_then(|w| data.resumed_at.checked_add(w.saturating_add(CALL_TIME_LIMIT)));
        (data.script_sent_at, data.script_before_pop, data.round_answered_at) = (None, None, None);
    }

    /// The permits, and when at the earliest they were granted (by this process's clock).
    pub(crate) async fn acquire(&mut self, n: i64, blocking: bool, timeout: Option<f64>, cancel: CancelFlag) -> Result<(Vec<Permit>, Instant), Error> {
        // Cancelled before the guest ran (its caller dropped the call while this instance was
        // checked out or opened): nothing is sent, rather than a queue entry or a grant for
        // nobody that others would find in their way until it is undone.
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let called = Instant::now();
        // The time-out as the guest reads it (none: as long as it takes); it rejects bad ones.
        let waits = match validate::timeout(blocking, timeout) {
            Ok(Some(ms)) if blocking => Some(Duration::from_millis(ms)),
            Ok(None) if blocking => None,
            _ => NO_WAIT,
        };
        self.begin(Some(cancel), waits);
        let r = call!(self.call_acquire(n, blocking, timeout));
        let granted_after = self.store.data().granted_after(called);
        self.begin(None, NO_WAIT);
        Ok((r?.into_iter().map(permit).collect(), granted_after))
    }

    /// Returns the tokens of this holder's own permits that were released.
    pub(crate) async fn release(&mut self, n: i64, own: &[u64]) -> Result<Vec<u64>, Error> {
        self.begin(None, NO_WAIT);
        let request = self.store.data().request_id();
        call!(self.call_release(n, own, request), |r| r.own_tokens)
    }

    pub(crate) async fn release_permits(&mut self, tokens: &[u64]) -> Result<Vec<u64>, Error> {
        self.begin(None, NO_WAIT);
        call!(self.call_release_permits(tokens))
    }

    /// The permits still held, and when at the earliest their new validity counts from.
    pub(crate) async fn refresh(&mut self, tokens: &[u64]) -> Result<(Vec<Permit>, Instant), Error> {
        let called = Instant::now();
        self.begin(None, NO_WAIT);
        let alive = call!(self.call_refresh(tokens))?.into_iter().map(permit).collect();
        Ok((alive, self.store.data().granted_after(called)))
    }

    pub(crate) async fn permits(&mut self) -> Result<Vec<Permit>, Error> {
        self.begin(None, NO_WAIT);
        Ok(call!(self.call_permits())?.into_iter().map(permit).collect())
    }

    pub(crate) async fn value(&mut self) -> Result<u64, Error> {
        self.begin(None, NO_WAIT);
        call!(self.call_value())
    }

    pub(crate) async fn initial_value(&mut self) -> Result<u64, Error> {
        self.begin(None, NO_WAIT);
        call!(self.call_initial_value())
    }

    pub(crate) async fn locked(&mut self) -> Result<bool, Error> {
        self.begin(None, NO_WAIT);
        call!(self.call_locked())
    }

    pub(crate) async fn set_permits(&mut self, value: i64) -> Result<u64, Error> {
        self.begin(None, NO_WAIT);
        let request = self.store.data().request_id();
        call!(self.call_set_permits(value, request))
    }

    pub(crate) async fn add_permits(&mut self, delta: i64) -> Result<u64, Error> {
        self.begin(None, NO_WAIT);
        let request = self.store.data().request_id();
        call!(self.call_add_permits(delta, request))
    }

    pub(crate) async fn status(&mut self) -> Result<Status, Error> {
        self.begin(None, NO_WAIT);
        call!(self.call_status(), status!())
    }
}
