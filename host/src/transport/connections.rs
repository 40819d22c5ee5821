//! Connections to Redis: one shared multiplexed connection per server (or cluster) for scripts
//! and commands, pooled connections of their own for blocking pops, and plain blocking
//! connections for calls made on the caller's thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{AsyncConnectionConfig, RedisFuture, Value};

use crate::bindings::types::Error as WitError;
use crate::cancel::CancelFlag;
use crate::error::from_redis;

pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// For scripts on the shared connection: far above any script's run time, below a hung server.
pub(super) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Redis checks blocked clients only `hz` times a second (10 by default), up to 100 ms late. An
/// exact pop's server-side time-out exceeds the host's own timer by this much, so the host ends
/// it on time (and drops the connection with the BLPOP in flight); a heartbeat's lets Redis end
/// it, which keeps the connection, with this much for the host's timer to spare.
const POP_SLACK: Duration = Duration::from_secs(1);
/// A connection unused for longer than this may have been closed meanwhile, by Redis (its
/// `timeout` setting, whole seconds) or by a middlebox, with nothing noticed on this side. A
/// call that must not run twice (see [`Connections::query`]) checks such a connection with a
/// PING first: sent on a closed one, its reply would be lost with no way to tell whether it ran.
const IDLE_BEFORE_CHECK: Duration = Duration::from_secs(1);

/// BLPOP `key` and the time-out the host keeps itself: `(command, host's time-out)`, the latter
/// never past `limit` (what the guest's call has left), slack included.
pub(super) fn blpop(key: &str, timeout: Duration, exact: bool, limit: Duration) -> (redis::Cmd, Duration) {
    let (on_server, on_host) = if exact { (timeout + POP_SLACK, timeout) } else { (timeout, timeout + POP_SLACK) };
    let mut cmd = redis::cmd("BLPOP");
    // Never 0.000, which Redis takes as no time-out at all (a pop sent again with under half a
    // millisecond left).
    cmd.arg(key).arg(format!("{:.3}", on_server.max(Duration::from_millis(1)).as_secs_f64()));
    (cmd, on_host.min(limit))
}

/// A connection that could not be set up: a failed TLS handshake comes from redis-rs's async
/// connect as a client error (its blocking connect says I/O), and is as out of reach.
fn out_of_reach(e: redis::RedisError) -> redis::RedisError {
    if e.kind() == redis::ErrorKind::Client { std::io::Error::other(e.to_string()).into() } else { e }
}

/// Idle pop connections kept per Redis server.
const IDLE_POP_CONNECTIONS: usize = 16;

/// Where connections go: one server, or the seed nodes of one Redis Cluster. One per process and
/// URL, never moved after creation: the size of its variants does not matter.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Target {
    Server(redis::Client),
    /// Two clients: scripts run with a response time-out, blocking pops without one.
    Cluster { commands: ClusterClient, pops: ClusterClient },
}

