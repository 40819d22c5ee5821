//! What to open: where Redis is, which semaphore, how it behaves, and which replicas must
//! acknowledge its changes.

use std::time::Duration;

use crate::runtime::Runtime;

/// Wait for replicas to acknowledge every change that matters (grants, releases, changes of the
/// number of permits): with a primary and replicas (Sentinel, managed Redis), a fail-over to a
/// replica that lacks a grant would grant the same permits again. An acquire whose grant is not
/// acknowledged gives it back and fails with [`Error::NotReplicated`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaAck {
    /// Replicas that must acknowledge (`WAIT replicas timeout`).
    pub replicas: u32,
    /// How long to wait for them; at least 1 ms and below 4 s (a WAIT must answer within the
    /// connection's 5 s response time-out, with room to spare).
    pub timeout: Duration,
    /// Wait until the replicas have also written the change to their append-only file
    /// (`WAITAOF 0 replicas timeout`, Redis 7.2+ / Valkey; the replicas need `appendonly yes`).
    pub aof: bool,
}

impl ReplicaAck {
    pub fn new(replicas: u32, timeout: Duration) -> Self {
        ReplicaAck { replicas, timeout, aof: false }
    }

    pub fn aof(mut self, aof: bool) -> Self {
        self.aof = aof;
        self
    }
}

/// What to open: where Redis is, which semaphore, and how it behaves. Printed (`{:?}`) without
/// the passwords of its URLs.
#[derive(Clone)]
pub struct Options {
    /// Where the semaphore lives, each `redis://[user:password@]host:port[/db]`, `rediss://…`
    /// (TLS) or `unix:///path/to/socket`. One URL: one server. Several: independent masters,
    /// each permit a slot held on a majority of them (Redlock mode). With `cluster`, the seed
    /// nodes of one Redis Cluster.
    pub masters: Vec<String>,
    /// `masters` are seed nodes of a Redis Cluster (all keys of a semaphore live in one slot).
    pub cluster: bool,
    /// With several masters: when so many of them fail that no majority is left, `acquire` raises
    /// a quorum error instead of answering "not acquired".
    pub raise_on_redis_errors: bool,
    pub key: String,
    /// Permits when the semaphore is first created; later openers with another value do not change it.
    pub value: i64,
    /// Refuse releases beyond the initial value (the default, like `threading.BoundedSemaphore`).
    pub bounded: bool,
    /// Lease of each permit; refreshed every third of it while this process lives.
    pub lease: Duration,
    /// Runtime to use; `None` means [`Runtime::global`].
    pub runtime: Option<&'static Runtime>,
    /// On a server that started less than a lease ago, a semaphore created now grants nothing
    /// until a lease after that start, in case a restart without persistence wiped permits that
    /// are still in use; and a semaphore this handle creates grants nothing for a lease after
    /// any restart it sees later, in case the state came back older (an RDB snapshot). On by
    /// default; turn it off only where Redis persists every write (`appendfsync always`).
    pub guard_fresh_server: bool,
    /// Create the semaphore if it does not exist (the default); when false, opening a missing
    /// one is an `InvalidArgument` error (for tools that only inspect).
    pub create: bool,
    /// Replicas that must acknowledge changes; `None` (the default): none waited for.
    pub replicas: Option<ReplicaAck>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("masters", &self.masters.iter().map(|url| redacted(url)).collect::<Vec<_>>())
            .field("cluster", &self.cluster)
            .field("raise_on_redis_errors", &self.raise_on_redis_errors)
            .field("key", &self.key)
            .field("value", &self.value)
            .field("bounded", &self.bounded)
            .field("lease", &self.lease)
            .field("runtime", &self.runtime)
            .field("guard_fresh_server", &self.guard_fresh_server)
            .field("create", &self.create)
            .field("replicas", &self.replicas)
            .finish()
    }
}

