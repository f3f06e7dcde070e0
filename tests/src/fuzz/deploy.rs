//! The deployments a fuzz run can target, and the faults each can suffer.
//!
//! Every deployment has a separate, never-faulted `redis-server` for the fenced store (except
//! in process, where the store is a map). Workers reach the lock servers through a
//! [`FaultProxy`] per worker and node (one Redis, Redlock) or per node (Cluster, whose nodes
//! announce their proxy's port); Sentinel hands out the primary's own address, so its faults
//! are server-side only.

use std::time::{Duration, Instant};

use distlock::MemoryStore;

use super::proxy::{FaultProxy, ProxyRuntime};
use super::worker::Target;
use crate::{RedisCluster, RedisServer};

/// Which deployment a run targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One process, several clients over one `MemoryStore`.
    Memory,
    /// One Redis server.
    Redis,
    /// A primary, a replica and a sentinel.
    Sentinel,
    /// Three independent primaries.
    Redlock,
    /// Three primaries with a replica each.
    Cluster,
}

impl Kind {
    /// All of them.
    pub const ALL: [Kind; 5] = [
        Kind::Memory,
        Kind::Redis,
        Kind::Sentinel,
        Kind::Redlock,
        Kind::Cluster,
    ];

    /// How long after a fault that may lose locks clients may still be split between old and
    /// new primaries (they follow a failover within about this long).
    pub fn settle(self) -> Duration {
        match self {
            Kind::Sentinel | Kind::Cluster => Duration::from_secs(1),
            _ => Duration::ZERO,
        }
    }

    /// Its name (`FUZZ_DEPLOYMENT`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Memory => "memory",
            Kind::Redis => "redis",
            Kind::Sentinel => "sentinel",
            Kind::Redlock => "redlock",
            Kind::Cluster => "cluster",
        }
    }
}

/// The Redlock quarantine: above the longest lease a worker asks for.
pub const QUARANTINE: Duration = Duration::from_secs(3);

const CLUSTER_NODE_ARGS: [&str; 6] = [
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    "2000",
];

/// Runs one command on `port` with 2 s timeouts (a paused server makes it fail, not hang).
///
/// # Errors
///
/// The connection or command error, as text.
pub fn admin<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> Result<T, String> {
    admin_within(port, args, Duration::from_secs(2))
}

