use distlock::{LockError, distributed_lock};

// While the signature is being typed: rustc's syntax error, and nothing about the attribute.
#[distributed_lock(key = "k:{id}")]
async fn settle(id: u32, other: ) -> Result<(), LockError> {
    Ok(())
}

fn main() {}
