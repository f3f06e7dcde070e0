//! Faults between a client and its Redis: latency, blackholes, cut connections (through a
//! TCP proxy), and a lock-holding process paused past its lease.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use distlock::{BackendErrorKind, LockClient, LockError};
use distlock_tests::{RedisServer, TcpProxy};

async fn client_via(proxy: &TcpProxy, command_timeout: Duration) -> LockClient {
    LockClient::builder()
        .url(proxy.url())
        .command_timeout(command_timeout)
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_answer_later_than_the_lease_is_a_failure_not_a_lock() {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port());
    let client = client_via(&proxy, Duration::from_secs(5)).await;
    proxy.set_latency(Duration::from_millis(300));
    let err = client
        .lock("slow")
        .ttl(Duration::from_millis(400))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LockError::Backend {
                kind: BackendErrorKind::Timeout,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(client.held_locks(), 0);
    // Whatever landed is gone within the lease: a direct client gets the key.
    let direct = LockClient::connect(&server.url()).await.unwrap();
    let _taken = direct
        .lock("slow")
        .wait(Duration::from_secs(2))
        .await
        .unwrap();
}

/// An extension granted by the server but answered after the lease it was sent under ran
/// out cannot be trusted: it is `Lost`, never Ok (attack12 found Ok answered that late).
#[tokio::test]
async fn an_extension_answered_after_its_lease_ran_out_is_lost_not_ok() {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port());
    let client = client_via(&proxy, Duration::from_secs(5)).await;
    let guard = client
        .lock("late")
        .ttl(Duration::from_secs(5))
        .watchdog(false)
        .await
        .unwrap();
    proxy.set_latency(Duration::from_millis(150));
    let err = guard
        .extend(Duration::from_millis(200))
        .await
        .expect_err("answered ~300 ms after it was sent, for a 200 ms lease");
    assert!(matches!(err, LockError::Lost { .. }), "{err:?}");
    assert!(!guard.is_held());
}

#[tokio::test]
async fn a_blackhole_shorter_than_the_lease_loses_nothing() {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port());
    let client = client_via(&proxy, Duration::from_secs(2)).await;
    let guard = client
        .lock("held")
        .ttl(Duration::from_millis(1500))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    proxy.blackhole(true);
    tokio::time::sleep(Duration::from_millis(600)).await;
    proxy.blackhole(false);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(guard.is_held());
    let direct = LockClient::connect(&server.url()).await.unwrap();
    assert!(direct.lock("held").await.unwrap_err().is_busy());
}

#[tokio::test]
async fn a_blackhole_longer_than_the_lease_is_reported_before_anyone_else_holds() {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port());
    let client = client_via(&proxy, Duration::from_millis(300)).await;
    let ttl = Duration::from_millis(900);
    let acquired = Instant::now();
    let guard = client.lock("cut-off").ttl(ttl).await.unwrap();
    proxy.blackhole(true);
    let direct = LockClient::connect(&server.url()).await.unwrap();
    let other = tokio::spawn(async move {
        let guard = direct.lock("cut-off").wait(Duration::from_secs(5)).await;
        (guard.map(|g| g.fencing_token()), Instant::now())
    });
    tokio::time::timeout(Duration::from_secs(5), guard.lost())
        .await
        .expect("lost() fires");
    let lost_at = Instant::now();
    assert!(
        lost_at - acquired <= ttl,
        "reported after the lease: {:?}",
        lost_at - acquired
    );
    let (fence, other_at) = other.await.unwrap();
    assert!(fence.unwrap() > guard.fencing_token());
    assert!(
        lost_at <= other_at,
        "another client held the lock before this one was told"
    );
    proxy.blackhole(false);
}

#[tokio::test]
async fn cut_connections_are_reopened_and_renewals_go_on() {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port());
    let client = client_via(&proxy, Duration::from_secs(1)).await;
    let guard = client
        .lock("reconnects")
        .ttl(Duration::from_millis(1500))
        .await
        .unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.cut();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(guard.is_held(), "renewals resumed on a new connection");
    guard.release().await.unwrap();
}

#[tokio::test]
async fn a_holder_paused_past_its_lease_learns_it_before_its_next_write() {
    let server = RedisServer::start();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lock-holder"))
        .args([
            server.url().as_str(),
            "ledger",
            "600",
            "fenced-writer",
            "store",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn lock-holder");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let child_fence: u64 = first.strip_prefix("acquired ").unwrap().parse().unwrap();
    assert_eq!(
        lines.next().unwrap().unwrap(),
        format!("accepted {child_fence}")
    );

    // Freeze the holder past its lease; someone else takes over and writes.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let client = LockClient::connect(&server.url()).await.unwrap();
    let guard = client
        .lock("ledger")
        .wait(Duration::from_secs(5))
        .await
        .unwrap();
    assert!(guard.fencing_token() > child_fence);
    let mut conn = server.conn();
    assert!(distlock_tests::fenced_write(
        &mut conn,
        "store",
        guard.fencing_token()
    ));

    // Thaw it: it must notice before writing, or have its stale write refused.
    assert!(
        Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut after = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line == "lost";
        after.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(after.last().map(String::as_str), Some("lost"), "{after:?}");
    assert!(
        !after.iter().any(|l| l.starts_with("accepted")),
        "a stale write was accepted: {after:?}"
    );
    let stored: u64 = server.cmd(&["GET", "store"]);
    assert_eq!(stored, guard.fencing_token());
}