/// `url` with the password of its user-info (`user:password@`) and any `pass` parameter hidden,
/// for logs and messages. The user-info ends at the later of the last `@` before the first `/`
/// and the last `@` before the first `?` or `#`, or else at the last `@` of all: a raw `@`, `/`,
/// `?` or `#` in a password (one that breaks the URL, and so gets logged) hides more, never
/// less. A parameter is `pass` as the URL parser reads its name (`%70ass` too), and its value
/// runs, for the same reason, past a `#` and past any `&` but one that starts another
/// parameter (`name=…`).
pub fn redacted(url: &str) -> String {
    let authority = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[authority..];
    let last_at_before = |end: Option<usize>| rest[..end.unwrap_or(rest.len())].rfind('@');
    let user_info_end = last_at_before(rest.find('/')).max(last_at_before(rest.find(['?', '#']))).or_else(|| rest.rfind('@'));
    let shown = match (user_info_end, rest.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!("{}{}***{}", &url[..authority], &rest[..=colon], &rest[at..]),
        _ => url.to_string(),
    };
    let Some((base, query)) = shown.split_once('?') else { return shown };
    let mut params: Vec<String> = Vec::new();
    for part in query.split('&') {
        match params.last_mut() {
            // No `=`: the value before goes on (a raw `&` in it).
            Some(value) if !part.contains('=') => {
                value.push('&');
                value.push_str(part);
            }
            _ => params.push(part.to_string()),
        }
    }
    let params: Vec<String> = params
        .into_iter()
        .map(|param| match param.split_once('=') {
            Some((name, _)) if is_pass(name) => format!("{name}=***"),
            _ => param,
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

/// Whether a query parameter named `name` (as written) is the password, read as the URL parser
/// reads it.
fn is_pass(name: &str) -> bool {
    form_urlencoded::parse(name.as_bytes()).next().is_some_and(|(decoded, _)| decoded == "pass")
}

impl Options {
    /// A semaphore on one Redis server.
    pub fn new(url: impl Into<String>, key: impl Into<String>) -> Self {
        Options::with_masters([url.into()], key)
    }

    /// A semaphore on several independent masters (Redlock mode when there is more than one).
    pub fn with_masters(urls: impl IntoIterator<Item = String>, key: impl Into<String>) -> Self {
        Options {
            masters: urls.into_iter().collect(),
            cluster: false,
            raise_on_redis_errors: false,
            key: key.into(),
            value: 1,
            bounded: true,
            lease: Duration::from_secs(10),
            runtime: None,
            guard_fresh_server: true,
            create: true,
            replicas: None,
        }
    }

    /// `masters` are the seed nodes of one Redis Cluster.
    pub fn cluster(mut self, cluster: bool) -> Self {
        self.cluster = cluster;
        self
    }

    pub fn raise_on_redis_errors(mut self, raise: bool) -> Self {
        self.raise_on_redis_errors = raise;
        self
    }

    pub fn permits(mut self, value: i64) -> Self {
        self.value = value;
        self
    }

    pub fn bounded(mut self, bounded: bool) -> Self {
        self.bounded = bounded;
        self
    }

    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    pub fn guard_fresh_server(mut self, guard: bool) -> Self {
        self.guard_fresh_server = guard;
        self
    }

    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    pub fn replica_ack(mut self, ack: ReplicaAck) -> Self {
        self.replicas = Some(ack);
        self
    }

    pub fn runtime(mut self, runtime: &'static Runtime) -> Self {
        self.runtime = Some(runtime);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn passwords_are_hidden_however_they_break_the_url() {
        for (url, shown) in [
            ("redis://app:s3cret@h:6379/0", "redis://app:***@h:6379/0"),
            ("redis://ops@corp.com:hunter2@h:6379/0", "redis://ops@corp.com:***@h:6379/0"),
            ("redis://app:p@ssw0rd@h/0", "redis://app:***@h/0"),
            ("rediss://:a@b@h", "rediss://:***@h"),
            ("redis://app:p#ss@h:6379", "redis://app:***@h:6379"),
            ("redis://app:p?ss@h/0", "redis://app:***@h/0"),
            ("redis://app:ab/cd+ef==@h:6379/0", "redis://app:***@h:6379/0"),
            ("redis://app:p@ss/w@h/0", "redis://app:***@h/0"),
            ("redis://app:a/b?c@h", "redis://app:***@h"),
            ("unix:///r.sock?db=0&pass=hunter2", "unix:///r.sock?db=0&pass=***"),
            ("unix:///r.sock?pass=a&pass=b&db=1", "unix:///r.sock?pass=***&pass=***&db=1"),
            ("unix:///r.sock?%70ass=hunter2&db=1", "unix:///r.sock?%70ass=***&db=1"),
            ("unix:///r.sock?p%61%73s=hunter2", "unix:///r.sock?p%61%73s=***"),
            ("unix:///r.sock?pass=hun#ter2", "unix:///r.sock?pass=***"),
            ("unix:///r.sock?pass=hun&ter2&db=1", "unix:///r.sock?pass=***&db=1"),
            ("unix:///r.sock?tls&pass=x", "unix:///r.sock?tls&pass=***"),
            ("unix:///r.sock?passive=1&bypass=2&pass%=3", "unix:///r.sock?passive=1&bypass=2&pass%=3"),
            ("redis://u@h:1/0?x=a:b@c", "redis://u@h:1/0?x=a:b@c"),
            ("redis://h:6379", "redis://h:6379"),
        ] {
            assert_eq!(redacted(url), shown, "{url}");
        }
        let options = super::Options::new("redis://app:s3cret@h/0", "k");
        assert!(!format!("{options:?}").contains("s3cret"), "{options:?}");
    }
}
