use distlock::{LockError, distributed_lock};

#[distributed_lock(key = "k", ttl = "ten seconds")]
async fn settle() -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "k", wait = "5 parsecs")]
async fn wait() -> Result<(), LockError> {
    Ok(())
}

fn main() {}
