use distlock::{LockError, distributed_lock};

#[distributed_lock(key = "a", ttl = "5s", key = "b")]
async fn settle() -> Result<(), LockError> {
    Ok(())
}

fn main() {}
