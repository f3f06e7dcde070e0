use distlock::{LockError, distributed_lock};

// Both are reported at once.
#[distributed_lock(key = "k", at_least = "half a minute", at_most = "10 parsecs")]
async fn settle() -> Result<(), LockError> {
    Ok(())
}

fn main() {}
