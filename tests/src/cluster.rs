//! A throwaway Redis Cluster: three primaries without replicas on free loopback ports, joined
//! with `redis-cli --cluster create` (or `valkey-cli`), killed on drop.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::proxy::Proxy;
use crate::{Flavor, Server};

/// A running cluster owned by a test.
#[derive(Debug)]
pub struct Cluster {
    pub flavor: Flavor,
    pub nodes: Vec<Server>,
    /// One per node, in the same order, when clients reach the nodes through proxies.
    pub proxies: Vec<Proxy>,
}

impl Cluster {
    /// Starts `n` cluster-enabled servers (each with its own `nodes.conf` in its own directory),
    /// assigns every slot among them and waits until each node reports `cluster_state:ok`.
    pub fn start(flavor: Flavor, n: usize) -> Cluster {
        Cluster::join((0..n).map(|_| Cluster::node(flavor, &[])).collect())
    }

    /// A cluster-enabled server, not yet part of a cluster, with `extra` arguments.
    pub fn node(flavor: Flavor, extra: &[&str]) -> Server {
        // The bus port defaults to port + 10000, which overflows for high ephemeral ports.
        let mut args = vec!["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-port", "{free_port}"];
        args.extend_from_slice(extra);
        Server::start_with(flavor, &args)
    }

    /// `n` nodes, each behind a [`Proxy`] and announcing the proxy's port
    /// (`cluster-announce-port`), so that the slot map and redirections lead clients through the
    /// proxies (the cluster bus runs directly): a test can cut one node off its clients. The
    /// announced port stays across restarts.
    pub fn start_behind_proxies(flavor: Flavor, n: usize, extra: &[&str]) -> Cluster {
        let mut nodes: Vec<Server> = (0..n).map(|_| Cluster::node(flavor, extra)).collect();
        let proxies: Vec<Proxy> = nodes.iter().map(|s| Proxy::start(s.port)).collect();
        for (node, proxy) in nodes.iter_mut().zip(&proxies) {
            let port = proxy.port().to_string();
            let _: () = redis::cmd("CONFIG").arg("SET").arg("cluster-announce-port").arg(&port).query(&mut node.connection()).expect("announce the proxy");
            node.add_args(&["--cluster-announce-port", &port]);
        }
        Cluster { proxies, ..Cluster::join(nodes) }
    }

    /// Makes one cluster of `nodes` (from [`Cluster::node`]), slots spread evenly.
    pub fn join(nodes: Vec<Server>) -> Cluster {
        let flavor = nodes[0].flavor;
        let addrs: Vec<String> = nodes.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
        let out = Command::new(flavor.cli())
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", flavor.cli()));
        assert!(out.status.success(), "{} --cluster create failed: {}", flavor.cli(), String::from_utf8_lossy(&out.stdout));
        let cluster = Cluster { flavor, nodes, proxies: Vec::new() };
        cluster.wait_until_ok();
        cluster
    }

