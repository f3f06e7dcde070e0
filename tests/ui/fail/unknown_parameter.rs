use distlock::{LockError, distributed_lock};

#[distributed_lock(key = "order:{ordr.id}")]
async fn settle(order: u64, db: &str) -> Result<(), LockError> {
    Ok(())
}

fn main() {}
