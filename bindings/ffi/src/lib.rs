//! UniFFI layer over `pottery-semaphore-host`: the native library of the Python package.
//!
//! Blocking methods run on the calling thread (foreign callers release their interpreter lock for
//! the call); the `*_async` twins return futures that need no particular executor, since the host
//! does the work on its own runtime.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use pottery_semaphore_host as host;

uniffi::setup_scaffolding!();

/// Errors of the semaphore, case for case as the host reports them.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum SemaphoreError {
    #[error("invalid argument: {message}")]
    InvalidArgument { message: String },
    #[error("cannot release: semaphore {key:?} would exceed its initial value {initial} ({current} available)")]
    Bounded { key: String, current: u64, initial: u64 },
    #[error("wrong type: {message}")]
    WrongType { message: String },
    #[error("Redis is unreachable: {message}")]
    Unreachable { message: String },
    #[error("Redis refused the credentials: {message}")]
    Auth { message: String },
    #[error("cancelled")]
    Cancelled,
    #[error("forbidden by the host sandbox: {message}")]
    Forbidden { message: String },
    #[error("Redis error: {message}")]
    Redis { message: String },
    /// Several masters: so many of them failed that no majority is left.
    #[error("no quorum: {message}")]
    Quorum { message: String },
    /// Fewer replicas than `replica_ack` asks for acknowledged a change in time.
    #[error("not replicated: {message}")]
    NotReplicated { message: String },
    #[error("the protocol component failed: {message}")]
    Guest { message: String },
    #[error("runtime error: {message}")]
    Runtime { message: String },
}

impl From<host::Error> for SemaphoreError {
    fn from(e: host::Error) -> Self {
        use host::Error as E;
        match e {
            E::InvalidArgument(message) => Self::InvalidArgument { message },
            E::Bounded { key, current, initial } => Self::Bounded { key, current, initial },
            E::WrongType(message) => Self::WrongType { message },
            E::Unreachable(message) => Self::Unreachable { message },
            E::Auth(message) => Self::Auth { message },
            E::Cancelled => Self::Cancelled,
            E::Forbidden(message) => Self::Forbidden { message },
            E::Redis(message) => Self::Redis { message },
            E::Quorum(message) => Self::Quorum { message },
            E::NotReplicated(message) => Self::NotReplicated { message },
            E::Guest(message) => Self::Guest { message },
            E::Runtime(message) => Self::Runtime { message },
        }
    }
}

type Result<T> = std::result::Result<T, SemaphoreError>;

/// A held permit: its token, lease deadline (Redis time, ms since the epoch) and time left.
#[derive(Debug, Clone, Copy, uniffi::Record)]
pub struct Permit {
    pub token: u64,
    pub deadline_ms: u64,
    pub ttl_ms: u64,
}

impl From<host::Permit> for Permit {
    fn from(p: host::Permit) -> Self {
        Permit { token: p.token, deadline_ms: p.deadline_ms, ttl_ms: p.ttl_ms }
    }
}

/// A permit held by any holder, as `status` lists it.
#[derive(Debug, Clone, uniffi::Record)]
pub struct HolderInfo {
    pub token: u64,
    pub holder: String,
    pub ttl_ms: u64,
}

