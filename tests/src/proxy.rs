//! A TCP proxy the fault tests put between clients and each Redis server, so they can cut the
//! network to one server without root (no namespaces or firewall rules on CI machines).
//!
//! A cut behaves like a partition, not like a crash: nothing is reset, bytes just stop arriving,
//! so clients find out through their own time-outs. Connections that lived through a cut stay
//! blackholed (their dropped bytes would leave the RESP stream torn) until `restore`, which
//! closes them, as a middlebox that lost its connection state would.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Forwards a free loopback port to `127.0.0.1:<target>` until dropped.
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    target: SocketAddr,
    cut: AtomicBool,
    /// Bumped by every cut: a connection opened before the latest cut never forwards again.
    cuts: AtomicU64,
    stopping: AtomicBool,
    conns: Mutex<Vec<Conn>>,
    /// Armed by `lose_reply_to`: the bytes of the request whose reply is to be lost.
    trap: Mutex<Option<Vec<u8>>>,
    /// Set by `delay_new_connections`: how long a new connection waits before it forwards.
    setup_delay: Mutex<std::time::Duration>,
}

#[derive(Debug)]
struct Conn {
    client: TcpStream,
    /// `None` for a connection accepted during a cut: it was never forwarded.
    upstream: Option<TcpStream>,
    born: u64,
    closed: Arc<AtomicBool>,
}

impl Conn {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.client.shutdown(Shutdown::Both);
        if let Some(up) = &self.upstream {
            let _ = up.shutdown(Shutdown::Both);
        }
    }
}

impl Shared {
    fn conns(&self) -> MutexGuard<'_, Vec<Conn>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn blackholed(&self, born: u64) -> bool {
        self.cut.load(Ordering::SeqCst) || self.cuts.load(Ordering::SeqCst) != born
    }
}

impl Proxy {
    pub fn start(target_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listener");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared {
            target: SocketAddr::from(([127, 0, 0, 1], target_port)),
            cut: AtomicBool::new(false),
            cuts: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
            trap: Mutex::new(None),
            setup_delay: Mutex::new(std::time::Duration::ZERO),
        });
        let s = shared.clone();
        let acceptor = std::thread::spawn(move || accept_loop(listener, s));
        Proxy { port, shared, acceptor: Some(acceptor) }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Partitions the server off: open connections stop forwarding (bytes either way are
    /// dropped, the sockets stay open) and new ones are accepted but never forwarded.
    pub fn cut(&self) {
        let _conns = self.shared.conns();
        self.shared.cuts.fetch_add(1, Ordering::SeqCst);
        self.shared.cut.store(true, Ordering::SeqCst);
    }

    /// Heals the partition: new connections forward again, and the ones blackholed by the cut
    /// are closed so their clients reconnect.
    pub fn restore(&self) {
        let mut conns = self.shared.conns();
        self.shared.cut.store(false, Ordering::SeqCst);
        let now = self.shared.cuts.load(Ordering::SeqCst);
        for conn in conns.iter().filter(|c| c.born != now || c.upstream.is_none()) {
            conn.close();
        }
        conns.retain(|c| !c.closed.load(Ordering::SeqCst));
    }

    pub fn is_cut(&self) -> bool {
        self.shared.cut.load(Ordering::SeqCst)
    }

    /// The next request whose bytes contain `pattern` reaches the server, but not its reply:
    /// the connection closes `REPLY_LOST_AFTER` later, as one that broke after the request went
    /// out. Once; other connections are not touched.
    pub fn lose_reply_to(&self, pattern: &[u8]) {
        *self.shared.trap.lock().unwrap_or_else(|e| e.into_inner()) = Some(pattern.to_vec());
    }

    /// Connections accepted from now on forward nothing for `delay` (their connect succeeds;
    /// the first reply, to the client's setup, comes late): a server slow to take on a client.
    pub fn delay_new_connections(&self, delay: std::time::Duration) {
        *self.shared.setup_delay.lock().unwrap_or_else(|e| e.into_inner()) = delay;
    }
}

/// How long a connection whose reply `lose_reply_to` drops stays open (the server runs the
/// request meanwhile).
const REPLY_LOST_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

impl Shared {
    /// Whether `chunk` sets off the armed trap (which it disarms).
    fn springs_trap(&self, chunk: &[u8]) -> bool {
        let mut trap = self.trap.lock().unwrap_or_else(|e| e.into_inner());
        let found = trap.as_ref().is_some_and(|p| chunk.windows(p.len()).any(|w| w == p.as_slice()));
        if found {
            *trap = None;
        }
        found
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the acceptor out of `accept`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for conn in self.shared.conns().drain(..) {
            conn.close();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        let delay = *shared.setup_delay.lock().unwrap_or_else(|e| e.into_inner());
        if delay.is_zero() {
            forward(client, &shared);
        } else {
            let shared = shared.clone();
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                forward(client, &shared);
            });
        }
    }
}

