use distlock::{LockError, distributed_lock};

#[distributed_lock(key = "k", at_most = "50ms")]
async fn settle() -> Result<(), LockError> {
    Ok(())
}

fn main() {}
