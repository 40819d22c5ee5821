//! Counts the requests clients send to a server, from its `MONITOR` stream: what a round-trip
//! claim is about. Commands that scripts run inside Redis (shown as from "lua") are not
//! requests and are left out; so are this module's own markers.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::Server;

pub struct Requests {
    stream: BufReader<TcpStream>,
    markers: redis::Connection,
    marker_addr: String,
    next_marker: u64,
}

/// One request as `MONITOR` shows it: the client's address and the command's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub client: String,
    pub command: String,
}

impl std::fmt::Debug for Requests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requests").field("marker_addr", &self.marker_addr).finish_non_exhaustive()
    }
}

impl Requests {
    pub fn start(server: &Server) -> Requests {
        let mut stream = TcpStream::connect(("127.0.0.1", server.port)).expect("monitor connection");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("read time-out");
        stream.write_all(b"MONITOR\r\n").expect("MONITOR");
        let mut stream = BufReader::new(stream);
        let mut ok = String::new();
        stream.read_line(&mut ok).expect("MONITOR reply");
        assert_eq!(ok.trim_end(), "+OK", "MONITOR refused");
        let mut markers = server.connection();
        let marker_addr: String = redis::cmd("CLIENT").arg("INFO").query::<String>(&mut markers).expect("CLIENT INFO")
            .split(' ')
            .find_map(|field| field.strip_prefix("addr=").map(str::to_owned))
            .expect("the marker connection's address");
        let mut requests = Requests { stream, markers, marker_addr, next_marker: 0 };
        requests.since_last();
        requests
    }

    /// The requests of every other client since the previous call (or `start`), in order.
    pub fn since_last(&mut self) -> Vec<Request> {
        let marker = format!("pottery-semaphore-tests-marker-{}", self.next_marker);
        self.next_marker += 1;
        let _: String = redis::cmd("ECHO").arg(&marker).query(&mut self.markers).expect("ECHO");
        let mut seen = Vec::new();
        loop {
            let mut line = String::new();
            let read = self.stream.read_line(&mut line).expect("MONITOR line");
            assert!(read > 0, "MONITOR stream ended");
            // +1795861799.696248 [0 127.0.0.1:40348] "EVALSHA" "..." ...
            let Some((client, rest)) = line.split_once(" [").and_then(|(_, r)| r.split_once("] ")) else { continue };
            let client = client.split_once(' ').map_or(client, |(_, addr)| addr).to_owned();
            let command = rest.split('"').nth(1).unwrap_or_default().to_ascii_uppercase();
            if client == self.marker_addr {
                if rest.contains(&marker) {
                    return seen;
                }
            } else if client != "lua" {
                seen.push(Request { client, command });
            }
        }
    }
}
