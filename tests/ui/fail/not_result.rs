use distlock::distributed_lock;

#[distributed_lock(key = "k")]
async fn settle() -> u32 {
    7
}

#[distributed_lock(key = "k")]
async fn nothing() {}

fn main() {}
