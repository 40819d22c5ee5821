//! The component's glue: WIT types to and from the protocol's, and the host's imports as a
//! [`Transport`]. Nothing here decides anything.
// The generated bindings are the one place the guest needs unsafe code (the canonical ABI).
#![allow(unsafe_code)]

use std::cell::RefCell;

use crate::scripts::Script;
use crate::{multi, protocol, Api, Args, Error, Reply, Scalar, Scope, Transport};

wit_bindgen::generate!({ path: "../wit", world: "guest" });

use exports::pottery::semaphore::api::{self as wit_api, GuestSemaphore};
use pottery::semaphore::transport as wit_transport;
use pottery::semaphore::types as wit_types;

/// The master of the one-server protocol; the several-master mode indexes all of them.
const MASTER: u32 = 0;

/// The host's import as a [`Transport`]. It keeps the host's handle for the scope the protocol
/// runs its scripts in, so the keys and leading arguments cross the boundary once.
#[derive(Debug, Default)]
struct HostTransport {
    scope: RefCell<Option<(u64, wit_transport::Scope)>>,
}

impl HostTransport {
    /// Runs `call` with the host's handle for `scope`, opening one when the scope is new.
    fn in_scope<R>(&self, scope: &Scope, call: impl FnOnce(&wit_transport::Scope) -> Result<R, Error>) -> Result<R, Error> {
        let mut cached = self.scope.borrow_mut();
        if cached.as_ref().is_none_or(|(id, _)| *id != scope.id()) {
            // The old handle goes first: the host caps how many a guest holds.
            *cached = None;
            *cached = Some((scope.id(), wit_transport::Scope::open(&scope.keys, &scope.leading)?));
        }
        let (_, handle) = cached.as_ref().expect("opened above");
        call(handle)
    }
}

/// After Redis answered that it lacks `script` (once per script and master in a server's life):
/// loads it on `master` and runs it again.
fn load_and_eval(master: u32, script: &Script, scope: &wit_transport::Scope, args: &[u8]) -> Result<Reply, Error> {
    wit_transport::load_script(master, script.source)?;
    wit_transport::eval(master, script.sha1(), scope, args)?
        .map(Reply::from)
        .ok_or_else(|| Error::Redis(format!("Redis lost {} right after loading it", script.name)))
}

impl Transport for HostTransport {
    /// EVALSHA; the script text crosses the boundary only when Redis lacks the script.
    fn eval(&self, script: &Script, scope: &Scope, args: &Args) -> Result<Reply, Error> {
        self.in_scope(scope, |handle| match wit_transport::eval(MASTER, script.sha1(), handle, args.framed())? {
            Some(reply) => Ok(reply.into()),
            None => load_and_eval(MASTER, script, handle, args.framed()),
        })
    }

    /// EVALSHA on several masters at once; the masters that lack the script get it loaded and
    /// are asked again one by one.
    fn eval_each(&self, script: &Script, scope: &Scope, calls: &[(u32, Args)], timeout_ms: u64) -> Vec<Result<Reply, Error>> {
        let framed: Vec<(u32, Vec<u8>)> = calls.iter().map(|(master, args)| (*master, args.framed().to_vec())).collect();
        let replies = self.in_scope(scope, |handle| {
            let replies = wit_transport::eval_each(script.sha1(), handle, &framed, timeout_ms);
            Ok(replies
                .into_iter()
                .zip(&framed)
                .map(|(reply, (master, args))| match reply {
                    Ok(Some(reply)) => Ok(reply.into()),
                    Ok(None) => load_and_eval(*master, script, handle, args),
                    Err(e) => Err(e.into()),
                })
                .collect())
        });
        replies.unwrap_or_else(|e| calls.iter().map(|_| Err(e.clone())).collect())
    }

    fn blocking_pop_on(&self, master: u32, key: &str, timeout_ms: u64, exact: bool) -> Result<Option<String>, Error> {
        wit_transport::blocking_pop(master, key, timeout_ms, exact).map_err(Error::from)
    }

    fn sleep(&self, ms: u64) -> Result<(), Error> {
        wit_transport::sleep(ms).map_err(Error::from)
    }

    fn command(&self, name: &str, key: &str, args: &[String]) -> Result<Reply, Error> {
        Ok(wit_transport::command(MASTER, name, key, args)?.into())
    }

    fn blocking_pop(&self, key: &str, timeout_ms: u64, exact: bool) -> Result<Option<String>, Error> {
        wit_transport::blocking_pop(MASTER, key, timeout_ms, exact).map_err(Error::from)
    }

    fn wait_replicas(&self) -> Result<(), Error> {
        wit_transport::wait_replicas(MASTER).map_err(Error::from)
    }

    fn monotonic_now_ns(&self) -> u64 {
        wit_transport::monotonic_now()
    }
}

impl From<wit_transport::Scalar> for Scalar {
    fn from(s: wit_transport::Scalar) -> Self {
        match s {
            wit_transport::Scalar::Nil => Scalar::Nil,
            wit_transport::Scalar::Int(i) => Scalar::Int(i),
            wit_transport::Scalar::Bulk(b) => Scalar::Bulk(b),
            wit_transport::Scalar::Status(s) => Scalar::Status(s),
        }
    }
}

impl From<wit_transport::Reply> for Reply {
    fn from(r: wit_transport::Reply) -> Self {
        match r {
            wit_transport::Reply::Scalar(s) => Reply::Scalar(s.into()),
            wit_transport::Reply::Array(items) => Reply::Array(items.into_iter().map(Into::into).collect()),
        }
    }
}

