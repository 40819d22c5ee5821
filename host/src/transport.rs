//! The guest's only way out: the WIT transport imports, behind the sandbox (the semaphore's own
//! keys, the protocol's own scripts, limits on time, scopes and sizes). Scripts run on one
//! shared multiplexed connection; each blocking pop gets a connection of its own without a
//! response time-out, so a long BLPOP neither stalls other commands nor gets cut short
//! (`connections`). A Redis Cluster is the same with cluster connections: redis-rs routes each
//! command by its key (a semaphore's keys share one slot) and follows MOVED/ASK redirects.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pottery_semaphore_core::keys::Keys;
use pottery_semaphore_core::{scripts, Args, Reply as CoreReply};
use redis::Value;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{StoreLimits, StoreLimitsBuilder};

use crate::bindings::transport::{Host as TransportHost, HostScope, Reply};
use crate::bindings::types::{Error as WitError, Host as TypesHost};
use crate::cancel::CancelFlag;
use crate::convert::{push_args, EvalshaFrame};
use crate::error::from_redis;
use crate::options::ReplicaAck;

mod caller_thread;
mod connections;

pub(crate) use connections::Connections;
use connections::{blpop, is_connection_error, CONNECT_TIMEOUT, is_interrupted, query_own, sync_connection, OwnConn, Route, SyncConnections};

/// Read-only commands the guest may send on one key of its own, each with how many arguments
/// may follow the key: a field for HGET, none for the rest (so EXISTS cannot name more keys).
const ALLOWED_COMMANDS: &[(&str, usize)] =
    &[("HGET", 1), ("HGETALL", 0), ("TYPE", 0), ("EXISTS", 0), ("ZCARD", 0), ("SMEMBERS", 0), ("PTTL", 0), ("LLEN", 0)];

/// A scope the guest opened (WIT `scope`): keys already checked against the sandbox, and the
/// arguments that lead every script's ARGV.
#[derive(Debug)]
pub struct Scope {
    keys: Vec<String>,
    leading: Vec<String>,
    /// Both framed once, for the caller-thread path.
    frame: EvalshaFrame,
}

impl Scope {
    fn new(keys: Vec<String>, leading: Vec<String>) -> Scope {
        let frame = EvalshaFrame::new(&keys, &leading);
        Scope { keys, leading, frame }
    }
}

/// Scopes one guest instance may hold at once (the protocol holds one).
const MAX_SCOPES: usize = 8;
/// Keys and leading arguments of one scope (the protocol's: 4 or 5 keys, 3 arguments), and the
/// bytes of its arguments: each script call copies them.
const MAX_SCOPE_KEYS: usize = 8;
const MAX_SCOPE_ARGS: usize = 4;
const MAX_SCOPE_ARG_BYTES: usize = 4096;

/// Wall-clock limits on the guest's waits. The protocol's pops and sleeps last seconds at most
/// (a heartbeat, a retry); a call other than a waiting acquire ends well within a minute, and a
/// waiting acquire within a minute of its time-out. Past its deadline a call's imports are
/// refused (leaving the CPU budget to stop a guest that keeps trying).
const MAX_GUEST_WAIT: Duration = Duration::from_secs(60);
pub(crate) const CALL_TIME_LIMIT: Duration = Duration::from_secs(60);
/// Elements of a guest table (wasmtime allows any number by default): the component's few
/// hundred, with room.
const MAX_TABLE_ELEMENTS: usize = 10_000;

/// The masters of one semaphore, indexed as the guest addresses them.
pub(crate) type Masters = Arc<[Arc<Connections>]>;

/// Store data of one guest instance: its sandbox, limits and the call it is serving.
#[derive(Debug)]
pub(crate) struct HostState {
    pub(crate) masters: Masters,
    /// What `wait_replicas` waits for; `None`: nothing.
    pub(crate) replicas: Option<ReplicaAck>,
    /// The connection that ran the last script, by number (see `Connections::query`).
    wrote_on: Option<u64>,
    /// This instance's own async connection, for scripts and WAIT when it waits for replicas
    /// (one server or a cluster: see `Connections::query_with`).
    own_async: OwnConn,
    /// The current call runs on the caller's thread, which may block: use `sync`.
    pub(crate) blocking_io: bool,
    sync: SyncConnections,
    /// The last EVALSHA framed for `sync`, its buffer kept for the next.
    framed: Vec<u8>,
    pub(crate) keys: Keys,
    scopes: ResourceTable,
    open_scopes: usize,
    pub(crate) limits: StoreLimits,
    pub(crate) cancel: Option<CancelFlag>,
    /// When the guest last got control back; the epoch callback measures guest CPU from here.
    pub(crate) resumed_at: Instant,
    /// Epoch ticks the guest has run across since `resumed_at` (the instant they count from):
    /// its CPU time in ticks, as the wall clock would also count the time a call spends yielded
    /// to a busy runtime.
    pub(crate) ticks_run: (Instant, u32),
    /// When the current call last sent a script, and, while its latest transport call is a
    /// blocking pop, when it had last sent one as it began that pop. On one server a grant the
    /// call returns was made after the latter (a waiter served by a push while it pops) or by
    /// the last script, which leases anew whatever it hands out (acquire.lua; poll.lua and
    /// cancel.lua claim a waiter's grant with a fresh lease). The permits' validity by this
    /// process's clock counts from there.
    pub(crate) script_sent_at: Option<Instant>,
    pub(crate) script_before_pop: Option<Instant>,
    /// When the current call's latest round on several masters was answered. The guest's
    /// validity is what is left after that round (it already counts from the winning attempt's
    /// start), so it counts from here: from the round's sending, the round would count twice.
    pub(crate) round_answered_at: Option<Instant>,
    pub(crate) started_at: Instant,
    /// When the current call's imports stop being served (see `CALL_TIME_LIMIT`); `None`: an
    /// acquire that waits as long as it takes (its caller can cancel it).
    pub(crate) call_deadline: Option<Instant>,
}

