//! Operations: owner labels, listing held locks with SCAN, and releasing a lock by its fence,
//! on Redis and in-process, and on Sentinel, Redis Cluster and Redlock.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::Env;
use distlock::{LockClient, LockGuard, LockInfo};
use distlock_tests::{RedisCluster, RedisServer};
use futures_util::{StreamExt, TryStreamExt};

async fn listed(client: &LockClient, prefix: &str) -> BTreeMap<String, LockInfo> {
    let infos: Vec<LockInfo> = client.list(prefix).try_collect().await.unwrap();
    let mut by_key = BTreeMap::new();
    for info in infos {
        // SCAN may repeat a key; never with other contents while nothing changes.
        if let Some(seen) = by_key.insert(info.key.clone(), info.clone()) {
            assert_eq!(seen.fencing_token, info.fencing_token);
        }
    }
    by_key
}

/// Waits (bounded) until `client` sees `n` waiters queued on `key`.
async fn wait_for_waiters(client: &LockClient, key: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let info = client.inspect(key).await.unwrap();
        if info.as_ref().is_some_and(|i| i.waiters == n) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{key}: {info:?}, not {n} waiters"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Resolves `guard.lost()` within `within`, or fails.
async fn lost_within(guard: &LockGuard, within: Duration) {
    tokio::time::timeout(within, guard.lost())
        .await
        .unwrap_or_else(|_| panic!("{} was not found lost within {within:?}", guard.key()));
    assert!(!guard.is_held());
}

async fn labels_are_stored_with_the_owner(env: &Env) {
    let labelled = env.builder().label("billing-worker").build().await.unwrap();
    let plain = env.client().await;
    let a = labelled.lock("a").await.unwrap();
    let b = labelled
        .lock("b")
        .label("job 7 | nightly/report 100%")
        .await
        .unwrap();
    let c = labelled.lock("c").label("").await.unwrap();
    let d = plain.lock("d").await.unwrap();
    let info = |k: &'static str| {
        let plain = plain.clone();
        async move { plain.inspect(k).await.unwrap().unwrap() }
    };
    let a_info = info("a").await;
    assert_eq!(a_info.key, "a");
    assert_eq!(a_info.label.as_deref(), Some("billing-worker"));
    assert_eq!(a_info.pid, Some(std::process::id()));
    assert_eq!(a_info.fencing_token, a.fencing_token());
    assert!(a_info.host.is_some() && a_info.acquired_at_ms.is_some());
    assert_eq!(
        info("b").await.label.as_deref(),
        Some("job 7 | nightly/report 100%")
    );
    assert_eq!(info("c").await.label, None);
    assert_eq!(info("d").await.label, None);
    let listed = listed(&plain, "").await;
    assert_eq!(
        listed.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a", "b", "c", "d"]
    );
    assert_eq!(listed["b"].label, info("b").await.label);
    // The label costs the protocol nothing: a waiter queues behind it, the queue is counted.
    let waiter = {
        let plain = plain.clone();
        tokio::spawn(async move { plain.lock("b").wait(Duration::from_secs(5)).await })
    };
    wait_for_waiters(&plain, "b", 1).await;
    assert_eq!(
        info("b").await.label.as_deref(),
        Some("job 7 | nightly/report 100%")
    );
    b.release().await.unwrap();
    let next = waiter.await.unwrap().unwrap();
    assert_eq!(info("b").await.fencing_token, next.fencing_token());
    drop((c, d));
}

