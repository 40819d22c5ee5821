/// Why an operation failed; mirrors the WIT `error` variant case for case.
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
    /// Several masters: so many of them failed that no majority could be formed.
    #[error("no quorum: {0}")]
    Quorum(String),
    /// Fewer replicas than configured acknowledged the change in time.
    #[error("not replicated: {0}")]
    NotReplicated(String),
}

impl Error {
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    pub(crate) fn protocol(msg: impl Into<String>) -> Self {
        Error::Redis(format!("unexpected script reply: {}", msg.into()))
    }
}
