//! Redlock over three real redis-servers: majority, node failures, undoing partial
//! acquisitions, quarantine of a node that lost its data, frozen nodes, notified waiting.

use std::time::{Duration, Instant};

use distlock::{LockClient, LockError};
use distlock_tests::RedisServer;

struct Nodes(Vec<RedisServer>);

impl Nodes {
    /// Three nodes of a deployment that has been running for a while: their boot markers say
    /// they have kept their data for an hour (as the acquire script would have recorded).
    fn start() -> Self {
        let nodes = Self::start_fresh();
        for server in &nodes.0 {
            server.kept_data_for_an_hour();
        }
        nodes
    }

    /// Three empty nodes: a brand-new deployment.
    fn start_fresh() -> Self {
        Nodes((0..3).map(|_| RedisServer::start()).collect())
    }

    fn urls(&self) -> Vec<String> {
        self.0.iter().map(RedisServer::url).collect()
    }

    async fn client(&self, quarantine: Duration) -> LockClient {
        LockClient::builder()
            .redlock(self.urls())
            .redlock_quarantine(quarantine)
            .default_ttl(quarantine) // a lease may not outlast the quarantine
            .command_timeout(Duration::from_millis(500))
            .build()
            .await
            .unwrap()
    }

    /// A client with the default command timeout (2 s).
    async fn default_client(&self) -> LockClient {
        LockClient::builder()
            .redlock(self.urls())
            .redlock_quarantine(Q)
            .default_ttl(Q)
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

/// A node that lost its copy of a held lock (as one frozen past the lease does) gets it back
/// from the next renewal a majority granted, so the lock survives the next minority fault.
#[tokio::test]
async fn a_renewal_puts_a_lost_copy_back_so_the_lock_survives_another_fault() {
    let mut nodes = Nodes::start();
    let client = nodes.client(Q).await;
    let held = client.lock("back").watchdog(false).await.unwrap();
    let lost: String = nodes.0[0].cmd(&["GET", "distlock:back"]);
    let _: i64 = nodes.0[0].cmd(&["DEL", "distlock:back"]);
    held.extend(Q).await.expect("renewed by nodes 1 and 2");
    // Put back in the background, with the value of a node that renewed it (the same token
    // and owner; fences are per node).
    let from_node_1: String = nodes.0[1].cmd(&["GET", "distlock:back"]);
    assert_eq!(lost[..33], from_node_1[..33], "one token on every node");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now: Option<String> = nodes.0[0].cmd(&["GET", "distlock:back"]);
        let node_2: String = nodes.0[2].cmd(&["GET", "distlock:back"]);
        if now.as_deref() == Some(from_node_1.as_str()) || now.as_deref() == Some(node_2.as_str()) {
            break;
        }
        assert!(now.is_none(), "node 0 holds something else: {now:?}");
        assert!(Instant::now() < deadline, "never put back on node 0");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pttl: i64 = nodes.0[0].cmd(&["PTTL", "distlock:back"]);
    assert!(pttl > 0, "the copy has a lease: {pttl}");
    // The next minority fault: node 1 dies. Nodes 0 and 2 still make a majority.
    nodes.0[1].kill();
    held.extend(Q).await.expect("renewed by nodes 0 and 2");
    assert!(held.is_held());
    let fence = held.fencing_token();
    held.release().await.expect("released by nodes 0 and 2");
    let other = nodes.client(Q).await;
    let next = other.lock("back").await.expect("free after the release");
    assert!(next.fencing_token() > fence);
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
    let held = a.lock("wake").ttl(Q).await.unwrap();
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
    let held = a.lock("q").ttl(Q).await.unwrap();
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

fn quorum_unavailable(err: &LockError) -> bool {
    !err.is_busy() && err.is_backend() && err.to_string().contains("quorum")
}

#[tokio::test]
async fn restarted_nodes_do_not_vouch_for_each_other_while_the_holders_node_is_frozen() {
    let mut nodes = Nodes::start();
    let q = Duration::from_secs(3);
    let x = nodes.client(q).await;
    let y = nodes.client(q).await;
    // Lease = quarantine, as the quarantine is meant to be set.
    let held = x.lock("q").ttl(q).await.unwrap();
    nodes.0[1].restart();
    nodes.0[2].restart();
    nodes.0[0].pause(); // the one node that still knows x's lock cannot answer
    let restarted = Instant::now();
    // B and C answer, but neither has kept its data for the quarantine: neither votes,
    // whatever the other says.
    while restarted.elapsed() < q - Duration::from_millis(300) {
        match y.lock("q").await {
            Ok(_) => panic!(
                "granted by two nodes that forgot the lock {:?} after their restart, while x holds it",
                restarted.elapsed()
            ),
            Err(err) => assert!(quorum_unavailable(&err), "{err}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // x learns at its next renewal that a majority no longer knows its lock.
    tokio::time::timeout(Duration::from_secs(5), held.lost())
        .await
        .expect("the old holder is told");
    // Once B and C have kept their data for the quarantine they vote again. (An attempt of
    // y's refused during the quarantine is given back in the background; should that give-back
    // not land, its lease keeps the key busy until it runs out: busy is a wait, not a grant.)
    let next = loop {
        match y.lock("q").await {
            Ok(guard) => break guard,
            Err(err) => assert!(quorum_unavailable(&err) || err.is_busy(), "{err}"),
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(15),
            "never counted again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(restarted.elapsed() >= q - Duration::from_millis(300));
    assert!(!held.is_held());
    assert!(next.is_held());
}

#[tokio::test]
async fn a_brand_new_deployment_grants_nothing_for_one_quarantine() {
    let nodes = Nodes::start_fresh();
    let q = Duration::from_secs(2);
    let client = nodes.client(q).await;
    let first = Instant::now();
    // Empty nodes cannot tell "brand new" from "restarted empty": none votes yet.
    let err = client.lock("new").await.unwrap_err();
    assert!(quorum_unavailable(&err), "{err}");
    assert!(err.to_string().contains("quarantine"), "{err}");
    let guard = loop {
        match client.lock("new").await {
            Ok(guard) => break guard,
            Err(err) => assert!(quorum_unavailable(&err), "{err}"),
        }
        assert!(
            first.elapsed() < q + Duration::from_secs(5),
            "never granted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The markers were set by the first attempt, after `first`; the clocks are one machine's.
    assert!(
        first.elapsed() >= q - Duration::from_millis(50),
        "granted after {:?}",
        first.elapsed()
    );
    assert!(guard.is_held());
}

/// Acquire, check and release leases of one second with node 0 frozen; then hold one across
/// several renewals.
async fn one_second_leases_with_node_0_frozen(nodes: &Nodes, client: &LockClient) {
    let lease = Duration::from_secs(1);
    for i in 0..5 {
        let key = format!("k{i}");
        let started = Instant::now();
        let guard = client.lock(key.as_str()).ttl(lease).await.unwrap();
        let took = started.elapsed();
        // A tenth of the lease at most for the frozen node; the healthy ones answer at once.
        assert!(took < Duration::from_millis(500), "acquire took {took:?}");
        assert!(guard.is_held());
        for server in &nodes.0[1..] {
            let value: String = server.cmd(&["GET", &format!("distlock:{key}")]);
            assert!(value.starts_with('H'), "{value}");
        }
        let started = Instant::now();
        guard.release().await.unwrap();
        let took = started.elapsed();
        assert!(took < Duration::from_millis(500), "release took {took:?}");
        for server in &nodes.0[1..] {
            let value: Option<String> = server.cmd(&["GET", &format!("distlock:{key}")]);
            assert!(
                value.as_deref().is_none_or(|v| v.starts_with('T')),
                "{value:?}"
            );
        }
    }
    // Renewals (every third of the lease) do not wait for the frozen node either.
    let guard = client.lock("kept").ttl(lease).await.unwrap();
    let lost = tokio::time::timeout(lease * 3, guard.lost()).await;
    assert!(lost.is_err(), "lost while two of three nodes are healthy");
    assert!(guard.is_held());
    // Each node derives its own fence; the guard carries the largest of the granting ones.
    let info = client.inspect("kept").await.unwrap().expect("held");
    assert!(info.fencing_token <= guard.fencing_token());
    assert_eq!(info.pid, Some(std::process::id()));
}

#[tokio::test]
async fn a_node_frozen_before_the_client_connects_costs_a_fraction_of_the_lease() {
    let nodes = Nodes::start();
    nodes.0[0].pause();
    let started = Instant::now();
    let client = nodes.default_client().await;
    // At most the command timeout (2 s) for the frozen node, in parallel with the others.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "connecting took {took:?}");
    one_second_leases_with_node_0_frozen(&nodes, &client).await;
}

#[tokio::test]
async fn a_node_frozen_while_connected_costs_a_fraction_of_the_lease() {
    let nodes = Nodes::start();
    let client = nodes.default_client().await;
    client
        .lock("warmup")
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    nodes.0[0].pause();
    one_second_leases_with_node_0_frozen(&nodes, &client).await;
}

/// A lease longer than the quarantine is refused: a node restarted empty votes again after
/// the quarantine, and could then grant a lock still held elsewhere.
#[tokio::test]
async fn a_lease_longer_than_the_quarantine_is_refused() {
    let nodes = Nodes::start();
    let client = nodes.client(Q).await;
    let err = client.lock("long").ttl(Q * 3).await.unwrap_err();
    assert!(matches!(err, LockError::InvalidDuration { .. }), "{err:?}");
    let guard = client.lock("long").ttl(Q).await.unwrap();
    let err = guard.extend(Q * 3).await.unwrap_err();
    assert!(matches!(err, LockError::InvalidDuration { .. }), "{err:?}");
    assert!(guard.is_held());
}
