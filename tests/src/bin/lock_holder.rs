//! A child process for the crash and pause tests.
//!
//! `lock-holder <redis-url> <key> <ttl-ms>`: takes the lock, prints `acquired <fence>`, holds
//! it until killed.
//!
//! `lock-holder <redis-url> <key> <ttl-ms> fenced-writer <store-key>`: takes the lock, then
//! every 20 ms either writes its fence to the fenced store (printing `accepted <fence>` or
//! `rejected <fence>`) while its guard says it holds the lock, or prints `lost` and exits.

use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), distlock::LockError> {
    let args: Vec<String> = std::env::args().collect();
    let (url, key, ttl) = (&args[1], &args[2], args[3].parse().unwrap_or(1000));
    let client = distlock::LockClient::connect(url).await?;
    let guard = client
        .lock(key.as_str())
        .ttl(Duration::from_millis(ttl))
        .await?;
    let fence = guard.fencing_token();
    println!("acquired {fence}");
    let Some(store) = args.get(5).filter(|_| args[4] == "fenced-writer") else {
        std::future::pending::<()>().await;
        return Ok(());
    };
    let mut conn = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection())
        .expect("a connection for the store");
    loop {
        if !guard.is_held() {
            println!("lost");
            return Ok(());
        }
        let verdict = if distlock_tests::fenced_write(&mut conn, store, fence) {
            "accepted"
        } else {
            "rejected"
        };
        println!("{verdict} {fence}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
