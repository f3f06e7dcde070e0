//! Redis-only behaviour: bad connections and credentials, foreign keys, script cache flushes,
//! server restarts with data loss, a holder process killed outright.

use std::future::IntoFuture;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use distlock::{BackendErrorKind, LockClient, LockError};
use distlock_tests::{RedisServer, free_port};

fn backend_kind(err: &LockError) -> BackendErrorKind {
    match err {
        LockError::Backend { kind, .. } => *kind,
        other => panic!("expected a backend error, got {other:?}"),
    }
}

#[tokio::test]
async fn unparsable_urls_are_refused_with_the_password_redacted() {
    for url in [
        "http://user:hunter2@localhost",
        "redis://:hunter2@host:notaport",
        "nonsense",
    ] {
        let err = LockClient::connect(url).await.unwrap_err();
        assert!(
            matches!(err, LockError::InvalidUrl { .. }),
            "{url}: {err:?}"
        );
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("hunter2"), "password leaked: {shown}");
    }
}

#[tokio::test]
async fn a_refused_connection_is_a_connection_error() {
    let url = format!("redis://127.0.0.1:{}", free_port());
    let err = LockClient::connect(&url).await.unwrap_err();
    assert_eq!(backend_kind(&err), BackendErrorKind::Connection, "{err}");
    assert!(err.is_backend());
}

#[tokio::test]
async fn a_wrong_password_is_an_auth_error_and_the_right_one_works() {
    let server = RedisServer::start_with(&["--requirepass", "s3cret-pw"]);
    let wrong = format!("redis://:wrong-pw@127.0.0.1:{}", server.port());
    let err = LockClient::connect(&wrong).await.unwrap_err();
    assert_eq!(backend_kind(&err), BackendErrorKind::Auth, "{err}");
    assert!(!format!("{err} {err:?}").contains("wrong-pw"));
    let none = LockClient::connect(&format!("redis://127.0.0.1:{}", server.port())).await;
    let err = match none {
        Ok(client) => client.lock("k").await.unwrap_err(),
        Err(err) => err,
    };
    assert_eq!(backend_kind(&err), BackendErrorKind::Auth, "{err}");
    let right = format!("redis://:s3cret-pw@127.0.0.1:{}", server.port());
    let client = LockClient::connect(&right).await.unwrap();
    let _guard = client.lock("k").await.unwrap();
    assert!(!format!("{client:?}").contains("s3cret-pw"));
}

#[tokio::test]
async fn keys_holding_user_data_are_left_alone() {
    let server = RedisServer::start();
    server.cmd::<()>(&["HSET", "distlock:a-hash", "f", "v"]);
    server.cmd::<()>(&["SET", "distlock:a-string", "user data"]);
    let client = LockClient::connect(&server.url()).await.unwrap();
    for key in ["a-hash", "a-string"] {
        let err = client.lock(key).await.unwrap_err();
        assert!(
            matches!(err, LockError::KeyConflict { .. }),
            "{key}: {err:?}"
        );
        assert_eq!(err.key(), Some(key));
    }
    // Untouched.
    let v: String = server.cmd(&["GET", "distlock:a-string"]);
    assert_eq!(v, "user data");
    let v: String = server.cmd(&["HGET", "distlock:a-hash", "f"]);
    assert_eq!(v, "v");
    assert_eq!(client.held_locks(), 0);
}

#[tokio::test]
async fn a_flushed_script_cache_is_reloaded() {
    let server = RedisServer::start();
    let client = LockClient::connect(&server.url()).await.unwrap();
    let guard = client
        .lock("scripts")
        .ttl(Duration::from_millis(300))
        .await
        .unwrap();
    server.cmd::<()>(&["SCRIPT", "FLUSH"]);
    // Renewals (after ttl/3), release and the next acquire all reload their scripts.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(guard.is_held());
    guard.release().await.unwrap();
    server.cmd::<()>(&["SCRIPT", "FLUSH"]);
    let again = client.lock("scripts").await.unwrap();
    again.release().await.unwrap();
}

#[tokio::test]
async fn fences_keep_increasing_across_a_restart_that_lost_all_data() {
    let mut server = RedisServer::start();
    let client = LockClient::connect(&server.url()).await.unwrap();
    let guard = client.lock("fenced").await.unwrap();
    let before = guard.fencing_token();
    guard.release().await.unwrap();
    server.restart();
    let dbsize: i64 = server.cmd(&["DBSIZE"]);
    assert_eq!(dbsize, 0, "the restart lost the data");
    let client = LockClient::connect(&server.url()).await.unwrap();
    let guard = client.lock("fenced").await.unwrap();
    assert!(
        guard.fencing_token() > before,
        "{} <= {before}",
        guard.fencing_token()
    );
}

