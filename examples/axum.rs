//! Per-account payments behind `distlock-tower`: one payment per account at a time, across
//! every instance of the service. The key is the `{account}` path parameter.
//!
//! The lock metrics (the runtime's and the layer's, feature `metrics`) are served in the
//! Prometheus text format at `/metrics`.
//!
//! ```text
//! cargo run -p examples --example axum             # serve, pay twice at once, print, exit
//! cargo run -p examples --example axum -- --serve  # keep serving on 127.0.0.1:3000
//! REDIS_URL=redis://127.0.0.1:6379 cargo run -p examples --example axum
//! ```
//! Then, while serving: `curl -X POST localhost:3000/accounts/42/payments` and
//! `curl localhost:3000/metrics`.

use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::{get, post};
use distlock_tower::{LockLayer, Locked, PathParam};
use examples::FencedStore;
use metrics_exporter_prometheus::PrometheusBuilder;

/// The ledger the payments write to.
static LEDGER: std::sync::LazyLock<FencedStore> = std::sync::LazyLock::new(FencedStore::default);

async fn pay(Path(account): Path<String>, Locked(lock): Locked) -> String {
    // The payment: read the balance, call the bank, write the ledger. No other request for
    // this account runs meanwhile; the write carries the lock's fence, so a request whose
    // lease ran out (a long pause) cannot overwrite a newer one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    match LEDGER.write(&account, lock.fencing_token()) {
        Ok(()) => format!(
            "paid from account {account} (fence {})\n",
            lock.fencing_token()
        ),
        Err(refused) => format!("not paid: {refused}\n"),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // The recorder first: clients register their metrics with the recorder installed then.
    let prometheus = PrometheusBuilder::new().install_recorder()?;
    let locks = examples::client_from_env().await?;

    let app = Router::new()
        .route("/accounts/{account}/payments", post(pay))
        // route_layer: path parameters are known once the route matched.
        .route_layer(
            LockLayer::new(locks, PathParam::new("account"))
                .namespace("payments:")
                .ttl(Duration::from_secs(10)),
        )
        .route("/health", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || {
                let prometheus = prometheus.clone();
                async move {
                    // Histograms are kept in buckets that upkeep rotates; do it per scrape.
                    prometheus.run_upkeep();
                    prometheus.render()
                }
            }),
        );

    let serve = std::env::args().any(|a| a == "--serve");
    let addr = if serve {
        "127.0.0.1:3000"
    } else {
        "127.0.0.1:0"
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    if serve {
        server.await??;
        return Ok(());
    }

    // Two payments from account 42 at once, and one from account 7.
    let http = reqwest::Client::new();
    let pay = |account: &'static str| {
        let http = http.clone();
        async move {
            let response = http
                .post(format!("http://{addr}/accounts/{account}/payments"))
                .send()
                .await?;
            let status = response.status();
            let retry = response
                .headers()
                .get("retry-after")
                .map(|v| format!(" (Retry-After: {}s)", v.to_str().unwrap_or("?")))
                .unwrap_or_default();
            let body = response.text().await?;
            Ok::<_, reqwest::Error>(format!(
                "account {account}: {status}{retry} {}",
                body.trim()
            ))
        }
    };
    let (first, second, other) = tokio::join!(pay("42"), pay("42"), pay("7"));
    for line in [first?, second?, other?] {
        println!("{line}");
    }
    println!("after the first finished: {}", pay("42").await?);

    // What a Prometheus scrape sees: the layer's outcomes and the locks' counters.
    let scrape = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    println!("GET /metrics (excerpt):");
    for line in scrape.lines().filter(|l| {
        l.starts_with("distlock_tower_requests_total")
            || l.starts_with("distlock_acquired_total")
            || l.starts_with("distlock_busy_total")
            || l.starts_with("distlock_held")
    }) {
        println!("  {line}");
    }
    Ok(())
}
