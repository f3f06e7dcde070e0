//! A TCP proxy for fault tests: added latency, blackholes (nothing passes, nothing closes)
//! and cut connections, between a client and a real server.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    forward(inbound, outbound, state).await;
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

async fn forward(inbound: TcpStream, outbound: TcpStream, state: Arc<State>) {
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
        () = pump(in_read, out_write, &state) => {}
        () = pump(out_read, in_write, &state) => {}
        () = cut => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: &State,
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
