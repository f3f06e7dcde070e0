//! Redlock over three real redis-servers: majority, node failures, undoing partial
//! acquisitions, quarantine of a node that lost its data, notified waiting.

use std::time::{Duration, Instant};

use distlock::{LockClient, LockError};
use distlock_tests::RedisServer;

struct Nodes(Vec<RedisServer>);

impl Nodes {
    fn start() -> Self {
        Nodes((0..3).map(|_| RedisServer::start()).collect())
    }

    fn urls(&self) -> Vec<String> {
        self.0.iter().map(RedisServer::url).collect()
    }

    async fn client(&self, quarantine: Duration) -> LockClient {
        LockClient::builder()
            .redlock(self.urls())
            .redlock_quarantine(quarantine)
            .command_timeout(Duration::from_millis(500))
            .build()
            .await
            .unwrap()
    }
}

const Q: Duration = Duration::from_secs(2);

#[tokio::test]
async fn a_majority_grants_the_lock_and_others_are_busy() {
    let nodes = Nodes::start();
    let a = nodes.client(Q).await;
    let b = nodes.client(Q).await;
    let held = a.lock("job").await.unwrap();
    for server in &nodes.0 {
        let value: String = server.cmd(&["GET", "distlock:job"]);
        assert!(value.starts_with('H') || value.starts_with('W'), "{value}");
    }
    let err = b.lock("job").await.unwrap_err();
    assert!(err.is_busy(), "{err}");
    assert!(err.retry_after().is_some());
    let fence = held.fencing_token();
    held.release().await.unwrap();
    let next = b.lock("job").await.unwrap();
    assert!(next.fencing_token() > fence);
}

#[tokio::test]
async fn one_node_down_is_fine_a_majority_down_is_quorum_unavailable() {
    let mut nodes = Nodes::start();
    let client = nodes.client(Q).await;
    client
        .lock("warmup")
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    nodes.0[0].kill();
    let guard = client
        .lock("k")
        .await
        .expect("two of three nodes are enough");
    guard.release().await.unwrap();
    nodes.0[1].kill();
    let err = client.lock("k").await.unwrap_err();
    assert!(!err.is_busy(), "not contention: {err}");
    assert!(matches!(err, LockError::Backend { .. }), "{err:?}");
    assert!(err.to_string().contains("quorum"), "{err}");
}

#[tokio::test]
async fn a_partial_acquisition_is_undone() {
    let nodes = Nodes::start();
    // Another party holds the key on two nodes.
    let mut others = Vec::new();
    for server in &nodes.0[..2] {
        let single = LockClient::connect(&server.url()).await.unwrap();
        others.push(single.lock("contested").await.unwrap());
    }
    let client = nodes.client(Q).await;
    let err = client.lock("contested").await.unwrap_err();
    assert!(err.is_busy(), "{err}");
    // The third node granted it for a moment; it was given back (a tombstone remains).
    let value: Option<String> = nodes.0[2].cmd(&["GET", "distlock:contested"]);
    assert!(
        value.as_deref().is_none_or(|v| v.starts_with('T')),
        "{value:?}"
    );
    assert_eq!(client.held_locks(), 0);
}

#[tokio::test]
async fn waiters_are_woken_by_the_release() {
    let nodes = Nodes::start();
    let a = nodes.client(Q).await;
    let b = nodes.client(Q).await;
    let held = a.lock("wake").ttl(Duration::from_secs(30)).await.unwrap();
    let waiter = tokio::spawn(async move {
        let guard = b.lock("wake").wait(Duration::from_secs(10)).await.map(drop);
        (guard, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let released = Instant::now();
    held.release().await.unwrap();
    let (guard, at) = waiter.await.unwrap();
    guard.unwrap();
    assert!(
        at - released < Duration::from_millis(300),
        "{:?}",
        at - released
    );
}

#[tokio::test]
async fn nodes_that_lost_their_data_are_not_counted_until_the_quarantine_passed() {
    let mut nodes = Nodes::start();
    let a = nodes.client(Q).await;
    let b = nodes.client(Q).await;
    let held = a.lock("q").ttl(Duration::from_secs(6)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await; // the markers age together
    nodes.0[0].restart();
    nodes.0[1].restart();
    // Two empty nodes would grant the lock; for the quarantine (2 s from when they are first
    // seen again) they must not count.
    let restarted = Instant::now();
    while restarted.elapsed() < Duration::from_millis(1200) {
        let attempt = b.lock("q").await;
        assert!(attempt.is_err(), "granted by nodes that forgot the lock");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(b.held_locks(), 0);
    // The holder learns that a majority no longer knows its lock (at its next renewal).
    tokio::time::timeout(Duration::from_secs(15), held.lost())
        .await
        .expect("the old holder is told");
    // Once the quarantine has passed, the restarted nodes count again.
    let next = loop {
        match b.lock("q").await {
            Ok(guard) => break guard,
            Err(err) => assert!(err.is_busy() || err.is_backend(), "{err}"),
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(20),
            "never counted again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(next.is_held());
}
