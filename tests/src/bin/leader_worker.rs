//! A child process for the leader failover tests: one replica of a service that does its
//! work only while it leads.
//!
//! `leader-worker <redis-url> <election> <ttl-ms> <store-key>` campaigns with
//! `client.leader(election).ttl(ttl).run(..)` and prints one line per event (times are
//! microseconds since the Unix epoch, read from the system clock, which the test process
//! shares):
//!
//! - `campaigning <pid>` once, at start;
//! - `elected <term> <time>` when elected, the time read after the campaign returned;
//! - `write <term> accepted|rejected <time>` every 5 ms while leading: the time is read
//!   *before* `is_leader()` is checked, and the write to the fenced store is made only when
//!   that check says it leads. So "it believed it led at some moment after `<time>`";
//! - `stopped <term> <time>` when `run` cancelled the work because leadership was lost,
//!   followed by `late <term> accepted|rejected`: one more fenced write with the old term, as
//!   code caught in the middle of a write would make. The store must refuse it once a newer
//!   leader has written.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

fn store_conn(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .expect("a connection for the fenced store")
}

/// Runs when the work is dropped: `run` cancelled it on loss.
struct Stopped {
    url: String,
    store: String,
    term: u64,
}

impl Drop for Stopped {
    fn drop(&mut self) {
        println!("stopped {} {}", self.term, now_us());
        let verdict =
            if distlock_tests::fenced_write(&mut store_conn(&self.url), &self.store, self.term) {
                "accepted"
            } else {
                "rejected"
            };
        println!("late {} {verdict}", self.term);
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), distlock::LockError> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, election, ttl_ms, store] = &args[..] else {
        eprintln!("usage: leader-worker <redis-url> <election> <ttl-ms> <store-key>");
        std::process::exit(2);
    };
    let ttl = Duration::from_millis(ttl_ms.parse().unwrap_or(1000));
    let client = distlock::LockClient::builder()
        .url(url.as_str())
        .command_timeout(Duration::from_millis(500))
        .build()
        .await?;
    println!("campaigning {}", std::process::id());
    client
        .leader(election.as_str())
        .ttl(ttl)
        .run(|leadership| {
            let (url, store) = (url.clone(), store.clone());
            async move {
                let term = leadership.fencing_token();
                println!("elected {term} {}", now_us());
                let mut conn = store_conn(&url);
                let _stopped = Stopped {
                    url: url.clone(),
                    store: store.clone(),
                    term,
                };
                loop {
                    let before = now_us();
                    if !leadership.is_leader() {
                        // `run` notices the loss and drops this future.
                        std::future::pending::<()>().await;
                    }
                    let verdict = if distlock_tests::fenced_write(&mut conn, &store, term) {
                        "accepted"
                    } else {
                        "rejected"
                    };
                    println!("write {term} {verdict} {before}");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
        .await
}