/// [`admin`] with another timeout.
///
/// # Errors
///
/// The connection or command error, as text.
pub fn admin_within<T: redis::FromRedisValue>(
    port: u16,
    args: &[&str],
    timeout: Duration,
) -> Result<T, String> {
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{port}")).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_connection_with_timeout(timeout)
        .map_err(|e| e.to_string())?;
    let _ = conn.set_read_timeout(Some(timeout));
    let _ = conn.set_write_timeout(Some(timeout));
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut conn).map_err(|e| format!("{args:?}: {e}"))
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Cluster node's role: `(is primary, its primary's index if a replica, slot ranges)`.
pub type Role = (bool, Option<usize>, Vec<(u16, u16)>);

/// A running deployment.
#[derive(Debug)]
pub struct Deployment {
    /// Which one.
    pub kind: Kind,
    /// The fenced store's server (none in process).
    pub store: Option<RedisServer>,
    /// The in-process lock store.
    pub memory: MemoryStore,
    /// The lock servers: the server; primary and replica; the Redlock nodes; the Cluster's
    /// primaries then replicas (as started; roles change with failovers).
    pub nodes: Vec<RedisServer>,
    /// The sentinel.
    pub sentinel: Option<RedisServer>,
    /// Cluster node ids, by index.
    ids: Vec<String>,
    /// `[worker][node]` (one Redis, Redlock) or `[0][node]` (Cluster).
    proxies: Vec<Vec<FaultProxy>>,
    proxy_runtime: ProxyRuntime,
}

impl Deployment {
    /// Starts `kind` for `workers` workers.
    ///
    /// # Panics
    ///
    /// When a server does not start or the deployment does not form.
    pub fn start(kind: Kind, workers: usize) -> Self {
        let proxy_runtime = ProxyRuntime::new();
        let store = (kind != Kind::Memory).then(RedisServer::start);
        let mut deployment = Self {
            kind,
            store,
            memory: MemoryStore::new(),
            nodes: Vec::new(),
            sentinel: None,
            ids: Vec::new(),
            proxies: Vec::new(),
            proxy_runtime,
        };
        match kind {
            Kind::Memory => {}
            Kind::Redis | Kind::Redlock => {
                let n = if kind == Kind::Redis { 1 } else { 3 };
                deployment.nodes = (0..n).map(|_| RedisServer::start()).collect();
                deployment.proxies = (0..workers)
                    .map(|_| {
                        deployment
                            .nodes
                            .iter()
                            .map(|node| FaultProxy::start(&deployment.proxy_runtime, node.port()))
                            .collect()
                    })
                    .collect();
            }
            Kind::Sentinel => {
                let primary = RedisServer::start();
                let replica = RedisServer::start_replica_of(&primary);
                let sentinel = RedisServer::start_sentinel("fuzz", &primary);
                let (rp, sp) = (replica.port(), sentinel.port());
                wait_for("the replica to sync", Duration::from_secs(20), || {
                    admin::<String>(rp, &["INFO", "replication"])
                        .is_ok_and(|i| i.contains("master_link_status:up"))
                });
                wait_for(
                    "the sentinel to see the replica",
                    Duration::from_secs(20),
                    || {
                        admin::<Vec<redis::Value>>(sp, &["SENTINEL", "REPLICAS", "fuzz"])
                            .is_ok_and(|r| !r.is_empty())
                    },
                );
                deployment.nodes = vec![primary, replica];
                deployment.sentinel = Some(sentinel);
            }
            Kind::Cluster => deployment.start_cluster(),
        }
        deployment
    }

    fn start_cluster(&mut self) {
        let cluster = RedisCluster::start(3);
        let masters: Vec<u16> = cluster.nodes().iter().map(RedisServer::port).collect();
        let replicas: Vec<RedisServer> = (0..3)
            .map(|_| RedisServer::start_with(&CLUSTER_NODE_ARGS))
            .collect();
        let mut ids: Vec<String> = masters
            .iter()
            .map(|&p| admin(p, &["CLUSTER", "MYID"]).expect("a node id"))
            .collect();
        let first = masters[0].to_string();
        for r in &replicas {
            admin::<()>(r.port(), &["CLUSTER", "MEET", "127.0.0.1", &first]).expect("MEET");
            ids.push(admin(r.port(), &["CLUSTER", "MYID"]).expect("a node id"));
        }
        for (i, r) in replicas.iter().enumerate() {
            let master = ids[i].clone();
            wait_for("a replica to join", Duration::from_secs(20), || {
                admin::<()>(r.port(), &["CLUSTER", "REPLICATE", &master]).is_ok()
            });
        }
        for r in &replicas {
            wait_for("a replica to sync", Duration::from_secs(20), || {
                admin::<String>(r.port(), &["INFO", "replication"])
                    .is_ok_and(|i| i.contains("master_link_status:up"))
            });
        }
        let mut nodes = cluster.into_nodes();
        let proxies: Vec<FaultProxy> = masters
            .iter()
            .copied()
            .chain(replicas.iter().map(RedisServer::port))
            .map(|p| FaultProxy::start(&self.proxy_runtime, p))
            .collect();
        nodes.extend(replicas);
        self.nodes = nodes;
        self.ids = ids;
        self.proxies = vec![proxies];
        for i in 0..6 {
            self.announce(i);
        }
        let expected: Vec<String> = self.proxies[0]
            .iter()
            .map(|p| format!(":{}@", p.port()))
            .collect();
        wait_for(
            "the nodes to announce their proxies",
            Duration::from_secs(20),
            || {
                (0..6).all(|i| {
                    admin::<String>(self.port(i), &["CLUSTER", "NODES"])
                        .is_ok_and(|n| expected.iter().all(|e| n.contains(e.as_str())))
                })
            },
        );
        wait_for("the cluster to be ok", Duration::from_secs(20), || {
            (0..6).all(|i| {
                admin::<String>(self.port(i), &["CLUSTER", "INFO"])
                    .is_ok_and(|n| n.contains("cluster_state:ok"))
            })
        });
    }

    /// Cluster: make node `i` announce its proxy's port (again, after a restart).
    fn announce(&self, i: usize) {
        let proxy = self.proxies[0][i].port().to_string();
        let _ = admin::<()>(
            self.port(i),
            &["CONFIG", "SET", "cluster-announce-port", &proxy],
        );
    }

    /// The number of lock servers.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    fn server(&self, i: usize) -> &RedisServer {
        &self.nodes[i]
    }

    /// The real port of node `i`.
    pub fn port(&self, i: usize) -> u16 {
        self.server(i).port()
    }

    /// The process id of node `i`.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.server(i).pid()
    }

    /// How worker `w` reaches the locks.
    pub fn target(&self, w: usize) -> Target {
        match self.kind {
            Kind::Memory => Target::Memory(self.memory.clone()),
            Kind::Redis => Target::Redis(self.proxies[w][0].url()),
            Kind::Redlock => Target::Redlock {
                urls: self.proxies[w].iter().map(FaultProxy::url).collect(),
                quarantine: QUARANTINE,
            },
            Kind::Sentinel => Target::Sentinel {
                master: "fuzz".into(),
                sentinels: vec![self.sentinel.as_ref().expect("a sentinel").url()],
            },
            Kind::Cluster => {
                Target::Cluster(self.proxies[0][..3].iter().map(FaultProxy::url).collect())
            }
        }
    }

    /// How the checker reaches the locks (no proxy in between).
    pub fn direct_target(&self) -> Target {
        match self.kind {
            Kind::Redis => Target::Redis(self.nodes[0].url()),
            Kind::Redlock => Target::Redlock {
                urls: self.nodes.iter().map(RedisServer::url).collect(),
                quarantine: QUARANTINE,
            },
            _ => self.target(0),
        }
    }

    /// The proxy worker `w` uses for node `node` (for the Cluster: everyone's, for node
    /// `node`).
    pub fn proxy(&self, w: usize, node: usize) -> Option<&FaultProxy> {
        match self.kind {
            Kind::Cluster => self.proxies.first()?.get(node),
            _ => self.proxies.get(w)?.get(node),
        }
    }

    /// All proxies.
    pub fn all_proxies(&self) -> impl Iterator<Item = &FaultProxy> {
        self.proxies.iter().flatten()
    }

    /// The fenced store's URL.
    pub fn store_url(&self) -> Option<String> {
        self.store.as_ref().map(RedisServer::url)
    }

    /// Sentinel: the index of the node Sentinel names primary now.
    pub fn sentinel_primary(&self) -> Option<usize> {
        let sentinel = self.sentinel.as_ref()?;
        let (_, port): (String, u16) = admin(
            sentinel.port(),
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "fuzz"],
        )
        .ok()?;
        (0..self.nodes.len()).find(|&i| self.port(i) == port)
    }

    /// Sentinel: ask for a failover.
    ///
    /// # Errors
    ///
    /// When Sentinel refuses (one is under way, no good replica).
    pub fn sentinel_failover(&self) -> Result<(), String> {
        let sentinel = self.sentinel.as_ref().ok_or("no sentinel")?;
        admin::<()>(sentinel.port(), &["SENTINEL", "FAILOVER", "fuzz"])
    }

    /// Freezes node `i` (SIGSTOP).
    pub fn pause(&self, i: usize) {
        self.server(i).pause();
    }

    /// Thaws node `i`.
    pub fn resume(&self, i: usize) {
        self.server(i).resume();
    }

    /// Kills node `i` (it stays down until [`restart`](Self::restart)): its data is gone.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again, empty, on the same port (killing it first if it runs). A
    /// Sentinel node comes back as a primary (only the primary is restarted: a primary that
    /// crashed and came back before Sentinel noticed); a Cluster node announces its proxy
    /// again.
    pub fn restart(&mut self, i: usize) {
        if self.kind == Kind::Sentinel {
            self.nodes[i].restart_with(&[]);
        } else {
            self.nodes[i].restart();
        }
        if self.kind == Kind::Cluster {
            self.announce(i);
        }
    }

    /// What a [`Monitor`] needs to watch the topology from another thread.
    pub fn monitor(&self) -> Monitor {
        Monitor {
            kind: self.kind,
            ports: (0..self.nodes.len()).map(|i| self.port(i)).collect(),
            sentinel: self.sentinel.as_ref().map(RedisServer::port),
            ids: self.ids.clone(),
        }
    }

    /// Cluster: `(is primary, primary's index for a replica, slot ranges)` for every node, as
    /// the first node that answers sees them.
    pub fn cluster_roles(&self) -> Option<Vec<Role>> {
        let healthy =
            (0..6).find_map(|i| admin::<String>(self.port(i), &["CLUSTER", "NODES"]).ok())?;
        let mut roles = vec![(false, None, Vec::new()); 6];
        for line in healthy.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() < 8 {
                continue;
            }
            let Some(i) = self.ids.iter().position(|id| id == f[0]) else {
                continue;
            };
            let master = f[2].contains("master");
            let of = self.ids.iter().position(|id| id == f[3]);
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| {
                    let (a, b) = s.split_once('-').unwrap_or((s, s));
                    Some((a.parse().ok()?, b.parse().ok()?))
                })
                .collect();
            roles[i] = (master, of, slots);
        }
        Some(roles)
    }

    /// Cluster: the slot of a lock key (user key, with the default prefix).
    pub fn slot_of(key: &str) -> u16 {
        crate::fuzz::deploy::key_slot(format!("distlock:{key}").as_bytes())
    }

    /// Cluster: the node owning `key`'s slot now.
    pub fn owner_of(&self, key: &str) -> Option<usize> {
        let slot = Self::slot_of(key);
        let roles = self.cluster_roles()?;
        roles.iter().position(|(master, _, slots)| {
            *master && slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
        })
    }

    /// Cluster: node `i`'s replica.
    pub fn replica_of(&self, i: usize) -> Option<usize> {
        self.cluster_roles()?
            .iter()
            .position(|(master, of, _)| !*master && *of == Some(i))
    }

    /// Cluster: a failover of primary `i` to its replica (`FORCE`: without the primary's
    /// agreement, so unreplicated writes can be lost).
    ///
    /// # Errors
    ///
    /// When there is no replica or it refuses.
    pub fn cluster_failover(&self, i: usize, force: bool) -> Result<usize, String> {
        let replica = self.replica_of(i).ok_or("no replica")?;
        let mut args = vec!["CLUSTER", "FAILOVER"];
        if force {
            args.push("FORCE");
        }
        admin::<()>(self.port(replica), &args)?;
        Ok(replica)
    }

    /// Cluster: moves the slot of `key` from its owner to primary `to`.
    ///
    /// # Errors
    ///
    /// When a step fails (the slot is then set stable again where it was).
    pub fn migrate(&self, key: &str, to: usize) -> Result<(usize, usize), String> {
        let from = self.owner_of(key).ok_or("no owner")?;
        if from == to {
            return Err("already there".into());
        }
        let slot = Self::slot_of(key).to_string();
        let (src, dst) = (self.port(from), self.port(to));
        let (src_id, dst_id) = (self.ids[from].clone(), self.ids[to].clone());
        let steps = || -> Result<(), String> {
            admin::<()>(dst, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &src_id])?;
            admin::<()>(src, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &dst_id])?;
            loop {
                let keys: Vec<String> = admin(src, &["CLUSTER", "GETKEYSINSLOT", &slot, "100"])?;
                if keys.is_empty() {
                    break;
                }
                let port = dst.to_string();
                let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
                args.extend(keys.iter().map(String::as_str));
                admin::<()>(src, &args)?;
            }
            admin::<()>(dst, &["CLUSTER", "SETSLOT", &slot, "NODE", &dst_id])?;
            admin::<()>(src, &["CLUSTER", "SETSLOT", &slot, "NODE", &dst_id])?;
            let roles = self.cluster_roles().ok_or("no roles")?;
            for (i, (master, _, _)) in roles.iter().enumerate() {
                if *master && i != from && i != to {
                    let _ = admin::<()>(
                        self.port(i),
                        &["CLUSTER", "SETSLOT", &slot, "NODE", &dst_id],
                    );
                }
            }
            Ok(())
        };
        steps().inspect_err(|_| {
            let _ = admin::<()>(src, &["CLUSTER", "SETSLOT", &slot, "STABLE"]);
            let _ = admin::<()>(dst, &["CLUSTER", "SETSLOT", &slot, "STABLE"]);
        })?;
        Ok((from, to))
    }
}

