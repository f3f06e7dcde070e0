use distlock::distributed_lock;

#[derive(Debug)]
struct MyError;

#[distributed_lock(key = "k")]
async fn settle() -> Result<(), MyError> {
    Ok(())
}

fn main() {}
