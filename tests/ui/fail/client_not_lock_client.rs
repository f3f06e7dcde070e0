use distlock::{LockError, distributed_lock};

#[distributed_lock(key = "k", client = url)]
async fn settle(url: &str) -> Result<(), LockError> {
    Ok(())
}

fn main() {}
