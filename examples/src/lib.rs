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
            println!("backend: Redis at {url}");
            Ok(client)
        }
        Err(_) => {
            println!("backend: in-process (set REDIS_URL=redis://127.0.0.1:6379 to use Redis)");
            Ok(LockClient::memory())
        }
    }
}
