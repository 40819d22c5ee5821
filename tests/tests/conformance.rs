//! The shared conformance scenarios (tests/conformance/scenarios.json), as the Rust host runs
//! them; the Python and Kotlin suites run the same file.

use std::time::Duration;

use pottery_semaphore_host::{BlockingSemaphore, Error};
use pottery_semaphore_tests::{key, Flavor, Server};

use serde_json::Value as Json;

fn kind(e: &Error) -> &'static str {
    match e {
        Error::InvalidArgument(_) => "invalid_argument",
        Error::Bounded { .. } => "bounded",
        Error::WrongType(_) => "wrong_type",
        Error::Unreachable(_) => "unreachable",
        Error::Auth(_) => "auth",
        Error::Cancelled => "cancelled",
        Error::Forbidden(_) => "forbidden",
        Error::Redis(_) => "redis",
        Error::Quorum(_) => "quorum",
        Error::NotReplicated(_) => "not_replicated",
        Error::Guest(_) => "guest",
        Error::Runtime(_) => "runtime",
    }
}

fn open(server: &Server, key: &str, spec: &Json) -> Result<BlockingSemaphore, Error> {
    let key = match spec.get("key_length").and_then(Json::as_i64) {
        Some(len) => "k".repeat(len as usize),
        None => key.to_string(),
    };
    let options = server
        .options(&key)
        .permits(spec.get("value").and_then(Json::as_i64).unwrap_or(1))
        .bounded(spec.get("bounded").and_then(Json::as_bool).unwrap_or(true));
    BlockingSemaphore::open(options)
}

/// Runs one step; `Ok(Some(v))` is a result to compare with `expect`.
fn step(handles: &[BlockingSemaphore], server: &Server, key: &str, s: &Json) -> Result<Option<Json>, Error> {
    let op = s.get("op").and_then(Json::as_str).expect("op");
    if op == "open" {
        return open(server, key, s).map(|_| None);
    }
    let sem = &handles[s.get("handle").and_then(Json::as_i64).expect("handle") as usize];
    let n = s.get("n").and_then(Json::as_i64).unwrap_or(1);
    Ok(match op {
        "acquire" => {
            let blocking = s.get("blocking").and_then(Json::as_bool).unwrap_or(true);
            let timeout = match s.get("timeout") {
                Some(Json::String(t)) if t == "nan" => Some(f64::NAN),
                Some(t) => t.as_f64(),
                None => None,
            };
            Some(Json::Bool(!sem.acquire_n(n, blocking, timeout)?.is_empty()))
        }
        "release" => {
            sem.release(n)?;
            None
        }
        "value" => Some(Json::from(sem.value()?)),
        "initial_value" => Some(Json::from(sem.initial_value()?)),
        "locked" => Some(Json::Bool(sem.locked()?)),
        "held" => Some(Json::from(sem.held().len())),
        other => panic!("unknown op {other}"),
    })
}

#[test]
fn every_scenario_holds() {
    // Cargo names the package's directory at run time too (a copy of the workspace may run a
    // test binary built for the original).
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")), std::path::PathBuf::from);
    let text = std::fs::read_to_string(dir.join("conformance/scenarios.json")).unwrap();
    let doc: Json = serde_json::from_str(&text).expect("scenarios.json");
    let server = Server::start(Flavor::Redis);
    let scenarios = doc.get("scenarios").and_then(Json::as_array).expect("scenarios");
    assert!(scenarios.len() >= 10);
    for scenario in scenarios {
        let name = scenario.get("name").and_then(Json::as_str).unwrap_or("?");
        let k = key("conformance");
        let handles: Vec<BlockingSemaphore> = scenario
            .get("handles")
            .and_then(Json::as_array)
            .expect("handles")
            .iter()
            .map(|spec| open(&server, &k, spec).unwrap_or_else(|e| panic!("{name}: open: {e}")))
            .collect();
        for (i, s) in scenario.get("steps").and_then(Json::as_array).expect("steps").iter().enumerate() {
            let at = format!("{name}, step {i}");
            match (step(&handles, &server, &k, s), s.get("error").and_then(Json::as_str)) {
                (Err(e), Some(expected)) => {
                    assert_eq!(kind(&e), expected, "{at}: {e}");
                    if let Error::Bounded { current, initial, .. } = e {
                        assert_eq!(Some(current as i64), s.get("current").and_then(Json::as_i64), "{at}");
                        assert_eq!(Some(initial as i64), s.get("initial").and_then(Json::as_i64), "{at}");
                    }
                }
                (Err(e), None) => panic!("{at}: unexpected error {e}"),
                (Ok(_), Some(expected)) => panic!("{at}: expected a {expected} error"),
                (Ok(got), None) => {
                    if let Some(expected) = s.get("expect") {
                        assert_eq!(got.as_ref(), Some(expected), "{at}");
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
