use crate::bindings::types as wit;

/// Errors of the host API: the guest's typed errors, case for case, plus what can go wrong in the
/// runtime around it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("cannot release: semaphore {key:?} would exceed its initial value {initial} ({current} available)")]
    Bounded { key: String, current: u64, initial: u64 },
    #[error("wrong type: {0}")]
    WrongType(String),
    #[error("Redis is unreachable: {0}")]
    Unreachable(String),
    #[error("Redis refused the credentials: {0}")]
    Auth(String),
    #[error("cancelled")]
    Cancelled,
    #[error("forbidden by the host sandbox: {0}")]
    Forbidden(String),
    #[error("Redis error: {0}")]
    Redis(String),
    /// Several masters: so many of them failed that no majority could decide.
    #[error("no quorum: {0}")]
    Quorum(String),
    /// Fewer replicas than `Options::replicas` asks for acknowledged a change in time. An
    /// acquire gave its permits back; a release or a change of permits did happen on the primary.
    #[error("not replicated: {0}")]
    NotReplicated(String),
    /// The guest trapped (out of memory, over its time budget, a bug); the instance is discarded.
    #[error("the protocol component failed: {0}")]
    Guest(String),
    /// The runtime could not start (component, engine or thread setup).
    #[error("runtime error: {0}")]
    Runtime(String),
}

impl From<wit::Error> for Error {
    fn from(e: wit::Error) -> Self {
        match e {
            wit::Error::InvalidArgument(m) => Error::InvalidArgument(m),
            wit::Error::Bounded(b) => Error::Bounded { key: b.key, current: b.current, initial: b.initial },
            wit::Error::WrongType(m) => Error::WrongType(m),
            wit::Error::Unreachable(m) => Error::Unreachable(m),
            wit::Error::Auth(m) => Error::Auth(m),
            wit::Error::Cancelled => Error::Cancelled,
            wit::Error::Forbidden(m) => Error::Forbidden(m),
            wit::Error::Redis(m) => Error::Redis(m),
            wit::Error::Quorum(m) => Error::Quorum(m),
            wit::Error::NotReplicated(m) => Error::NotReplicated(m),
        }
    }
}

/// Redis failures as the guest sees them through the transport.
pub(crate) fn from_redis(e: &redis::RedisError) -> wit::Error {
    crate::convert::error(e).into()
}

impl From<pottery_semaphore_core::Error> for wit::Error {
    fn from(e: pottery_semaphore_core::Error) -> Self {
        use pottery_semaphore_core::Error as E;
        match e {
            E::InvalidArgument(m) => wit::Error::InvalidArgument(m),
            E::Bounded { key, current, initial } => wit::Error::Bounded(wit::BoundedInfo { key, current, initial }),
            E::WrongType(m) => wit::Error::WrongType(m),
            E::Unreachable(m) => wit::Error::Unreachable(m),
            E::Auth(m) => wit::Error::Auth(m),
            E::Cancelled => wit::Error::Cancelled,
            E::Forbidden(m) => wit::Error::Forbidden(m),
            E::Redis(m) => wit::Error::Redis(m),
            E::Quorum(m) => wit::Error::Quorum(m),
            E::NotReplicated(m) => wit::Error::NotReplicated(m),
        }
    }
}

pub(crate) fn guest_trap(e: wasmtime::Error) -> Error {
    Error::Guest(format!("{e:#}"))
}
