//! redis-rs values and errors as the protocol sees them. One mapping for the component's
//! transport and for any native transport (the benchmark's), so they cannot disagree.

use pottery_semaphore_core::{Error, Reply, Scalar};
use redis::Value;

/// What a Redis failure means to the caller: unreachable, refused credentials, a key of another
/// type, or any other error reply.
pub fn error(e: &redis::RedisError) -> Error {
    if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() || e.is_timeout() {
        return Error::Unreachable(e.to_string());
    }
    if e.kind() == redis::ErrorKind::AuthenticationFailed {
        return Error::Auth(e.to_string());
    }
    // An unauthenticated client sending a long command gets a protocol error, not NOAUTH.
    if e.to_string().contains("unauthenticated") {
        return Error::Auth(format!("{e} (the server requires a password)"));
    }
    match e.code() {
        Some("WRONGPASS" | "NOAUTH" | "NOPERM") => Error::Auth(e.to_string()),
        // Up but not serving yet: replaying its AOF, or a cluster (node) not ready. The caller
        // sees what it would see a moment earlier, while the server was down.
        Some("LOADING" | "CLUSTERDOWN" | "MASTERDOWN" | "TRYAGAIN") => Error::Unreachable(e.to_string()),
        Some("WRONGTYPE") => Error::WrongType(e.to_string()),
        _ => Error::Redis(e.to_string()),
    }
}

fn scalar(v: Value) -> Result<Scalar, Error> {
    Ok(match v {
        Value::Nil => Scalar::Nil,
        Value::Int(i) => Scalar::Int(i),
        Value::BulkString(b) => Scalar::Bulk(b),
        Value::SimpleString(s) => Scalar::Status(s),
        Value::Okay => Scalar::Status("OK".into()),
        other => return Err(Error::Redis(format!("unsupported reply {other:?}"))),
    })
}

/// A reply of the protocol's scripts and commands: a scalar or a flat array.
pub fn reply(v: Value) -> Result<Reply, Error> {
    match v {
        Value::Array(items) => Ok(Reply::Array(items.into_iter().map(scalar).collect::<Result<_, _>>()?)),
        Value::ServerError(e) => Err(error(&e.into())),
        other => Ok(Reply::Scalar(scalar(other)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_wire(resp: &[u8]) -> Error {
        let value = redis::parse_redis_value(resp).expect("RESP");
        reply(value).expect_err("an error reply")
    }

    #[test]
    fn a_server_that_is_up_but_not_serving_is_unreachable_for_now() {
        for resp in [&b"-LOADING Redis is loading the dataset in memory\r\n"[..], b"-CLUSTERDOWN The cluster is down\r\n", b"-TRYAGAIN Multiple keys\r\n"] {
            assert!(matches!(from_wire(resp), Error::Unreachable(_)), "{}", String::from_utf8_lossy(resp));
        }
        assert!(matches!(from_wire(b"-WRONGTYPE Operation against a key\r\n"), Error::WrongType(_)));
        assert!(matches!(from_wire(b"-NOAUTH Authentication required.\r\n"), Error::Auth(_)));
        assert!(matches!(from_wire(b"-ERR unknown command\r\n"), Error::Redis(_)));
    }
}
