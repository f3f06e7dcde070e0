//! Sentinel: a primary, a replica and a sentinel, all real; failovers while locks are held.

use std::time::{Duration, Instant};

use distlock::LockClient;
use distlock_tests::RedisServer;

struct Deployment {
    primary: RedisServer,
    replica: RedisServer,
    sentinel: RedisServer,
}

impl Deployment {
    fn start() -> Self {
        Self::start_with(&[])
    }

    fn start_with(primary_args: &[&str]) -> Self {
        let primary = RedisServer::start_with(primary_args);
        let replica = RedisServer::start_replica_of(&primary);
        let sentinel = RedisServer::start_sentinel("locks", &primary);
        let deployment = Deployment {
            primary,
            replica,
            sentinel,
        };
        deployment.wait_for(|d| d.replica_in_sync(), "the replica to sync");
        deployment.wait_for(
            |d| d.sentinel_sees_replica(),
            "the sentinel to see the replica",
        );
        deployment
    }

    fn replica_in_sync(&self) -> bool {
        let info: String = self.replica.cmd(&["INFO", "replication"]);
        info.contains("master_link_status:up")
    }

    fn sentinel_sees_replica(&self) -> bool {
        let replicas: Vec<Vec<String>> = self.sentinel.cmd(&["SENTINEL", "REPLICAS", "locks"]);
        !replicas.is_empty()
    }

    fn primary_port(&self) -> u16 {
        let (_, port): (String, u16) =
            self.sentinel
                .cmd(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "locks"]);
        port
    }

    fn wait_for(&self, done: impl Fn(&Self) -> bool, what: &str) {
        let started = Instant::now();
        while !done(self) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn fail_over(&self) {
        let before = self.primary_port();
        self.sentinel.cmd::<()>(&["SENTINEL", "FAILOVER", "locks"]);
        self.wait_for(|d| d.primary_port() != before, "the failover");
    }

    async fn client(&self, wait_replicas: bool) -> LockClient {
        let mut builder = LockClient::builder()
            .sentinel("locks", [self.sentinel.url()])
            .command_timeout(Duration::from_millis(500));
        if wait_replicas {
            builder = builder.sentinel_wait_replicas(1, Duration::from_millis(200));
        }
        builder.build().await.unwrap()
    }
}

#[tokio::test]
async fn the_client_follows_a_failover_and_acknowledged_locks_survive_it() {
    let deployment = Deployment::start();
    // Replicas must acknowledge this client's locks; the other client does not wait (after
    // the failover the demoted primary takes a while to become the new primary's replica).
    let client = deployment.client(true).await;
    let follower = deployment.client(false).await;
    // A lease long enough to outlast Sentinel's switch-over window (renewals that reach the
    // old primary before the client hears of the switch extend only the old copy).
    let guard = client
        .lock("kept")
        .ttl(Duration::from_secs(3))
        .await
        .unwrap();
    let fence = guard.fencing_token();
    deployment.fail_over();
    assert_eq!(deployment.primary_port(), deployment.replica.port());
    // New locks go to the new primary (once the client heard of the switch: Sentinel
    // announces it right after it answers with the new address).
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match follower.lock("fresh").await {
                Ok(guard) => {
                    let on_new: Option<String> = deployment.replica.cmd(&["GET", "distlock:fresh"]);
                    // Taken on the old primary during the switch (this client waits for no
                    // replica), the lock may be gone with it: the release says so.
                    if let Err(err) = guard.release().await {
                        assert!(err.is_lost() || err.is_backend(), "{err}");
                    }
                    if on_new.is_some_and(|v| v.starts_with('H')) {
                        break;
                    }
                }
                Err(err) => assert!(err.is_backend(), "{err}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the client follows the new primary");
    // ...and the acknowledged lock is still held, and renewed there past a whole lease.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(
        guard.is_held(),
        "an acknowledged lock survives the failover"
    );
    let err = follower.lock("kept").await.unwrap_err();
    assert!(err.is_busy(), "{err}");
    guard.release().await.unwrap();
    let again = follower.lock("kept").await.unwrap();
    assert!(again.fencing_token() > fence);
}

#[tokio::test]
async fn a_lock_the_failover_lost_is_reported_never_silently() {
    let deployment = Deployment::start();
    let client = deployment.client(false).await;
    // The replica is frozen, so the lock never reaches it.
    deployment.replica.pause();
    let guard = client
        .lock("unreplicated")
        .ttl(Duration::from_millis(1500))
        .await
        .unwrap();
    deployment.replica.resume();
    // Promote the replica, which comes back without the lock (until it resyncs it is the
    // replica's own data that counts, and after the failover the old primary follows it).
    deployment.replica.cmd::<()>(&["REPLICAOF", "NO", "ONE"]);
    deployment
        .replica
        .cmd::<()>(&["DEL", "distlock:unreplicated"]);
    deployment.fail_over();
    tokio::time::timeout(Duration::from_secs(10), guard.lost())
        .await
        .expect("the loss is reported through lost()");
    assert!(!guard.is_held());
}

#[tokio::test]
async fn replicas_that_do_not_acknowledge_make_the_acquire_fail_and_release() {
    let deployment = Deployment::start();
    let client = deployment.client(true).await;
    deployment.replica.pause();
    let err = client.lock("unacked").await.unwrap_err();
    deployment.replica.resume();
    assert!(err.is_backend(), "{err}");
    assert!(err.to_string().contains("acknowledged"), "{err}");
    let value: Option<String> = deployment.primary.cmd(&["GET", "distlock:unacked"]);
    assert!(
        value.is_none_or(|v| v.starts_with('T')),
        "released after the failed WAIT"
    );
}

#[tokio::test]
async fn a_password_protected_primary_is_reached_with_its_credentials() {
    let deployment =
        Deployment::start_with(&["--requirepass", "pr1m@ry-pw", "--masterauth", "pr1m@ry-pw"]);
    let without = LockClient::builder()
        .sentinel("locks", [deployment.sentinel.url()])
        .build()
        .await;
    let err = match without {
        Ok(client) => client.lock("k").await.unwrap_err(),
        Err(err) => err,
    };
    assert!(err.is_backend(), "{err}");
    assert!(
        !err.to_string().contains("pr1m@ry"),
        "password leaked: {err}"
    );

    let client = LockClient::builder()
        .sentinel("locks", [deployment.sentinel.url()])
        .sentinel_primary_auth(None, "pr1m@ry-pw")
        .command_timeout(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    assert!(
        !format!("{client:?}").contains("pr1m@ry"),
        "password in Debug"
    );
    client.lock("k").await.unwrap().release().await.unwrap();
    deployment.fail_over();
    let shown = format!("{client:?}");
    assert!(!shown.contains("pr1m"), "password in Debug: {shown}");
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let attempt = client.lock("after").await;
            if let Ok(guard) = attempt {
                let on_new: Option<String> = deployment.replica.cmd(&["GET", "distlock:after"]);
                guard.release().await.unwrap();
                if on_new.is_some() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the client follows to the new (password-protected) primary");
}