/// A queued acquire, as `status` lists it.
#[derive(Debug, Clone, uniffi::Record)]
pub struct WaiterInfo {
    pub id: u64,
    pub n: u32,
    pub holder: String,
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct SemaphoreStatus {
    pub initial: u64,
    pub capacity: u64,
    pub available: u64,
    pub holders: Vec<HolderInfo>,
    pub waiters: Vec<WaiterInfo>,
}

impl From<host::Status> for SemaphoreStatus {
    fn from(s: host::Status) -> Self {
        SemaphoreStatus {
            initial: s.initial,
            capacity: s.capacity,
            available: s.available,
            holders: s.holders.into_iter().map(|h| HolderInfo { token: h.token, holder: h.holder, ttl_ms: h.ttl_ms }).collect(),
            waiters: s.waiters.into_iter().map(|w| WaiterInfo { id: w.id, n: w.n, holder: w.holder }).collect(),
        }
    }
}

/// Replicas that must acknowledge every grant, release and change (WAIT, or WAITAOF with `aof`).
#[derive(Debug, Clone, Copy, uniffi::Record)]
pub struct ReplicaAck {
    pub replicas: u32,
    pub timeout_ms: u64,
    #[uniffi(default = false)]
    pub aof: bool,
}

/// What to open; the defaults are the host's (`Options::new`).
#[derive(Debug, Clone, uniffi::Record)]
pub struct SemaphoreOptions {
    pub url: String,
    /// More masters besides `url`: with any, each permit is a slot held on a majority of all
    /// of them (Redlock mode).
    #[uniffi(default = [])]
    pub more_masters: Vec<String>,
    /// Several masters: an acquire that finds so many of them failing that no majority is left raises `Quorum`
    /// instead of returning false.
    #[uniffi(default = false)]
    pub raise_on_redis_errors: bool,
    pub key: String,
    #[uniffi(default = 1)]
    pub value: i64,
    #[uniffi(default = true)]
    pub bounded: bool,
    #[uniffi(default = 10000)]
    pub lease_ms: u64,
    #[uniffi(default = true)]
    pub guard_fresh_server: bool,
    /// When false, opening a semaphore that does not exist fails instead of creating it.
    #[uniffi(default = true)]
    pub create: bool,
    /// `None` (the default): no replica is waited for.
    #[uniffi(default = None)]
    pub replica_ack: Option<ReplicaAck>,
    /// `url` and `more_masters` are seed nodes of one Redis Cluster.
    #[uniffi(default = false)]
    pub cluster: bool,
}

impl From<SemaphoreOptions> for host::Options {
    fn from(o: SemaphoreOptions) -> Self {
        let options = host::Options::with_masters(std::iter::once(o.url).chain(o.more_masters), o.key)
            .raise_on_redis_errors(o.raise_on_redis_errors)
            .cluster(o.cluster)
            .permits(o.value)
            .bounded(o.bounded)
            .lease(Duration::from_millis(o.lease_ms))
            .guard_fresh_server(o.guard_fresh_server)
            .create(o.create);
        match o.replica_ack {
            Some(a) => options.replica_ack(host::ReplicaAck::new(a.replicas, Duration::from_millis(a.timeout_ms)).aof(a.aof)),
            None => options,
        }
    }
}

fn permits(v: Vec<host::Permit>) -> Vec<Permit> {
    v.into_iter().map(Permit::from).collect()
}

/// How many of a thread's latest grants `take_grant` can still find: a caller's `take_grant`
/// follows its own call on the same thread, with at most the grants of signal handlers that
/// ran in between (which may acquire too) after it.
const GRANTS_KEPT: usize = 8;

/// How many of `acquire_cancellable`'s latest grants `take_grant` can still find. Those run on
/// threads of their own for callers on another (a greenlet's, under gevent), so they are kept
/// per handle: a caller's `take_grant` follows its call with at most the grants of other such
/// threads between.
const POOL_GRANTS_KEPT: usize = 64;

/// One call's grant, as `take_grant` finds it.
#[derive(Debug)]
struct Grant {
    /// Unique per call (0: none).
    ticket: u64,
    tokens: Vec<u64>,
    /// Whether the caller has the permits yet (see `Semaphore::claim_grant`).
    claimed: bool,
    /// Whether the caller asked for them spared (kept so once claimed).
    spared: bool,
}

/// The latest grants of a thread or pool, oldest first.
#[derive(Debug, Default)]
struct Grants(std::collections::VecDeque<Grant>);

impl Grants {
    /// Keeps at most `kept` claimed grants (the oldest go first) and every unclaimed one (at
    /// most one per wait in flight): its caller claims it or takes it out.
    fn note(&mut self, ticket: u64, granted: &[host::Permit], kept: usize, claimed: bool, spared: bool) {
        if granted.is_empty() {
            return;
        }
        if self.0.len() >= kept
            && let Some(oldest) = self.0.iter().position(|g| g.claimed)
        {
            self.0.remove(oldest);
        }
        self.0.push_back(Grant { ticket, tokens: granted.iter().map(|p| p.token).collect(), claimed, spared });
    }

    fn position(&self, ticket: u64) -> Option<usize> {
        self.0.iter().position(|g| ticket != 0 && g.ticket == ticket)
    }

    fn take(&mut self, ticket: u64) -> Option<Vec<u64>> {
        let found = self.position(ticket)?;
        self.0.remove(found).map(|g| g.tokens)
    }