/// Connects an accepted client to the server (unless cut) and starts copying both ways.
fn forward(client: TcpStream, shared: &Arc<Shared>) {
    let _ = client.set_nodelay(true);
    let mut conns = shared.conns();
    conns.retain(|c| !c.closed.load(Ordering::SeqCst));
    let born = shared.cuts.load(Ordering::SeqCst);
    let upstream = if shared.cut.load(Ordering::SeqCst) {
        None
    } else {
        match TcpStream::connect(shared.target) {
            Ok(up) => Some(up),
            // The server is down (restarting): refuse as it would.
            Err(_) => return,
        }
    };
    let (Ok(client_r), Ok(client_w)) = (client.try_clone(), client.try_clone()) else { return };
    let closed = Arc::new(AtomicBool::new(false));
    match &upstream {
        Some(up) => {
            let _ = up.set_nodelay(true);
            let (Ok(up_r), Ok(up_w)) = (up.try_clone(), up.try_clone()) else { return };
            let lost = Arc::new(AtomicBool::new(false));
            let (s, c, l) = (shared.clone(), closed.clone(), lost.clone());
            std::thread::spawn(move || pump(client_r, Some(up_w), born, &s, &c, &l, true));
            let (s, c) = (shared.clone(), closed.clone());
            std::thread::spawn(move || pump(up_r, Some(client_w), born, &s, &c, &lost, false));
        }
        None => {
            let s = shared.clone();
            let c = closed.clone();
            drop(client_w);
            std::thread::spawn(move || pump(client_r, None, born, &s, &c, &AtomicBool::new(false), true));
        }
    }
    conns.push(Conn { client, upstream, born, closed });
}

/// Copies `from` to `to` while the connection is not blackholed, and drops the bytes while it
/// is. A client that goes away closes both sides; a server that goes away closes the client's
/// side only when the connection is not blackholed (across a partition, nobody would tell it).
/// `lost`: the connection's replies are dropped from then on, and it is about to close.
fn pump(mut from: TcpStream, to: Option<TcpStream>, born: u64, shared: &Shared, closed: &AtomicBool, lost: &AtomicBool, from_client: bool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if shared.blackholed(born) || (!from_client && lost.load(Ordering::SeqCst)) {
            continue;
        }
        if from_client && shared.springs_trap(&buf[..n]) {
            lost.store(true, Ordering::SeqCst);
            let (client, closing) = (from.try_clone(), to.as_ref().map(TcpStream::try_clone));
            std::thread::spawn(move || {
                std::thread::sleep(REPLY_LOST_AFTER);
                for stream in [client.ok(), closing.and_then(Result::ok)].into_iter().flatten() {
                    let _ = stream.shutdown(Shutdown::Both);
                }
            });
        }
        let Some(mut to) = to.as_ref() else { continue };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    if from_client || !shared.blackholed(born) {
        closed.store(true, Ordering::SeqCst);
        let _ = from.shutdown(Shutdown::Both);
        if let Some(to) = &to {
            let _ = to.shutdown(Shutdown::Both);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;
    use std::time::Duration;

    /// An echo server on a free port.
    fn echo() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut w = s.try_clone().unwrap();
                    let _ = std::io::copy(&mut &s, &mut w);
                });
            }
        });
        port
    }

    fn connect(proxy: &Proxy) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        s
    }

    /// `Some(bytes)` echoed, `None` when the read timed out (silence), `Some(empty)` on close.
    fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> Option<Vec<u8>> {
        if s.write_all(msg).is_err() {
            return Some(Vec::new());
        }
        let mut buf = vec![0u8; msg.len()];
        let mut got = 0;
        while got < msg.len() {
            match s.read(&mut buf[got..]) {
                Ok(0) => return Some(buf[..got].to_vec()),
                Ok(n) => got += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return None,
                Err(_) => return Some(Vec::new()),
            }
        }
        Some(buf)
    }

    #[test]
    fn forwards_blackholes_during_a_cut_and_recovers() {
        let proxy = Proxy::start(echo());
        let mut before = connect(&proxy);
        assert_eq!(roundtrip(&mut before, b"ping").as_deref(), Some(&b"ping"[..]));

        proxy.cut();
        assert!(proxy.is_cut());
        // Silence, not a reset, on an open connection and on a new one.
        assert_eq!(roundtrip(&mut before, b"lost"), None);
        let mut during = connect(&proxy);
        assert_eq!(roundtrip(&mut during, b"lost"), None);

        proxy.restore();
        let mut after = connect(&proxy);
        assert_eq!(roundtrip(&mut after, b"back").as_deref(), Some(&b"back"[..]));
        // Connections that lived through the cut are closed, not resumed mid-stream.
        assert_eq!(roundtrip(&mut before, b"x").as_deref(), Some(&b""[..]));
        assert_eq!(roundtrip(&mut during, b"x").as_deref(), Some(&b""[..]));

        drop(proxy);
        assert_eq!(roundtrip(&mut after, b"x").as_deref(), Some(&b""[..]));
    }
}