impl HostState {
    pub(crate) fn new(masters: Masters, key: &str, memory_limit: usize) -> Self {
        HostState {
            masters,
            replicas: None,
            wrote_on: None,
            own_async: None,
            blocking_io: false,
            sync: SyncConnections::default(),
            framed: Vec::new(),
            keys: Keys::new(key),
            scopes: ResourceTable::new(),
            open_scopes: 0,
            // One linear memory (the component's), so the memory cap is the instance's.
            limits: StoreLimitsBuilder::new().memory_size(memory_limit).instances(16).tables(16).memories(1).table_elements(MAX_TABLE_ELEMENTS).trap_on_grow_failure(true).build(),
            cancel: None,
            resumed_at: Instant::now(),
            ticks_run: (Instant::now(), 0),
            script_sent_at: None,
            script_before_pop: None,
            round_answered_at: None,
            started_at: Instant::now(),
            call_deadline: None,
        }
    }

    /// Admits one more import of the current call: refused past its deadline, or
    /// `CALL_TIME_LIMIT` after its caller cancelled it (time to clean up; a call without a
    /// deadline has no other end). Returns how long the import may wait (`MAX_GUEST_WAIT` at
    /// most). A refusal leaves `resumed_at` alone, so a guest that keeps trying spends its CPU
    /// budget.
    fn admit(&self) -> Result<Duration, WitError> {
        let after_cancel = self.cancel.as_ref().and_then(CancelFlag::cancelled_at).map(|at| at + CALL_TIME_LIMIT);
        let Some(deadline) = self.call_deadline.into_iter().chain(after_cancel).min() else { return Ok(MAX_GUEST_WAIT) };
        match deadline.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Ok(left.min(MAX_GUEST_WAIT)),
            _ => Err(WitError::Forbidden(format!("the call went past its time limit ({CALL_TIME_LIMIT:?} beyond any time-out)"))),
        }
    }

    /// The calls of an `eval-each`: one per master, each named once (a round of the several-
    /// master mode); anything else would let a guest fan out without bound.
    fn check_each(&self, calls: &[(u32, Vec<u8>)]) -> Result<(), WitError> {
        let mut seen = vec![false; self.masters.len()];
        for (master, _) in calls {
            self.check_master(*master)?;
            if std::mem::replace(&mut seen[*master as usize], true) {
                return Err(WitError::Forbidden(format!("master {master} named twice in one round")));
            }
        }
        Ok(())
    }

    fn note_script_sent(&mut self) {
        self.script_sent_at = Some(Instant::now());
        // A script after a pop: whatever the call returns now comes from a script.
        self.script_before_pop = None;
    }

    /// When at the earliest the permits the current call returns were granted (or, for a
    /// refresh, extended), by this process's clock (see `script_before_pop`); `called` when it
    /// sent no script. (With replica acknowledgement a waiter always claims a pushed grant with
    /// poll.lua, after the pop.)
    pub(crate) fn granted_after(&self, called: Instant) -> Instant {
        let bound = if self.masters.len() > 1 { self.round_answered_at } else { self.script_before_pop.or(self.script_sent_at) };
        bound.unwrap_or(called)
    }

    /// An id for a call that must not act twice (see the WIT `release`), or 0 when nothing
    /// sends a call twice here. Unique within the process; the scripts pair it with the holder.
    pub(crate) fn request_id(&self) -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        if self.masters.iter().any(|m| m.resends_lost_replies()) { NEXT.fetch_add(1, Ordering::Relaxed) } else { 0 }
    }

    /// The client for this instance's own blocking connections, when the call runs on the
    /// caller's thread: one plain server only (a cluster routes, several masters run at once).
    fn caller_thread_client<'a>(&self, conns: &'a Connections) -> Option<&'a redis::Client> {
        conns.server_client().filter(|_| self.blocking_io && self.masters.len() == 1)
    }

    async fn query(&mut self, master: u32, cmd: &redis::Cmd) -> redis::RedisResult<Value> {
        Ok(self.run(master, cmd, None, true).await?.0)
    }

    /// Runs `cmd` on master `master`: on this instance's blocking connection (one server only),
    /// its own async one when it waits for replicas, or the shared async one (see
    /// [`Connections::query`]); returns the number of the connection that ran it (blocking ones
    /// are numbered as the async ones).
    async fn run(&mut self, master: u32, cmd: &redis::Cmd, route: Option<Route>, retry: bool) -> redis::RedisResult<(Value, u64)> {
        let conns = self.masters[master as usize].clone();
        let Some(client) = self.caller_thread_client(&conns) else {
            let (value, number) = match self.replicas {
                Some(_) => conns.query_with(&mut self.own_async, cmd, route, retry).await?,
                None => conns.query(cmd, route, retry, None).await?,
            };
            return Ok((value, number));
        };
        let value = query_own(&mut self.sync, client, retry, |conn| cmd.query(conn))?;
        Ok((value, self.sync.commands_number))
    }

    async fn query_routed(&mut self, master: u32, cmd: &redis::Cmd, route: Route) -> redis::RedisResult<Value> {
        Ok(self.run(master, cmd, Some(route), true).await?.0)
    }

    /// The shortest time a wait tries to connect for (see `blocking_pop_sync`).
    const MIN_CONNECT_WITHIN: Duration = Duration::from_millis(2);

    /// BLPOP on this instance's blocking pop connection, timed by the socket's read time-out;
    /// when that ends it, the connection is dropped with the BLPOP in flight (see `blocking_pop`).
    /// `limit`: what the call has left, which no connecting or popping outlasts.
    fn blocking_pop_sync(&mut self, client: &redis::Client, key: &str, timeout_ms: u64, exact: bool, limit: Duration) -> Result<Option<String>, WitError> {
        let ends_at = Instant::now() + Duration::from_millis(timeout_ms);
        let limit_at = Instant::now() + limit;
        // The pop as sent now, and how long the host waits for it: what is left of the wait,
        // connecting included (as on the async path, which races connecting against it).
        let pop_now = || {
            let now = Instant::now();
            blpop(key, ends_at.saturating_duration_since(now), exact, limit_at.saturating_duration_since(now))
        };
        let mut reused = self.sync.pops.is_some();
        // A signal held back during this call's script (see `signals`) ends the wait before it
        // begins, as it would have ended it during it.
        if crate::signals::take_held_back() {
            return Err(WitError::Cancelled);
        }
        loop {
            // Failing to connect is an error of its own: not an empty pop; unless the wait, not
            // the connect's own time-out, cut it short (a server slow to take on a client): then
            // again with what is left, until the wait ends as a pop would. Connecting reads the server's answers
            // to its setup (a signal must not break those either); one held back meanwhile ends
            // the wait where signals do. Halved: redis-rs may read the setup's answers twice,
            // each time with what is left of its time-out, so that connecting never outlasts
            // the wait (nor the call).
            let connect_within = limit_at.saturating_duration_since(Instant::now()) / 2;
            let wait = pop_now().1 / 2;
            let conn = match crate::signals::without_interruption(|| sync_connection(&mut self.sync.pops, client, None, connect_within.min(wait))) {
                Ok(conn) => conn,
                Err(e) if e.is_timeout() && wait < connect_within && wait < CONNECT_TIMEOUT => {
                    if pop_now().1 < Self::MIN_CONNECT_WITHIN {
                        return Ok(None);
                    }
                    continue;
                }
                Err(e) => return Err(from_redis(&e)),
            };
            if crate::signals::take_held_back() {
                return Err(WitError::Cancelled);
            }
            let (cmd, timeout) = pop_now();
            if timeout.is_zero() {
                return Ok(None);
            }
            let result = conn.set_read_timeout(Some(timeout)).and_then(|()| cmd.query::<Option<(String, String)>>(conn));
            match result {
                Ok(popped) => return Ok(popped.map(|(_, v)| v)),
                Err(e) => {
                    self.sync.pops = None;
                    if e.is_timeout() {
                        return Ok(None);
                    }
                    // A signal. Where the caller acts on signals only once the call returns
                    // (Python's Ctrl-C), the wait ends: the guest leaves the queue and gives
                    // back what raced in. Else the pop goes on, on a new connection, with the
                    // time left: the waiter keeps its place, and a push its BLPOP may have
                    // taken stays in its grant record, as after a time-out.
                    let interrupted = is_interrupted(&e);
                    if interrupted && crate::signals::signals_end_waits_here() {
                        return Err(WitError::Cancelled);
                    }
                    // A kept connection that broke while idle (the server restarted, or dropped
                    // it): once more on a new one. Had the BLPOP reached a server and taken a
                    // push, the waiter's grant record still holds it, as after a time-out.
                    let pop_again = interrupted || (std::mem::take(&mut reused) && is_connection_error(&e));
                    if !pop_again {
                        return Err(from_redis(&e));
                    }
                    // Either way the pop goes on with the time it has left, not all of it again.
                    if ends_at <= Instant::now() {
                        return Ok(None);
                    }
                }
            }
        }
    }

    fn check_master(&self, master: u32) -> Result<(), WitError> {
        if (master as usize) < self.masters.len() {
            Ok(())
        } else {
            Err(WitError::Forbidden(format!("master {master} is not configured ({} masters)", self.masters.len())))
        }
    }

    /// The sandbox's checks of a guest's EVALSHA: a configured master and a protocol script
    /// (its keys were checked when its scope was opened).
    fn check_script(&self, master: u32, sha1: &str) -> Result<&'static scripts::Script, WitError> {
        self.check_master(master)?;
        // Only the protocol's own scripts run, so a guest cannot reach keys a script computes.
        scripts::by_sha1(sha1).ok_or_else(|| WitError::Forbidden(format!("script {sha1} is not one of the protocol's scripts")))
    }

    /// The guest's EVALSHA as a redis-rs command, for the async connections, and whether it may
    /// be sent again after a lost reply ([`scripts::Script::rerun_safe`]).
    fn evalsha(&self, master: u32, sha1: &str, scope: &Resource<Scope>, args: &Args) -> Result<(redis::Cmd, bool), WitError> {
        let rerun_safe = self.check_script(master, sha1)?.rerun_safe;
        let scope = held_scope(&self.scopes, scope)?;
        // Room for a call's arguments up front: growing the buffer step by step cost more
        // reallocations than anything else in building the command (~2k instructions a call).
        let mut evalsha = redis::Cmd::with_capacity(3 + scope.keys.len() + scope.leading.len() + args.len(), 512);
        evalsha.arg("EVALSHA").arg(sha1).arg(scope.keys.len()).arg(&scope.keys).arg(&scope.leading);
        push_args(&mut evalsha, args);
        Ok((evalsha, rerun_safe))
    }

    /// The sandbox's key check happens here, once per scope rather than on every script.
    fn new_scope(&mut self, keys: Vec<String>, leading: Vec<String>) -> Result<Resource<Scope>, WitError> {
        let arg_bytes: usize = leading.iter().map(String::len).sum();
        if keys.len() > MAX_SCOPE_KEYS || leading.len() > MAX_SCOPE_ARGS || arg_bytes > MAX_SCOPE_ARG_BYTES {
            return Err(WitError::Forbidden(format!(
                "a scope has at most {MAX_SCOPE_KEYS} keys and {MAX_SCOPE_ARGS} arguments of {MAX_SCOPE_ARG_BYTES} bytes in all"
            )));
        }
        // The first leading argument is the holder, which scripts write into values and build
        // key names from: only a well-formed one.
        if let Some(holder) = leading.first() {
            pottery_semaphore_core::validate::holder(holder).map_err(|e| WitError::Forbidden(format!("scope: {e}")))?;
        }
        for key in &keys {
            self.check_key(key)?;
        }
        // The scripts derive the names of the keys they build (wake and grant lists, held sets)
        // from KEYS[1], the semaphore's meta key: any other first key would move them elsewhere.
        if keys.first() != Some(&self.keys.meta()) {
            return Err(WitError::Forbidden(format!("a scope's first key must be {}", self.keys.meta())));
        }
        if self.open_scopes >= MAX_SCOPES {
            return Err(WitError::Forbidden(format!("at most {MAX_SCOPES} scopes at once")));
        }
        let scope = self.scopes.push(Scope::new(keys, leading)).map_err(|e| WitError::Forbidden(format!("scope: {e}")))?;
        self.open_scopes += 1;
        Ok(scope)
    }

    fn drop_scope(&mut self, scope: Resource<Scope>) -> wasmtime::Result<()> {
        self.scopes.delete(scope)?;
        self.open_scopes -= 1;
        Ok(())
    }

    /// The hot path of the blocking API: EVALSHA on this instance's own connection. The scope's
    /// fixed part was framed when it was opened, and the frame buffer is reused, so a call
    /// allocates no command.
    fn eval_on_caller_thread(
        &mut self,
        client: &redis::Client,
        master: u32,
        sha1: &str,
        scope: &Resource<Scope>,
        args: &Args,
    ) -> Result<redis::RedisResult<Value>, WitError> {
        let rerun_safe = self.check_script(master, sha1)?.rerun_safe;
        let scope = held_scope(&self.scopes, scope)?;
        scope.frame.write(&mut self.framed, sha1, args);
        let framed = &self.framed;
        let request = |conn: &mut redis::Connection| redis::ConnectionLike::req_packed_command(conn, framed).and_then(Value::extract_error);
        Ok(query_own(&mut self.sync, client, rerun_safe, request))
    }

    /// A read-only command of the allow list, on the semaphore's own key.
    fn allowed_command(&self, master: u32, name: &str, key: &str, args: &[String]) -> Result<redis::Cmd, WitError> {
        self.check_master(master)?;
        let upper = name.to_ascii_uppercase();
        if !ALLOWED_COMMANDS.contains(&(upper.as_str(), args.len())) {
            return Err(WitError::Forbidden(format!("command {name} with {} arguments after its key is not allowed", args.len())));
        }
        self.check_key(key)?;
        let mut cmd = redis::cmd(&upper);
        cmd.arg(key).arg(args);
        Ok(cmd)
    }

    /// SCRIPT LOAD of one of the protocol's scripts, the only ones a guest may load.
    fn script_load(&self, master: u32, script: &str) -> Result<redis::Cmd, WitError> {
        self.check_master(master)?;
        let Some(known) = scripts::ALL.iter().find(|s| s.source == script) else {
            return Err(WitError::Forbidden("that script is not one of the protocol's scripts".into()));
        };
        let mut load = redis::cmd("SCRIPT");
        load.arg("LOAD").arg(known.source);
        Ok(load)
    }

    /// WAIT (or WAITAOF) for the configured replicas, with its time-out in ms; `None` when no
    /// replicas are configured.
    fn replica_wait(&self, master: u32) -> Result<Option<(redis::Cmd, u64)>, WitError> {
        self.check_master(master)?;
        let Some(ack) = self.replicas else { return Ok(None) };
        // WAIT 0 would block forever.
        let timeout_ms = ack.timeout.as_millis().clamp(1, u64::MAX as u128) as u64;
        let mut wait = redis::cmd(if ack.aof { "WAITAOF" } else { "WAIT" });
        if ack.aof {
            wait.arg(0);
        }
        wait.arg(ack.replicas).arg(timeout_ms);
        Ok(Some((wait, timeout_ms)))
    }

    /// Judges WAIT's answer: enough replicas, on the connection that ran the scripts (`conn`).
    fn replicas_acked(&self, value: Value, conn: u64, timeout_ms: u64) -> Result<(), WitError> {
        let Some(ack) = self.replicas else { return Ok(()) };
        let acked = match value {
            Value::Int(n) if !ack.aof => n,
            // WAITAOF answers [local fsyncs, replica fsyncs].
            Value::Array(counts) if ack.aof && counts.len() == 2 => match counts[1] {
                Value::Int(n) => n,
                _ => return Err(WitError::Redis(format!("WAITAOF answered {counts:?}"))),
            },
            other => return Err(WitError::Redis(format!("WAIT answered {other:?}"))),
        };
        if Some(conn) != self.wrote_on {
            return Err(WitError::NotReplicated("the connection that ran the scripts was replaced before WAIT".into()));
        }
        if acked >= i64::from(ack.replicas) {
            return Ok(());
        }
        let what = if ack.aof { "replicas fsynced to their AOF" } else { "replicas acknowledged" };
        Err(WitError::NotReplicated(format!("{acked} of {} {what} within {timeout_ms} ms", ack.replicas)))
    }

    fn check_key(&self, key: &str) -> Result<(), WitError> {
        if self.keys.owns(key) {
            Ok(())
        } else {
            Err(WitError::Forbidden(format!("key {key:?} is outside {}", self.keys.prefix())))
        }
    }
}

