//! Test support: real `redis-server` processes on free loopback ports.
//!
//! [`RedisServer::start`] runs a server with its own temporary directory and log file, waits
//! until it answers, and stops it when dropped (printing its log if the test failed). Fault
//! tests can [`kill`](RedisServer::kill), [`pause`](RedisServer::pause),
//! [`resume`](RedisServer::resume) and [`restart`](RedisServer::restart) it; a
//! [`TcpProxy`] in front of it adds latency, blackholes and cut connections.

pub mod attack;
pub mod fuzz;
pub mod holders;
mod proxy;

pub use proxy::TcpProxy;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` process owned by a test.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    /// A sentinel's configuration file (sentinels run `redis-server <config> --sentinel`).
    sentinel_config: Option<String>,
    /// The password clients use (`--requirepass`), if any.
    password: Option<String>,
}

const INSTALL_HINT: &str = "redis-server was not found on PATH. The distlock tests run against \
real Redis servers: install it with `sudo apt-get install -y redis-server` (Debian/Ubuntu) \
or `brew install redis` (macOS).";

impl RedisServer {
    /// Starts a server on a free loopback port, with no persistence.
    ///
    /// # Panics
    ///
    /// When `redis-server` is missing (with how to install it) or does not come up.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra command-line settings, e.g. `["--requirepass", "s3cret"]`.
    ///
    /// # Panics
    ///
    /// As [`RedisServer::start`].
    pub fn start_with(extra: &[&str]) -> Self {
        Self::launch(extra, None)
    }

    /// Starts a replica of `primary`.
    ///
    /// # Panics
    ///
    /// As [`RedisServer::start`].
    pub fn start_replica_of(primary: &RedisServer) -> Self {
        let port = primary.port().to_string();
        let mut args = vec!["--replicaof", "127.0.0.1", &port];
        // A replica that may become the primary needs the same password both ways.
        if let Some(password) = &primary.password {
            args.extend(["--masterauth", password, "--requirepass", password]);
        }
        Self::start_with(&args)
    }

    /// Starts a sentinel watching `primary` under the name `master` (quorum 1, down after
    /// 500 ms).
    ///
    /// # Panics
    ///
    /// As [`RedisServer::start`].
    pub fn start_sentinel(master: &str, primary: &RedisServer) -> Self {
        let mut config = format!(
            "sentinel monitor {master} 127.0.0.1 {port} 1\n\
             sentinel down-after-milliseconds {master} 500\n\
             sentinel failover-timeout {master} 2000\n",
            port = primary.port()
        );
        if let Some(password) = &primary.password {
            config.push_str(&format!("sentinel auth-pass {master} {password}\n"));
        }
        Self::launch(&[], Some(config))
    }

    fn launch(extra: &[&str], sentinel_config: Option<String>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("distlock-redis-")
            .tempdir()
            .expect("a temporary directory for redis-server");
        let mut server = Self {
            child: None,
            port: 0,
            dir,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            sentinel_config,
            password: extra
                .iter()
                .position(|a| *a == "--requirepass")
                .and_then(|i| extra.get(i + 1))
                .map(|p| (*p).to_owned()),
        };
        // A free port can be taken between our probe and the server's bind: try a few.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        panic!("redis-server did not start; its log:\n{}", server.log());
    }

    fn spawn(&mut self) -> bool {
        let mut cmd = Command::new("redis-server");
        match &self.sentinel_config {
            Some(config) => {
                let path = self.dir.path().join("sentinel.conf");
                std::fs::write(&path, config).expect("write sentinel.conf");
                cmd.arg(path).arg("--sentinel");
            }
            None => {
                cmd.args(["--save", "", "--appendonly", "no"]);
            }
        }
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{INSTALL_HINT}"),
            Err(e) => panic!("could not run redis-server: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                self.child = None;
                return false;
            }
            if self.answers_ping() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        false
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        if stream.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        match stream.read(&mut buf) {
            // "+PONG", or "-NOAUTH" from a server with a password: either way it is up.
            Ok(n) if n > 0 => buf[0] == b'+' || buf.starts_with(b"-NOAUTH"),
            _ => false,
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// The process id (while running).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let status = Command::new("kill")
                .args([signal, &pid.to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill {signal} {pid} failed");
        }
    }

    /// Kills it with SIGKILL and waits for it to exit. All data is lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops it cleanly (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        self.signal("-TERM");
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// Records, as a Redlock node's acquire script would, that this node has kept its data
    /// for an hour (the boot marker under the default prefix), so it votes at once instead
    /// of sitting out a quarantine as a brand-new node does.
    ///
    /// # Panics
    ///
    /// When the commands fail.
    pub fn kept_data_for_an_hour(&self) {
        let time: Vec<String> = self.cmd(&["TIME"]);
        let now: u64 =
            time[0].parse::<u64>().unwrap() * 1_000_000 + time[1].parse::<u64>().unwrap();
        let boot = now - 3_600_000_000;
        self.cmd::<()>(&["SET", "distlock:__boot", &format!("{boot:016}")]);
    }

    /// Freezes it (SIGSTOP): connections stay open, nothing is answered.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Kills it and starts a fresh one on the same port: all data is lost.
    ///
    /// # Panics
    ///
    /// When it does not come back.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not restart; its log:\n{}", self.log());
    }

    /// Like [`restart`](Self::restart), with other command-line settings from now on (a
    /// replica that was promoted comes back as a primary with `&[]`).
    ///
    /// # Panics
    ///
    /// When it does not come back.
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.extra = extra.iter().map(|s| (*s).to_owned()).collect();
        self.restart();
    }

    /// A plain synchronous connection, for setting up and checking state.
    ///
    /// # Panics
    ///
    /// When the server cannot be reached.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("connect to the test redis-server")
    }

    /// Runs one command and returns its reply.
    ///
    /// # Panics
    ///
    /// When the command fails.
    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut self.conn())
            .unwrap_or_else(|e| panic!("{args:?} failed: {e}"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.resume();
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- redis-server :{} log ---\n{}", self.port, self.log());
        }
    }
}

impl RedisServer {
    /// A lock client for this server whose commands give up after `timeout` (fault tests
    /// stop the server and expect prompt errors).
    ///
    /// # Panics
    ///
    /// When the server cannot be reached.
    pub async fn client_with_timeout(&self, timeout: Duration) -> distlock::LockClient {
        distlock::LockClient::builder()
            .url(self.url())
            .command_timeout(timeout)
            .build()
            .await
            .expect("connect to the test redis-server")
    }
}

/// Polls a one-try acquire of `key` (lease 5 s) every 2 ms until it succeeds or `within`
/// passed since `t0`: the guard and when (since `t0`) it was granted.
///
/// # Panics
///
/// When an attempt fails otherwise than busy.
pub async fn first_take(
    client: &distlock::LockClient,
    key: &str,
    t0: Instant,
    within: Duration,
) -> Option<(Duration, distlock::LockGuard)> {
    loop {
        match client.lock(key).ttl(Duration::from_secs(5)).await {
            Ok(g) => return Some((t0.elapsed(), g)),
            Err(e) => assert!(e.is_busy(), "{e}"),
        }
        if t0.elapsed() > within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits until `key` is held (by anyone), polling every 5 ms: tests act on "the request holds
/// its lock now" instead of sleeping and hoping.
///
/// # Panics
///
/// After 5 s without the lock being held.
pub async fn wait_until_held(client: &distlock::LockClient, key: &str) {
    wait_for_lock(client, key, |_| true, "held").await;
}

/// Waits until someone was turned away from `key` while it is held (a waiter is queued).
///
/// # Panics
///
/// After 5 s.
pub async fn wait_until_contended(client: &distlock::LockClient, key: &str) {
    wait_for_lock(client, key, |info| info.contended, "contended").await;
}

async fn wait_for_lock(
    client: &distlock::LockClient,
    key: &str,
    done: impl Fn(&distlock::LockInfo) -> bool,
    what: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(Some(info)) = client.inspect(key).await
            && done(&info)
        {
            return;
        }
        assert!(Instant::now() < deadline, "`{key}` never became {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How long each timed phase of a benchmark runs: `BENCH_SECONDS`, default 3.
pub fn bench_phase() -> Duration {
    Duration::from_secs(
        std::env::var("BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3),
    )
}

/// A thread that flushes `server`'s script cache every 3 ms, and kills its other clients'
/// connections every tenth time, until `stop`; it answers how many flushes it made.
///
/// # Panics
///
/// When no connection to the server can be made.
pub fn flush_and_kill_storm(
    server: std::sync::Arc<RedisServer>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut conn = server.conn();
        let mut n = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let _: redis::RedisResult<()> = redis::cmd("SCRIPT").arg("FLUSH").query(&mut conn);
            if n % 10 == 9 {
                let _ = kill_clients(&mut conn);
            }
            n += 1;
            std::thread::sleep(Duration::from_millis(3));
        }
        n
    })
}

/// `CLIENT KILL TYPE normal SKIPME yes` on `conn`: every ordinary client connection but this
/// one is closed by the server.
///
/// # Errors
///
/// The command's error.
pub fn kill_clients(conn: &mut redis::Connection) -> redis::RedisResult<()> {
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query(conn)
}

/// Who is inside the critical section of each of the keys `storm:0..n`, as tasks that take
/// them see it, and what broke: two tasks inside one at once, or a fence not larger than the
/// one before it. Shared by the attack tests' lock storms.
#[derive(Debug)]
pub struct StormLedger {
    inside: Vec<std::sync::atomic::AtomicUsize>,
    fences: Vec<std::sync::Mutex<u64>>,
    violations: std::sync::Mutex<Vec<String>>,
}

impl StormLedger {
    /// A ledger of `keys` keys, nobody inside.
    pub fn new(keys: usize) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            inside: (0..keys).map(|_| Default::default()).collect(),
            fences: (0..keys).map(|_| Default::default()).collect(),
            violations: Default::default(),
        })
    }

    /// Records a violation found by the caller.
    ///
    /// # Panics
    ///
    /// When the ledger's lock is poisoned (a task panicked while holding it).
    pub fn violation(&self, what: String) {
        self.violations.lock().unwrap().push(what);
    }

    /// Everything recorded so far.
    ///
    /// # Panics
    ///
    /// As [`violation`](Self::violation).
    pub fn violations(&self) -> Vec<String> {
        self.violations.lock().unwrap().clone()
    }

    /// Steps into key `k` with `fence` as `who`: nobody else may be inside, and the fence must
    /// be larger than every one before it (entries happen in acquisition order, under
    /// exclusion).
    ///
    /// # Panics
    ///
    /// As [`violation`](Self::violation).
    pub fn enter(&self, k: usize, who: &str, fence: u64) {
        if self.inside[k].fetch_add(1, std::sync::atomic::Ordering::SeqCst) != 0 {
            self.violation(format!(
                "two holders inside key {k} at once ({who} entered)"
            ));
        }
        self.fence(k, who, fence);
    }

    /// Records that `who` was granted key `k` with `fence`, which must be larger than every
    /// fence before it.
    ///
    /// # Panics
    ///
    /// As [`violation`](Self::violation).
    pub fn fence(&self, k: usize, who: &str, fence: u64) {
        let mut last = self.fences[k].lock().unwrap();
        if fence <= *last {
            self.violation(format!("key {k}: {who} got fence {fence} after {}", *last));
        }
        *last = fence;
    }

    /// Whether anyone is inside key `k` now.
    pub fn is_inside(&self, k: usize) -> bool {
        self.inside[k].load(std::sync::atomic::Ordering::SeqCst) != 0
    }

    /// Steps out of key `k`.
    pub fn leave(&self, k: usize) {
        self.inside[k].fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// One round on `storm:<k>`: take it (waiting 300 ms; abandoned after `abandon_after` when
    /// set), step inside (checking nobody else is, and that the fence grew), step out, and let
    /// go by `release()` or by a drop.
    ///
    /// # Panics
    ///
    /// As [`violation`](Self::violation).
    pub async fn round(
        &self,
        client: &distlock::LockClient,
        k: usize,
        abandon_after: Option<Duration>,
        release: bool,
    ) {
        use std::future::IntoFuture;
        let request = client
            .lock(format!("storm:{k}"))
            .ttl(Duration::from_secs(20))
            .wait(Duration::from_millis(300));
        let guard = match abandon_after {
            Some(cut) => match tokio::time::timeout(cut, request.into_future()).await {
                Ok(Ok(g)) => g,
                _ => return,
            },
            None => match request.await {
                Ok(g) => g,
                Err(_) => return,
            },
        };
        self.enter(k, "a storm task", guard.fencing_token());
        tokio::task::yield_now().await;
        self.leave(k);
        if release {
            let _ = guard.release().await;
        } else {
            drop(guard);
        }
    }
}

/// What one benchmark worker process (`contend-worker`, `primitives-worker`) printed: per
/// task `task <rounds> <held-ns>`, lists of waits `<name> <ns> <ns> ...`, and `wall <ns>`.
#[derive(Debug, Default)]
pub struct WorkerReport {
    /// Per task: rounds completed and time held, in ns.
    pub tasks: Vec<(f64, u128)>,
    /// Each list of waits by its name (`waits`, `reads`, `writes`), in ns.
    pub waits: std::collections::HashMap<String, Vec<u64>>,
    /// The worker's wall time, in ns.
    pub wall: u128,
}

impl WorkerReport {
    /// Reads a worker's standard output.
    ///
    /// # Panics
    ///
    /// On a line that does not parse: the worker and the bench disagree.
    pub fn parse(stdout: &str) -> Self {
        let mut report = Self::default();
        for line in stdout.lines() {
            let mut words = line.split(' ').filter(|w| !w.is_empty());
            match words.next() {
                Some("task") => {
                    let rounds = words.next().unwrap().parse().unwrap();
                    let held = words.next().unwrap().parse().unwrap();
                    report.tasks.push((rounds, held));
                }
                Some("wall") => report.wall = words.next().unwrap().parse().unwrap(),
                Some(name) => {
                    let waits = report.waits.entry(name.to_owned()).or_default();
                    waits.extend(words.map(|w| w.parse::<u64>().unwrap()));
                }
                None => {}
            }
        }
        report
    }
}

/// Starts `count` benchmark worker processes of `binary` with `args` (in which `{start}` is
/// replaced by a start time 1.5 s from now, in Unix ms, so that they begin together once
/// connected), their standard output piped for [`WorkerReport::parse`].
///
/// # Panics
///
/// When a process cannot be started.
pub fn spawn_bench_workers(
    binary: &str,
    count: usize,
    args: &[&str],
) -> Vec<tokio::process::Child> {
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        + 1500;
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("{start}", &start.to_string()))
        .collect();
    (0..count)
        .map(|_| {
            tokio::process::Command::new(binary)
                .args(&args)
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("{binary}: {e}"))
        })
        .collect()
}

/// Sleeps until `start_unix_ms` on the system clock: how benchmark worker processes start
/// together.
///
/// # Panics
///
/// When the system clock is before 1970.
pub async fn sleep_until_unix_ms(start_unix_ms: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    tokio::time::sleep(Duration::from_millis(start_unix_ms.saturating_sub(now))).await;
}

/// A latency histogram from 1 ns to 60 s, 3 significant digits.
///
/// # Panics
///
/// Never: the bounds are valid.
pub fn latency_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

/// Runs `tasks` tasks for `phase`, each calling `round(task index)` in a loop; returns how
/// many rounds completed in all and the wall time.
///
/// # Panics
///
/// When a task panics.
pub async fn run_rounds<F, Fut>(tasks: usize, phase: Duration, round: F) -> (u64, Duration)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let (stop, round) = (stop.clone(), round.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    round(i).await;
                    n += 1;
                }
                n
            })
        })
        .collect();
    let started = Instant::now();
    tokio::time::sleep(phase).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for handle in handles {
        total += handle.await.expect("benchmark task");
    }
    (total, started.elapsed())
}

/// A fencing store, as a protected resource would be: writes `fence` to `key` unless a
/// larger fence was written before. True when accepted.
///
/// # Panics
///
/// When the command fails.
pub fn fenced_write(conn: &mut redis::Connection, key: &str, fence: u64) -> bool {
    const SCRIPT: &str = "local seen = tonumber(redis.call('GET', KEYS[1]) or '0') \
        if tonumber(ARGV[1]) < seen then return 0 end \
        redis.call('SET', KEYS[1], ARGV[1]) return 1";
    let accepted: i64 = redis::Script::new(SCRIPT)
        .key(key)
        .arg(fence.to_string())
        .invoke(conn)
        .expect("fenced write");
    accepted == 1
}

/// A Redis Cluster of `masters` primaries (no replicas), each a [`RedisServer`].
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the nodes, joins them with `redis-cli --cluster create` and waits until the
    /// cluster reports `cluster_state:ok` everywhere.
    ///
    /// # Panics
    ///
    /// When a node does not start or the cluster does not form.
    pub fn start(masters: usize) -> Self {
        let nodes: Vec<RedisServer> = (0..masters)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let cluster = Self { nodes };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cluster.nodes.iter().all(|n| {
            let info: String = n.cmd(&["CLUSTER", "INFO"]);
            info.contains("cluster_state:ok")
        }) {
            assert!(Instant::now() < deadline, "the cluster did not form");
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    /// The nodes' URLs.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Takes the nodes out (to restart or reconfigure them one by one); they stop when dropped.
    pub fn into_nodes(self) -> Vec<RedisServer> {
        self.nodes
    }

    /// The index of the node that owns `key`'s slot (from `CLUSTER SLOTS`).
    ///
    /// # Panics
    ///
    /// When no node owns it.
    pub fn owner_of(&self, key: &str) -> usize {
        use redis::Value;
        let slot: i64 = self.nodes[0].cmd(&["CLUSTER", "KEYSLOT", key]);
        let ranges: Vec<Value> = self.nodes[0].cmd(&["CLUSTER", "SLOTS"]);
        let int = |v: &Value| redis::from_redis_value_ref::<i64>(v).ok();
        for range in &ranges {
            let Value::Array(parts) = range else { continue };
            let (Some(start), Some(end)) =
                (parts.first().and_then(int), parts.get(1).and_then(int))
            else {
                continue;
            };
            if !(start..=end).contains(&slot) {
                continue;
            }
            let Some(Value::Array(master)) = parts.get(2) else {
                continue;
            };
            let port = master.get(1).and_then(int);
            if let Some(i) = self
                .nodes
                .iter()
                .position(|n| Some(i64::from(n.port())) == port)
            {
                return i;
            }
        }
        panic!("no node owns the slot of {key}");
    }

    /// Moves the slot of `key` (and its keys) to node `to`, as a resharding would.
    ///
    /// # Panics
    ///
    /// When a cluster command fails.
    pub fn migrate_slot_of(&self, key: &str, to: usize) {
        let from = self.owner_of(key);
        assert_ne!(from, to, "the slot is there already");
        let (src, dst) = (&self.nodes[from], &self.nodes[to]);
        let slot: i64 = src.cmd(&["CLUSTER", "KEYSLOT", key]);
        let slot = slot.to_string();
        let src_id: String = src.cmd(&["CLUSTER", "MYID"]);
        let dst_id: String = dst.cmd(&["CLUSTER", "MYID"]);
        dst.cmd::<()>(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &src_id]);
        src.cmd::<()>(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &dst_id]);
        loop {
            let keys: Vec<String> = src.cmd(&["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
            if keys.is_empty() {
                break;
            }
            let port = dst.port().to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().map(String::as_str));
            src.cmd::<()>(&args);
        }
        for node in &self.nodes {
            node.cmd::<()>(&["CLUSTER", "SETSLOT", &slot, "NODE", &dst_id]);
        }
    }
}

/// A loopback port nobody listens on right now.
///
/// # Panics
///
/// When no port can be bound.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free loopback port")
}

/// A Redis client at `url` whose commands time out after `timeout` (the attack tests').
///
/// # Panics
///
/// When the client cannot be built.
pub async fn client_with_timeout(url: String, timeout: Duration) -> distlock::LockClient {
    distlock::LockClient::builder()
        .url(url)
        .command_timeout(timeout)
        .build()
        .await
        .unwrap()
}
