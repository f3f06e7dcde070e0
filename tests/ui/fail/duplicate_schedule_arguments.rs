use distlock::{LockError, distributed_lock};

// Each duplicate is reported, at its second occurrence.
#[distributed_lock(key = "k", on_busy = "skip", at_most = "1m", on_busy = "error", at_most = "2m")]
async fn settle() -> Result<Option<()>, LockError> {
    Ok(None)
}

fn main() {}
