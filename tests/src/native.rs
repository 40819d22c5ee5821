//! A [`Transport`] over plain synchronous redis-rs connections, so the protocol in
//! `pottery-semaphore-core` can run compiled natively, without the wasm component: the baseline
//! the benchmark measures the component against.

use std::cell::RefCell;
use std::fmt;
use std::time::Instant;

use pottery_semaphore_core::scripts::Script;
use pottery_semaphore_core::{Args, Config, Error, Reply, Scope, Semaphore, Transport};
use pottery_semaphore_host::convert::{error as from_redis, push_args, reply, EvalshaFrame};
use redis::{ConnectionLike, Value};

/// One connection for scripts and commands, another for blocking pops. Single-threaded: the
/// protocol calls its transport from one thread at a time.
pub struct NativeTransport {
    conn: RefCell<redis::Connection>,
    pop_conn: RefCell<redis::Connection>,
    started: Instant,
    /// The last scope's EVALSHA frame (by scope id) and the buffer each call is framed into: as
    /// the host's blocking path frames its calls, so the two differ only by the component.
    frame: RefCell<Option<(u64, EvalshaFrame)>>,
    framed: RefCell<Vec<u8>>,
}

impl fmt::Debug for NativeTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NativeTransport").finish_non_exhaustive()
    }
}

impl NativeTransport {
    pub fn connect(url: &str) -> Result<Self, Error> {
        let client = redis::Client::open(url).map_err(|e| Error::InvalidArgument(format!("bad Redis URL: {e}")))?;
        let conn = client.get_connection().map_err(|e| from_redis(&e))?;
        let pop_conn = client.get_connection().map_err(|e| from_redis(&e))?;
        Ok(NativeTransport {
            conn: RefCell::new(conn),
            pop_conn: RefCell::new(pop_conn),
            started: Instant::now(),
            frame: RefCell::default(),
            framed: RefCell::default(),
        })
    }

    fn query(&self, cmd: &redis::Cmd) -> Result<Value, redis::RedisError> {
        match cmd.query::<Value>(&mut *self.conn.borrow_mut())? {
            Value::ServerError(e) => Err(e.into()),
            v => Ok(v),
        }
    }
}

impl Transport for NativeTransport {
    fn eval(&self, script: &Script, scope: &Scope, args: &Args) -> Result<Reply, Error> {
        let mut frame = self.frame.borrow_mut();
        if frame.as_ref().is_none_or(|(id, _)| *id != scope.id()) {
            *frame = Some((scope.id(), EvalshaFrame::new(&scope.keys, &scope.leading)));
        }
        let mut framed = self.framed.borrow_mut();
        frame.as_ref().expect("set above").1.write(&mut framed, script.sha1(), args);
        let sent = self.conn.borrow_mut().req_packed_command(&framed).and_then(Value::extract_error);
        let result = match sent {
            Err(e) if e.code() == Some("NOSCRIPT") => {
                let keys = &scope.keys;
                let mut eval = redis::cmd("EVAL");
                eval.arg(script.source).arg(keys.len()).arg(keys).arg(&scope.leading);
                push_args(&mut eval, args);
                self.query(&eval)
            }
            other => other,
        };
        reply(result.map_err(|e| from_redis(&e))?)
    }

    fn command(&self, name: &str, key: &str, args: &[String]) -> Result<Reply, Error> {
        let mut cmd = redis::cmd(name);
        cmd.arg(key).arg(args);
        reply(self.query(&cmd).map_err(|e| from_redis(&e))?)
    }

    fn blocking_pop(&self, key: &str, timeout_ms: u64, _exact: bool) -> Result<Option<String>, Error> {
        let seconds = format!("{:.3}", timeout_ms as f64 / 1000.0);
        let mut cmd = redis::cmd("BLPOP");
        cmd.arg(key).arg(seconds);
        let popped: Option<(String, String)> =
            cmd.query(&mut *self.pop_conn.borrow_mut()).map_err(|e| from_redis(&e))?;
        Ok(popped.map(|(_, v)| v))
    }

    /// No replicas are configured for the native baseline: nothing to wait for, no I/O.
    fn wait_replicas(&self) -> Result<(), Error> {
        Ok(())
    }

    fn monotonic_now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    fn sleep(&self, ms: u64) -> Result<(), Error> {
        std::thread::sleep(std::time::Duration::from_millis(ms));
        Ok(())
    }
}

/// The benchmark's uncontended cycle with the protocol compiled natively: a one-permit
/// semaphore `key` on `url`, and a closure that acquires and releases it once.
pub fn uncontended_cycle(url: &str, key: String) -> impl FnMut() + use<> {
    let transport = NativeTransport::connect(url).expect("connect");
    let config = Config {
        holder: format!("{key}-holder"),
        key,
        value: 1,
        bounded: true,
        lease_ms: 10_000,
        // As `Server::options`: the server is seconds old and this guard would grant nothing yet.
        guard_fresh_server: false,
        existed: false,
        create: true,
        masters: 1,
        raise_on_redis_errors: false,
        replicate: false,
    };
    let (sem, _) = Semaphore::open(transport, config).expect("open");
    move || {
        let permits = sem.acquire(1, true, None).expect("acquire");
        assert!(!permits.is_empty(), "an uncontended acquire was not granted");
        // As the host does: name the permit being released as ours.
        let mine: Vec<u64> = permits.iter().map(|p| p.token).collect();
        sem.release(1, &mine, 0).expect("release");
    }
}
