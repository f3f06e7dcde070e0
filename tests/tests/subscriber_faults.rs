//! Faults on the connection that carries release notices (through a TCP proxy): a new
//! subscriber connection that goes into a black hole, an established one that goes silent.
//! Every bounded wait still ends by its deadline, waiters of other keys are not held up, and
//! the subscriber is replaced so that notices come back.

use std::time::{Duration, Instant};

use distlock::{LockClient, LockError};
use distlock_tests::{RedisServer, TcpProxy};

/// The command timeout of the clients under test.
const TIMEOUT: Duration = Duration::from_millis(300);
/// What a `wait(1s)` may take in all: the wait, an acquire or subscription in flight at its
/// deadline (each bounded by the command timeout), and scheduling on a busy machine.
const BOUND: Duration = Duration::from_millis(2000);

async fn client_via(proxy: &TcpProxy) -> LockClient {
    LockClient::builder()
        .url(proxy.url())
        .command_timeout(TIMEOUT)
        .build()
        .await
        .unwrap()
}

/// How many connections of `server` are subscribed to `channel`.
fn subscribers(server: &RedisServer, channel: &str) -> i64 {
    let reply: (String, i64) = server.cmd(&["PUBSUB", "NUMSUB", channel]);
    reply.1
}

/// Polls `probe` every 10 ms until it holds.
///
/// # Panics
///
/// After 10 s.
async fn eventually(what: &str, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !probe() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `client.lock(key).wait(1s)` on a key held elsewhere: how it ended and when.
async fn bounded_wait(client: &LockClient, key: &str) -> (Result<(), LockError>, Duration) {
    let started = Instant::now();
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        client.lock(key).wait(Duration::from_secs(1)),
    )
    .await
    .unwrap_or_else(|_| panic!("lock({key}).wait(1s) still pending after 10 s"));
    (outcome.map(drop), started.elapsed())
}

fn assert_busy_in_time(key: &str, (outcome, took): (Result<(), LockError>, Duration)) {
    let err = outcome.expect_err("the key is held elsewhere");
    assert!(err.is_busy(), "{key}: {err}");
    assert!(
        took >= Duration::from_millis(950) && took < BOUND,
        "{key}: wait(1s) took {took:?}"
    );
}

#[tokio::test]
async fn bounded_waits_end_when_the_subscriber_connection_goes_into_a_black_hole() {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port());
    let client = client_via(&proxy).await; // its command connection is established now
    let holder = LockClient::connect(&server.url()).await.unwrap();
    let ttl = Duration::from_secs(30);
    let _a = holder.lock("a").ttl(ttl).await.unwrap();
    let b_held = holder.lock("b").ttl(ttl).await.unwrap();

    // The subscriber connection, made on first wait, never gets an answer.
    proxy.blackhole_new_connections(true);
    let a = bounded_wait(&client, "a");
    let b = async {
        // Another key's waiter, arriving while the first one's subscription hangs.
        eventually("the subscriber connection was attempted", || {
            proxy.connections() >= 2
        })
        .await;
        bounded_wait(&client, "b").await
    };
    let (a, b) = tokio::join!(a, b);
    assert_busy_in_time("a", a);
    assert_busy_in_time("b", b);

    // New connections work again: the subscriber is made anew, and notices come back.
    proxy.blackhole_new_connections(false);
    let notified = client.clone();
    let waiter = tokio::spawn(async move {
        let acquired = notified.lock("b").wait(Duration::from_secs(20)).await;
        (acquired.map(drop), Instant::now())
    });
    eventually("a waiter subscribed through a new connection", || {
        subscribers(&server, "distlock:b") == 1
    })
    .await;
    // Let the waiter's backoff grow to its cap: only a notice wakes it promptly now.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let released = Instant::now();
    b_held.release().await.unwrap();
    let (acquired, at) = waiter.await.unwrap();
    acquired.unwrap();
    assert!(
        at - released < Duration::from_millis(300),
        "woken {:?} after the release",
        at - released
    );
}

/// Starts a waiter on `key` that waits long, and returns once it is subscribed.
async fn long_waiter(
    server: &RedisServer,
    client: &LockClient,
    key: &str,
) -> tokio::task::JoinHandle<(Result<(), LockError>, Instant)> {
    let client = client.clone();
    let owned = key.to_owned();
    let waiter = tokio::spawn(async move {
        let acquired = client.lock(owned).wait(Duration::from_secs(30)).await;
        (acquired.map(drop), Instant::now())
    });
    let channel = format!("distlock:{key}");
    eventually("the long waiter subscribed", || {
        subscribers(server, &channel) == 1
    })
    .await;
    waiter
}

/// Once the long waiter's backoff reached its cap, releasing `held` wakes it by the notice,
/// well before its next retry.
async fn woken_by_the_release(
    held: distlock::LockGuard,
    long: tokio::task::JoinHandle<(Result<(), LockError>, Instant)>,
) {
    tokio::time::sleep(Duration::from_millis(1600)).await; // its backoff at the cap
    let released = Instant::now();
    held.release().await.unwrap();
    let (acquired, at) = long.await.unwrap();
    acquired.unwrap();
    assert!(
        at - released < Duration::from_millis(300),
        "woken {:?} after the release",
        at - released
    );
}

#[tokio::test]
async fn bounded_waits_end_when_the_established_subscriber_goes_silent() {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port());
    let client = client_via(&proxy).await;
    let holder = LockClient::connect(&server.url()).await.unwrap();
    let ttl = Duration::from_secs(30);
    let a = holder.lock("a").ttl(ttl).await.unwrap();
    let _b = holder.lock("b").ttl(ttl).await.unwrap();
    let _c = holder.lock("c").ttl(ttl).await.unwrap();

    let long = long_waiter(&server, &client, "a").await;
    assert_eq!(proxy.connections(), 2, "commands, then the subscriber");
    proxy.silence(1); // half-open: nothing passes, nothing closes

    // Subscribing "b" gets no confirmation; the waiter of "c" must not queue up behind it.
    let (b, c) = tokio::join!(bounded_wait(&client, "b"), bounded_wait(&client, "c"));
    assert_busy_in_time("b", b);
    assert_busy_in_time("c", c);

    // The silent connection was replaced; the long waiter is subscribed again (the server
    // still counts the silent connection too, which the proxy keeps open).
    eventually("the long waiter subscribed on a new connection", || {
        subscribers(&server, "distlock:a") == 2
    })
    .await;
    woken_by_the_release(a, long).await;
}

#[tokio::test]
async fn a_silent_subscriber_is_found_out_by_its_ping_and_replaced() {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port());
    let client = client_via(&proxy).await;
    let holder = LockClient::connect(&server.url()).await.unwrap();
    let a = holder.lock("a").ttl(Duration::from_secs(30)).await.unwrap();

    let long = long_waiter(&server, &client, "a").await;
    proxy.silence(1);
    // Nothing else is subscribed: only the PING (every few seconds) can find it out.
    let silenced = Instant::now();
    eventually("the long waiter subscribed on a new connection", || {
        subscribers(&server, "distlock:a") == 2
    })
    .await;
    assert!(
        silenced.elapsed() < Duration::from_secs(5),
        "replaced after {:?}",
        silenced.elapsed()
    );
    woken_by_the_release(a, long).await;
}
