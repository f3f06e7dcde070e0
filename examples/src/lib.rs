//! Shared by the example programs in this folder (`cargo run -p examples --example <name>`).

use distlock::{LockClient, LockError};

/// The client the examples run on: Redis at `REDIS_URL` when it is set, else the in-process
/// backend. Says which on stdout.
///
/// # Errors
///
/// When `REDIS_URL` is set but the server cannot be reached.
pub async fn client_from_env() -> Result<LockClient, LockError> {
    match std::env::var("REDIS_URL") {
        Ok(url) => {
            let client = LockClient::connect(&url).await?;
            println!("backend: Redis at {}", without_password(&url));
            Ok(client)
        }
        Err(_) => {
            println!("backend: in-process (set REDIS_URL=redis://127.0.0.1:6379 to use Redis)");
            Ok(LockClient::memory())
        }
    }
}

/// `url` with everything between `scheme://` and the last `@` hidden: what the examples print
/// of a Redis URL (a password never reaches the terminal).
///
/// # Examples
///
/// ```
/// assert_eq!(examples::without_password("redis://:hunter2@db:6379/0"), "redis://***@db:6379/0");
/// assert_eq!(examples::without_password("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
/// ```
pub fn without_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        (None, _) => "***".to_owned(),
        _ => url.to_owned(),
    }
}

/// A store as a protected resource should be: it remembers the largest fencing token it
/// accepted per key and refuses a write carrying a smaller one (a holder whose lease ran out
/// while it was paused). A database does the same with `WHERE fence <= $1` or a
/// compare-and-set.
#[derive(Debug, Default)]
pub struct FencedStore {
    seen: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

impl FencedStore {
    /// Writes under `fence`; refused when a larger fence wrote `key` before.
    ///
    /// # Errors
    ///
    /// The refusal, naming both fences.
    pub fn write(&self, key: &str, fence: u64) -> Result<(), String> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let last = seen.entry(key.to_owned()).or_default();
        if fence < *last {
            return Err(format!("stale write to {key}: fence {fence} < {last}"));
        }
        *last = fence;
        Ok(())
    }
}
