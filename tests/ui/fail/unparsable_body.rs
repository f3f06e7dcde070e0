use distlock::{LockError, distributed_lock};

// While the body is being typed: rustc's syntax error, and nothing about the attribute.
#[distributed_lock(key = "k")]
async fn settle() -> Result<(), LockError> {
    let x = ;
    Ok(())
}

fn main() {
    // The fn is still there.
    let _ = settle();
}
