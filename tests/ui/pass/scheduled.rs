// The scheduling arguments: `on_busy`, `at_least`, `at_most`, `on_error`.
use distlock::{LockClient, LockError, distributed_lock};

#[distributed_lock(key = "report:{day}", client = locks, on_busy = "skip", at_least = "30s")]
async fn report(locks: &LockClient, day: u32) -> Result<Option<u32>, LockError> {
    Ok(Some(day))
}

#[distributed_lock(key = "sync", client = locks, ttl = "1s", at_most = "10m", on_busy = "error")]
async fn sync(locks: &LockClient) -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(
    key = "retry:{n}",
    client = locks,
    at_least = "1m",
    at_most = "1m",
    on_error = "release",
    on_busy = "skip",
    wait = "10ms",
)]
async fn retry(locks: &LockClient, n: u8) -> Result<Option<()>, LockError> {
    Ok(Some(()))
}

#[distributed_lock(key = "hold", client = locks, at_least = "1h 30m", on_error = "hold")]
async fn hold(locks: &LockClient) -> std::io::Result<()> {
    Ok(())
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let locks = LockClient::memory();
        assert_eq!(report(&locks, 1).await.unwrap(), Some(1));
        // Held for at least 30s after the first run: the second is skipped.
        assert_eq!(report(&locks, 1).await.unwrap(), None);
        sync(&locks).await.unwrap();
        sync(&locks).await.unwrap();
        assert_eq!(retry(&locks, 1).await.unwrap(), Some(()));
        assert_eq!(retry(&locks, 1).await.unwrap(), None);
        hold(&locks).await.unwrap();
    });
}
