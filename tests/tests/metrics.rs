//! The `metrics` feature, read with a debugging recorder: the runtime's counters, gauges and
//! histograms by bounded key label and deployment, and the tower layer's request outcomes.
//!
//! One global recorder per test binary, installed before any client is built. Its snapshots
//! reset what they read, so every read is added to one accumulated view that all tests share;
//! each test looks only at its own key labels.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use common::Env;
use distlock::LockClient;
use distlock_tests::RedisServer;
use distlock_tower::{HeaderKey, LockLayer};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower::{Layer, ServiceExt, service_fn};

/// A metric's name and its labels (sorted).
type Id = (String, Vec<(String, String)>);

/// What the recorder saw so far, by metric name and labels.
#[derive(Default)]
struct Seen {
    counters: HashMap<Id, u64>,
    gauges: HashMap<Id, f64>,
    histograms: HashMap<Id, Vec<f64>>,
}

fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("the only recorder of this test binary");
        snapshotter
    })
}

fn seen() -> &'static Mutex<Seen> {
    static SEEN: OnceLock<Mutex<Seen>> = OnceLock::new();
    SEEN.get_or_init(Mutex::default)
}

/// Reads the recorder into the accumulated view (gauges only move by increments and
/// decrements, so adding up what each snapshot reset gives their value).
fn read() -> std::sync::MutexGuard<'static, Seen> {
    let mut seen = seen().lock().unwrap();
    for (key, _, _, value) in snapshotter().snapshot().into_vec() {
        let key = key.key();
        let mut labels: Vec<(String, String)> = key
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        labels.sort();
        let id = (key.name().to_owned(), labels);
        match value {
            DebugValue::Counter(n) => *seen.counters.entry(id).or_default() += n,
            DebugValue::Gauge(g) => *seen.gauges.entry(id).or_default() += g.into_inner(),
            DebugValue::Histogram(values) => seen
                .histograms
                .entry(id)
                .or_default()
                .extend(values.into_iter().map(|v| v.into_inner())),
        }
    }
    seen
}

fn matches(labels: &[(String, String)], wanted: &[(&str, &str)]) -> bool {
    wanted
        .iter()
        .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
}

fn counter(name: &str, labels: &[(&str, &str)]) -> u64 {
    read()
        .counters
        .iter()
        .filter(|((n, l), _)| n == name && matches(l, labels))
        .map(|(_, v)| *v)
        .sum()
}

fn gauge(name: &str, labels: &[(&str, &str)]) -> f64 {
    read()
        .gauges
        .iter()
        .filter(|((n, l), _)| n == name && matches(l, labels))
        .map(|(_, v)| *v)
        .sum()
}