    /// Marks the grant under `ticket` claimed; returns it if it was not yet.
    fn claim(&mut self, ticket: u64) -> Option<&Grant> {
        let found = self.position(ticket)?;
        let grant = &mut self.0[found];
        (!std::mem::replace(&mut grant.claimed, true)).then_some(grant)
    }
}

thread_local! {
    /// This thread's latest `acquire_interruptible` grants.
    static GRANTS: std::cell::RefCell<Grants> = std::cell::RefCell::new(Grants::default());
}

/// A distributed counting semaphore handle; share it across threads freely.
#[derive(Debug, uniffi::Object)]
pub struct Semaphore {
    inner: host::BlockingSemaphore,
    /// `acquire_cancellable`'s latest grants.
    pool_grants: Mutex<Grants>,
}

/// For SDKs that act on signals between calls, as Python does: called before the first
/// semaphore, the runtime's threads leave the process's signals to the caller's thread (see
/// `pottery_semaphore_host::keep_signals_off_runtime_threads`, and why it is not the default).
#[uniffi::export]
pub fn keep_signals_off_runtime_threads() {
    host::keep_signals_off_runtime_threads();
}

/// A cancellation the foreign side triggers, for `Semaphore::acquire_cancellable_async`.
#[derive(Debug, Default, uniffi::Object)]
pub struct Cancellation {
    /// Cancelled yet, and the wakers of the calls waiting for it.
    state: Mutex<(bool, Vec<Waker>)>,
}

#[uniffi::export]
impl Cancellation {
    #[uniffi::constructor]
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Ends every call given this cancellation (now or later) with `Cancelled`.
    pub fn cancel(&self) {
        let wakers = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.0 = true;
            std::mem::take(&mut state.1)
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

impl Cancellation {
    fn is_cancelled(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// Completes once cancelled.
    fn cancelled(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| if self.poll_cancelled(cx) { Poll::Ready(()) } else { Poll::Pending })
    }

    /// True once cancelled; otherwise the task of `cx` is woken when it is.
    fn poll_cancelled(&self, cx: &mut Context<'_>) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.0 && !state.1.iter().any(|w| w.will_wake(cx.waker())) {
            state.1.push(cx.waker().clone());
        }
        state.0
    }
}

impl Semaphore {
    fn r#async(&self) -> &host::Semaphore {
        self.inner.as_async()
    }

    fn pool_grants(&self) -> std::sync::MutexGuard<'_, Grants> {
        self.pool_grants.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn acquire_spared_or_not(&self, n: i64, blocking: bool, timeout_s: Option<f64>, spared: bool) -> std::result::Result<Vec<host::Permit>, host::Error> {
        if spared { self.inner.acquire_n_spared(n, blocking, timeout_s) } else { self.inner.acquire_n(n, blocking, timeout_s) }
    }
}

#[uniffi::export]
impl Semaphore {
    /// Connects and creates the semaphore in Redis unless it exists.
    #[uniffi::constructor]
    pub fn open(options: SemaphoreOptions) -> Result<Arc<Self>> {
        Ok(Arc::new(Semaphore { inner: host::BlockingSemaphore::open(options.into())?, pool_grants: Mutex::default() }))
    }

    #[uniffi::constructor]
    pub async fn open_async(options: SemaphoreOptions) -> Result<Arc<Self>> {
        let sem = host::Semaphore::open(options.into()).await?;
        Ok(Arc::new(Semaphore { inner: sem.into(), pool_grants: Mutex::default() }))
    }

    /// Takes `n` permits at once or none; `timeout_s = None` waits forever. Empty means not
    /// acquired. `spared`: the permits are a block's (`with`, `withPermit`), which gives back
    /// exactly them with `release_permits` when it ends; from the grant on, `release` takes
    /// them only after this handle's others, so that a `release` beside the block cannot leave
    /// it nothing to give back.
    pub fn acquire(&self, n: i64, blocking: bool, timeout_s: Option<f64>, spared: bool) -> Result<Vec<Permit>> {
        Ok(permits(self.acquire_spared_or_not(n, blocking, timeout_s, spared)?))
    }

    /// As `acquire`, but a signal delivered to this thread while it waits ends the wait with
    /// `Cancelled`, having left the queue and kept nothing: for callers that run their signal
    /// handlers only once the call returns (Python), and then wait again unless one raised.
    /// A handler that raises then, after a grant, keeps the caller from ever seeing its
    /// permits: `ticket` (unique per call, not 0) lets `take_grant` find them. The grant is
    /// spared until `claim_grant`, as `acquire_cancellable`'s is (and for the same reason: a
    /// `release` from another thread must not take the grant such a handler gives back).
    /// `spared` as for `acquire`.
    pub fn acquire_interruptible(&self, n: i64, blocking: bool, timeout_s: Option<f64>, ticket: u64, spared: bool) -> Result<Vec<Permit>> {
        let granted = pottery_semaphore_host::signals_end_waits(|| self.inner.acquire_n_spared(n, blocking, timeout_s))?;
        GRANTS.with(|grants| grants.borrow_mut().note(ticket, &granted, GRANTS_KEPT, false, spared));
        Ok(permits(granted))
    }

