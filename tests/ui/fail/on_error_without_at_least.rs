use distlock::{LockError, distributed_lock};

#[distributed_lock(key = "k", on_error = "release")]
async fn settle() -> Result<(), LockError> {
    Ok(())
}

fn main() {}