fn histogram(name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    read()
        .histograms
        .iter()
        .filter(|((n, l), _)| n == name && matches(l, labels))
        .flat_map(|(_, v)| v.clone())
        .collect()
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// A key label of this test on this backend, and the deployment label.
fn label(env: &Env, test: &str) -> (String, &'static str) {
    match env.server() {
        Some(_) => (format!("{test}-redis"), "redis"),
        None => (format!("{test}-memory"), "memory"),
    }
}

async fn a_hold_is_counted_timed_and_gauged(env: &Env) {
    snapshotter();
    let (kind, deployment) = label(env, "hold");
    let l = [("key_label", kind.as_str()), ("deployment", deployment)];
    let client = env.client().await;
    let guard = client.lock(format!("{kind}:8841")).await.unwrap();
    assert_eq!(counter("distlock_acquired_total", &l), 1);
    assert_eq!(gauge("distlock_held", &l), 1.0);
    let with = |outcome| [l[0], l[1], ("outcome", outcome)];
    assert_eq!(
        histogram("distlock_acquire_duration_seconds", &with("acquired")).len(),
        1
    );
    assert_eq!(
        histogram("distlock_wait_duration_seconds", &with("acquired")).len(),
        1
    );
    guard.release().await.unwrap();
    assert_eq!(counter("distlock_released_total", &l), 1);
    assert_eq!(gauge("distlock_held", &l), 0.0);
    let held = histogram("distlock_hold_duration_seconds", &with("released"));
    assert_eq!(held.len(), 1);
    assert!(held[0] >= 0.0 && held[0] < 60.0, "seconds: {held:?}");
    assert_eq!(counter("distlock_lost_total", &l), 0);

    // The raw key never becomes a label value.
    let seen = read();
    let all_labels = seen
        .counters
        .keys()
        .chain(seen.gauges.keys())
        .chain(seen.histograms.keys())
        .flat_map(|(_, labels)| labels.iter().map(|(_, v)| v.clone()));
    for value in all_labels {
        assert!(!value.contains("8841"), "a raw key as a label: {value}");
    }
}

async fn busy_and_waiting_requests_are_counted(env: &Env) {
    snapshotter();
    let (kind, deployment) = label(env, "busy");
    let l = [("key_label", kind.as_str()), ("deployment", deployment)];
    let key = format!("{kind}:1");
    let (holder, waiter) = (env.client().await, env.client().await);
    let guard = holder.lock(&key).await.unwrap();

    let refused = waiter.lock(&key).await.unwrap_err();
    assert!(refused.is_busy());
    assert_eq!(counter("distlock_busy_total", &l), 1);
    let with = |outcome| [l[0], l[1], ("outcome", outcome)];
    assert_eq!(
        histogram("distlock_wait_duration_seconds", &with("busy")).len(),
        1
    );
    assert!(!histogram("distlock_acquire_duration_seconds", &with("busy")).is_empty());

    let waiting = tokio::spawn({
        let key = key.clone();
        async move { waiter.lock(&key).wait(Duration::from_secs(10)).await }
    });
    eventually("one request waiting", || {
        gauge("distlock_waiting", &l) == 1.0
    })
    .await;
    guard.release().await.unwrap();
    let second = waiting.await.unwrap().unwrap();
    assert_eq!(gauge("distlock_waiting", &l), 0.0);
    assert_eq!(counter("distlock_acquired_total", &l), 2);
    assert_eq!(gauge("distlock_held", &l), 1.0);
    second.release().await.unwrap();
    assert_eq!(gauge("distlock_held", &l), 0.0);
}

async fn a_lost_lock_is_counted(env: &Env) {
    snapshotter();
    let (kind, deployment) = label(env, "lost");
    let l = [("key_label", kind.as_str()), ("deployment", deployment)];
    let client = env.client().await;
    let guard = client
        .lock(format!("{kind}:1"))
        .ttl(Duration::from_millis(300))
        .await
        .unwrap();
    env.flush();
    tokio::time::timeout(Duration::from_secs(5), guard.lost())
        .await
        .expect("lost");
    eventually("counted lost", || counter("distlock_lost_total", &l) == 1).await;
    assert_eq!(gauge("distlock_held", &l), 0.0);
    let with_lost = [l[0], l[1], ("outcome", "lost")];
    assert_eq!(
        histogram("distlock_hold_duration_seconds", &with_lost).len(),
        1
    );
    assert!(guard.release().await.is_err());
    assert_eq!(counter("distlock_released_total", &l), 0);
    assert_eq!(counter("distlock_lost_total", &l), 1, "counted once");
}

on_both_backends!(
    a_hold_is_counted_timed_and_gauged,
    busy_and_waiting_requests_are_counted,
    a_lost_lock_is_counted,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_that_get_no_answer_are_counted() {
    snapshotter();
    let server = RedisServer::start();
    let l = [("key_label", "renewfail"), ("deployment", "redis")];
    let client = LockClient::builder()
        .url(server.url())
        .command_timeout(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    let guard = client
        .lock("renewfail:1")
        .ttl(Duration::from_millis(900))
        .await
        .unwrap();
    server.pause();
    let failures = tokio::time::timeout(Duration::from_secs(5), guard.lost()).await;
    server.resume();
    failures.expect("lost once the deadline passed without a renewal");
    assert!(counter("distlock_renewal_failures_total", &l) >= 1);
    assert_eq!(counter("distlock_lost_total", &l), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_labels_are_bounded_and_can_be_chosen() {
    snapshotter();
    // The default: the part before the first `:`.
    let client = LockClient::memory();
    client
        .lock("dflt:a")
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    client
        .lock("dflt:b:c")
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    assert_eq!(
        counter("distlock_acquired_total", &[("key_label", "dflt")]),
        2
    );

    // A function of the application's.
    let client = LockClient::builder()
        .memory(distlock::MemoryStore::new())
        .metrics_key_label(|key: &str| key.split(':').nth(1).unwrap_or("none").to_owned().into())
        .build()
        .await
        .unwrap();
    client
        .lock("tenant-7:chosen:42")
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    assert_eq!(
        counter("distlock_acquired_total", &[("key_label", "chosen")]),
        1
    );

    // However many labels the function makes, one client reports at most MAX_KEY_LABELS.
    let client = LockClient::builder()
        .memory(distlock::MemoryStore::new())
        .metrics_key_label(|key: &str| key.to_owned().into()) // the raw key: unbounded
        .build()
        .await
        .unwrap();
    let n = distlock::metrics::MAX_KEY_LABELS + 5;
    for i in 0..n {
        let guard = client.lock(format!("capped-{i}")).await.unwrap();
        guard.release().await.unwrap();
    }
    let seen = read();
    let capped = seen
        .counters
        .keys()
        .filter(|(name, labels)| {
            name == "distlock_acquired_total"
                && labels
                    .iter()
                    .any(|(k, v)| k == "key_label" && v.starts_with("capped-"))
        })
        .count();
    drop(seen);
    assert_eq!(capped, distlock::metrics::MAX_KEY_LABELS);
    assert!(counter("distlock_acquired_total", &[("key_label", "other")]) >= 5);
}

fn request(key: Option<&str>) -> http::Request<String> {
    let mut builder = http::Request::post("/");
    if let Some(key) = key {
        builder = builder.header("x-key", key);
    }
    builder.body(String::new()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_counts_what_became_of_each_request() {
    snapshotter();
    let store = distlock::MemoryStore::new();
    let locks = LockClient::builder()
        .memory(store.clone())
        .build()
        .await
        .unwrap();
    let handler = service_fn(|req: http::Request<String>| async move {
        if req.headers().contains_key("x-slow") {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        Ok::<_, Infallible>(http::Response::new(String::from("done")))
    });
    let layer = LockLayer::new(locks.clone(), HeaderKey::new("x-key"))
        .namespace("layered:")
        .ttl(Duration::from_millis(300));
    let service = layer.layer(handler);
    let ns = ("namespace", "layered:");
    let requests = |outcome| counter("distlock_tower_requests_total", &[ns, ("outcome", outcome)]);

    let ok = service.clone().oneshot(request(Some("7"))).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(requests("locked"), 1);
    // The runtime's metrics come along: the layer's keys are labelled by its namespace.
    assert_eq!(
        counter("distlock_acquired_total", &[("key_label", "layered")]),
        1
    );

    let ok = service.clone().oneshot(request(None)).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(requests("passed_through"), 1);

    let held = locks.lock("layered:8").await.unwrap();
    let busy = service.clone().oneshot(request(Some("8"))).await.unwrap();
    assert_eq!(busy.status(), 423);
    assert_eq!(requests("busy"), 1);
    held.release().await.unwrap();

    let bad = service.clone().oneshot(request(Some("a b"))).await.unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(requests("invalid_key"), 1);

    // Lost while the handler runs: the lock is gone at the next renewal.
    let mut slow = request(Some("9"));
    slow.headers_mut()
        .insert("x-slow", http::HeaderValue::from_static("1"));
    let running = tokio::spawn(service.clone().oneshot(slow));
    tokio::time::sleep(Duration::from_millis(50)).await;
    store.clear();
    let stopped = running.await.unwrap().unwrap();
    assert_eq!(stopped.status(), 503);
    assert_eq!(counter("distlock_tower_lost_total", &[ns]), 1);
    assert_eq!(requests("locked"), 2);

    // The backend down: 503.
    let mut server = RedisServer::start();
    let down = LockClient::builder()
        .url(server.url())
        .command_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    server.kill();
    let service = LockLayer::new(down, HeaderKey::new("x-key"))
        .namespace("layered-down:")
        .layer(service_fn(|_req: http::Request<String>| async {
            Ok::<_, Infallible>(http::Response::new(String::new()))
        }));
    let unavailable = service.oneshot(request(Some("1"))).await.unwrap();
    assert_eq!(unavailable.status(), 503);
    assert_eq!(
        counter(
            "distlock_tower_requests_total",
            &[("namespace", "layered-down:"), ("outcome", "unavailable")]
        ),
        1
    );
}
