use distlock::{LockError, distributed_lock};

// A type error in the body lands on the body, explained by the fn's return type.
#[distributed_lock(key = "k")]
async fn settle() -> Result<u32, LockError> {
    let n: u32 = 7;
    if n > 5 {
        return Ok("seven");
    }
    Ok(n)
}

fn main() {}
