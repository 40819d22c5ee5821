//! One guest instance: a Store with its limits and sandbox, and the guest's semaphore resource.
//! A handle keeps a few of these so that concurrent calls never queue behind a waiting acquire.

use std::time::Instant;

use pottery_semaphore_core::{Holder, Permit, Status, Waiter};
use wasmtime::component::ResourceAny;
use wasmtime::{Store, UpdateDeadline};

use crate::bindings::{api, types, Guest};
use crate::cancel::CancelFlag;
use crate::error::guest_trap;
use crate::runtime::Runtime;
use crate::semaphore::ReplicaAck;
use crate::transport::{HostState, Masters};
use crate::Error;

pub(crate) struct Instance {
    store: Store<HostState>,
    guest: Guest,
    sem: ResourceAny,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance").field("keys", &self.store.data().keys).finish_non_exhaustive()
    }
}

fn permit(p: types::Permit) -> Permit {
    Permit { token: p.token, deadline_ms: p.deadline_ms, ttl_ms: p.ttl_ms }
}

/// `wasmtime::Result<Result<T, wit error>>` to the host's one error type.
fn flatten<T>(r: wasmtime::Result<Result<T, types::Error>>) -> Result<T, Error> {
    r.map_err(guest_trap)?.map_err(Error::from)
}

impl Instance {
    /// Instantiates the component and opens the semaphore (creating it in Redis if needed).
    pub(crate) async fn open(
        rt: &Runtime,
        masters: Masters,
        config: &api::Config,
        replicas: Option<ReplicaAck>,
    ) -> Result<(Self, api::Opened), Error> {
        let mut state = HostState::new(masters, &config.key, rt.options.memory_limit);
        state.replicas = replicas;
        let mut store = Store::new(&rt.engine, state);
        store.limiter(|s| &mut s.limits);
        let budget = rt.options.cpu_budget;
        // Time spent in host imports (Redis, blocking pops) does not count: `resumed_at` moves
        // every time an import returns.
        store.epoch_deadline_callback(move |ctx| {
            if ctx.data().resumed_at.elapsed() > budget {
                Err(wasmtime::Error::msg(format!("guest ran for more than {budget:?} without yielding")))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store.set_epoch_deadline(1);
        let guest = rt.pre.instantiate_async(&mut store).await.map_err(guest_trap)?;
        store.data_mut().resumed_at = Instant::now();
        let (sem, opened) = flatten(guest.pottery_semaphore_api().semaphore().call_open(&mut store, config).await)?;
        Ok((Instance { store, guest, sem }, opened))
    }

    /// Calls that follow run on the caller's thread and may block it (see `HostState::query`).
    pub(crate) fn set_blocking_io(&mut self, on: bool) {
        self.store.data_mut().blocking_io = on;
    }

    fn begin(&mut self, cancel: Option<CancelFlag>) {
        let data = self.store.data_mut();
        data.cancel = cancel;
        data.resumed_at = Instant::now();
    }

    pub(crate) async fn acquire(&mut self, n: i64, blocking: bool, timeout: Option<f64>, cancel: CancelFlag) -> Result<Vec<Permit>, Error> {
        self.begin(Some(cancel));
        let api = self.guest.pottery_semaphore_api().semaphore();
        let r = api.call_acquire(&mut self.store, self.sem, n, blocking, timeout).await;
        self.begin(None);
        Ok(flatten(r)?.into_iter().map(permit).collect())
    }

    pub(crate) async fn release(&mut self, n: i64, own: &[u64]) -> Result<api::Released, Error> {
        self.begin(None);
        flatten(self.guest.pottery_semaphore_api().semaphore().call_release(&mut self.store, self.sem, n, own).await)
    }

    pub(crate) async fn release_permits(&mut self, tokens: &[u64]) -> Result<Vec<u64>, Error> {
        self.begin(None);
        flatten(self.guest.pottery_semaphore_api().semaphore().call_release_permits(&mut self.store, self.sem, tokens).await)
    }

    pub(crate) async fn refresh(&mut self, tokens: &[u64]) -> Result<Vec<Permit>, Error> {
        self.begin(None);
        let r = self.guest.pottery_semaphore_api().semaphore().call_refresh(&mut self.store, self.sem, tokens).await;
        Ok(flatten(r)?.into_iter().map(permit).collect())
    }

    pub(crate) async fn permits(&mut self) -> Result<Vec<Permit>, Error> {
        self.begin(None);
        let r = self.guest.pottery_semaphore_api().semaphore().call_permits(&mut self.store, self.sem).await;
        Ok(flatten(r)?.into_iter().map(permit).collect())
    }

    pub(crate) async fn value(&mut self) -> Result<u64, Error> {
        self.begin(None);
        flatten(self.guest.pottery_semaphore_api().semaphore().call_value(&mut self.store, self.sem).await)
    }

    pub(crate) async fn initial_value(&mut self) -> Result<u64, Error> {
        self.begin(None);
        flatten(self.guest.pottery_semaphore_api().semaphore().call_initial_value(&mut self.store, self.sem).await)
    }

    pub(crate) async fn locked(&mut self) -> Result<bool, Error> {
        self.begin(None);
        flatten(self.guest.pottery_semaphore_api().semaphore().call_locked(&mut self.store, self.sem).await)
    }

    pub(crate) async fn set_permits(&mut self, value: i64) -> Result<u64, Error> {
        self.begin(None);
        flatten(self.guest.pottery_semaphore_api().semaphore().call_set_permits(&mut self.store, self.sem, value).await)
    }

    pub(crate) async fn add_permits(&mut self, delta: i64) -> Result<u64, Error> {
        self.begin(None);
        flatten(self.guest.pottery_semaphore_api().semaphore().call_add_permits(&mut self.store, self.sem, delta).await)
    }

    pub(crate) async fn status(&mut self) -> Result<Status, Error> {
        self.begin(None);
        let s = flatten(self.guest.pottery_semaphore_api().semaphore().call_status(&mut self.store, self.sem).await)?;
        Ok(Status {
            initial: s.initial,
            capacity: s.capacity,
            available: s.available,
            holders: s.holders.into_iter().map(|h| Holder { token: h.token, holder: h.holder, ttl_ms: h.ttl_ms }).collect(),
            waiters: s.waiters.into_iter().map(|w| Waiter { id: w.id, n: w.n, holder: w.holder }).collect(),
        })
    }
}
