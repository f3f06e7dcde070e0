use distlock::{LockError, distributed_lock};

#[distributed_lock(key = "k", at_least = "10m", at_most = "5m")]
async fn settle() -> Result<(), LockError> {
    Ok(())
}

fn main() {}
