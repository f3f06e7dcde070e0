use distlock::{LockError, distributed_lock};

#[distributed_lock(key = "order:{order")]
async fn settle(order: u64) -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "order:order}")]
async fn close(order: u64) -> Result<(), LockError> {
    Ok(())
}

fn main() {}
