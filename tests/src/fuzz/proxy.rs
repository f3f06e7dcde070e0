//! A TCP proxy with faults per connection: added latency, a connection blackholed (nothing
//! passes either way, nothing closes), replies held back (requests reach the server, answers
//! do not come back) and connections cut. Holding replies and then cutting is what makes a
//! client library replay commands that did run.
//!
//! All proxies of a run share one [`ProxyRuntime`], so they keep forwarding whatever the
//! test's own threads do.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// The runtime the proxies of a run forward on (one worker thread).
#[derive(Debug)]
pub struct ProxyRuntime {
    runtime: Option<tokio::runtime::Runtime>,
}

impl ProxyRuntime {
    /// Starts it.
    ///
    /// # Panics
    ///
    /// When no runtime can be built.
    pub fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fuzz-proxy")
            .enable_all()
            .build()
            .expect("a runtime for the proxies");
        Self {
            runtime: Some(runtime),
        }
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime.as_ref().expect("running").handle()
    }
}

impl Default for ProxyRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ProxyRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A proxy on a free loopback port forwarding to `127.0.0.1:<target>`.
#[derive(Debug)]
pub struct FaultProxy {
    port: u16,
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    latency: Mutex<Duration>,
    next_id: AtomicU64,
    conns: Mutex<BTreeMap<u64, Arc<Conn>>>,
}

/// One proxied connection and its faults.
#[derive(Debug, Default)]
struct Conn {
    /// Client to server stopped.
    requests_held: AtomicBool,
    /// Server to client stopped.
    replies_held: AtomicBool,
    changed: Notify,
    cut: AtomicBool,
    cut_now: Notify,
}

impl Conn {
    fn held(&self, replies: bool) -> bool {
        if replies {
            self.replies_held.load(Ordering::SeqCst)
        } else {
            self.requests_held.load(Ordering::SeqCst)
        }
    }
}

impl FaultProxy {
    /// Starts forwarding to the loopback port `target` on `runtime`.
    ///
    /// # Panics
    ///
    /// When no port can be bound.
    pub fn start(runtime: &ProxyRuntime, target: u16) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let port = listener.local_addr().expect("proxy address").port();
        let state = Arc::new(State::default());
        let accept_state = state.clone();
        let handle = runtime.handle().clone();
        handle.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("a tokio listener");
            while let Ok((inbound, _)) = listener.accept().await {
                let _ = inbound.set_nodelay(true);
                let state = accept_state.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let _ = outbound.set_nodelay(true);
                    let id = state.next_id.fetch_add(1, Ordering::SeqCst);
                    let conn = Arc::new(Conn::default());
                    state
                        .conns
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id, conn.clone());
                    forward(inbound, outbound, &state, &conn).await;
                    state
                        .conns
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&id);
                });
            }
        });
        Self { port, state }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<proxy port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Delays every chunk, each way, on every connection.
    pub fn set_latency(&self, latency: Duration) {
        *self.state.latency.lock().unwrap_or_else(|p| p.into_inner()) = latency;
    }

    /// The open connections' ids, oldest first.
    pub fn connections(&self) -> Vec<u64> {
        self.conns().keys().copied().collect()
    }

    fn conns(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Conn>>> {
        self.state.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with(&self, id: u64, f: impl FnOnce(&Conn)) {
        if let Some(conn) = self.conns().get(&id) {
            f(conn);
        }
    }

    /// Stops (`true`) or resumes (`false`) all traffic on connection `id`, closing nothing.
    pub fn blackhole(&self, id: u64, on: bool) {
        self.with(id, |c| {
            c.requests_held.store(on, Ordering::SeqCst);
            c.replies_held.store(on, Ordering::SeqCst);
            c.changed.notify_waiters();
        });
    }

    /// Holds back (`true`) or lets through (`false`) the server's replies on connection `id`.
    pub fn hold_replies(&self, id: u64, on: bool) {
        self.with(id, |c| {
            c.replies_held.store(on, Ordering::SeqCst);
            c.changed.notify_waiters();
        });
    }

    /// Closes connection `id` (anything held back is lost).
    pub fn cut(&self, id: u64) {
        self.with(id, |c| {
            c.cut.store(true, Ordering::SeqCst);
            c.cut_now.notify_waiters();
        });
    }

    /// Closes every open connection.
    pub fn cut_all(&self) {
        for id in self.connections() {
            self.cut(id);
        }
    }

    /// Lifts every fault: no latency, nothing held back (connections stay open).
    pub fn heal(&self) {
        self.set_latency(Duration::ZERO);
        for id in self.connections() {
            self.blackhole(id, false);
        }
    }
}

async fn forward(inbound: TcpStream, outbound: TcpStream, state: &State, conn: &Conn) {
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let cut = conn.cut_now.notified();
    tokio::pin!(cut);
    cut.as_mut().enable();
    if conn.cut.load(Ordering::SeqCst) {
        return;
    }
    tokio::select! {
        () = pump(in_read, out_write, state, conn, false) => {}
        () = pump(out_read, in_write, state, conn, true) => {}
        () = cut => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: &State,
    conn: &Conn,
    replies: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let latency = *state.latency.lock().unwrap_or_else(|p| p.into_inner());
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        loop {
            let changed = conn.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if !conn.held(replies) {
                break;
            }
            changed.await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
