//! distlock-tower overhead: requests/s and latency of an axum hello route with and without
//! the layer, 64 connections on loopback, distinct keys.
//! `cargo bench -p distlock-tests --bench tower` (`BENCH_SECONDS`, default 3, per phase).
//!
//! The load generator runs in the same process as the server (64 reqwest clients, one
//! connection each), so both share the machine's cores with redis-server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use distlock::LockClient;
use distlock_tests::{RedisServer, latency_histogram};
use distlock_tower::{LockLayer, PathParam};

async fn hello(Path(id): Path<u32>) -> String {
    format!("hello {id}")
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn load(label: &str, addr: SocketAddr, phase: Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for conn in 0..64u32 {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap();
            let url = format!("http://{addr}/hello/{conn}");
            let mut h = latency_histogram();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let response = http.get(&url).send().await.unwrap();
                assert_eq!(response.status(), 200);
                response.bytes().await.unwrap();
                h.record(t.elapsed().as_nanos() as u64).unwrap();
            }
            h
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(phase).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = latency_histogram();
    for t in tasks {
        all.add(t.await.unwrap()).unwrap();
    }
    println!(
        "{label:<28} {:>7.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
        all.len() as f64 / started.elapsed().as_secs_f64(),
        all.value_at_quantile(0.5) as f64 / 1e6,
        all.value_at_quantile(0.99) as f64 / 1e6
    );
}

#[tokio::main]
async fn main() {
    let phase = distlock_tests::bench_phase();
    let server = RedisServer::start();
    let route = || Router::new().route("/hello/{id}", get(hello));
    let plain = serve(route()).await;
    let memory =
        serve(route().route_layer(LockLayer::new(LockClient::memory(), PathParam::new("id"))))
            .await;
    let redis_client = LockClient::connect(&server.url()).await.unwrap();
    let redis =
        serve(route().route_layer(LockLayer::new(redis_client, PathParam::new("id")))).await;
    println!("axum hello route, 64 connections, distinct keys, phases of {phase:?}");
    load("without the layer", plain, phase).await;
    load("LockLayer, in-process", memory, phase).await;
    load("LockLayer, Redis", redis, phase).await;
}