async fn force_release_goes_by_the_fence(env: &Env) {
    let holder = env.client().await;
    let operator = env.client().await;
    let held = holder
        .lock("import")
        .ttl(Duration::from_millis(600))
        .await
        .unwrap();
    let fence = held.fencing_token();
    // Not that fence: nothing happens.
    assert!(!operator.force_release("import", fence - 1).await.unwrap());
    assert!(!operator.force_release("import", fence + 1).await.unwrap());
    assert!(!operator.force_release("nothing-here", fence).await.unwrap());
    assert!(held.is_held());
    assert_eq!(
        operator
            .inspect("import")
            .await
            .unwrap()
            .unwrap()
            .fencing_token,
        fence
    );
    // The fence the operator saw: released; the holder finds out at its next renewal.
    assert!(operator.force_release("import", fence).await.unwrap());
    assert!(operator.inspect("import").await.unwrap().is_none());
    lost_within(&held, Duration::from_secs(2)).await;
    // Done once: a second call finds nothing under that fence.
    assert!(!operator.force_release("import", fence).await.unwrap());
    // Fences keep increasing.
    let next = operator.lock("import").await.unwrap();
    assert!(next.fencing_token() > fence);
    // The old fence does not release the new holder.
    assert!(!operator.force_release("import", fence).await.unwrap());
    assert!(next.is_held());
    assert!(held.release().await.unwrap_err().is_lost());
}

async fn force_release_wakes_the_queued_waiter(env: &Env) {
    let holder = env.client().await;
    let waiter = env.client().await;
    let operator = env.client().await;
    let held = holder
        .lock("wedged")
        .ttl(Duration::from_secs(30))
        .await
        .unwrap();
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let guard = waiter
            .lock("wedged")
            .wait(Duration::from_secs(20))
            .await
            .unwrap();
        (guard, started.elapsed())
    });
    wait_for_waiters(&operator, "wedged", 1).await;
    assert!(
        operator
            .force_release("wedged", held.fencing_token())
            .await
            .unwrap()
    );
    let (next, waited) = waiting.await.unwrap();
    // Woken by the notice, long before the wedged holder's 30 s lease would have run out.
    assert!(waited < Duration::from_secs(15), "{waited:?}");
    assert!(next.fencing_token() > held.fencing_token());
    drop(held);
}

async fn listing_is_by_prefix_and_skips_what_is_not_held(env: &Env) {
    let client = env.builder().label("lister").build().await.unwrap();
    let mut guards = Vec::new();
    for key in [
        "jobs:a",
        "jobs:b",
        "jobsx",
        "users:1",
        "we*rd[1]?:x",
        "we*rd[1]?:y",
    ] {
        guards.push(client.lock(key).await.unwrap());
    }
    client
        .lock("jobs:released")
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    let keys = |m: BTreeMap<String, LockInfo>| m.into_keys().collect::<Vec<_>>();
    assert_eq!(keys(listed(&client, "jobs:").await), ["jobs:a", "jobs:b"]);
    assert_eq!(
        keys(listed(&client, "jobs").await),
        ["jobs:a", "jobs:b", "jobsx"]
    );
    // Glob characters in the prefix are literal.
    assert_eq!(
        keys(listed(&client, "we*rd[1]?:").await),
        ["we*rd[1]?:x", "we*rd[1]?:y"]
    );
    assert!(listed(&client, "we*").await.len() == 2);
    assert!(listed(&client, "w?").await.is_empty());
    assert_eq!(listed(&client, "").await.len(), 6);
    assert!(listed(&client, "nothing").await.is_empty());
    // Another prefix sees other locks.
    let other = env.builder().prefix("other:").build().await.unwrap();
    assert!(listed(&other, "").await.is_empty());
    let _o = other.lock("jobs:a").await.unwrap();
    assert_eq!(keys(listed(&other, "").await), ["jobs:a"]);
    assert_eq!(listed(&client, "").await.len(), 6);
    // A prefix that could not start a key is an error, not a panic.
    let bad: Vec<_> = client.list("a\nb").collect().await;
    assert!(matches!(
        bad.as_slice(),
        [Err(distlock::LockError::InvalidKey { .. })]
    ));
}

on_both_backends!(
    labels_are_stored_with_the_owner,
    force_release_goes_by_the_fence,
    force_release_wakes_the_queued_waiter,
    listing_is_by_prefix_and_skips_what_is_not_held,
);

