//! Support shared by the attack tests (`tests/tests/attack*.rs`): a process-wide panic
//! recorder, replayable seeds, a seeded fault injector, and the checks that nothing was left
//! held or lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use distlock::{LockClient, LockGuard};

use crate::fuzz::rng::Rng;
use crate::{RedisServer, TcpProxy};

static PANICS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();

/// Records every panic of the process from now on (the library's background runtime
/// included, where a panic would otherwise only end a task); see [`panics`].
pub fn watch_panics() {
    if PANICS.set(Mutex::default()).is_err() {
        return;
    }
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Some(p) = PANICS.get() {
            p.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(info.to_string());
        }
        default(info);
    }));
}

/// The panics recorded since [`watch_panics`].
pub fn panics() -> Vec<String> {
    PANICS
        .get()
        .map(|p| p.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .unwrap_or_default()
}

/// The seed in the environment variable `var`, or `default`; printed with how to replay it.
pub fn seed(var: &str, default: u64) -> u64 {
    let seed = std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    println!("seed {seed} (replay with {var}={seed})");
    seed
}

/// Takes every key in `keys` with `b` (each may wait `within`), concurrently: the keys that
/// could not be taken, with who holds them.
pub async fn not_free(b: &LockClient, keys: &[String], within: Duration) -> Vec<String> {
    let tries = keys.iter().map(|k| async move {
        match b.lock(k.as_str()).wait(within).await {
            Ok(g) => {
                let _ = g.release().await;
                None
            }
            Err(e) => Some(format!("{k}: {e}; held as {:?}", b.inspect(k).await)),
        }
    });
    futures_util::future::join_all(tries)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// `DEBUG SLEEP secs` on `server` (blocks the calling thread as long; errors ignored).
pub fn debug_sleep(server: &RedisServer, secs: f64) {
    let mut conn = server.conn();
    let _: redis::RedisResult<()> = redis::cmd("DEBUG").arg("SLEEP").arg(secs).query(&mut conn);
}

/// Watches `guard` until `until` after `t0`: when (after `t0`) it first stopped being held,
/// if it did.
pub async fn lost_before(guard: &LockGuard, t0: Instant, until: Duration) -> Option<Duration> {
    while t0.elapsed() < until {
        if !guard.is_held() {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// A fault [`fault_thread`] injects.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// `SCRIPT FLUSH`: every cached script is gone (the next `EVALSHA` falls back).
    Flush,
    /// Every client connection is closed by the server.
    Kill,
    /// The proxy (if any) cuts every connection through it.
    Cut,
    /// The server is frozen (SIGSTOP) for a random time in `lo..hi` ms.
    Pause(u64, u64),
    /// The server is busy (`DEBUG SLEEP`, which needs `--enable-debug-command yes`) for a
    /// random time in `lo..hi` ms.
    Sleep(u64, u64),
}

/// A thread injecting `faults` (weighted) on `server` every `gap` ms (a random pause in that
/// range) until `stop`, from `seed`; how many of each it injected. The server is resumed
/// when it ends.
///
/// # Panics
///
/// The thread panics (the handle's `join` returns it) if the server cannot be reached with a
/// fresh connection.
#[must_use]
pub fn fault_thread(
    server: Arc<RedisServer>,
    proxy: Option<Arc<TcpProxy>>,
    stop: Arc<AtomicBool>,
    seed: u64,
    gap: (u64, u64),
    faults: Vec<(Fault, u32)>,
) -> std::thread::JoinHandle<Vec<usize>> {
    std::thread::spawn(move || {
        let mut rng = Rng::derive(seed, &[0xfa]);
        let weights: Vec<u32> = faults.iter().map(|f| f.1).collect();
        let mut counts = vec![0usize; faults.len()];
        let mut conn = server.conn();
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(rng.range(gap.0, gap.1)));
            let i = rng.weighted(&weights);
            counts[i] += 1;
            let ok = match faults[i].0 {
                Fault::Flush => redis::cmd("SCRIPT")
                    .arg("FLUSH")
                    .query::<()>(&mut conn)
                    .is_ok(),
                Fault::Kill => crate::kill_clients(&mut conn).is_ok(),
                Fault::Cut => {
                    if let Some(p) = &proxy {
                        p.cut();
                    }
                    true
                }
                Fault::Pause(lo, hi) => {
                    server.pause();
                    std::thread::sleep(Duration::from_millis(rng.range(lo, hi)));
                    server.resume();
                    true
                }
                Fault::Sleep(lo, hi) => {
                    let secs = rng.range(lo, hi) as f64 / 1000.0;
                    redis::cmd("DEBUG")
                        .arg("SLEEP")
                        .arg(secs)
                        .query::<()>(&mut conn)
                        .is_ok()
                }
            };
            if !ok {
                conn = server.conn();
            }
        }
        server.resume();
        counts
    })
}
