use distlock::{LockError, distributed_lock};

#[distributed_lock(ttl = "5s")]
async fn settle() -> Result<(), LockError> {
    Ok(())
}

fn main() {}
