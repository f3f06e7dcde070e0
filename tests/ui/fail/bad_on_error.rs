use distlock::{LockError, distributed_lock};

#[distributed_lock(key = "k", at_least = "30s", on_error = "retry")]
async fn settle() -> Result<(), LockError> {
    Ok(())
}

fn main() {}