/// Thousands of keys under SCAN: every held lock under the prefix, once, with its key, label,
/// fence and queued waiters; no tombstone, reservation, other prefix or foreign value; and
/// never `KEYS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_locks_are_listed_with_scan() {
    let server = RedisServer::start();
    let url = server.url();
    let client = LockClient::builder()
        .url(&url)
        .label("bulk")
        .build()
        .await
        .unwrap();
    let mut fences = BTreeMap::new();
    let mut guards = Vec::new();
    for i in 0..5000usize {
        let key = format!("jobs:{i:05}");
        let request = client.lock(key.as_str()).ttl(Duration::from_secs(60));
        let request = if i.is_multiple_of(7) {
            request.label(format!("job|{i}"))
        } else {
            request
        };
        let guard = request.await.unwrap();
        fences.insert(key, guard.fencing_token());
        guards.push(guard);
    }
    // Tombstones under the prefix: released locks.
    for guard in guards.drain(4500..) {
        fences.remove(guard.key());
        guard.release().await.unwrap();
    }
    // Locks under another prefix, another client prefix, and foreign values.
    let mut others = Vec::new();
    for i in 0..300 {
        others.push(client.lock(format!("mail:{i}")).await.unwrap());
    }
    let elsewhere = LockClient::builder()
        .url(&url)
        .prefix("elsewhere:")
        .build()
        .await
        .unwrap();
    for i in 0..300 {
        others.push(elsewhere.lock(format!("jobs:{i:05}")).await.unwrap());
    }
    server.cmd::<()>(&["SET", "distlock:jobs:foreign", "hello"]);
    server.cmd::<()>(&["HSET", "distlock:jobs:hash", "field", "1"]);
    server.cmd::<()>(&["RPUSH", "distlock:jobs:list", "1"]);
    // Queued waiters on three keys: 1, 2 and 3 of them.
    let mut waiting = Vec::new();
    for (k, n) in [("jobs:00001", 1), ("jobs:00002", 2), ("jobs:00003", 3)] {
        for _ in 0..n {
            let waiter = LockClient::connect(&url).await.unwrap();
            waiting.push(tokio::spawn(async move {
                let _ = waiter.lock(k).wait(Duration::from_secs(30)).await;
            }));
        }
        wait_for_waiters(&client, k, n).await;
    }
    server.cmd::<()>(&["CONFIG", "RESETSTAT"]);

    let found = listed(&client, "jobs:").await;
    assert_eq!(found.len(), 4500);
    assert_eq!(
        found.keys().collect::<Vec<_>>(),
        fences.keys().collect::<Vec<_>>()
    );
    for (key, info) in &found {
        assert_eq!(info.fencing_token, fences[key], "{key}");
        let i: usize = key["jobs:".len()..].parse().unwrap();
        let label = if i.is_multiple_of(7) {
            format!("job|{i}")
        } else {
            "bulk".to_owned()
        };
        assert_eq!(info.label.as_deref(), Some(label.as_str()), "{key}");
        assert_eq!(info.pid, Some(std::process::id()));
        let expected_waiters = if (1..=3).contains(&i) { i } else { 0 };
        assert_eq!(info.waiters, expected_waiters, "{key}");
        assert_eq!(info.contended, expected_waiters > 0, "{key}");
        assert!(info.ttl.is_some_and(|t| t <= Duration::from_secs(60)));
    }
    // Paged SCAN, never KEYS.
    let stats: String = server.cmd(&["INFO", "commandstats"]);
    let calls = |command: &str| {
        stats
            .lines()
            .find(|l| l.starts_with(&format!("cmdstat_{command}:")))
            .and_then(|l| l.split("calls=").nth(1))
            .and_then(|l| l.split(',').next())
            .map_or(0, |n| n.parse::<u64>().unwrap())
    };
    assert_eq!(calls("keys"), 0, "{stats}");
    assert!(calls("scan") > 1, "{stats}");

    assert_eq!(listed(&client, "").await.len(), 4500 + 300);
    assert_eq!(listed(&elsewhere, "").await.len(), 300);
    assert_eq!(listed(&client, "jobs:0000").await.len(), 10);
    for task in waiting {
        task.abort();
    }
    drop(guards);
}