    /// As `acquire`, ending with `Cancelled` as soon as `cancellation` is cancelled (from any
    /// thread): the waiter leaves the queue, and permits granted meanwhile are given back. A
    /// result that was ready first is returned. For a caller that waits on a thread of its own
    /// while another decides when to give up (Python under gevent: a greenlet's wait runs on a
    /// thread of its own, so that the other greenlets go on). `ticket` as for
    /// `acquire_interruptible`: `take_grant` finds the grant from any thread. The grant is
    /// spared (see `acquire`) until `claim_grant`, which keeps it so only if `spared`: before,
    /// the caller may yet give it back, and a `release` that took it in place of one of the
    /// handle's others would leave that give-back nothing, and the other permit held.
    pub fn acquire_cancellable(
        &self,
        n: i64,
        blocking: bool,
        timeout_s: Option<f64>,
        ticket: u64,
        spared: bool,
        cancellation: Arc<Cancellation>,
    ) -> Result<Vec<Permit>> {
        let granted = self.inner.acquire_n_until(n, blocking, timeout_s, true, cancellation.cancelled())?;
        self.pool_grants().note(ticket, &granted, POOL_GRANTS_KEPT, false, spared);
        // Granted as the caller gave up: it takes the grant out after cancelling, this call
        // after noting it, so whichever comes second finds it and lets go of it at once.
        if cancellation.is_cancelled() {
            let _ = self.give_back_grant(ticket, true);
        }
        Ok(permits(granted))
    }

    /// Takes out the record of what `acquire_interruptible` (on this thread) or
    /// `acquire_cancellable` granted under `ticket`, for a caller that raised before taking the
    /// permits and gives them back itself (`release_permits`, or `give_back_soon`), also
    /// when a signal handler acquired on this thread meanwhile (up to `GRANTS_KEPT` grants
    /// later). Empty when that call granted nothing, or failed, or was taken out already.
    pub fn take_grant(&self, ticket: u64) -> Vec<u64> {
        GRANTS
            .with(|grants| grants.borrow_mut().take(ticket))
            .or_else(|| self.pool_grants().take(ticket))
            .unwrap_or_default()
    }

    /// `take_grant` and the give-back of what it finds in one call: released now (as
    /// `release_permits`), or with `soon` let go of at once and released in the background (as
    /// `give_back_soon`). In one call, so that a signal's handler that raises in the caller
    /// between its own steps cannot leave the record taken out and its permits kept: called
    /// again, it finds nothing. An error means Redis did not answer; the handle then releases
    /// the permits in the background.
    pub fn give_back_grant(&self, ticket: u64, soon: bool) -> Result<()> {
        let tokens = self.take_grant(ticket);
        if tokens.is_empty() {
            return Ok(());
        }
        if soon {
            self.give_back_soon(tokens);
        } else {
            self.inner.release_permits(tokens)?;
        }
        Ok(())
    }

    /// Lets go of these permits at once (no `release` picks them from now on) and releases
    /// them in the background: for a caller on an event loop, which must not wait on Redis,
    /// giving back a grant it never took.
    pub fn give_back_soon(&self, tokens: Vec<u64>) {
        self.inner.give_back_soon(tokens);
    }

    /// Lets a release of this handle take these permits in their turn again: for an async
    /// caller that asked for them spared (see `acquire`) only until it had them, so that a
    /// `release` beside a grant it might yet give back (cancelled as it was handed over)
    /// cannot take that grant and leave the give-back nothing.
    pub fn unspare(&self, tokens: Vec<u64>) {
        self.inner.unspare(&tokens);
    }

    /// Marks the grant of `acquire_interruptible` (on this thread) or `acquire_cancellable`
    /// under `ticket` as the caller's: until then a release of this handle takes its permits
    /// last, as the grant may yet be given back (`take_grant` still finds it after, for a caller
    /// that raises later); from then on only if it was asked for spared.
    pub fn claim_grant(&self, ticket: u64) {
        let unspared = |grant: &Grant| (!grant.spared).then(|| grant.tokens.clone());
        let here = GRANTS.with(|grants| grants.borrow_mut().claim(ticket).map(unspared));
        if let Some(tokens) = here.unwrap_or_else(|| self.pool_grants().claim(ticket).and_then(unspared)) {
            self.inner.unspare(&tokens);
        }
    }