/// A pop of `timeout_ms` cut to what the call may still wait (at least 1 ms).
pub(super) fn pop_ms(timeout_ms: u64, left: Duration) -> u64 {
    timeout_ms.min(u64::try_from(left.as_millis()).unwrap_or(u64::MAX)).max(1)
}

/// A scope the guest holds, or the sandbox's refusal.
fn held_scope<'a>(scopes: &'a ResourceTable, scope: &Resource<Scope>) -> Result<&'a Scope, WitError> {
    scopes.get(scope).map_err(|e| WitError::Forbidden(format!("scope: {e}")))
}

/// A call's arguments as the guest framed them, refused unless they are nothing but arguments.
fn guest_args(framed: Vec<u8>) -> Result<Args, WitError> {
    Args::parse(framed).map_err(|e| WitError::Forbidden(format!("script arguments: {e}")))
}

/// SCRIPT LOAD's answer: the script's SHA-1.
fn loaded_sha1(result: redis::RedisResult<Value>) -> Result<String, WitError> {
    match result.map_err(|e| from_redis(&e))? {
        Value::BulkString(sha) => Ok(String::from_utf8_lossy(&sha).into_owned()),
        Value::SimpleString(sha) => Ok(sha),
        other => Err(WitError::Redis(format!("SCRIPT LOAD answered {other:?}"))),
    }
}