/// Values written before owner labels existed still read.
#[tokio::test]
async fn values_without_a_label_still_parse() {
    let server = RedisServer::start();
    let fence = 1_700_000_000_123_456u64;
    let token = "0123456789abcdef0123456789abcdef";
    server.cmd::<()>(&[
        "SET",
        "distlock:legacy",
        &format!("H{token}{fence:016}:old-host/4242/1700000000123"),
        "PX",
        "60000",
    ]);
    server.cmd::<()>(&[
        "SET",
        "distlock:legacy-queued",
        &format!("W{token}{fence:016}:old-host/4242/1700000000123|abcdef0123456789|"),
        "PX",
        "60000",
    ]);
    let client = LockClient::connect(&server.url()).await.unwrap();
    let info = client.inspect("legacy").await.unwrap().unwrap();
    assert_eq!(info.key, "legacy");
    assert_eq!(info.fencing_token, fence);
    assert_eq!(info.host.as_deref(), Some("old-host"));
    assert_eq!(info.pid, Some(4242));
    assert_eq!(info.acquired_at_ms, Some(1_700_000_000_123));
    assert_eq!(info.label, None);
    let all = listed(&client, "legacy").await;
    assert_eq!(all.len(), 2);
    assert_eq!(all["legacy-queued"].waiters, 1);
    // And an operator can clear them.
    assert!(client.force_release("legacy", fence).await.unwrap());
    let next = client.lock("legacy").await.unwrap();
    assert!(next.fencing_token() > fence);
}

#[tokio::test]
async fn sentinel_lists_and_releases_on_the_primary() {
    let primary = RedisServer::start();
    let sentinel = RedisServer::start_sentinel("locks", &primary);
    let client = LockClient::builder()
        .sentinel("locks", [sentinel.url()])
        .label("via-sentinel")
        .build()
        .await
        .unwrap();
    let mut guards = Vec::new();
    for i in 0..50 {
        guards.push(
            client
                .lock(format!("s:{i}"))
                .ttl(Duration::from_millis(900))
                .await
                .unwrap(),
        );
    }
    let found = listed(&client, "s:").await;
    assert_eq!(found.len(), 50);
    assert!(
        found
            .values()
            .all(|i| i.label.as_deref() == Some("via-sentinel"))
    );
    let victim = &guards[7];
    assert!(
        !client
            .force_release(victim.key(), victim.fencing_token() + 1)
            .await
            .unwrap()
    );
    assert!(
        client
            .force_release(victim.key(), victim.fencing_token())
            .await
            .unwrap()
    );
    lost_within(victim, Duration::from_secs(3)).await;
    assert_eq!(listed(&client, "s:").await.len(), 49);
}