impl From<wit_types::Error> for Error {
    fn from(e: wit_types::Error) -> Self {
        use wit_types::Error as W;
        match e {
            W::InvalidArgument(m) => Error::InvalidArgument(m),
            W::Bounded(b) => Error::Bounded { key: b.key, current: b.current, initial: b.initial },
            W::WrongType(m) => Error::WrongType(m),
            W::Unreachable(m) => Error::Unreachable(m),
            W::Auth(m) => Error::Auth(m),
            W::Cancelled => Error::Cancelled,
            W::Forbidden(m) => Error::Forbidden(m),
            W::Redis(m) => Error::Redis(m),
            W::Quorum(m) => Error::Quorum(m),
            W::NotReplicated(m) => Error::NotReplicated(m),
        }
    }
}

impl From<Error> for wit_types::Error {
    fn from(e: Error) -> Self {
        use wit_types::Error as W;
        match e {
            Error::InvalidArgument(m) => W::InvalidArgument(m),
            Error::Bounded { key, current, initial } => W::Bounded(wit_types::BoundedInfo { key, current, initial }),
            Error::WrongType(m) => W::WrongType(m),
            Error::Unreachable(m) => W::Unreachable(m),
            Error::Auth(m) => W::Auth(m),
            Error::Cancelled => W::Cancelled,
            Error::Forbidden(m) => W::Forbidden(m),
            Error::Redis(m) => W::Redis(m),
            Error::Quorum(m) => W::Quorum(m),
            Error::NotReplicated(m) => W::NotReplicated(m),
        }
    }
}

fn permit(p: protocol::Permit) -> wit_types::Permit {
    wit_types::Permit { token: p.token, deadline_ms: p.deadline_ms, ttl_ms: p.ttl_ms }
}

fn permits(ps: Vec<protocol::Permit>) -> Vec<wit_types::Permit> {
    ps.into_iter().map(permit).collect()
}

struct Component;

/// Either mode behind one resource: the config's number of masters chooses.
struct Semaphore(Box<dyn Api>);

impl wit_api::Guest for Component {
    type Semaphore = Semaphore;
}

type Res<T> = Result<T, wit_types::Error>;

impl GuestSemaphore for Semaphore {
    fn open(c: wit_api::Config) -> Res<(wit_api::Semaphore, wit_api::Opened)> {
        let config = protocol::Config {
            key: c.key,
            value: c.value,
            bounded: c.bounded,
            lease_ms: c.lease_ms,
            holder: c.holder,
            guard_fresh_server: c.guard_fresh_server,
            existed: c.existed,
            create: c.create,
            masters: c.masters,
            raise_on_redis_errors: c.raise_on_redis_errors,
            replicate: c.replicate,
        };
        let (sem, opened): (Box<dyn Api>, _) = if config.masters > 1 {
            let (sem, opened) = multi::Semaphore::open(HostTransport::default(), config)?;
            (Box::new(sem), opened)
        } else {
            let (sem, opened) = protocol::Semaphore::open(HostTransport::default(), config)?;
            (Box::new(sem), opened)
        };
        let opened = wit_api::Opened { initial: opened.initial, created: opened.created };
        Ok((wit_api::Semaphore::new(Semaphore(sem)), opened))
    }

    fn acquire(&self, n: i64, blocking: bool, timeout: Option<f64>) -> Res<Vec<wit_types::Permit>> {
        Ok(permits(self.0.acquire(n, blocking, timeout)?))
    }

    fn release(&self, n: i64, mine: Vec<u64>, request: u64) -> Res<wit_api::Released> {
        let r = self.0.release(n, &mine, request)?;
        Ok(wit_api::Released { own_tokens: r.own, others: r.others, added: r.added })
    }

    fn release_permits(&self, tokens: Vec<u64>) -> Res<Vec<u64>> {
        Ok(self.0.release_permits(&tokens)?)
    }

    fn refresh(&self, tokens: Vec<u64>) -> Res<Vec<wit_types::Permit>> {
        Ok(permits(self.0.refresh(&tokens)?))
    }

    fn permits(&self) -> Res<Vec<wit_types::Permit>> {
        Ok(permits(self.0.permits()?))
    }

    fn value(&self) -> Res<u64> {
        Ok(self.0.value()?)
    }

    fn initial_value(&self) -> Res<u64> {
        Ok(self.0.initial_value()?)
    }

    fn locked(&self) -> Res<bool> {
        Ok(self.0.locked()?)
    }

    fn set_permits(&self, value: i64, request: u64) -> Res<u64> {
        Ok(self.0.set_permits(value, request)?)
    }

    fn add_permits(&self, delta: i64, request: u64) -> Res<u64> {
        Ok(self.0.add_permits(delta, request)?)
    }

    fn status(&self) -> Res<wit_api::Status> {
        let s = self.0.status()?;
        Ok(wit_api::Status {
            initial: s.initial,
            capacity: s.capacity,
            available: s.available,
            holders: s.holders.into_iter().map(|h| wit_api::HolderPermit { token: h.token, holder: h.holder, ttl_ms: h.ttl_ms }).collect(),
            waiters: s.waiters.into_iter().map(|w| wit_api::Waiter { id: w.id, n: w.n, holder: w.holder }).collect(),
        })
    }
}

export!(Component);
