//! A client built over the application's own `redis::Client` / `ConnectionManager`, on a real
//! redis-server: it acquires, waits woken by release notices (over a pub/sub connection made
//! from the client), renews; over a bare manager it waits on its backoff; every command stays
//! bounded by the command timeout whatever the manager's own timeouts; no password shows.

use std::time::{Duration, Instant};

use distlock::LockClient;
use distlock_tests::RedisServer;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// How many connections listen on the release-notice channel of `key`.
fn listeners(server: &RedisServer, key: &str) -> i64 {
    let reply: Vec<redis::Value> = server.cmd(&["PUBSUB", "NUMSUB", &format!("distlock:{key}")]);
    match reply.get(1) {
        Some(redis::Value::Int(n)) => *n,
        other => panic!("unexpected PUBSUB NUMSUB reply: {other:?}"),
    }
}

/// Holds `key` on `holder`, makes `waiter` wait for it, and checks the waiter gets it after
/// the release. Returns how many connections listened on the key's channel while it waited.
async fn wait_for_release(server: &RedisServer, holder: &LockClient, waiter: LockClient) -> i64 {
    let key = "shared:wait";
    let guard = holder.lock(key).await.unwrap();
    let waiting = tokio::spawn(async move {
        let guard = waiter.lock(key).wait(Duration::from_secs(10)).await?;
        guard.release().await
    });
    // Long enough for a waiter to subscribe; then see whether it did.
    let mut listening = 0;
    for _ in 0..50 {
        listening = listeners(server, key);
        if listening > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    guard.release().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiter got the lock after the release")
        .unwrap()
        .unwrap();
    listening
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_redis_client_it_acquires_waits_with_notices_and_renews() {
    let server = RedisServer::start();
    let redis = redis::Client::open(server.url()).unwrap();
    let locks = LockClient::builder()
        .redis_client(redis.clone())
        .build()
        .await
        .unwrap();
    let other = LockClient::builder()
        .redis_client(redis)
        .build()
        .await
        .unwrap();

    let guard = locks
        .lock("shared:renew")
        .ttl(Duration::from_millis(300))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await; // three leases: renewed meanwhile
    assert!(guard.is_held());
    let info = other.inspect("shared:renew").await.unwrap().expect("held");
    assert_eq!(info.fencing_token, guard.fencing_token());
    guard.release().await.unwrap();

    let listening = wait_for_release(&server, &other, locks).await;
    assert_eq!(listening, 1, "the waiter was subscribed to release notices");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_connection_manager_and_its_client() {
    let server = RedisServer::start();
    let redis = redis::Client::open(server.url()).unwrap();
    let manager = ConnectionManager::new(redis.clone()).await.unwrap();
    let locks = LockClient::builder()
        .connection_manager(manager.clone())
        .redis_client(redis.clone())
        .build()
        .await
        .unwrap();
    // The manager is the application's: its other commands keep working alongside.
    let mut app = manager.clone();
    let _: () = redis::cmd("SET")
        .arg("app:key")
        .arg("1")
        .query_async(&mut app)
        .await
        .unwrap();

    let guard = locks
        .lock("shared:renew")
        .ttl(Duration::from_millis(300))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(guard.is_held(), "renewed through the application's manager");
    guard.release().await.unwrap();

    let holder = LockClient::connect(&server.url()).await.unwrap();
    let listening = wait_for_release(&server, &holder, locks).await;
    assert_eq!(
        listening, 1,
        "notices over a pub/sub connection from the client"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_bare_connection_manager_waiting_falls_back_to_backoff() {
    let server = RedisServer::start();
    let manager = ConnectionManager::new(redis::Client::open(server.url()).unwrap())
        .await
        .unwrap();
    let locks = LockClient::builder()
        .connection_manager(manager)
        .build()
        .await
        .unwrap();
    let guard = locks.lock("bare:1").await.unwrap();
    assert!(guard.is_held());
    guard.release().await.unwrap();

    let holder = LockClient::connect(&server.url()).await.unwrap();
    let listening = wait_for_release(&server, &holder, locks).await;
    assert_eq!(
        listening, 0,
        "no pub/sub connection without a redis::Client"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_stay_bounded_by_the_command_timeout() {
    let server = RedisServer::start();
    let redis = redis::Client::open(server.url()).unwrap();
    // The application's manager waits for answers as long as it takes.
    let patient = ConnectionManagerConfig::new().set_response_timeout(None);
    let manager = ConnectionManager::new_with_config(redis, patient)
        .await
        .unwrap();
    let locks = LockClient::builder()
        .connection_manager(manager)
        .command_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    server.pause();
    let started = Instant::now();
    let err = locks.lock("stuck:1").await.unwrap_err();
    let took = started.elapsed();
    server.resume();
    assert!(err.is_backend(), "{err}");
    assert!(
        took < Duration::from_secs(3),
        "an acquire against a frozen server returned after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_shows_in_debug_output() {
    let server = RedisServer::start_with(&["--requirepass", "s3cret-pw"]);
    let url = format!("redis://:s3cret-pw@127.0.0.1:{}", server.port());
    let redis = redis::Client::open(url).unwrap();
    let builder = LockClient::builder().redis_client(redis.clone());
    let shown = format!("{builder:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    let locks = builder.build().await.unwrap();
    let shown = format!("{locks:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains(&server.port().to_string()), "{shown}");
    locks.lock("auth:1").await.unwrap().release().await.unwrap();
}
