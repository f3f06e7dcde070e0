use distlock::{LockError, distributed_lock};

#[distributed_lock(key = "k", at_least = "0s")]
async fn settle() -> Result<(), LockError> {
    Ok(())
}

fn main() {}
