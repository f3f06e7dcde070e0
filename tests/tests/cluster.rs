//! Redis Cluster: three real primaries formed with `redis-cli --cluster create`, plus a
//! replica where a test needs one.

use std::time::{Duration, Instant};

use distlock::{BackendErrorKind, LockClient, LockError};
use distlock_tests::{RedisCluster, RedisServer};

async fn client(cluster: &RedisCluster) -> LockClient {
    LockClient::builder()
        .cluster(cluster.urls())
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn locks_live_in_their_slots_and_exclude_across_clients() {
    let cluster = RedisCluster::start(3);
    let a = client(&cluster).await;
    let b = client(&cluster).await;
    let keys: Vec<String> = (0..20).map(|i| format!("order:{i}")).collect();
    let mut guards = Vec::new();
    for key in &keys {
        guards.push(
            a.lock(key.as_str())
                .ttl(Duration::from_millis(600))
                .await
                .unwrap(),
        );
    }
    let owners: std::collections::HashSet<usize> = keys
        .iter()
        .map(|k| cluster.owner_of(&format!("distlock:{k}")))
        .collect();
    assert!(owners.len() > 1, "the keys spread over several nodes");
    for key in &keys {
        let owner = &cluster.nodes()[cluster.owner_of(&format!("distlock:{key}"))];
        let value: String = owner.cmd(&["GET", &format!("distlock:{key}")]);
        assert!(value.starts_with('H') || value.starts_with('W'), "{value}");
        assert!(b.lock(key.as_str()).await.unwrap_err().is_busy());
    }
    // Renewed (batched per slot) past three leases.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert!(guards.iter().all(|g| g.is_held()));
    for guard in guards {
        guard.release().await.unwrap();
    }
    for key in &keys {
        let _next = b.lock(key.as_str()).await.unwrap();
    }
    // Keys that pick their own slot with braces work too.
    let _one = a.lock("{tenant-a}:job").await.unwrap();
    let _two = a.lock("{tenant-a}:report").await.unwrap();
}

#[tokio::test]
async fn waiters_are_woken_through_sharded_channels() {
    let cluster = RedisCluster::start(3);
    let a = client(&cluster).await;
    let b = client(&cluster).await;
    for node in cluster.nodes() {
        node.cmd::<()>(&["CONFIG", "RESETSTAT"]);
    }
    let held = a.lock("wake").ttl(Duration::from_secs(30)).await.unwrap();
    let waiter = tokio::spawn(async move {
        let acquired = b.lock("wake").wait(Duration::from_secs(10)).await.map(drop);
        (acquired, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let released = Instant::now();
    held.release().await.unwrap();
    let (acquired, at) = waiter.await.unwrap();
    acquired.unwrap();
    assert!(
        at - released < Duration::from_millis(300),
        "{:?}",
        at - released
    );
    let owner = &cluster.nodes()[cluster.owner_of("distlock:wake")];
    let stats: String = owner.cmd(&["INFO", "commandstats"]);
    assert!(stats.contains("cmdstat_spublish:calls=1,"), "{stats}");
    for node in cluster.nodes() {
        let stats: String = node.cmd(&["INFO", "commandstats"]);
        assert!(
            !stats.contains("cmdstat_publish:"),
            "a broadcast PUBLISH: {stats}"
        );
    }
}

#[tokio::test]
async fn a_slot_migrated_while_held_causes_no_spurious_loss() {
    let cluster = RedisCluster::start(3);
    let a = client(&cluster).await;
    let b = client(&cluster).await;
    let guard = a
        .lock("moving")
        .ttl(Duration::from_millis(900))
        .await
        .unwrap();
    let from = cluster.owner_of("distlock:moving");
    let to = (from + 1) % 3;
    cluster.migrate_slot_of("distlock:moving", to);
    assert_eq!(cluster.owner_of("distlock:moving"), to);
    // Renewals follow the redirection to the new owner.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(guard.is_held(), "lost across the migration");
    let value: String = cluster.nodes()[to].cmd(&["GET", "distlock:moving"]);
    assert!(value.starts_with('H') || value.starts_with('W'), "{value}");
    assert!(b.lock("moving").await.unwrap_err().is_busy());
    guard.release().await.unwrap();
    let _next = b.lock("moving").await.unwrap();
}

/// Polls `probe` every 10 ms until it holds: for state that the cluster reaches by itself
/// (gossip, resubscription).
///
/// # Panics
///
/// After 5 s.
async fn eventually(what: &str, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !probe() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How many clients of `node` are subscribed to the sharded channel `channel`.
fn shard_subscribers(node: &RedisServer, channel: &str) -> i64 {
    let reply: (String, i64) = node.cmd(&["PUBSUB", "SHARDNUMSUB", channel]);
    reply.1
}

#[tokio::test]
async fn waiters_keep_their_notices_and_their_order_across_a_slot_migration() {
    let cluster = RedisCluster::start(3);
    let key = "distlock:migrating";
    let a = client(&cluster).await;
    let b = client(&cluster).await;
    let c = client(&cluster).await;
    let held = a
        .lock("migrating")
        .ttl(Duration::from_secs(30))
        .await
        .unwrap();
    let from = cluster.owner_of(key);
    let first = tokio::spawn(async move {
        let acquired = b.lock("migrating").wait(Duration::from_secs(20)).await;
        (acquired, Instant::now())
    });
    eventually("the first waiter subscribed", || {
        shard_subscribers(&cluster.nodes()[from], key) == 1
    })
    .await;
    let second = tokio::spawn(async move {
        c.lock("migrating")
            .wait(Duration::from_secs(20))
            .await
            .map(|guard| (guard, Instant::now()))
    });
    eventually("the second waiter subscribed", || {
        shard_subscribers(&cluster.nodes()[from], key) == 2
    })
    .await;

    // The slot moves: its old owner drops the sharded subscriptions of its channels.
    let to = (from + 1) % 3;
    cluster.migrate_slot_of(key, to);
    eventually("both waiters subscribed at the new owner", || {
        shard_subscribers(&cluster.nodes()[to], key) == 2
    })
    .await;

    // Let the waiters' backoff grow to its cap (up to 1.25 s between tries), so that only a
    // notice can wake them promptly.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let released = Instant::now();
    held.release().await.unwrap();
    let (acquired, at) = first.await.unwrap();
    let guard = acquired.expect("the first waiter in line gets the lock");
    assert!(
        at - released < Duration::from_millis(300),
        "woken {:?} after the release",
        at - released
    );
    // The second one in line is still waiting, and is handed the lock next.
    assert!(!second.is_finished());
    let released = Instant::now();
    guard.release().await.unwrap();
    let (_guard, at) = second
        .await
        .unwrap()
        .expect("the second waiter gets it next");
    assert!(
        at - released < Duration::from_millis(300),
        "woken {:?} after the release",
        at - released
    );
}

const CLUSTER_NODE: [&str; 6] = [
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    "2000",
];

/// Adds a replica of the primary `of` to the cluster and waits until it is in sync.
fn add_replica(cluster: &RedisCluster, of: usize) -> RedisServer {
    let replica = RedisServer::start_with(&CLUSTER_NODE);
    let primary = &cluster.nodes()[of];
    let primary_id: String = primary.cmd(&["CLUSTER", "MYID"]);
    replica.cmd::<()>(&["CLUSTER", "MEET", "127.0.0.1", &primary.port().to_string()]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let known: String = replica.cmd(&["CLUSTER", "NODES"]);
        if known.contains(&primary_id) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica never met its primary"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    replica.cmd::<()>(&["CLUSTER", "REPLICATE", &primary_id]);
    loop {
        let info: String = replica.cmd(&["INFO", "replication"]);
        if info.contains("master_link_status:up") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica never synced: {info}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    replica
}

/// Whether `node` sees the node `id` as a primary.
fn is_primary(node: &RedisServer, id: &str) -> bool {
    let nodes: String = node.cmd(&["CLUSTER", "NODES"]);
    nodes.lines().any(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        fields.first() == Some(&id) && fields.get(2).is_some_and(|f| f.contains("master"))
    })
}

#[tokio::test]
async fn with_replica_acknowledgement_an_unreplicated_lock_is_given_back() {
    let cluster = RedisCluster::start(3);
    let key = "distlock:acked";
    let owner = cluster.owner_of(key);
    let replica = add_replica(&cluster, owner);
    let client = LockClient::builder()
        .cluster(cluster.urls())
        .cluster_wait_replicas(1, Duration::from_millis(300))
        .build()
        .await
        .unwrap();

    // The replica cannot acknowledge: the acquire fails and leaves nothing behind.
    replica.pause();
    let err = client
        .lock("acked")
        .ttl(Duration::from_secs(30))
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
    assert!(err.to_string().contains("replicas"), "{err}");
    assert_eq!(client.held_locks(), 0);
    let value: Option<String> = cluster.nodes()[owner].cmd(&["GET", key]);
    assert!(
        value.as_deref().is_none_or(|v| v.starts_with('T')),
        "{value:?}"
    );
    replica.resume();

    // Acknowledged: the replica has it.
    let _guard = client
        .lock("acked")
        .ttl(Duration::from_secs(30))
        .await
        .unwrap();
    let mut on_replica = replica.conn();
    redis::cmd("READONLY").exec(&mut on_replica).unwrap();
    let value: String = redis::cmd("GET").arg(key).query(&mut on_replica).unwrap();
    assert!(value.starts_with('H'), "{value}");
}

#[tokio::test]
async fn with_replica_acknowledgement_a_lock_survives_a_failover() {
    let cluster = RedisCluster::start(3);
    let key = "distlock:failover";
    let owner = cluster.owner_of(key);
    let replica = add_replica(&cluster, owner);
    let acked = LockClient::builder()
        .cluster(cluster.urls())
        .cluster_wait_replicas(1, Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let guard = acked
        .lock("failover")
        .ttl(Duration::from_secs(30))
        .await
        .unwrap();

    // The primary freezes; its replica takes over at once.
    let primary = &cluster.nodes()[owner];
    primary.pause();
    let replica_id: String = replica.cmd(&["CLUSTER", "MYID"]);
    replica.cmd::<()>(&["CLUSTER", "FAILOVER", "TAKEOVER"]);
    let witness = &cluster.nodes()[(owner + 1) % 3];
    eventually("the cluster sees the replica as the primary", || {
        is_primary(witness, &replica_id)
    })
    .await;

    // A client that starts from the healthy nodes finds the lock held on the new primary.
    let mut urls: Vec<String> = cluster
        .nodes()
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != owner)
        .map(|(_, n)| n.url())
        .collect();
    urls.push(replica.url());
    let other = LockClient::builder().cluster(urls).build().await.unwrap();
    let err = other.lock("failover").await.unwrap_err();
    assert!(
        err.is_busy(),
        "the failover lost an acknowledged lock: {err}"
    );
    let info = other.inspect("failover").await.unwrap().expect("held");
    assert_eq!(info.fencing_token, guard.fencing_token());
}
