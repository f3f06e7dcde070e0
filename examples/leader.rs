//! Leader election: three replicas of a service, one leads at a time.
//!
//! Each replica runs `client.leader(..).run(..)`: campaign, do the work while leading, campaign
//! again after a loss. The demo then makes things happen to the leader:
//!
//! 1. its leader key is deleted (as an operator, or a Redis that lost its data, would): its
//!    next renewal finds out, its work is cancelled, and the replicas campaign again (the one
//!    that just lost is often first: the others learn of the free key on their next retry);
//! 2. the leading replica shuts down: its leadership is resigned and a waiting replica is
//!    elected at once, with a larger term.
//!
//! It ends by itself after a few seconds.
//!
//! ```text
//! cargo run -p examples --example leader                                  # in-process
//! REDIS_URL=redis://127.0.0.1:6379 cargo run -p examples --example leader # on Redis
//! ```

use std::time::{Duration, Instant};

use distlock::{LockClient, LockError, MemoryStore};
use tokio::sync::watch;

const ELECTION: &str = "report-scheduler";
const REPLICAS: [&str; 3] = ["replica-a", "replica-b", "replica-c"];
/// Generous: every step of the demo happens well within it.
const STEP: Duration = Duration::from_secs(10);

/// Where the replicas' locks live: Redis at `REDIS_URL`, or one in-process store.
enum Deployment {
    Redis(String),
    Memory(MemoryStore),
}

impl Deployment {
    fn from_env() -> Self {
        match std::env::var("REDIS_URL") {
            Ok(url) => {
                println!("backend: Redis (REDIS_URL)");
                Deployment::Redis(url)
            }
            Err(_) => {
                println!("backend: in-process (set REDIS_URL=redis://127.0.0.1:6379 to use Redis)");
                Deployment::Memory(MemoryStore::new())
            }
        }
    }

    /// A client of its own per replica, as separate processes would have.
    async fn client(&self) -> Result<LockClient, LockError> {
        match self {
            Deployment::Redis(url) => LockClient::connect(url).await,
            Deployment::Memory(store) => LockClient::builder().memory(store.clone()).build().await,
        }
    }

    /// Deletes the election's key behind the leader's back (`DEL distlock:leader:<name>`).
    fn delete_leader_key(&self, prefix: &str) -> Result<(), Box<dyn std::error::Error>> {
        match self {
            Deployment::Redis(url) => {
                let mut conn = redis::Client::open(url.as_str())?.get_connection()?;
                redis::cmd("DEL")
                    .arg(format!("{prefix}leader:{ELECTION}"))
                    .query::<()>(&mut conn)?;
            }
            Deployment::Memory(store) => store.clear(),
        }
        Ok(())
    }
}

/// Printed when the work is dropped: `run` cancelled it because leadership was lost, or the
/// replica shut down.
struct StoppedLeading {
    replica: &'static str,
    term: u64,
}

impl Drop for StoppedLeading {
    fn drop(&mut self) {
        println!("{}: stopped leading (term {})", self.replica, self.term);
    }
}

/// One replica: leads whenever it can until `shutdown` says stop.
async fn replica(
    name: &'static str,
    client: LockClient,
    board: watch::Sender<Option<(&'static str, u64)>>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), LockError> {
    let service = client
        .leader(ELECTION)
        .ttl(Duration::from_secs(1))
        .run(|leadership| {
            let board = board.clone();
            async move {
                let term = leadership.fencing_token();
                println!("{name}: elected, term {term}");
                board.send_replace(Some((name, term)));
                let _stopped = StoppedLeading {
                    replica: name,
                    term,
                };
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tick.tick().await;
                    // The real work would write with `term`, so that a store can refuse a
                    // leader that was paused past its lease.
                    println!("{name}: working as leader (term {term})");
                }
            }
        });
    tokio::select! {
        result = service => result,
        _ = shutdown.wait_for(|stop| *stop) => {
            println!("{name}: shutting down");
            Ok(())
        }
    }
}

/// Waits until a replica leads with a term above `after`; says who, and what everyone sees.
async fn next_leader(
    board: &mut watch::Receiver<Option<(&'static str, u64)>>,
    observer: &LockClient,
    after: u64,
) -> Result<(&'static str, u64), Box<dyn std::error::Error>> {
    let (name, term) = tokio::time::timeout(
        STEP,
        board.wait_for(|b| b.is_some_and(|(_, term)| term > after)),
    )
    .await??
    .expect("checked by wait_for");
    if let Some(leader) = observer.current_leader(ELECTION).await? {
        println!(
            "   current_leader: host {} pid {} term {} lease left {:?}",
            leader.host.as_deref().unwrap_or("?"),
            leader.pid.unwrap_or(0),
            leader.term,
            leader.lease_remaining.unwrap_or_default(),
        );
    }
    Ok((name, term))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let deployment = Deployment::from_env();
    let observer = deployment.client().await?;
    let (board, mut leaders) = watch::channel(None);
    let mut stops = Vec::new();
    let mut replicas = Vec::new();
    for name in REPLICAS {
        let (stop, shutdown) = watch::channel(false);
        let client = deployment.client().await?;
        replicas.push(tokio::spawn(replica(name, client, board.clone(), shutdown)));
        stops.push(stop);
    }

    let (first, term) = next_leader(&mut leaders, &observer, 0).await?;
    tokio::time::sleep(Duration::from_millis(600)).await; // let it work a little

    println!("-- the leader key is deleted behind {first}'s back");
    deployment.delete_leader_key(observer.prefix())?;
    let (second, term) = next_leader(&mut leaders, &observer, term).await?;
    tokio::time::sleep(Duration::from_millis(600)).await;

    println!("-- {second} shuts down; its leadership is resigned");
    let handover = Instant::now();
    if let Some(i) = REPLICAS.iter().position(|r| *r == second) {
        stops[i].send_replace(true);
    }
    let (third, _) = next_leader(&mut leaders, &observer, term).await?;
    println!("   {third} took over in {:?}", handover.elapsed());
    tokio::time::sleep(Duration::from_millis(400)).await;

    println!("-- everyone shuts down, the leader last");
    let mut replicas: Vec<_> = REPLICAS.iter().zip(stops).zip(replicas).collect();
    replicas.sort_by_key(|((name, _), _)| **name == third);
    for ((_, stop), replica) in replicas {
        stop.send_replace(true);
        replica.await??;
    }
    Ok(())
}
