//! A TCP proxy for fault tests: added latency, blackholes (nothing passes, nothing closes)
//! and cut connections, between a client and a real server. Blackholes apply to all traffic,
//! to new connections only, or to one connection (by the order it was accepted in).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// A proxy on a free loopback port forwarding to `127.0.0.1:<target>`.
///
/// It runs on a runtime of its own, so it keeps working whatever the test's runtime does.
#[derive(Debug)]
pub struct TcpProxy {
    port: u16,
    state: Arc<State>,
    runtime: Option<tokio::runtime::Runtime>,
}

#[derive(Debug, Default)]
struct State {
    latency: Mutex<Duration>,
    blackhole: AtomicBool,
    restored: Notify,
    cuts: AtomicU64,
    cut: Notify,
    accepted: AtomicUsize,
    blackhole_new: AtomicBool,
    /// Connections (by accept order) that pass nothing any more, for good.
    silenced: Mutex<HashSet<usize>>,
}

impl State {
    fn silenced(&self, connection: usize) -> bool {
        self.silenced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&connection)
    }
}

impl TcpProxy {
    /// Starts forwarding to the loopback port `target`.
    ///
    /// # Panics
    ///
    /// When no runtime or port can be had.
    pub fn start(target: u16) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the proxy");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let port = listener.local_addr().expect("proxy address").port();
        let state = Arc::new(State::default());
        let accept_state = state.clone();
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("a tokio listener");
            while let Ok((inbound, _)) = listener.accept().await {
                let state = accept_state.clone();
                let connection = state.accepted.fetch_add(1, Ordering::SeqCst);
                if state.blackhole_new.load(Ordering::SeqCst) {
                    state
                        .silenced
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(connection);
                }
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    forward(inbound, outbound, state, connection).await;
                });
            }
        });
        Self {
            port,
            state,
            runtime: Some(runtime),
        }
    }

    /// The port clients should connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<proxy port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Delays every chunk, each way, by `latency`.
    pub fn set_latency(&self, latency: Duration) {
        *self.state.latency.lock().unwrap_or_else(|p| p.into_inner()) = latency;
    }

    /// Stops (`true`) or resumes (`false`) all traffic, without closing anything.
    pub fn blackhole(&self, on: bool) {
        self.state.blackhole.store(on, Ordering::SeqCst);
        if !on {
            self.state.restored.notify_waiters();
        }
    }

    /// While on, connections accepted from now on pass nothing, ever (they are accepted and
    /// kept open); established ones carry on. Off: new connections work again.
    pub fn blackhole_new_connections(&self, on: bool) {
        self.state.blackhole_new.store(on, Ordering::SeqCst);
    }

    /// How many connections were accepted so far; the next one gets this number.
    pub fn connections(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Silences connection `connection` (numbered from 0 in the order accepted) for good:
    /// nothing passes either way, nothing is closed (a half-open connection).
    pub fn silence(&self, connection: usize) {
        self.state
            .silenced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(connection);
    }

    /// Closes every open connection (new ones are accepted).
    pub fn cut(&self) {
        self.state.cuts.fetch_add(1, Ordering::SeqCst);
        self.state.cut.notify_waiters();
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn forward(inbound: TcpStream, outbound: TcpStream, state: Arc<State>, connection: usize) {
    let generation = state.cuts.load(Ordering::SeqCst);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let cut = state.cut.notified();
    tokio::pin!(cut);
    cut.as_mut().enable();
    if state.cuts.load(Ordering::SeqCst) != generation {
        return;
    }
    tokio::select! {
        () = pump(in_read, out_write, &state, connection) => {}
        () = pump(out_read, in_write, &state, connection) => {}
        () = cut => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: &State,
    connection: usize,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        loop {
            let restored = state.restored.notified();
            tokio::pin!(restored);
            restored.as_mut().enable();
            if state.silenced(connection) {
                std::future::pending::<()>().await;
            }
            if !state.blackhole.load(Ordering::SeqCst) {
                break;
            }
            restored.await;
        }
        let latency = *state.latency.lock().unwrap_or_else(|p| p.into_inner());
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