/// An EVALSHA result in WIT form: `None` when Redis lacks the script.
fn eval_result<R: From<CoreReply>>(result: redis::RedisResult<Value>) -> Result<Option<R>, WitError> {
    match result {
        Err(e) if e.code() == Some("NOSCRIPT") => Ok(None),
        other => Ok(Some(reply(other.map_err(|e| from_redis(&e))?)?)),
    }
}

/// The protocol's reply in WIT form.
fn reply<R: From<CoreReply>>(v: Value) -> Result<R, WitError> {
    Ok(crate::convert::reply(v)?.into())
}

/// The protocol's reply as the WIT reply of one set of bindings (async and sync have their own).
macro_rules! wit_reply_from_core {
    ($($wit:ident)::+) => {
        impl From<CoreReply> for $($wit)::+::Reply {
            fn from(r: CoreReply) -> Self {
                use $($wit)::+::Scalar;
                let scalar = |s: pottery_semaphore_core::Scalar| match s {
                    pottery_semaphore_core::Scalar::Nil => Scalar::Nil,
                    pottery_semaphore_core::Scalar::Int(i) => Scalar::Int(i),
                    pottery_semaphore_core::Scalar::Bulk(b) => Scalar::Bulk(b),
                    pottery_semaphore_core::Scalar::Status(s) => Scalar::Status(s),
                };
                match r {
                    CoreReply::Scalar(s) => Self::Scalar(scalar(s)),
                    CoreReply::Array(items) => Self::Array(items.into_iter().map(scalar).collect()),
                }
            }
        }
    };
}
wit_reply_from_core!(crate::bindings::transport);
wit_reply_from_core!(crate::bindings::sync::transport);

