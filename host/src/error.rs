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
        }
    }
}

/// Redis failures as the guest sees them through the transport.
pub(crate) fn from_redis(e: &redis::RedisError) -> wit::Error {
    if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() || e.is_timeout() {
        return wit::Error::Unreachable(e.to_string());
    }
    if e.kind() == redis::ErrorKind::AuthenticationFailed {
        return wit::Error::Auth(e.to_string());
    }
    // An unauthenticated client sending a long command gets a protocol error, not NOAUTH.
    if e.to_string().contains("unauthenticated") {
        return wit::Error::Auth(format!("{e} (the server requires a password)"));
    }
    match e.code() {
        Some("WRONGPASS" | "NOAUTH" | "NOPERM") => wit::Error::Auth(e.to_string()),
        Some("WRONGTYPE") => wit::Error::WrongType(e.to_string()),
        _ => wit::Error::Redis(e.to_string()),
    }
}

pub(crate) fn guest_trap(e: wasmtime::Error) -> Error {
    Error::Guest(format!("{e:#}"))
}
