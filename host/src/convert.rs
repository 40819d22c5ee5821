//! redis-rs values and errors as the protocol sees them. One mapping for the component's
//! transport and for any native transport (the benchmark's), so they cannot disagree.

use pottery_semaphore_core::args::resp_bulk;
use pottery_semaphore_core::{Args, Decimal, Error, Reply, Scalar};
use redis::Value;

/// What a Redis failure means to the caller: unreachable, refused credentials, a key of another
/// type, or any other error reply.
pub fn error(e: &redis::RedisError) -> Error {
    // redis-rs's cluster client reports seed nodes that refused the credentials as an I/O
    // error ("Failed to create initial connections") whose detail names the refusal.
    let detail = e.detail().unwrap_or_default();
    if e.is_io_error() && ["AuthenticationFailed", "WRONGPASS", "NOAUTH", "NOPERM"].iter().any(|refusal| detail.contains(refusal)) {
        return Error::Auth(e.to_string());
    }
    if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() || e.is_timeout() {
        return Error::Unreachable(e.to_string());
    }
    if e.kind() == redis::ErrorKind::AuthenticationFailed {
        return Error::Auth(e.to_string());
    }
    // Two more ways a server that wants a password refuses a client that gave none. A long
    // command gets a protocol error, not NOAUTH ("Protocol error: unauthenticated multibulk
    // length"): told by its code and start, as the text of other errors may quote a key that
    // holds the word. And a database but 0, selected as the connection is set up: redis-rs
    // wraps the NOAUTH reply in an error of its own.
    let text = e.to_string();
    let refused_select = text.starts_with("Redis server refused to switch database");
    if matches!(e.code(), None | Some("ERR")) && e.detail().unwrap_or_default().starts_with("Protocol error: unauthenticated")
        || e.code().is_none() && text.contains("Protocol error: unauthenticated")
        || refused_select && text.contains("Authentication required")
    {
        return Error::Auth(format!("{text} (the server requires a password)"));
    }
    // The same wrapping hides an ACL user's NOPERM for SELECT (the user may not switch database).
    if refused_select && text.contains("no permissions") {
        return Error::Auth(text);
    }
    match e.code() {
        Some("WRONGPASS" | "NOAUTH" | "NOPERM") => Error::Auth(e.to_string()),
        // A command or key the ACL user may not use, refused inside a script: a plain ERR (Redis
        // 7: "The user executing the script can't run this command" or "can't access at least
        // one of the keys", Redis 6.2 wraps it in "Error running script", Valkey: "ACL failure
        // in script").
        Some("ERR") if refused_by_acl_in_script(e.detail().unwrap_or_default()) => Error::Auth(e.to_string()),
        // Up but not serving yet: replaying its AOF, or a cluster (node) not ready. The caller
        // sees what it would see a moment earlier, while the server was down.
        Some("LOADING" | "CLUSTERDOWN" | "MASTERDOWN" | "TRYAGAIN") => Error::Unreachable(e.to_string()),
        Some("WRONGTYPE") => Error::WrongType(e.to_string()),
        // Redis 6.2 wraps a command's error inside a script: "Error running script (call to
        // f_…): @user_script:9: WRONGTYPE Operation against a key…".
        Some("ERR") if e.detail().unwrap_or_default().contains(": WRONGTYPE ") => Error::WrongType(e.to_string()),
        _ => Error::Redis(e.to_string()),
    }
}