/// A multiplexed connection to a server or to a cluster (one per node inside, behind redis-rs's
/// routing), so the code above it does not care which.
#[derive(Clone)]
pub(super) enum Conn {
    Server(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conn::Server(_) => "Conn::Server",
            Conn::Cluster(_) => "Conn::Cluster",
        })
    }
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Server(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(&'a mut self, cmd: &'a redis::Pipeline, offset: usize, count: usize) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Server(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Server(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Which nodes of a cluster a key-less command must reach (a single server ignores it).
#[derive(Debug, Clone, Copy)]
pub(super) enum Route {
    /// Every primary: SCRIPT LOAD, so whichever node owns the semaphore's slot, now or after a
    /// migration or fail-over, has the script. With the cluster's default full-coverage
    /// setting a primary that is down stops every command anyway, so this costs no availability.
    AllPrimaries,
    /// The primary serving the slot of this key: WAIT, which must reach the connection to the
    /// node that ran the scripts.
    PrimaryOf(redis::cluster_routing::Slot),
}

/// Numbers the async connections of this process: WAIT covers only the writes made on the
/// connection it runs on, so a caller tells the connection that ran its scripts by its number.
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

fn next_number() -> u64 {
    NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed)
}

/// A connection of one guest instance's own, once connected, its number (see
/// [`Connections::query_with`]), and when it last answered.
pub(super) type OwnConn = Option<(Conn, u64, Instant)>;

/// Whether `conn`, last used `used`, must be checked before a call that must not run twice (see
/// [`IDLE_BEFORE_CHECK`]). Not a cluster's: redis-rs's cluster client sends a command again by
/// itself, and such calls carry a request id that makes a second run answer as the first.
fn check_before_sending(conn: &Conn, used: Option<Instant>) -> bool {
    matches!(conn, Conn::Server(_)) && used.is_some_and(|at| at.elapsed() > IDLE_BEFORE_CHECK)
}

/// Whether a PING on `conn` shows it broken: a connection error, or no answer within the
/// response time-out. With `at_most`, a PING still unanswered then is left (and the call sent
/// as it would have been without the check): a slow master, not a closed connection, whose
/// round has no time for a new one.
async fn broken(conn: &mut Conn, at_most: Option<Duration>) -> bool {
    let cmd = redis::cmd("PING");
    let ping = cmd.query_async::<Value>(conn);
    let answer = match at_most {
        None => ping.await,
        Some(limit) => match tokio::time::timeout(limit, ping).await {
            Ok(answer) => answer,
            Err(_) => return false,
        },
    };
    matches!(answer, Err(e) if is_connection_error(&e))
}

/// Sends `cmd` on `conn`, where `route` says on a cluster (commands with a key are routed by it).
/// A routed command's error reply comes back from redis-rs as a value: made an error here, as
/// `query_async` makes it, so that a refusal (an ACL's `NOPERM`) is told from an answer.
async fn send(conn: &mut Conn, cmd: &redis::Cmd, route: Option<Route>) -> redis::RedisResult<Value> {
    match (conn, route) {
        (Conn::Cluster(c), Some(Route::AllPrimaries)) => {
            // Every primary's own answer (no response policy): one that refused is an error
            // even when another answered last.
            let all = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
            match c.route_command(cmd.clone(), all).await?.extract_error()? {
                Value::Map(answers) => answers.into_iter().next().map(|(_, answer)| answer).ok_or_else(|| {
                    redis::RedisError::from((redis::ErrorKind::ClusterConnectionNotFound, "no primary answered"))
                }),
                answer => Ok(answer),
            }
        }
        (Conn::Cluster(c), Some(Route::PrimaryOf(slot))) => {
            let node = redis::cluster_routing::Route::with_slot(slot, SlotAddr::Master);
            c.route_command(cmd.clone(), RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(node))).await?.extract_error()
        }
        (conn, _) => cmd.query_async(conn).await,
    }
}

/// Connections to one Redis server (or cluster), shared by every semaphore of the process that
/// uses its URL (or seed URLs).
#[derive(Debug)]
pub(crate) struct Connections {
    target: Target,
    /// The shared connection and its number (which connection of this process's it is): WAIT
    /// covers only the writes made on the connection it runs on.
    shared: tokio::sync::Mutex<(Option<Conn>, u64)>,
    /// When the shared connection last answered (see [`IDLE_BEFORE_CHECK`]).
    shared_used: Mutex<Option<Instant>>,
    idle_pops: Mutex<Vec<Conn>>,
}

/// The connections of this process registered under `id`, created by `create` on first use.
fn registered(id: String, create: impl FnOnce() -> Result<Target, WitError>) -> Result<Arc<Connections>, WitError> {
    static BY_ID: Mutex<Option<HashMap<String, Weak<Connections>>>> = Mutex::new(None);
    let mut map = BY_ID.lock().unwrap_or_else(|e| e.into_inner());
    let map = map.get_or_insert_with(HashMap::new);
    // Connections are driven by the threads of the process that opened them: after fork(),
    // the child opens its own.
    let id = format!("{} {id}", std::process::id());
    if let Some(existing) = map.get(&id).and_then(Weak::upgrade) {
        return Ok(existing);
    }
    let target = create()?;
    let conns = Arc::new(Connections {
        target,
        shared: tokio::sync::Mutex::new((None, 0)),
        shared_used: Mutex::new(None),
        idle_pops: Mutex::new(Vec::new()),
    });
    map.retain(|_, w| w.strong_count() > 0);
    map.insert(id, Arc::downgrade(&conns));
    Ok(conns)
}

impl Connections {
    /// The process-wide connections for `url`, created on first use.
    pub(crate) fn for_url(url: &str) -> Result<Arc<Self>, WitError> {
        registered(url.to_string(), || {
            let client = redis::Client::open(url).map_err(|e| WitError::InvalidArgument(format!("bad Redis URL: {e}")))?;
            Ok(Target::Server(client))
        })
    }

    /// The process-wide connections for the Redis Cluster with these seed nodes.
    pub(crate) fn for_cluster(seeds: &[String]) -> Result<Arc<Self>, WitError> {
        registered(format!("cluster {}", seeds.join(" ")), || {
            let bad = |e: redis::RedisError| WitError::InvalidArgument(format!("bad Redis Cluster URLs: {e}"));
            let builder = || ClusterClient::builder(seeds.iter().map(String::as_str)).connection_timeout(CONNECT_TIMEOUT);
            let commands = builder().response_timeout(RESPONSE_TIMEOUT).build().map_err(bad)?;
            let pops = builder().build().map_err(bad)?;
            Ok(Target::Cluster { commands, pops })
        })
    }

    /// True when a call may run twice after its reply was lost: redis-rs's cluster client sends
    /// a command again by itself after a connection error (it must, to follow redirections).
    /// The host itself never sends again a script for which that would do harm.
    pub(crate) fn resends_lost_replies(&self) -> bool {
        matches!(self.target, Target::Cluster { .. })
    }

    /// True for one plain server over TCP, whose blocking API runs on the caller's thread.
    pub(crate) fn serves_caller_thread(&self) -> bool {
        self.server_client().is_some()
    }

    /// The server's client, for plain blocking connections: a server over TCP without TLS.
    /// `None` for a cluster, whose calls always take the async path (its routing lives in the
    /// async cluster connection), and for TLS and unix sockets: redis-rs's blocking connect
    /// bounds only the TCP connect, not a TLS handshake after it, and a unix socket's connect
    /// blocks for good once a stalled server's backlog is full; the async path bounds both.
    pub(super) fn server_client(&self) -> Option<&redis::Client> {
        match &self.target {
            Target::Server(client) if matches!(client.get_connection_info().addr(), redis::ConnectionAddr::Tcp(..)) => Some(client),
            Target::Server(_) | Target::Cluster { .. } => None,
        }
    }

    async fn connect(&self, response_timeout: Option<Duration>) -> redis::RedisResult<Conn> {
        self.connect_any(response_timeout).await.map_err(out_of_reach)
    }

    async fn connect_any(&self, response_timeout: Option<Duration>) -> redis::RedisResult<Conn> {
        match &self.target {
            Target::Server(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(response_timeout);
                Ok(Conn::Server(client.get_multiplexed_async_connection_with_config(&config).await?))
            }
            Target::Cluster { commands, pops } => {
                let client = if response_timeout.is_some() { commands } else { pops };
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// The shared connection and its number.
    async fn shared(&self) -> redis::RedisResult<(Conn, u64)> {
        let mut slot = self.shared.lock().await;
        if let (Some(conn), number) = &*slot {
            return Ok((conn.clone(), *number));
        }
        let conn = self.connect(Some(RESPONSE_TIMEOUT)).await?;
        *slot = (Some(conn.clone()), next_number());
        Ok((conn, slot.1))
    }

    /// Runs `cmd` on the shared connection, sent where `route` says on a cluster (commands with
    /// a key are routed by it), and says which connection ran it. With `retry`, after a connection
    /// failure (Redis restarted, network blip, no reply in time) it reconnects and tries once
    /// more. A script that did run before the failure then runs twice: only scripts for which
    /// that is harmless are sent with `retry` ([`scripts::Script::rerun_safe`]); the others on
    /// a connection checked first if it sat idle (see [`IDLE_BEFORE_CHECK`]), for at most
    /// `check_at_most` when the call has a deadline of its own (a round of several masters).
    pub(super) async fn query(&self, cmd: &redis::Cmd, route: Option<Route>, retry: bool, check_at_most: Option<Duration>) -> redis::RedisResult<(Value, u64)> {
        let attempt = |(mut conn, number): (Conn, u64)| async move { send(&mut conn, cmd, route).await.map(|v| (v, number)) };
        let (mut conn, mut number) = self.shared().await?;
        let used = *self.shared_used.lock().unwrap_or_else(|e| e.into_inner());
        if !retry && check_before_sending(&conn, used) && broken(&mut conn.clone(), check_at_most).await {
            self.forget_shared(number).await;
            (conn, number) = self.shared().await?;
        }
        let result = match attempt((conn, number)).await {
            Err(e) if is_connection_error(&e) => {
                // The next call gets a new connection whether or not this one is sent again.
                self.forget_shared(number).await;
                if retry { attempt(self.shared().await?).await } else { Err(e) }
            }
            other => other,
        };
        *self.shared_used.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        result
    }

    /// Drops the shared connection if it is still connection `number`: only the connection that
    /// failed, as another call may have replaced it already, and dropping that one would split
    /// writes and their WAIT over two connections.
    async fn forget_shared(&self, number: u64) {
        let mut slot = self.shared.lock().await;
        if slot.1 == number {
            slot.0 = None;
        }
    }

    /// As [`Connections::query`], on `own` (connected on first use) instead of the shared
    /// connection: for an instance that waits for replicas. Redis reads nothing more from a
    /// client blocked in WAIT, so on the shared connection one slow WAIT would hold up every
    /// script of the process behind it, refreshes included.
    pub(super) async fn query_with(&self, own: &mut OwnConn, cmd: &redis::Cmd, route: Option<Route>, retry: bool) -> redis::RedisResult<(Value, u64)> {
        // As on the shared connection: one that sat idle is checked before a call that must not
        // run twice.
        if let Some((conn, _, used)) = own
            && !retry
            && check_before_sending(conn, Some(*used))
            && broken(conn, None).await
        {
            *own = None;
        }
        let (conn, number, _) = match own {
            Some(own) => own,
            None => own.insert((self.connect(Some(RESPONSE_TIMEOUT)).await?, next_number(), Instant::now())),
        };
        let number = *number;
        let result = match send(conn, cmd, route).await {
            // As on the shared connection: replaced whether or not the command is sent again.
            Err(e) if is_connection_error(&e) => {
                *own = None;
                if !retry {
                    return Err(e);
                }
                let (conn, number, _) = own.insert((self.connect(Some(RESPONSE_TIMEOUT)).await?, next_number(), Instant::now()));
                send(conn, cmd, route).await.map(|v| (v, *number))
            }
            other => other.map(|v| (v, number)),
        };
        if let Some((_, _, used)) = own {
            *used = Instant::now();
        }
        result
    }

    pub(super) async fn blocking_pop(&self, key: &str, timeout_ms: u64, exact: bool, limit: Duration, cancel: Option<&CancelFlag>) -> Result<Option<String>, WitError> {
        let (cmd, timeout) = blpop(key, Duration::from_millis(timeout_ms), exact, limit);
        let pooled = self.idle_pops.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let pop = async {
            let mut reused = pooled.is_some();
            let mut conn = match pooled {
                Some(c) => c,
                None => self.connect(None).await?,
            };
            loop {
                match cmd.query_async::<Option<(String, String)>>(&mut conn).await {
                    // A kept connection that broke while idle (the server restarted, or dropped
                    // it): once more on a new one. Had the BLPOP reached a server and taken a
                    // push, the waiter's grant record still holds it, as after a time-out.
                    Err(e) if std::mem::take(&mut reused) && is_connection_error(&e) => conn = self.connect(None).await?,
                    other => return other.map(|popped| (popped, conn)),
                }
            }
        };
        // The time-out and a cancellation race the connecting too: a server that accepts but
        // does not answer (stopped) holds a connection's setup up for its whole connect
        // time-out. On either the connection is dropped with the BLPOP in flight, which ends it
        // on the server (a cluster connection's task, and so its node connections, end with its
        // last handle). A push it may have taken is not lost: the waiter's grant record is the
        // truth, which the guest settles next.
        let (popped, conn) = tokio::select! {
            r = pop => r.map_err(|e| from_redis(&e))?,
            () = tokio::time::sleep(timeout) => return Ok(None),
            () = crate::cancel::cancelled(cancel) => return Err(WitError::Cancelled),
        };
        let mut idle = self.idle_pops.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE_POP_CONNECTIONS {
            idle.push(conn);
        }
        Ok(popped.map(|(_, v)| v))
    }
}

/// Plain blocking connections of one instance, for calls made on the caller's own thread
/// ([`crate::BlockingSemaphore`]): no thread hand-off per round trip.
#[derive(Default)]
pub(super) struct SyncConnections {
    pub(super) commands: Option<redis::Connection>,
    /// Which connection of this process's `commands` is (numbered as the async ones): WAIT
    /// covers only the writes of the connection it runs on.
    pub(super) commands_number: u64,
    /// When `commands` last answered (see [`IDLE_BEFORE_CHECK`]).
    commands_used: Option<Instant>,
    pub(super) pops: Option<redis::Connection>,
}

impl std::fmt::Debug for SyncConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncConnections").field("open", &(self.commands.is_some(), self.pops.is_some())).finish()
    }
}

/// The connection in `slot`, connected on first use. `read_timeout` is set once, at connection:
/// a `setsockopt` per call is a syscall the hot path can do without.
pub(super) fn sync_connection<'a>(
    slot: &'a mut Option<redis::Connection>,
    client: &redis::Client,
    read_timeout: Option<Duration>,
    connect_within: Duration,
) -> redis::RedisResult<&'a mut redis::Connection> {
    if slot.is_none() {
        let conn = client.get_connection_with_timeout(CONNECT_TIMEOUT.min(connect_within).max(Duration::from_millis(1)))?;
        conn.set_read_timeout(read_timeout)?;
        *slot = Some(conn);
    }
    Ok(slot.as_mut().expect("just set"))
}

