use distlock::{LockError, distributed_lock};

#[distributed_lock(key = "k", ttl = "0s")]
async fn zero() -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "k", ttl = "50ms")]
async fn short() -> Result<(), LockError> {
    Ok(())
}

fn main() {}