    /// Releases `n` permits: this handle's own first (those granted `spared` last), then other
    /// holders'.
    pub fn release(&self, n: i64) -> Result<()> {
        Ok(self.inner.release(n)?)
    }

    /// Releases exactly these permits of this handle; returns the tokens it still held.
    pub fn release_permits(&self, tokens: Vec<u64>) -> Result<Vec<u64>> {
        Ok(self.inner.release_permits(tokens)?)
    }

    pub fn value(&self) -> Result<u64> {
        Ok(self.inner.value()?)
    }

    pub fn initial_value(&self) -> Result<u64> {
        Ok(self.inner.initial_value()?)
    }

    pub fn locked(&self) -> Result<bool> {
        Ok(self.inner.locked()?)
    }

    pub fn permits(&self) -> Result<Vec<Permit>> {
        Ok(permits(self.inner.permits()?))
    }

    pub fn status(&self) -> Result<SemaphoreStatus> {
        Ok(self.inner.status()?.into())
    }

    /// Operators: sets the number of permits; permits in use are never taken away.
    pub fn set_permits(&self, value: i64) -> Result<u64> {
        Ok(self.inner.set_permits(value)?)
    }

    /// Operators: adds permits (negative removes); returns the new number.
    pub fn add_permits(&self, delta: i64) -> Result<u64> {
        Ok(self.inner.add_permits(delta)?)
    }

    pub fn refresh(&self) -> Result<()> {
        Ok(self.inner.refresh()?)
    }

    pub fn held(&self) -> Vec<Permit> {
        permits(self.inner.held())
    }

    pub fn take_lost(&self) -> Vec<Permit> {
        permits(self.inner.take_lost())
    }

    pub fn key(&self) -> String {
        self.r#async().key().to_owned()
    }

    pub fn holder_id(&self) -> String {
        self.r#async().holder_id().to_owned()
    }

    pub fn lease_ms(&self) -> u64 {
        u64::try_from(self.r#async().lease().as_millis()).unwrap_or(u64::MAX)
    }

    /// `spared` as for `acquire`.
    pub async fn acquire_async(&self, n: i64, blocking: bool, timeout_s: Option<f64>, spared: bool) -> Result<Vec<Permit>> {
        let sem = self.r#async();
        let granted = if spared { sem.acquire_n_spared(n, blocking, timeout_s).await } else { sem.acquire_n(n, blocking, timeout_s).await };
        Ok(permits(granted?))
    }

    /// As `acquire_async`, ending with `Cancelled` as soon as `cancellation` is cancelled, for
    /// callers whose executor does not drop a cancelled future (Swift's tasks): the waiter then
    /// leaves the queue, and permits granted meanwhile are given back. A result that was ready
    /// first is returned. `spared` as for `acquire`.
    pub async fn acquire_cancellable_async(
        &self,
        n: i64,
        blocking: bool,
        timeout_s: Option<f64>,
        spared: bool,
        cancellation: Arc<Cancellation>,
    ) -> Result<Vec<Permit>> {
        Ok(permits(self.r#async().acquire_n_until(n, blocking, timeout_s, spared, cancellation.cancelled()).await?))
    }

    pub async fn release_async(&self, n: i64) -> Result<()> {
        Ok(self.r#async().release(n).await?)
    }

    /// As `release_permits`, for callers on an async executor (Swift's `withPermit`).
    pub async fn release_permits_async(&self, tokens: Vec<u64>) -> Result<Vec<u64>> {
        Ok(self.r#async().release_permits(tokens).await?)
    }

    pub async fn value_async(&self) -> Result<u64> {
        Ok(self.r#async().value().await?)
    }

    pub async fn initial_value_async(&self) -> Result<u64> {
        Ok(self.r#async().initial_value().await?)
    }

    pub async fn locked_async(&self) -> Result<bool> {
        Ok(self.r#async().locked().await?)
    }

    pub async fn status_async(&self) -> Result<SemaphoreStatus> {
        Ok(self.r#async().status().await?.into())
    }

    pub async fn permits_async(&self) -> Result<Vec<Permit>> {
        Ok(permits(self.r#async().permits().await?))
    }
}
