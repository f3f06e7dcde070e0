//! distlock in one screen: take a lock, see who holds it, get turned away, wait your turn.
//!
//! ```text
//! cargo run -p examples --example quickstart                                  # in-process
//! REDIS_URL=redis://127.0.0.1:6379 cargo run -p examples --example quickstart # on Redis
//! ```

use std::time::Duration;

use distlock::LockError;

#[tokio::main]
async fn main() -> Result<(), LockError> {
    let client = examples::client_from_env().await?;

    // 1. Take a lock. The watchdog renews it every ttl/3 while the guard lives.
    let guard = client
        .lock("quickstart:report")
        .ttl(Duration::from_secs(10))
        .await?;
    println!(
        "acquired `{}` with fencing token {}",
        guard.key(),
        guard.fencing_token()
    );

    // 2. Anyone can ask who holds it.
    if let Some(info) = client.inspect("quickstart:report").await? {
        println!(
            "held by host {} pid {} for another {:?}",
            info.host.as_deref().unwrap_or("?"),
            info.pid.unwrap_or(0),
            info.ttl.unwrap_or_default()
        );
    }

    // 3. A second try without waiting is turned away, with the holder's remaining lease.
    match client.lock("quickstart:report").await {
        Err(err) if err.is_busy() => println!("second try: {err}"),
        other => println!("second try: unexpected {other:?}"),
    }

    // 4. Four workers wait their turn; each release wakes the next at once.
    let mut workers = Vec::new();
    for id in 1..=4 {
        let client = client.clone();
        workers.push(tokio::spawn(async move {
            let guard = client
                .lock("quickstart:report")
                .wait(Duration::from_secs(5))
                .await?;
            println!(
                "worker {id} runs with fencing token {}",
                guard.fencing_token()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            guard.release().await
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!("releasing the first lock; the workers take turns:");
    guard.release().await?;
    for worker in workers {
        worker.await.expect("worker task")?;
    }
    println!("done: {} locks still held", client.held_locks());
    Ok(())
}