#[tokio::test]
async fn cluster_lists_every_primary_and_releases_in_the_slot() {
    let cluster = RedisCluster::start(3);
    let client = LockClient::builder()
        .cluster(cluster.urls())
        .label("on-cluster")
        .build()
        .await
        .unwrap();
    let waiter_client = LockClient::builder()
        .cluster(cluster.urls())
        .build()
        .await
        .unwrap();
    let mut guards = Vec::new();
    for i in 0..600 {
        guards.push(
            client
                .lock(format!("c:{i}"))
                .ttl(Duration::from_millis(900))
                .await
                .unwrap(),
        );
    }
    let owners: std::collections::HashSet<usize> = guards
        .iter()
        .map(|g| cluster.owner_of(&format!("distlock:{}", g.key())))
        .collect();
    assert_eq!(owners.len(), 3, "the keys spread over every primary");
    for guard in guards.drain(500..) {
        guard.release().await.unwrap();
    }
    let _elsewhere = client.lock("d:1").await.unwrap();
    // A foreign value in some slot.
    let foreign = "distlock:c:foreign";
    cluster.nodes()[cluster.owner_of(foreign)].cmd::<()>(&["SET", foreign, "x"]);
    let found = listed(&client, "c:").await;
    assert_eq!(found.len(), 500);
    for guard in &guards {
        let info = &found[guard.key()];
        assert_eq!(info.fencing_token, guard.fencing_token());
        assert_eq!(info.label.as_deref(), Some("on-cluster"));
    }
    // A queued waiter is counted, and woken by the operator's release through SPUBLISH.
    let victim = guards.swap_remove(42);
    let key = victim.key().to_owned();
    let waiting = {
        let key = key.clone();
        tokio::spawn(async move { waiter_client.lock(key).wait(Duration::from_secs(20)).await })
    };
    wait_for_waiters(&client, &key, 1).await;
    assert_eq!(listed(&client, &key).await[&key].waiters, 1);
    assert!(
        !client
            .force_release(&key, victim.fencing_token() + 1)
            .await
            .unwrap()
    );
    assert!(
        client
            .force_release(&key, victim.fencing_token())
            .await
            .unwrap()
    );
    let next = waiting.await.unwrap().unwrap();
    assert!(next.fencing_token() > victim.fencing_token());
    lost_within(&victim, Duration::from_secs(3)).await;
}

#[tokio::test]
async fn redlock_lists_what_a_majority_holds_and_releases_on_every_node() {
    const Q: Duration = Duration::from_secs(2);
    let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    for server in &nodes {
        // Nodes that have kept their data for an hour (see redlock.rs).
        server.kept_data_for_an_hour();
    }
    let client = LockClient::builder()
        .redlock(nodes.iter().map(RedisServer::url))
        .redlock_quarantine(Q)
        .default_ttl(Q)
        .label("quorum")
        .build()
        .await
        .unwrap();
    let mut guards = Vec::new();
    for i in 0..30 {
        guards.push(client.lock(format!("r:{i}")).await.unwrap());
    }
    // On one node only (a minority): not a lock.
    let token = "0123456789abcdef0123456789abcdef";
    nodes[0].cmd::<()>(&[
        "SET",
        "distlock:r:minority",
        &format!("H{token}{:016}:h/1/2", 1u64),
        "PX",
        "60000",
    ]);
    // On two of three (node 0 lost it): still a lock, listed once.
    nodes[0].cmd::<()>(&["DEL", "distlock:r:5"]);
    let found = listed(&client, "r:").await;
    assert_eq!(found.len(), 30, "{:?}", found.keys().collect::<Vec<_>>());
    for guard in &guards {
        let info = &found[guard.key()];
        assert_eq!(info.label.as_deref(), Some("quorum"));
        assert!(info.ttl.is_some_and(|t| t <= Q));
    }
    let all: Vec<LockInfo> = client.list("r:").try_collect().await.unwrap();
    assert_eq!(all.len(), 30, "each lock once");

    // Release by the fence any node shows.
    let victim = &guards[9];
    let info = client.inspect(victim.key()).await.unwrap().unwrap();
    assert!(!client.force_release(victim.key(), 12345).await.unwrap());
    assert!(
        client
            .force_release(victim.key(), info.fencing_token)
            .await
            .unwrap()
    );
    for server in &nodes {
        let value: String = server.cmd(&["GET", &format!("distlock:{}", victim.key())]);
        assert!(value.starts_with('T'), "{value}");
    }
    lost_within(victim, Duration::from_secs(3)).await;
    let next = client.lock(victim.key()).await.unwrap();
    assert!(next.fencing_token() > info.fencing_token);
    // One node down: still listed (a majority remains).
    drop(guards.drain(20..));
    let mut nodes = nodes;
    nodes[1].kill();
    let found = listed(&client, "r:").await;
    assert!(found.len() >= 19, "{}", found.len());
}