impl TypesHost for HostState {}

impl HostScope for HostState {
    async fn open(&mut self, keys: Vec<String>, leading: Vec<String>) -> Result<Resource<Scope>, WitError> {
        self.new_scope(keys, leading)
    }

    async fn drop(&mut self, scope: Resource<Scope>) -> wasmtime::Result<()> {
        self.drop_scope(scope)
    }
}

impl TransportHost for HostState {
    async fn eval(&mut self, master: u32, sha1: String, scope: Resource<Scope>, args: Vec<u8>) -> Result<Option<Reply>, WitError> {
        self.admit()?;
        let args = guest_args(args)?;
        self.note_script_sent();
        let conns = self.masters.get(master as usize).cloned();
        let result = match conns.as_deref().and_then(|conns| self.caller_thread_client(conns)) {
            Some(client) => {
                let result = self.eval_on_caller_thread(client, master, &sha1, &scope, &args)?;
                result.map(|value| (value, self.sync.commands_number))
            }
            None => {
                let (evalsha, rerun_safe) = self.evalsha(master, &sha1, &scope, &args)?;
                self.run(master, &evalsha, None, rerun_safe).await
            }
        };
        self.resumed_at = Instant::now();
        if let Ok((_, conn)) = &result {
            self.wrote_on = Some(*conn);
        }
        eval_result(result.map(|(v, _)| v))
    }

    /// Each call on its own master, all at once: a round costs the slowest master, not the sum.
    async fn eval_each(&mut self, sha1: String, scope: Resource<Scope>, calls: Vec<(u32, Vec<u8>)>, timeout_ms: u64) -> Vec<Result<Option<Reply>, WitError>> {
        // Nothing to send, nothing waited for: the guest's CPU time runs on.
        if calls.is_empty() {
            return Vec::new();
        }
        let admitted = self.admit().and_then(|left| self.check_each(&calls).map(|()| left));
        let left = match admitted {
            Ok(left) => left,
            Err(refused) => return calls.iter().map(|_| Err(refused.clone())).collect(),
        };
        let timeout = Duration::from_millis(timeout_ms.max(1)).min(left);
        self.note_script_sent();
        let pending: Vec<_> = calls
            .into_iter()
            .map(|(master, args)| {
                let (cmd, rerun_safe) = self.evalsha(master, &sha1, &scope, &guest_args(args)?)?;
                let conns = self.masters[master as usize].clone();
                Ok(tokio::spawn(async move { tokio::time::timeout(timeout, conns.query(&cmd, None, rerun_safe, Some(timeout / 4))).await }))
            })
            .collect();
        let mut results = Vec::with_capacity(pending.len());
        for task in pending {
            results.push(match task {
                Ok(task) => match task.await {
                    Ok(Ok(result)) => eval_result(result.map(|(v, _)| v)),
                    // The script may still run when the master wakes up: what it grants then
                    // is never confirmed or refreshed, and expires.
                    Ok(Err(_)) => Err(WitError::Unreachable(format!("no answer within {timeout_ms} ms"))),
                    Err(e) => Err(WitError::Redis(format!("the call to Redis failed: {e}"))),
                },
                Err(refused) => Err(refused),
            });
        }
        self.resumed_at = Instant::now();
        self.round_answered_at = Some(self.resumed_at);
        results
    }

