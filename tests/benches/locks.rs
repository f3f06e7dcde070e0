//! Lock benchmark against a redis-server it starts: `cargo bench -p distlock-tests --bench locks`.
//!
//! Prints: PING round trip; acquire+release latency for one client; pairs/s for 64 tasks on
//! distinct keys; 16 tasks contending on one key with a 1 ms critical section (acquisitions/s,
//! lock busy %, wait percentiles, Jain's fairness index), once within one client and once
//! spread over 4 clients; Redis server time per acquire+release pair.
//! `BENCH_SECONDS` sets the length of each timed phase (default 3).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use distlock::LockClient;
use distlock_tests::{RedisServer, latency_histogram, run_rounds};
use hdrhistogram::Histogram;

fn micros(h: &Histogram<u64>, q: f64) -> String {
    format!("{:.0}", h.value_at_quantile(q) as f64 / 1000.0)
}

fn main() {
    // BENCH_RUNTIME=current runs everything on one thread; the default is tokio's
    // multi-threaded runtime with one worker per core.
    let runtime = match std::env::var("BENCH_RUNTIME").as_deref() {
        Ok("current") => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    runtime.expect("tokio runtime").block_on(run());
}

async fn run() {
    let phase = distlock_tests::bench_phase();
    let server = RedisServer::start();
    let version: String = server.cmd(&["INFO", "server"]);
    let version = version
        .lines()
        .find(|l| l.starts_with("redis_version:"))
        .unwrap_or("redis_version:?")
        .trim()
        .to_owned();
    println!(
        "distlock benchmark: {version}, {} cores, phases of {phase:?}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // 1. PING round trip, one client.
    let redis_client = redis::Client::open(server.url()).unwrap();
    let mut conn = redis_client
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut ping = latency_histogram();
    for i in 0..20_000 {
        let t = Instant::now();
        let _: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
        if i >= 1000 {
            ping.record(t.elapsed().as_nanos() as u64).unwrap();
        }
    }
    println!(
        "PING round trip (1 client):            p50 {} µs  p99 {} µs",
        micros(&ping, 0.5),
        micros(&ping, 0.99)
    );

    // 2. Uncontended acquire + release, one client; server time per pair from commandstats.
    let client = LockClient::connect(&server.url()).await.unwrap();
    let mut pair = latency_histogram();
    let pairs = 20_000u32;
    for i in 0..pairs + 1000 {
        if i == 1000 {
            server.cmd::<()>(&["CONFIG", "RESETSTAT"]);
        }
        let t = Instant::now();
        let guard = client.lock("bench:solo").await.unwrap();
        guard.release().await.unwrap();
        if i >= 1000 {
            pair.record(t.elapsed().as_nanos() as u64).unwrap();
        }
    }
    let server_usec = script_usec(&server);
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        let stats: String = server.cmd(&["INFO", "commandstats"]);
        println!("{stats}");
    }
    println!(
        "acquire+release (1 client, 1 task):    p50 {} µs  p99 {} µs  ({:.2}× the PING p50 of two round trips)",
        micros(&pair, 0.5),
        micros(&pair, 0.99),
        pair.value_at_quantile(0.5) as f64 / (2.0 * ping.value_at_quantile(0.5) as f64)
    );
    println!(
        "Redis server time per pair:            {:.2} µs (EVALSHA usec in INFO commandstats / {pairs})",
        server_usec / f64::from(pairs)
    );

    if std::env::var("BENCH_ONLY").as_deref() == Ok("distinct") {
        let keys: Arc<Vec<String>> =
            Arc::new((0..64).map(|t| format!("bench:distinct:{t}")).collect());
        let (total, wall) = run_rounds(64, phase, move |t| {
            let (client, keys) = (client.clone(), keys.clone());
            async move {
                let guard = client.lock(keys[t].as_str()).await.unwrap();
                guard.release().await.unwrap();
            }
        })
        .await;
        println!(
            "64 tasks, distinct keys: {:.0} pairs/s",
            total as f64 / wall.as_secs_f64()
        );
        return;
    }

    // 3a. The transport's ceiling: 64 tasks each sending two PINGs in turn on one
    //     multiplexed connection (what a pair costs without any lock logic).
    let (total, wall) = run_rounds(64, phase, move |_| {
        let mut conn = conn.clone();
        async move {
            let _: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
            let _: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
        }
    })
    .await;
    println!(
        "64 tasks, 2 PINGs each (transport):    {:.0} pairs/s",
        total as f64 / wall.as_secs_f64()
    );

    // 3b. 64 tasks on distinct keys, one client.
    server.cmd::<()>(&["CONFIG", "RESETSTAT"]);
    let cpu_before = redis_cpu(&server);
    let keys: Arc<Vec<String>> = Arc::new((0..64).map(|t| format!("bench:distinct:{t}")).collect());
    let (total, wall) = run_rounds(64, phase, {
        let client = client.clone();
        move |t| {
            let (client, keys) = (client.clone(), keys.clone());
            async move {
                let guard = client.lock(keys[t].as_str()).await.unwrap();
                guard.release().await.unwrap();
            }
        }
    })
    .await;
    let loaded_usec = script_usec(&server);
    let cpu = redis_cpu(&server) - cpu_before;
    println!(
        "64 tasks, distinct keys (1 client):    {:.0} pairs/s  (server {:.2} µs per pair under load; redis-server used {:.0}% of a core)",
        total as f64 / wall.as_secs_f64(),
        loaded_usec / total as f64,
        100.0 * cpu / wall.as_secs_f64()
    );

    // 4. 16 tasks on one key, 1 ms critical section.
    contended(&server, phase, 1).await;
    contended(&server, phase, 4).await;
}

/// CPU seconds (user + system) redis-server has used, from INFO cpu.
fn redis_cpu(server: &RedisServer) -> f64 {
    let info: String = server.cmd(&["INFO", "cpu"]);
    info.lines()
        .filter(|l| l.starts_with("used_cpu_sys:") || l.starts_with("used_cpu_user:"))
        .filter_map(|l| l.split(':').nth(1))
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum()
}

/// Sum of `usec` over EVAL/EVALSHA in INFO commandstats.
fn script_usec(server: &RedisServer) -> f64 {
    let stats: String = server.cmd(&["INFO", "commandstats"]);
    stats
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| l.split("usec=").nth(1))
        .filter_map(|rest| rest.split(',').next())
        .filter_map(|v| v.parse::<f64>().ok())
        .sum()
}