/// The command connection in `slot` (see [`sync_connection`]); a new one is given a new `number`.
fn numbered_connection<'a>(slot: &'a mut Option<redis::Connection>, number: &mut u64, client: &redis::Client) -> redis::RedisResult<&'a mut redis::Connection> {
    if slot.is_none() {
        *number = next_number();
    }
    sync_connection(slot, client, Some(RESPONSE_TIMEOUT), CONNECT_TIMEOUT)
}

/// A read broken by a signal delivered to the thread (EINTR; with a read time-out set, even
/// under `SA_RESTART`). redis-rs keeps the `io::Error` behind an `Arc` as the error's source.
pub(super) fn is_interrupted(e: &redis::RedisError) -> bool {
    use std::error::Error as _;
    e.source()
        .and_then(|source| source.downcast_ref::<std::sync::Arc<dyn std::error::Error + Send + Sync>>())
        .and_then(|inner| inner.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::Interrupted)
}

pub(super) fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error()
}

/// Runs `request` on the blocking command connection of `own` (connected on first use),
/// reconnecting once when the connection broke, as the async path does (which also says what
/// `retry` means). The connection's number is then `own.commands_number`.
pub(super) fn query_own(
    own: &mut SyncConnections,
    client: &redis::Client,
    retry: bool,
    request: impl Fn(&mut redis::Connection) -> redis::RedisResult<Value>,
) -> redis::RedisResult<Value> {
    let slot = &mut own.commands;
    // A connection that already failed is replaced before anything is sent on it.
    if slot.as_ref().is_some_and(|conn| !redis::ConnectionLike::is_open(conn)) {
        *slot = None;
    }
    // No signal may break the read of the reply: that would look like a broken connection, and
    // the request would be sent again though it ran.
    let result = crate::signals::without_interruption(|| {
        // One that sat idle is checked before a call that must not run twice.
        if let Some(conn) = slot.as_mut()
            && !retry
            && own.commands_used.is_some_and(|at| at.elapsed() > IDLE_BEFORE_CHECK)
            && matches!(redis::cmd("PING").query::<Value>(conn), Err(e) if is_connection_error(&e))
        {
            *slot = None;
        }
        let number = &mut own.commands_number;
        match numbered_connection(slot, number, client).and_then(&request) {
            Err(e) if is_connection_error(&e) => {
                // Dropped whether or not the request is sent again: after a time-out its reply
                // may still come, and would be read as the next request's.
                *slot = None;
                if retry { numbered_connection(slot, number, client).and_then(request) } else { Err(e) }
            }
            other => other,
        }
    });
    own.commands_used = own.commands.is_some().then(Instant::now);
    result
}