fn refused_by_acl_in_script(detail: &str) -> bool {
    detail.contains("The user executing the script can't ") || detail.contains("ACL failure in script")
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

/// Appends a call's framed arguments to a redis-rs command, one argument each.
pub fn push_args(cmd: &mut redis::Cmd, args: &Args) {
    for arg in args.iter() {
        cmd.arg(arg);
    }
}

/// The part of an EVALSHA that is the same on every call of one semaphore (`numkeys`, its keys
/// and the leading arguments), framed in RESP once. [`EvalshaFrame::write`] adds the rest, so a
/// call builds no redis-rs `Cmd`: the host's blocking path and the benchmark's native transport
/// send the bytes with `req_packed_command`.
#[derive(Debug, Clone)]
pub struct EvalshaFrame {
    fixed: Args,
}

impl EvalshaFrame {
    pub fn new(keys: &[String], leading: &[String]) -> Self {
        let mut fixed = Args::default();
        fixed.push(Decimal::new(keys.len() as u64).as_bytes());
        for arg in keys.iter().chain(leading) {
            fixed.push(arg.as_bytes());
        }
        EvalshaFrame { fixed }
    }

    /// EVALSHA `sha1` with this frame's fixed part and then `args` (already framed: appended
    /// as they are), framed into `out` (cleared first): what redis-rs's `Cmd` would send.
    pub fn write(&self, out: &mut Vec<u8>, sha1: &str, args: &Args) {
        out.clear();
        out.push(b'*');
        out.extend_from_slice(Decimal::new((2 + self.fixed.len() + args.len()) as u64).as_bytes());
        out.extend_from_slice(b"\r\n");
        resp_bulk(out, b"EVALSHA");
        resp_bulk(out, sha1.as_bytes());
        out.extend_from_slice(self.fixed.framed());
        out.extend_from_slice(args.framed());
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
    fn acl_refusals_inside_scripts_are_auth_errors() {
        for resp in [
            &b"-ERR The user executing the script can't run this command or subcommand script: 1f0e, on @user_script:9.\r\n"[..],
            b"-ERR The user executing the script can't access at least one of the keys mentioned in the command script: 1f0e, on @user_script:9.\r\n",
            b"-ERR Error running script (call to f_1f0e): @user_script:9: The user executing the script can't run this command or subcommand\r\n",
            b"-ERR ACL failure in script: User app has no permissions to run the 'time' command script: 1f0e, on @user_script:9.\r\n",
        ] {
            assert!(matches!(from_wire(resp), Error::Auth(_)), "{}", String::from_utf8_lossy(resp));
        }
        assert!(matches!(from_wire(b"-ERR user_script:1: Script attempted to access nonexistent global variable 'x'\r\n"), Error::Redis(_)));
    }

    #[test]
    fn a_server_that_is_up_but_not_serving_is_unreachable_for_now() {
        for resp in [&b"-LOADING Redis is loading the dataset in memory\r\n"[..], b"-CLUSTERDOWN The cluster is down\r\n", b"-TRYAGAIN Multiple keys\r\n"] {
            assert!(matches!(from_wire(resp), Error::Unreachable(_)), "{}", String::from_utf8_lossy(resp));
        }
        assert!(matches!(from_wire(b"-WRONGTYPE Operation against a key\r\n"), Error::WrongType(_)));
        let wrapped = b"-ERR Error running script (call to f_1f0e): @user_script:9: WRONGTYPE Operation against a key holding the wrong kind of value\r\n";
        assert!(matches!(from_wire(wrapped), Error::WrongType(_)), "Redis 6.2's");
        assert!(matches!(from_wire(b"-NOAUTH Authentication required.\r\n"), Error::Auth(_)));
        assert!(matches!(from_wire(b"-ERR Protocol error: unauthenticated multibulk length\r\n"), Error::Auth(_)));
        // A key's name quoted in another error says nothing about authentication.
        let quoted = b"-WRONGTYPE key pottery-semaphore:{unauthenticated}:meta holds a string, not part of a semaphore\r\n";
        assert!(matches!(from_wire(quoted), Error::WrongType(_)));
        assert!(matches!(from_wire(b"-ERR unknown command\r\n"), Error::Redis(_)));
    }

    #[test]
    fn an_evalsha_framed_in_place_is_what_redis_rs_would_send() {
        let keys: Vec<String> = ["{k}:meta", "{k}:leases", "{k}:queue", "{k}:waiters"].map(String::from).into();
        let leading = vec!["holder".to_string(), String::new(), "10000".into()];
        let args = vec!["1".to_string(), "é".into(), "1234567890123".into()];
        let sha1 = "a".repeat(40);
        let mut framed = b"left over".to_vec();
        EvalshaFrame::new(&keys, &leading).write(&mut framed, &sha1, &args.iter().collect());
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&sha1).arg(keys.len()).arg(&keys).arg(&leading).arg(&args);
        assert_eq!(String::from_utf8_lossy(&framed), String::from_utf8_lossy(&cmd.get_packed_command()));
    }
}
