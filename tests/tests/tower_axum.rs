//! `distlock-tower` in a real axum server over TCP, on a real redis-server and in-process.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path;
use axum::routing::{get, post};
use common::Env;
use distlock::LockClient;
use distlock_tests::wait_until_held;
use distlock_tower::{HeaderKey, LockLayer, Locked, PathParam, Protocol, Rejection};
use futures_util::StreamExt;

on_both_backends!(
    same_key_conflicts_and_distinct_keys_run_together,
    requests_without_a_key_pass_unlocked,
    a_dropped_request_releases_its_lock_at_once,
    a_lost_lease_ends_the_request,
    waiting_requests_run_in_turn,
    hostile_keys_are_refused,
    path_keys_are_the_values_the_handler_sees,
    a_normalisation_hook_maps_spellings_to_one_key,
    the_lock_can_be_held_until_the_body_is_sent,
    a_held_body_waiting_on_its_stream_ends_when_the_lock_is_lost,
    rejections_can_be_customised,
    the_handler_sees_the_fence_the_lock_holds,
);

/// Pays after `?ms=N` milliseconds of work.
async fn pay(Path(id): Path<String>, uri: http::Uri) -> String {
    let ms = uri
        .query()
        .and_then(|q| q.strip_prefix("ms="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    format!("paid {id}")
}

fn app(layer: LockLayer<PathParam>) -> Router {
    Router::new()
        .route("/accounts/{id}/pay", post(pay))
        .route_layer(layer)
        .route("/health", get(|| async { "ok" }))
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

async fn post_pay(addr: SocketAddr, id: &str, ms: u64) -> reqwest::Response {
    http()
        .post(format!("http://{addr}/accounts/{id}/pay?ms={ms}"))
        .send()
        .await
        .unwrap()
}

async fn same_key_conflicts_and_distinct_keys_run_together(env: &Env) {
    let client = env.client().await;
    let addr = serve(app(
        LockLayer::new(client.clone(), PathParam::new("id")).ttl(Duration::from_secs(30))
    ))
    .await;
    let started = Instant::now();
    let slow = tokio::spawn(post_pay(addr, "1", 600));
    wait_until_held(&client, "1").await;

    let busy = post_pay(addr, "1", 0).await;
    assert_eq!(busy.status(), 423);
    let retry: u64 = busy.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    assert!(busy.text().await.unwrap().contains("locked"));

    let other = post_pay(addr, "2", 0).await;
    assert_eq!(other.status(), 200, "a distinct key runs alongside");
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "it did not wait for key 1"
    );

    let slow = slow.await.unwrap();
    assert_eq!(slow.status(), 200);
    assert_eq!(slow.text().await.unwrap(), "paid 1");
    assert_eq!(
        post_pay(addr, "1", 0).await.status(),
        200,
        "free again after the response"
    );
}

async fn requests_without_a_key_pass_unlocked(env: &Env) {
    let client = env.client().await;
    let app = Router::new()
        .route("/jobs", post(|| async { "ran" }))
        .layer(LockLayer::new(client.clone(), HeaderKey::new("x-job")));
    let addr = serve(app).await;
    let _held = client.lock("nightly").await.unwrap();
    let keyed = http()
        .post(format!("http://{addr}/jobs"))
        .header("x-job", "nightly")
        .send()
        .await
        .unwrap();
    assert_eq!(keyed.status(), 423);
    let unkeyed = http()
        .post(format!("http://{addr}/jobs"))
        .send()
        .await
        .unwrap();
    assert_eq!(unkeyed.status(), 200);
    assert_eq!(client.held_locks(), 1, "the unkeyed request took no lock");
}

async fn a_dropped_request_releases_its_lock_at_once(env: &Env) {
    let client = env.client().await;
    let addr = serve(app(
        LockLayer::new(client.clone(), PathParam::new("id")).ttl(Duration::from_secs(30))
    ))
    .await;
    let gave_up = http()
        .post(format!("http://{addr}/accounts/9/pay?ms=10000"))
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client gave up");
    // The server sees the connection close and drops the request: the lock goes with it.
    let started = Instant::now();
    loop {
        let response = post_pay(addr, "9", 0).await;
        if response.status() == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the lock outlived its request"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(client.held_locks(), 0);
}

async fn a_lost_lease_ends_the_request(env: &Env) {
    let client = env.client().await;
    let addr = serve(app(
        LockLayer::new(client.clone(), PathParam::new("id")).ttl(Duration::from_millis(600))
    ))
    .await;
    let started = Instant::now();
    let request = tokio::spawn(post_pay(addr, "5", 5000));
    wait_until_held(&client, "5").await;
    env.flush();
    let response = request.await.unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.text().await.unwrap().contains("lost"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

async fn waiting_requests_run_in_turn(env: &Env) {
    let client = env.client().await;
    let layer = LockLayer::new(client, PathParam::new("id")).wait(Duration::from_secs(5));
    let addr = serve(app(layer)).await;
    let started = Instant::now();
    let calls: Vec<_> = (0..3)
        .map(|_| tokio::spawn(post_pay(addr, "3", 150)))
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().status(), 200);
    }
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "they ran one at a time"
    );
}

async fn hostile_keys_are_refused(env: &Env) {
    let client = env.client().await;
    let app = Router::new()
        .route("/jobs", post(|| async { "ran" }))
        .layer(LockLayer::new(client.clone(), HeaderKey::new("x-job")).namespace("tenant-a:"));
    let addr = serve(app).await;
    if let Some(server) = env.server() {
        server.cmd::<()>(&["CONFIG", "RESETSTAT"]);
    }
    let hostile = [
        "k".repeat(10_000),
        "{slot}job".to_owned(),
        "../tenant-b:job".to_owned(),
        "job\ttab".to_owned(),
        "*".to_owned(),
    ];
    for key in &hostile {
        let response = http()
            .post(format!("http://{addr}/jobs"))
            .header("x-job", key.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{key:.40}");
    }
    // CR LF cannot travel in a header; a closure extractor reading a decoded query can see it.
    let decoded = Router::new()
        .route("/q", post(|| async { "ran" }))
        .layer(LockLayer::new(
            client.clone(),
            |req: &http::Request<axum::body::Body>| {
                let q = req.uri().query()?;
                Some(q.replace("%0D", "\r").replace("%0A", "\n"))
            },
        ));
    let addr2 = serve(decoded).await;
    let response = http()
        .post(format!("http://{addr2}/q?a%0D%0ASET%20x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    if let Some(server) = env.server() {
        let stats: String = server.cmd(&["INFO", "commandstats"]);
        assert!(
            !stats.contains("cmdstat_evalsha"),
            "Redis was touched: {stats}"
        );
    }
    for ok in ["acct:42", "orders/7", "tenant-a.job_1"] {
        let response = http()
            .post(format!("http://{addr}/jobs"))
            .header("x-job", ok)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{ok}");
    }
    assert_eq!(client.held_locks(), 0);
}

/// `42` held, and the path `/accounts/{id}/pay` spelt in other ways.
async fn path_keys_are_the_values_the_handler_sees(env: &Env) {
    let client = env.client().await;
    let addr = serve(app(
        LockLayer::new(client.clone(), PathParam::new("id")).namespace("pay:")
    ))
    .await;
    let _held = client.lock("pay:42").await.unwrap();
    // axum's `Path` sees "42": so does the lock.
    assert_eq!(post_pay(addr, "%34%32", 0).await.status(), 423);
    assert_eq!(post_pay(addr, "4%32", 0).await.status(), 423);
    // Invisible characters (U+200B ZERO WIDTH SPACE, U+2060 WORD JOINER, U+FEFF) are refused.
    for invisible in ["42%E2%80%8B", "4%E2%81%A02", "%EF%BB%BF42"] {
        let response = post_pay(addr, invisible, 0).await;
        assert_eq!(response.status(), 400, "{invisible}");
    }
    // A value that is not UTF-8 once decoded is refused by the layer, not locked raw nor let
    // through unlocked (this handler does not extract the path, so cannot refuse it itself).
    let unextracted = Router::new()
        .route("/jobs/{id}", post(|| async { "ran" }))
        .route_layer(LockLayer::new(client.clone(), PathParam::new("id")));
    let addr2 = serve(unextracted).await;
    let response = http()
        .post(format!("http://{addr2}/jobs/%FF%FE"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(client.held_locks(), 1, "only the test's own lock");
}

/// `LockLayer::normalize_key`: fold Unicode compatibility forms (NFKC) and leading zeros,
/// refuse what is not an account number, the way the handler's `Path<u64>` would.
async fn a_normalisation_hook_maps_spellings_to_one_key(env: &Env) {
    use unicode_normalization::UnicodeNormalization;

    let client = env.client().await;
    let layer = LockLayer::new(client.clone(), PathParam::new("id"))
        .namespace("pay:")
        .normalize_key(|raw: &str| {
            let folded: String = raw.nfkc().collect();
            folded
                .parse::<u64>()
                .map(|id| id.to_string())
                .map_err(|_| "an account id is a number")
        });
    let addr = serve(app(layer)).await;
    let _held = client.lock("pay:42").await.unwrap();
    // "042", fullwidth "４２" and "０４２": all account 42.
    for spelling in [
        "042",
        "%EF%BC%94%EF%BC%92",
        "%EF%BC%90%EF%BC%94%EF%BC%92",
        "42",
    ] {
        let response = post_pay(addr, spelling, 0).await;
        assert_eq!(response.status(), 423, "{spelling}");
    }
    let refused = post_pay(addr, "forty-two", 0).await;
    assert_eq!(refused.status(), 400);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("an account id is a number"),
        "the hook's reason is the answer"
    );
    assert_eq!(post_pay(addr, "0043", 0).await.status(), 200);
}

async fn the_lock_can_be_held_until_the_body_is_sent(env: &Env) {
    let client = env.client().await;
    let streamed = Router::new()
        .route("/export/{id}", get(|| async { slow_chunks() }))
        .route_layer(
            LockLayer::new(client.clone(), PathParam::new("id")).hold_until_body_sent(true),
        );
    let addr = serve(streamed).await;
    let response = http()
        .get(format!("http://{addr}/export/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The head is here, the body is still streaming: the lock is still held.
    let busy = http()
        .get(format!("http://{addr}/export/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(busy.status(), 423);
    assert_eq!(response.text().await.unwrap(), "abc");
    let started = Instant::now();
    loop {
        if http()
            .get(format!("http://{addr}/export/1"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "held after the body was sent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// "a", "b", "c", 150 ms apart.
fn slow_chunks() -> axum::body::Body {
    let chunks = futures_util::stream::unfold(0u8, |n| async move {
        if n == 3 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        Some((Ok::<_, std::io::Error>(vec![b'a' + n]), n + 1))
    });
    axum::body::Body::from_stream(chunks)
}

/// A body that sends "a" and then waits for more that never comes.
fn stalled_after_one_chunk() -> axum::body::Body {
    let first = futures_util::stream::once(async { Ok::<_, std::io::Error>(b"a".to_vec()) });
    axum::body::Body::from_stream(first.chain(futures_util::stream::pending()))
}

async fn a_held_body_waiting_on_its_stream_ends_when_the_lock_is_lost(env: &Env) {
    let client = env.client().await;
    let streamed = Router::new()
        .route("/export/{id}", get(|| async { stalled_after_one_chunk() }))
        .route_layer(
            LockLayer::new(client.clone(), PathParam::new("id"))
                .ttl(Duration::from_millis(600))
                .hold_until_body_sent(true),
        );
    let addr = serve(streamed).await;
    let mut response = http()
        .get(format!("http://{addr}/export/7"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.chunk().await.unwrap().as_deref(), Some(&b"a"[..]));
    env.flush();
    // The body waits on its stream: only the lock's loss can end it (the time limit is a
    // guard against hanging, the renewal that notices the loss comes within ttl/3).
    let end = tokio::time::timeout(Duration::from_secs(5), response.chunk())
        .await
        .expect("the body outlived its lock");
    assert!(end.is_err(), "the body must end with an error, not {end:?}");
    let other = env.client().await;
    let taken = other.lock("7").await;
    assert!(taken.is_ok(), "the key is free: {taken:?}");
}

/// A paused Redis stops the watchdog; the lease's local deadline (which comes before the
/// server lets the key go) ends the body with an error, before another client can take the
/// key. Frames are streamed all along: none may reach the client after that other client
/// holds the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_frame_is_sent_after_another_client_took_the_key() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let server = distlock_tests::RedisServer::start();
    let client = server.client_with_timeout(Duration::from_millis(100)).await;
    let other = LockClient::connect(&server.url()).await.unwrap();
    let ticking = || {
        let ticks = futures_util::stream::unfold(0u64, |n| async move {
            tokio::time::sleep(Duration::from_millis(10)).await; // the work of one frame
            Some((
                Ok::<_, std::io::Error>(format!("{n}\n").into_bytes()),
                n + 1,
            ))
        });
        axum::body::Body::from_stream(ticks)
    };
    let streamed = Router::new()
        .route("/export/{id}", get(move || async move { ticking() }))
        .route_layer(
            LockLayer::new(client.clone(), PathParam::new("id"))
                .ttl(Duration::from_millis(500))
                .hold_until_body_sent(true),
        );
    let addr = serve(streamed).await;
    let mut response = http()
        .get(format!("http://{addr}/export/9"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.chunk().await.unwrap().is_some());
    server.pause();

    // The other client takes the key once the body has ended (or, should it never end, once
    // the first holder's lease is long gone).
    let taken = Arc::new(AtomicBool::new(false));
    let body_ended = Arc::new(tokio::sync::Notify::new());
    let taker = tokio::spawn({
        let (taken, body_ended) = (taken.clone(), body_ended.clone());
        async move {
            tokio::select! {
                () = body_ended.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(3)) => {}
            }
            server.resume();
            let guard = other.lock("9").wait(Duration::from_secs(5)).await;
            taken.store(true, Ordering::SeqCst);
            (guard.map(|g| g.fencing_token()), server)
        }
    });
    let mut after_taken = 0;
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match response.chunk().await {
                Ok(Some(_)) if taken.load(Ordering::SeqCst) => {
                    after_taken += 1;
                    if after_taken == 3 {
                        return Ok(None);
                    }
                }
                Ok(Some(_)) => {}
                end => return end,
            }
        }
    })
    .await
    .expect("the body neither ended nor kept streaming");
    body_ended.notify_one();
    let (taken_with, _server) = taker.await.unwrap();
    assert!(taken_with.is_ok(), "{taken_with:?}");
    assert_eq!(
        after_taken, 0,
        "frames were sent after another client took the key"
    );
    assert!(end.is_err(), "the body must end with an error, not {end:?}");
}

async fn rejections_can_be_customised(env: &Env) {
    let client = env.client().await;
    let layer = LockLayer::new(client.clone(), PathParam::new("id")).rejection(
        |rejection: &Rejection, protocol: Protocol| match (rejection, protocol) {
            (Rejection::Busy { key, .. }, Protocol::Http) => http::Response::builder()
                .status(409)
                .body(format!("account {key} is busy"))
                .unwrap(),
            _ => rejection.http_response(),
        },
    );
    let addr = serve(app(layer)).await;
    let _held = client.lock("4").await.unwrap();
    let response = post_pay(addr, "4", 0).await;
    assert_eq!(response.status(), 409);
    assert_eq!(response.text().await.unwrap(), "account 4 is busy");
}

#[tokio::test]
async fn a_backend_that_is_down_answers_503_or_fails_open() {
    let mut server = distlock_tests::RedisServer::start();
    let client = server.client_with_timeout(Duration::from_millis(300)).await;
    let closed = serve(app(LockLayer::new(client.clone(), PathParam::new("id")))).await;
    let open = serve(app(
        LockLayer::new(client, PathParam::new("id")).fail_open(true)
    ))
    .await;
    server.kill();
    let response = post_pay(closed, "1", 0).await;
    assert_eq!(response.status(), 503);
    let response = post_pay(open, "1", 0).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn works_behind_timeout_and_concurrency_limit_layers() {
    use tower::{ServiceBuilder, ServiceExt};

    let client = LockClient::memory();
    let service = ServiceBuilder::new()
        .timeout(Duration::from_millis(100))
        .concurrency_limit(8)
        .layer(LockLayer::new(client.clone(), HeaderKey::new("x-job")))
        .service_fn(|req: http::Request<String>| async move {
            let ms: u64 = req.body().parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(String::from("done")))
        });
    let request = |ms: u64| {
        http::Request::post("/")
            .header("x-job", "j")
            .body(ms.to_string())
            .unwrap()
    };
    let timed_out = service.clone().oneshot(request(5_000)).await;
    assert!(timed_out.is_err(), "the timeout layer fired");
    // The timeout dropped the locked future: the key is free at once.
    let response = service.clone().oneshot(request(0)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(client.held_locks(), 0);
}

/// The handler sees the lock it runs under, three ways: the `Locked` extractor, the
/// `HeldLock` in the request's extensions, and `distlock::current()`; all carry the fence the
/// lock holds on the backend. A route outside the layer gets `None` / a 500 for `Locked`.
async fn the_handler_sees_the_fence_the_lock_holds(env: &Env) {
    let client = env.client().await;
    let inspector = client.clone();
    let fences = move |Locked(lock): Locked, request: axum::extract::Request| {
        let inspector = inspector.clone();
        async move {
            let from_extensions = request
                .extensions()
                .get::<distlock::HeldLock>()
                .map(distlock::HeldLock::fencing_token);
            let current = distlock::current().map(|held| held.fencing_token());
            let stored = inspector
                .inspect(lock.key())
                .await
                .unwrap()
                .map(|info| info.fencing_token);
            format!(
                "{} {:?} {:?} {:?} {}",
                lock.fencing_token(),
                from_extensions,
                current,
                stored,
                lock.remaining().as_millis() > 0
            )
        }
    };
    let app = Router::new()
        .route("/accounts/{id}/fence", get(fences))
        .route_layer(LockLayer::new(client.clone(), PathParam::new("id")))
        .route(
            "/unlocked",
            get(|lock: Option<Locked>| async move { format!("{}", lock.is_some()) }),
        )
        .route("/unlocked-strict", get(|_: Locked| async { "never" }));
    let addr = serve(app).await;
    let body = http()
        .get(format!("http://{addr}/accounts/7/fence"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let parts: Vec<&str> = body.split(' ').collect();
    let fence = parts[0];
    assert_eq!(parts[1], format!("Some({fence})"), "{body}");
    assert_eq!(
        parts[2],
        format!("Some({fence})"),
        "current() in the handler: {body}"
    );
    assert_eq!(
        parts[3],
        format!("Some({fence})"),
        "the fence the lock holds: {body}"
    );
    assert_eq!(parts[4], "true", "{body}");
    let unlocked = http()
        .get(format!("http://{addr}/unlocked"))
        .send()
        .await
        .unwrap();
    assert_eq!(unlocked.text().await.unwrap(), "false");
    let strict = http()
        .get(format!("http://{addr}/unlocked-strict"))
        .send()
        .await
        .unwrap();
    assert_eq!(strict.status(), 500);
}