#[tokio::test]
async fn the_old_client_reconnects_after_a_restart() {
    let mut server = RedisServer::start();
    let client = LockClient::connect(&server.url()).await.unwrap();
    let first = client
        .lock("reconnect")
        .ttl(Duration::from_millis(900))
        .await
        .unwrap();
    let fence = first.fencing_token();
    server.restart();
    // The held lease is gone with the data: the watchdog reports it.
    tokio::time::timeout(Duration::from_secs(5), first.lost())
        .await
        .expect("lost after the restart");
    let mut next = None;
    for _ in 0..50 {
        match client.lock("reconnect").await {
            Ok(guard) => {
                next = Some(guard);
                break;
            }
            Err(err) => assert!(err.is_backend(), "{err}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(next.expect("reconnected").fencing_token() > fence);
}

#[tokio::test]
async fn a_killed_holder_process_is_replaced_after_its_ttl() {
    let server = RedisServer::start();
    let mut holder = Command::new(env!("CARGO_BIN_EXE_lock-holder"))
        .args([server.url().as_str(), "crash", "800"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn lock-holder");
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("acquired "), "{line:?}");
    let child_fence: u64 = line.trim()["acquired ".len()..].parse().unwrap();

    let client = LockClient::connect(&server.url()).await.unwrap();
    assert!(client.lock("crash").await.unwrap_err().is_busy());
    holder.kill().unwrap(); // SIGKILL: no release, no goodbye
    holder.wait().unwrap();
    let killed_at = Instant::now();
    let guard = client
        .lock("crash")
        .wait(Duration::from_secs(5))
        .await
        .expect("taken over once the dead holder's lease ran out");
    let waited = killed_at.elapsed();
    assert!(waited < Duration::from_millis(1500), "{waited:?}");
    assert!(guard.fencing_token() > child_fence);
}

#[tokio::test]
async fn the_uncontended_path_publishes_nothing() {
    let server = RedisServer::start();
    let client = LockClient::connect(&server.url()).await.unwrap();
    server.cmd::<()>(&["CONFIG", "RESETSTAT"]);
    for _ in 0..10 {
        client.lock("quiet").await.unwrap().release().await.unwrap();
    }
    let stats: String = server.cmd(&["INFO", "commandstats"]);
    assert!(!stats.contains("cmdstat_publish"), "{stats}");

    let other = LockClient::connect(&server.url()).await.unwrap();
    let held = client.lock("quiet").await.unwrap();
    let waiter = tokio::spawn(async move {
        other
            .lock("quiet")
            .wait(Duration::from_secs(5))
            .await
            .map(drop)
    });
    distlock_tests::wait_until_contended(&client, "quiet").await;
    held.release().await.unwrap();
    waiter.await.unwrap().unwrap();
    let stats: String = server.cmd(&["INFO", "commandstats"]);
    assert!(stats.contains("cmdstat_publish:calls=1,"), "{stats}");
}

#[tokio::test]
async fn a_paused_server_shorter_than_the_ttl_loses_nothing() {
    let server = RedisServer::start();
    let client = LockClient::connect(&server.url()).await.unwrap();
    let guard = client
        .lock("paused")
        .ttl(Duration::from_secs(2))
        .await
        .unwrap();
    server.pause();
    tokio::time::sleep(Duration::from_millis(800)).await;
    server.resume();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(guard.is_held());
    guard.release().await.unwrap();
}

#[tokio::test]
async fn a_paused_server_longer_than_the_ttl_is_reported_by_the_deadline() {
    let server = RedisServer::start();
    let client = server.client_with_timeout(Duration::from_millis(300)).await;
    let ttl = Duration::from_millis(900);
    let acquired_at = Instant::now();
    let guard = client.lock("stalled").ttl(ttl).await.unwrap();
    server.pause();
    tokio::time::timeout(Duration::from_secs(5), guard.lost())
        .await
        .expect("lost() fires");
    let at = acquired_at.elapsed();
    assert!(at <= ttl, "reported at {at:?}, after the lease itself");
    server.resume();
}

#[tokio::test]
async fn renewals_are_batched_into_one_call_per_tick() {
    let server = RedisServer::start();
    let client = LockClient::connect(&server.url()).await.unwrap();
    let mut guards = Vec::new();
    for i in 0..50 {
        guards.push(
            client
                .lock(format!("batch:{i}"))
                .ttl(Duration::from_millis(900))
                .await
                .unwrap(),
        );
    }
    server.cmd::<()>(&["CONFIG", "RESETSTAT"]);
    // ~4 renewal ticks (every 300 ms) for 50 locks.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let stats: String = server.cmd(&["INFO", "commandstats"]);
    let calls: u64 = stats
        .lines()
        .find(|l| l.starts_with("cmdstat_evalsha:"))
        .and_then(|l| l.split("calls=").nth(1))
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(calls >= 3, "renewals happened: {calls} calls");
    assert!(
        calls <= 12,
        "one call per tick for all 50 locks, not one per lock: {calls} calls"
    );
    assert!(guards.iter().all(|g| g.is_held()));
}

/// Acquires sent together from a client without the password go to the server as one batch,
/// which Redis refuses before authentication with a protocol error rather than `NOAUTH`: each
/// is still an auth error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquires_sent_together_without_the_password_are_auth_errors() {
    let server = RedisServer::start_with(&["--requirepass", "s3cret-pw"]);
    let url = format!("redis://127.0.0.1:{}", server.port());
    let client = match LockClient::connect(&url).await {
        Ok(client) => client,
        Err(err) => {
            assert_eq!(backend_kind(&err), BackendErrorKind::Auth, "{err}");
            return;
        }
    };
    let results =
        futures_util::future::join_all((0..16).map(|i| client.lock(format!("k{i}")).into_future()))
            .await;
    for result in results {
        let err = result.unwrap_err();
        assert_eq!(backend_kind(&err), BackendErrorKind::Auth, "{err}");
    }
}
