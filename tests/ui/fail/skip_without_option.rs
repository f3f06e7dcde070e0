use distlock::{LockError, distributed_lock};

#[distributed_lock(key = "k", on_busy = "skip")]
async fn settle() -> Result<u32, LockError> {
    Ok(7)
}

fn main() {}