async fn contended(server: &RedisServer, phase: Duration, clients: usize) {
    let mut handles = Vec::new();
    for _ in 0..clients {
        handles.push(LockClient::connect(&server.url()).await.unwrap());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..16 {
        let client = handles[t % clients].clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut waits = latency_histogram();
            let mut held = Duration::ZERO;
            let mut count = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let asked = Instant::now();
                let guard = client
                    .lock("bench:contended")
                    .wait(Duration::from_secs(30))
                    .await
                    .unwrap();
                let got = Instant::now();
                waits.record((got - asked).as_nanos() as u64).unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
                guard.release().await.unwrap();
                held += got.elapsed();
                count += 1;
            }
            (waits, held, count)
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(phase).await;
    stop.store(true, Ordering::Relaxed);
    let mut waits = latency_histogram();
    let mut held = Duration::ZERO;
    let mut counts = Vec::new();
    for t in tasks {
        let (w, h, c) = t.await.unwrap();
        waits.add(&w).unwrap();
        held += h;
        counts.push(c as f64);
    }
    let wall = started.elapsed();
    let sum: f64 = counts.iter().sum();
    let jain = sum * sum / (counts.len() as f64 * counts.iter().map(|c| c * c).sum::<f64>());
    println!(
        "16 tasks, 1 key, 1 ms section ({clients} client{}): {:.0} acq/s  busy {:.1}%  wait p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  Jain {:.3}",
        if clients == 1 { "" } else { "s" },
        sum / wall.as_secs_f64(),
        100.0 * held.as_secs_f64() / wall.as_secs_f64(),
        waits.value_at_quantile(0.5) as f64 / 1e6,
        waits.value_at_quantile(0.99) as f64 / 1e6,
        waits.max() as f64 / 1e6,
        jain
    );
}
