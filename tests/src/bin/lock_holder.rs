//! A child process for the crash tests: takes a lock, says so, then holds it until killed.
//!
//! Usage: `lock-holder <redis-url> <key> <ttl-ms>`

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
    println!("acquired {}", guard.fencing_token());
    std::future::pending::<()>().await;
    Ok(())
}
