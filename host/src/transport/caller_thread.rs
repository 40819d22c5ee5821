//! The transport as synchronous imports, for instances that serve the blocking API on one plain
//! server: every call runs on the caller's thread over the instance's own connections, so the
//! guest is called without a fiber and each import without a future. The checks are the async
//! imports' own (shared helpers of [`HostState`]).

use std::time::{Duration, Instant};

use redis::Value;
use wasmtime::component::Resource;

use super::{eval_result, guest_args, loaded_sha1, pop_ms, query_own, reply, HostState, Scope, WitError};
use crate::bindings::sync::transport::{Host, HostScope, Reply};
use crate::error::from_redis;

impl HostState {
    /// Runs `f` with the client of master `master`'s own blocking connections. Sync instances
    /// exist only where there is one (see [`HostState::caller_thread_client`]): anything else
    /// is refused.
    fn with_own_client<R>(&mut self, master: u32, f: impl FnOnce(&mut Self, &redis::Client) -> R) -> Result<R, WitError> {
        self.check_master(master)?;
        let conns = self.masters[master as usize].clone();
        match self.caller_thread_client(&conns) {
            Some(client) => Ok(f(self, client)),
            None => Err(WitError::Forbidden("this instance runs on the caller's thread, for one plain server only".into())),
        }
    }

    /// Runs `cmd` on this instance's own blocking connection.
    fn run_here(&mut self, master: u32, cmd: &redis::Cmd, retry: bool) -> Result<redis::RedisResult<Value>, WitError> {
        self.with_own_client(master, |this, client| query_own(&mut this.sync, client, retry, |conn| cmd.query(conn)))
    }

    fn eval_here(&mut self, master: u32, sha1: &str, scope: &Resource<Scope>, args: Vec<u8>) -> Result<Option<Reply>, WitError> {
        self.admit()?;
        let args = guest_args(args)?;
        self.note_script_sent();
        let result = self.with_own_client(master, |this, client| this.eval_on_caller_thread(client, master, sha1, scope, &args))??;
        self.resumed_at = Instant::now();
        if result.is_ok() {
            self.wrote_on = Some(self.sync.commands_number);
        }
        eval_result(result)
    }
}

impl HostScope for HostState {
    fn open(&mut self, keys: Vec<String>, leading: Vec<String>) -> Result<Resource<Scope>, WitError> {
        self.new_scope(keys, leading)
    }

    fn drop(&mut self, scope: Resource<Scope>) -> wasmtime::Result<()> {
        self.drop_scope(scope)
    }
}

impl Host for HostState {
    fn eval(&mut self, master: u32, sha1: String, scope: Resource<Scope>, args: Vec<u8>) -> Result<Option<Reply>, WitError> {
        self.eval_here(master, &sha1, &scope, args)
    }

    /// One master only, so one call after the other (the several-master mode, which needs them
    /// at once, always runs async).
    fn eval_each(&mut self, sha1: String, scope: Resource<Scope>, calls: Vec<(u32, Vec<u8>)>, _timeout_ms: u64) -> Vec<Result<Option<Reply>, WitError>> {
        if let Err(refused) = self.check_each(&calls) {
            return calls.iter().map(|_| Err(refused.clone())).collect();
        }
        calls.into_iter().map(|(master, args)| self.eval_here(master, &sha1, &scope, args)).collect()
    }

    fn sleep(&mut self, ms: u64) -> Result<(), WitError> {
        // Nothing cancels a blocking call: its caller waits for it on this very thread.
        let left = self.admit()?;
        std::thread::sleep(Duration::from_millis(ms).min(left));
        self.resumed_at = Instant::now();
        Ok(())
    }

    fn load_script(&mut self, master: u32, script: String) -> Result<String, WitError> {
        self.admit()?;
        let load = self.script_load(master, &script)?;
        let result = self.run_here(master, &load, true)?;
        self.resumed_at = Instant::now();
        loaded_sha1(result)
    }

    fn command(&mut self, master: u32, name: String, key: String, args: Vec<String>) -> Result<Reply, WitError> {
        self.admit()?;
        let cmd = self.allowed_command(master, &name, &key, &args)?;
        let result = self.run_here(master, &cmd, true)?;
        self.resumed_at = Instant::now();
        reply(result.map_err(|e| from_redis(&e))?)
    }

    fn blocking_pop(&mut self, master: u32, key: String, timeout_ms: u64, exact: bool) -> Result<Option<String>, WitError> {
        let left = self.admit()?;
        let timeout_ms = pop_ms(timeout_ms, left);
        self.check_key(&key)?;
        self.script_before_pop = self.script_sent_at;
        let result = self.with_own_client(master, |this, client| this.blocking_pop_sync(client, &key, timeout_ms.max(1), exact, left))?;
        self.resumed_at = Instant::now();
        result
    }

    fn wait_replicas(&mut self, master: u32) -> Result<(), WitError> {
        self.admit()?;
        let Some((wait, timeout_ms)) = self.replica_wait(master)? else { return Ok(()) };
        // No retry: WAIT on a new connection would not cover the writes of the old one.
        let result = self.run_here(master, &wait, false)?;
        self.resumed_at = Instant::now();
        let value = result.map_err(|e| from_redis(&e))?;
        self.replicas_acked(value, self.sync.commands_number, timeout_ms)
    }

    fn monotonic_now(&mut self) -> u64 {
        self.started_at.elapsed().as_nanos() as u64
    }
}