/// The Redis Cluster hash slot of `key` (CRC16/XMODEM of the hash tag, mod 16384).
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    let mut crc: u16 = 0;
    for &byte in hashed {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

#[cfg(test)]
mod tests {
    #[test]
    fn key_slots_match_redis() {
        // Values from CLUSTER KEYSLOT.
        assert_eq!(super::key_slot(b"foo"), 12182);
        assert_eq!(super::key_slot(b"{user1000}.following"), 3443);
        assert_eq!(super::key_slot(b"123456789"), 12739);
    }
}

/// Watches a deployment's topology while the nemesis works (from another thread): which node
/// is primary, and whether several claim to be (Sentinel's split-brain window). Faults the
/// nemesis did not inject itself (an automatic failover) are recorded this way.
#[derive(Debug, Clone)]
pub struct Monitor {
    kind: Kind,
    ports: Vec<u16>,
    sentinel: Option<u16>,
    ids: Vec<String>,
}

/// What a [`Monitor`] saw at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The primaries: the one Sentinel names (first), or the Cluster's.
    pub primaries: Vec<usize>,
    /// Sentinel: the nodes that answer `role:master` (more than one: split brain).
    pub claiming: Vec<usize>,
}

impl Monitor {
    /// The topology now (`None` when nothing answers).
    pub fn look(&self) -> Option<Topology> {
        let quick = Duration::from_millis(150);
        match self.kind {
            Kind::Sentinel => {
                let (_, port): (String, u16) = admin_within(
                    self.sentinel?,
                    &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "fuzz"],
                    quick,
                )
                .ok()?;
                let primary = self.ports.iter().position(|&p| p == port)?;
                let claiming = (0..self.ports.len())
                    .filter(|&i| {
                        admin_within::<String>(self.ports[i], &["INFO", "replication"], quick)
                            .is_ok_and(|info| info.contains("role:master"))
                    })
                    .collect();
                Some(Topology {
                    primaries: vec![primary],
                    claiming,
                })
            }
            Kind::Cluster => {
                let nodes = self
                    .ports
                    .iter()
                    .find_map(|&p| admin_within::<String>(p, &["CLUSTER", "NODES"], quick).ok())?;
                let mut primaries: Vec<usize> = nodes
                    .lines()
                    .filter_map(|line| {
                        let f: Vec<&str> = line.split(' ').collect();
                        let master = f.get(2)?.contains("master") && f.len() > 8;
                        master.then(|| self.ids.iter().position(|id| id == f[0]))?
                    })
                    .collect();
                primaries.sort_unstable();
                Some(Topology {
                    primaries,
                    claiming: Vec::new(),
                })
            }
            _ => None,
        }
    }
}
