use distlock::{LockError, distributed_lock};

#[distributed_lock(key = "k")]
fn settle() -> Result<(), LockError> {
    Ok(())
}

fn main() {
    // The fn is still emitted: this call type-checks.
    let _ = settle();
}