    async fn sleep(&mut self, ms: u64) -> Result<(), WitError> {
        let left = self.admit()?;
        let cancelled = crate::cancel::cancelled(self.cancel.as_ref());
        let result = tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(ms).min(left)) => Ok(()),
            () = cancelled => Err(WitError::Cancelled),
        };
        self.resumed_at = Instant::now();
        result
    }

    async fn load_script(&mut self, master: u32, script: String) -> Result<String, WitError> {
        self.admit()?;
        let load = self.script_load(master, &script)?;
        let result = self.query_routed(master, &load, Route::AllPrimaries).await;
        self.resumed_at = Instant::now();
        loaded_sha1(result)
    }

    async fn command(&mut self, master: u32, name: String, key: String, args: Vec<String>) -> Result<Reply, WitError> {
        self.admit()?;
        let cmd = self.allowed_command(master, &name, &key, &args)?;
        let result = self.query(master, &cmd).await;
        self.resumed_at = Instant::now();
        reply(result.map_err(|e| from_redis(&e))?)
    }

    async fn blocking_pop(&mut self, master: u32, key: String, timeout_ms: u64, exact: bool) -> Result<Option<String>, WitError> {
        let left = self.admit()?;
        let timeout_ms = pop_ms(timeout_ms, left);
        self.check_master(master)?;
        self.check_key(&key)?;
        self.script_before_pop = self.script_sent_at;
        let conns = self.masters[master as usize].clone();
        let result = if let Some(client) = self.caller_thread_client(&conns) {
            self.blocking_pop_sync(client, &key, timeout_ms.max(1), exact, left)
        } else {
            self.masters[master as usize].blocking_pop(&key, timeout_ms.max(1), exact, left, self.cancel.as_ref()).await
        };
        self.resumed_at = Instant::now();
        result
    }

    async fn wait_replicas(&mut self, master: u32) -> Result<(), WitError> {
        self.admit()?;
        let Some((wait, timeout_ms)) = self.replica_wait(master)? else { return Ok(()) };
        // No retry: WAIT on a new connection would not cover the writes of the old one.
        let slot = redis::cluster_routing::Slot::for_key(self.keys.meta());
        let result = self.run(master, &wait, Some(Route::PrimaryOf(slot)), false).await;
        self.resumed_at = Instant::now();
        let (value, conn) = result.map_err(|e| from_redis(&e))?;
        self.replicas_acked(value, conn, timeout_ms)
    }

    async fn monotonic_now(&mut self) -> u64 {
        self.started_at.elapsed().as_nanos() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pottery_semaphore_core::scripts::{ACQUIRE, INIT};

    /// A pop sent again with under half a millisecond left still asks Redis for a time-out:
    /// `0.000` would make it block for good.
    #[test]
    fn a_pop_never_asks_redis_to_block_for_good() {
        for exact in [false, true] {
            let (cmd, _) = blpop("k", Duration::from_micros(300), exact, Duration::from_secs(60));
            let sent = String::from_utf8(cmd.get_packed_command()).expect("text");
            let seconds: f64 = sent.lines().nth(6).expect("the time-out").parse().expect("a number");
            assert!(seconds > 0.0, "{sent:?}");
        }
    }

    /// One server: a grant served by a push is no older than the script before the pop; one a
    /// script hands out (acquire.lua, or a waiter's poll.lua or cancel.lua, which lease anew what
    /// they claim) is no older than that script, however long the pops before it took, with or
    /// without replica acknowledgement. Several masters: the last round's answer (the guest's
    /// validity is what is left after it, counted from the winning attempt's start; a bound from
    /// an earlier attempt, before its pause, or from the round's sending, would count that time
    /// twice).
    #[test]
    fn a_grant_is_dated_from_the_script_that_can_have_made_it() {
        let server = |port: u16| Connections::for_url(&format!("redis://127.0.0.1:{port}")).expect("url");
        let called = Instant::now();
        for (masters, replicas) in [(vec![server(1)], false), (vec![server(1)], true), (vec![server(1), server(2), server(3)], false)] {
            let several = masters.len() > 1;
            let mut state = HostState::new(Arc::from(masters), "mine", 1 << 20);
            state.replicas = replicas.then(|| ReplicaAck::new(1, Duration::from_millis(100)));
            assert_eq!(state.granted_after(called), called, "no script sent");
            state.note_script_sent(); // enqueue / first claim round
            let enqueued = state.script_sent_at.expect("noted");
            state.script_before_pop = state.script_sent_at; // a pop, as `blocking_pop` notes it
            if !several {
                assert_eq!(state.granted_after(called), enqueued, "served by a push while popping");
            }
            std::thread::sleep(Duration::from_millis(2));
            state.note_script_sent(); // poll / the winning attempt's confirm round
            std::thread::sleep(Duration::from_millis(2));
            if several {
                state.round_answered_at = Some(Instant::now()); // as `eval_each` notes it
            }
            let last = if several { state.round_answered_at } else { state.script_sent_at }.expect("noted");
            assert!(last > enqueued);
            assert_eq!(state.granted_after(called), last, "claimed by the script after the pop");
        }
    }

    /// A single server, called from the async API and from the blocking one (its own
    /// connections), and a cluster. Nothing listens on port 1: every check below must refuse
    /// before any I/O.
    fn states() -> [HostState; 3] {
        let server = || Connections::for_url("redis://127.0.0.1:1").expect("url");
        let cluster = Connections::for_cluster(&["redis://127.0.0.1:1".into()]).expect("urls");
        let mut blocking = HostState::new(Arc::from(vec![server()]), "mine", 1 << 20);
        blocking.blocking_io = true;
        [HostState::new(Arc::from(vec![server()]), "mine", 1 << 20), blocking, HostState::new(Arc::from(vec![cluster]), "mine", 1 << 20)]
    }

    fn forbidden<T: std::fmt::Debug>(r: Result<T, WitError>) -> bool {
        matches!(r, Err(WitError::Forbidden(_)))
    }

    /// The sandbox's checks, through one set of imports (`Scopes`, `Imports`): async ones are
    /// awaited (`await` given), sync ones called as they are.
    macro_rules! assert_sandboxed {
        ($s:expr, $scopes:path, $imports:path $(, $aw:tt)?) => {{
            let s: &mut HostState = $s;
            let own = Keys::new("mine").script_keys();
            let foreign = Keys::new("other").multi_script_keys("h");
            let sha = ACQUIRE.sha1().to_string();
            // Keys are checked when the guest opens a scope: only its own semaphore's.
            assert!(forbidden(<HostState as $scopes>::open(s, foreign, vec![])$(.$aw)?));
            assert!(forbidden(<HostState as $scopes>::open(s, vec!["plain-key".into()], vec![])$(.$aw)?));
            // Its own keys, but not its meta key first: the scripts would build key names from
            // a shortened prefix (`…{mi` + `grant:…`), reaching other semaphores.
            let shifted: Vec<String> = ["m", "leases", "queue", "waiters"].iter().map(|k| format!("{}{k}", Keys::new("mine").prefix())).collect();
            assert!(forbidden(<HostState as $scopes>::open(s, shifted, vec![])$(.$aw)?));
            // Every script call copies a scope: its size is capped.
            let many_keys = vec![Keys::new("mine").meta(); MAX_SCOPE_KEYS + 1];
            assert!(forbidden(<HostState as $scopes>::open(s, many_keys, vec![])$(.$aw)?), "too many keys");
            let many_args = vec![String::new(); MAX_SCOPE_ARGS + 1];
            assert!(forbidden(<HostState as $scopes>::open(s, own.clone(), many_args)$(.$aw)?), "too many arguments");
            let long_arg = vec!["x".repeat(MAX_SCOPE_ARG_BYTES + 1)];
            assert!(forbidden(<HostState as $scopes>::open(s, own.clone(), long_arg)$(.$aw)?), "arguments too long");
            let odd_holder = vec!["h}:x".to_string(), "1".into(), "1000".into()];
            assert!(forbidden(<HostState as $scopes>::open(s, own.clone(), odd_holder)$(.$aw)?), "a holder outside [A-Za-z0-9_-]");
            let scope = <HostState as $scopes>::open(s, own.clone(), vec![])$(.$aw)?.expect("its own keys");
            let borrowed = || Resource::<Scope>::new_borrow(scope.rep());
            // A script of the guest's own: neither run by its SHA nor loaded.
            let evil = "return redis.call('FLUSHALL')".to_string();
            assert!(forbidden(<HostState as $imports>::eval(s, 0, sha1_of(&evil), borrowed(), vec![])$(.$aw)?));
            assert!(forbidden(<HostState as $imports>::load_script(s, 0, evil)$(.$aw)?));
            assert!(forbidden(<HostState as $imports>::eval(s, 1, sha.clone(), borrowed(), vec![])$(.$aw)?), "only master 0");
            // Arguments are bulk strings and nothing else: no second command rides along.
            let smuggled = b"$1\r\n1\r\n*1\r\n$8\r\nFLUSHALL\r\n".to_vec();
            assert!(forbidden(<HostState as $imports>::eval(s, 0, sha.clone(), borrowed(), smuggled.clone())$(.$aw)?));
            let each = <HostState as $imports>::eval_each(s, sha.clone(), borrowed(), vec![(0, smuggled)], 10)$(.$aw)?;
            assert!(each.into_iter().all(|r| forbidden(r)), "malformed arguments");
            assert!(forbidden(<HostState as $imports>::eval(s, 1, INIT.sha1().into(), borrowed(), vec![])$(.$aw)?), "only master 0");
            let each = <HostState as $imports>::eval_each(s, sha.clone(), borrowed(), vec![(1, vec![])], 10)$(.$aw)?;
            assert!(each.into_iter().all(|r| forbidden(r)), "only master 0");
            // One call per master and round: a guest cannot fan out without bound.
            let each = <HostState as $imports>::eval_each(s, sha.clone(), borrowed(), vec![(0, vec![]), (0, vec![])], 10)$(.$aw)?;
            assert!(each.into_iter().all(|r| forbidden(r)), "master 0 twice");
            assert!(forbidden(<HostState as $imports>::load_script(s, 1, INIT.source.into())$(.$aw)?), "only master 0");
            assert!(forbidden(<HostState as $imports>::command(s, 0, "DEL".into(), Keys::new("mine").meta(), vec![])$(.$aw)?), "writes are not allowed");
            assert!(forbidden(<HostState as $imports>::command(s, 0, "HGET".into(), Keys::new("other").meta(), vec![])$(.$aw)?));
            let more_keys = vec![Keys::new("other").meta()];
            assert!(forbidden(<HostState as $imports>::command(s, 0, "EXISTS".into(), Keys::new("mine").meta(), more_keys)$(.$aw)?), "one key only");
            assert!(forbidden(<HostState as $imports>::blocking_pop(s, 0, "pottery-semaphore:{other}:wake:1".into(), 10, true)$(.$aw)?));
            // Scopes cost host memory: a guest holds a few at most, and may open more as it drops some.
            let mut more = Vec::new();
            for _ in 1..MAX_SCOPES {
                more.push(<HostState as $scopes>::open(s, own.clone(), vec![])$(.$aw)?.expect("within the cap"));
            }
            assert!(forbidden(<HostState as $scopes>::open(s, own.clone(), vec![])$(.$aw)?), "over the cap");
            <HostState as $scopes>::drop(s, scope)$(.$aw)?.expect("drop");
            assert!(<HostState as $scopes>::open(s, own, vec![])$(.$aw)?.is_ok(), "room again after a drop");
        }};
    }

    /// Past its deadline a call's imports are refused at once, and no wait outlasts it.
    macro_rules! assert_time_limited {
        ($s:expr, $scopes:path, $imports:path $(, $aw:tt)?) => {{
            let s: &mut HostState = $s;
            let scope = <HostState as $scopes>::open(s, Keys::new("mine").script_keys(), vec![])$(.$aw)?.expect("its own keys");
            let borrowed = || Resource::<Scope>::new_borrow(scope.rep());
            let wake = format!("{}wake:1", Keys::new("mine").prefix());
            s.call_deadline = Some(Instant::now() + Duration::from_millis(100));
            let started = Instant::now();
            let _ = <HostState as $imports>::sleep(s, u64::MAX)$(.$aw)?;
            let slept = started.elapsed();
            assert!(slept < Duration::from_secs(2), "a sleep of u64::MAX ms outlasted the call's deadline: {slept:?}");
            s.call_deadline = Instant::now().checked_sub(Duration::from_millis(1));
            assert!(forbidden(<HostState as $imports>::sleep(s, 1)$(.$aw)?));
            assert!(forbidden(<HostState as $imports>::eval(s, 0, ACQUIRE.sha1().into(), borrowed(), vec![])$(.$aw)?));
            assert!(forbidden(<HostState as $imports>::blocking_pop(s, 0, wake, 10, true)$(.$aw)?));
            assert!(forbidden(<HostState as $imports>::command(s, 0, "HGET".into(), Keys::new("mine").meta(), vec!["f".into()])$(.$aw)?));
            assert!(forbidden(<HostState as $imports>::load_script(s, 0, INIT.source.into())$(.$aw)?));
            let each = <HostState as $imports>::eval_each(s, ACQUIRE.sha1().into(), borrowed(), vec![(0, vec![])], 10)$(.$aw)?;
            assert!(each.into_iter().all(|r| forbidden(r)));
        }};
    }

    #[tokio::test]
    async fn a_call_past_its_time_limit_is_refused_and_no_wait_outlasts_it() {
        let [mut s, ..] = states();
        assert_time_limited!(&mut s, HostScope, TransportHost, await);
    }

    /// A call nobody waits for any more (its caller cancelled it) has a minute to clean up, as
    /// a call past its time-out has: a guest that keeps calling in (with no deadline, or
    /// rounds that send nothing) runs into the CPU budget instead of on and on.
    #[tokio::test]
    async fn a_cancelled_call_has_a_time_limit_too() {
        let [mut s, ..] = states();
        let scope = HostScope::open(&mut s, Keys::new("mine").script_keys(), vec![]).await.expect("its own keys");
        assert_eq!(s.call_deadline, None, "an acquire that waits as long as it takes");
        s.cancel = Some(CancelFlag::cancelled_since(Instant::now()));
        assert!(matches!(TransportHost::sleep(&mut s, 1).await, Err(WitError::Cancelled)), "cleaning up is still allowed");
        let long_ago = Instant::now().checked_sub(CALL_TIME_LIMIT + Duration::from_millis(1)).expect("uptime");
        s.cancel = Some(CancelFlag::cancelled_since(long_ago));
        assert!(forbidden(TransportHost::sleep(&mut s, 1).await));
        let borrowed = Resource::<Scope>::new_borrow(scope.rep());
        assert!(forbidden(TransportHost::eval(&mut s, 0, ACQUIRE.sha1().into(), borrowed, vec![]).await));
        // A round naming no master waits for nothing: it does not count as the guest waiting.
        s.cancel = None;
        let resumed = s.resumed_at;
        let borrowed = Resource::<Scope>::new_borrow(scope.rep());
        assert!(TransportHost::eval_each(&mut s, ACQUIRE.sha1().into(), borrowed, vec![], 10).await.is_empty());
        assert_eq!(s.resumed_at, resumed);
    }

    /// A pop ends within its call's time limit even on a server that accepts connections and
    /// never answers: the host's slack after the server's time-out and the connecting count
    /// within it (async and caller-thread imports).
    #[tokio::test]
    async fn no_pop_outlasts_its_call_on_a_server_that_never_answers() {
        use crate::bindings::sync::transport::Host as SyncHost;
        let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("redis://{}", silent.local_addr().expect("address"));
        let wake = format!("{}wake:1", Keys::new("mine").prefix());
        let limit = Duration::from_millis(200);
        for blocking_io in [false, true] {
            let mut s = HostState::new(Arc::from(vec![Connections::for_url(&url).expect("url")]), "mine", 1 << 20);
            s.blocking_io = blocking_io;
            s.call_deadline = Some(Instant::now() + limit);
            let started = Instant::now();
            let _ = if blocking_io {
                SyncHost::blocking_pop(&mut s, 0, wake.clone(), 10_000, false)
            } else {
                TransportHost::blocking_pop(&mut s, 0, wake.clone(), 10_000, false).await
            };
            let took = started.elapsed();
            assert!(took < limit + Duration::from_millis(250), "a pop (caller thread: {blocking_io}) took {took:?} of a {limit:?} limit");
        }
    }

    /// A connect that its own time-out (2 s) cut short is an error, as it would be for a
    /// script, not an empty pop to send again: a long pop (a heartbeat's, a few seconds) to a
    /// server that never takes the connection ends `unreachable` then. Before, it connected
    /// again with what was left until the pop's time was up, and returned an empty pop.
    #[test]
    fn a_connect_its_own_time_out_ended_is_an_error_not_an_empty_pop() {
        use crate::bindings::sync::transport::Host as SyncHost;
        use socket2::{Domain, Socket, Type};
        // A listener whose accept queue is full: the kernel drops further connection attempts.
        let full = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        full.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into()).expect("bind");
        full.listen(0).expect("listen");
        let addr = full.local_addr().expect("address").as_socket().expect("an IP address");
        let mut queued = Vec::new();
        while let Ok(stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            queued.push(stream);
            assert!(queued.len() < 64, "the accept queue never filled");
        }
        let wake = format!("{}wake:1", Keys::new("mine").prefix());
        let mut s = HostState::new(Arc::from(vec![Connections::for_url(&format!("redis://{addr}")).expect("url")]), "mine", 1 << 20);
        s.blocking_io = true;
        s.call_deadline = Some(Instant::now() + Duration::from_secs(60));
        let started = Instant::now();
        let popped = SyncHost::blocking_pop(&mut s, 0, wake, 8_000, false);
        let took = started.elapsed();
        assert!(matches!(popped, Err(WitError::Unreachable(_))), "after {took:?}: {popped:?}");
        assert!(took < CONNECT_TIMEOUT + Duration::from_millis(500), "{took:?}");
    }

    #[test]
    fn the_caller_thread_imports_keep_the_same_time_limit() {
        use crate::bindings::sync::transport::{Host as SyncHost, HostScope as SyncHostScope};
        let [_, mut s, _] = states();
        assert_time_limited!(&mut s, SyncHostScope, SyncHost);
    }

    #[tokio::test]
    async fn the_guest_reaches_only_its_own_keys_through_known_scripts() {
        for mut s in states() {
            assert_sandboxed!(&mut s, HostScope, TransportHost, await);
        }
    }

    /// The same through the sync imports of the caller-thread instances. Where those do not
    /// apply (the async API's state, a cluster), every call is refused.
    #[test]
    fn the_caller_thread_imports_keep_the_same_sandbox() {
        use crate::bindings::sync::transport::{Host as SyncHost, HostScope as SyncHostScope};
        for mut s in states() {
            assert_sandboxed!(&mut s, SyncHostScope, SyncHost);
        }
        let [mut not_here, _, mut cluster] = states();
        for s in [&mut not_here, &mut cluster] {
            let scope = SyncHostScope::open(s, Keys::new("mine").script_keys(), vec![]).expect("its own keys");
            assert!(forbidden(SyncHost::eval(s, 0, ACQUIRE.sha1().into(), scope, vec![])), "async instances' masters");
            assert!(forbidden(SyncHost::command(s, 0, "HGET".into(), Keys::new("mine").meta(), vec![])));
        }
    }

    fn sha1_of(s: &str) -> String {
        sha1_smol::Sha1::from(s).digest().to_string()
    }
}