    /// Waits until every node sees every slot assigned, every node known and the state ok.
    pub fn wait_until_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &self.nodes {
            let mut conn = node.connection();
            loop {
                let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut conn).expect("CLUSTER INFO");
                let ok = info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_assigned:16384")
                    && info.contains(&format!("cluster_known_nodes:{}", self.nodes.len()));
                if ok {
                    break;
                }
                assert!(Instant::now() < deadline, "cluster on port {} not ok:\n{info}", node.port);
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    pub fn seed_urls(&self) -> Vec<String> {
        self.nodes.iter().map(Server::url).collect()
    }

    /// Options for a semaphore on this cluster, every node a seed. The fresh-server guard is off,
    /// as for [`Server::options`].
    pub fn options(&self, key: &str) -> pottery_semaphore_host::Options {
        pottery_semaphore_host::Options::with_masters(self.seed_urls(), key).cluster(true).guard_fresh_server(false)
    }

    /// Options that know the cluster through node `seed` only: it discovers the rest itself.
    pub fn options_via(&self, seed: usize, key: &str) -> pottery_semaphore_host::Options {
        pottery_semaphore_host::Options::with_masters([self.nodes[seed].url()], key).cluster(true).guard_fresh_server(false)
    }

    /// The slot of a Redis key, as the cluster computes it (`CLUSTER KEYSLOT`).
    pub fn slot_of(&self, redis_key: &str) -> u16 {
        redis::cmd("CLUSTER").arg("KEYSLOT").arg(redis_key).query(&mut self.nodes[0].connection()).expect("CLUSTER KEYSLOT")
    }

    /// Index in `nodes` of the primary serving `slot`, per `CLUSTER NODES` of node 0.
    pub fn owner_of(&self, slot: u16) -> usize {
        owner_of(&self.nodes, &self.proxies, slot)
    }

    /// Node id (`CLUSTER MYID`) of node `i`.
    pub fn node_id(&self, i: usize) -> String {
        redis::cmd("CLUSTER").arg("MYID").query(&mut self.nodes[i].connection()).expect("CLUSTER MYID")
    }

    /// Moves `slot` and its keys to node `to`, the way `redis-cli --cluster reshard` does:
    /// IMPORTING/MIGRATING, MIGRATE of every key, then SETSLOT NODE on every node.
    pub fn migrate_slot(&self, slot: u16, to: usize) {
        let from = self.owner_of(slot);
        assert_ne!(from, to, "slot {slot} is already on node {to}");
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let mut src = self.nodes[from].connection();
        let mut dst = self.nodes[to].connection();
        let setslot = |conn: &mut redis::Connection, state: &str, id: &str| {
            let _: () = redis::cmd("CLUSTER").arg("SETSLOT").arg(slot).arg(state).arg(id).query(conn).expect("CLUSTER SETSLOT");
        };
        setslot(&mut dst, "IMPORTING", &from_id);
        setslot(&mut src, "MIGRATING", &to_id);
        loop {
            let keys: Vec<String> =
                redis::cmd("CLUSTER").arg("GETKEYSINSLOT").arg(slot).arg(100).query(&mut src).expect("GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            let _: () = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(self.nodes[to].port)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query(&mut src)
                .expect("MIGRATE");
        }
        setslot(&mut dst, "NODE", &to_id);
        setslot(&mut src, "NODE", &to_id);
        for (i, node) in self.nodes.iter().enumerate() {
            if i != from && i != to {
                setslot(&mut node.connection(), "NODE", &to_id);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.owner_of(slot) != to {
            assert!(Instant::now() < deadline, "slot {slot} did not move to node {to}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// [`Cluster::owner_of`] for nodes (and the proxies they announce, if any) kept apart from
/// their [`Cluster`].
pub fn owner_of(nodes: &[Server], proxies: &[Proxy], slot: u16) -> usize {
    let listing: String = redis::cmd("CLUSTER").arg("NODES").query(&mut nodes[0].connection()).expect("CLUSTER NODES");
    for line in listing.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        // id addr flags master ping pong epoch link slot-ranges...
        let serves = fields.iter().skip(8).any(|range| match range.split_once('-') {
            _ if range.starts_with('[') => false,
            Some((a, b)) => (a.parse::<u16>().unwrap_or(u16::MAX)..=b.parse().unwrap_or(0)).contains(&slot),
            None => range.parse::<u16>().ok() == Some(slot),
        });
        if serves {
            let port: u16 = fields[1].split(['@', ':']).nth(1).and_then(|p| p.parse().ok()).expect("node address");
            let announced = |i: usize| proxies.get(i).map_or(nodes[i].port, Proxy::port);
            return (0..nodes.len()).find(|&i| announced(i) == port).expect("a node of this cluster");
        }
    }
    panic!("no node serves slot {slot}:\n{listing}")
}
