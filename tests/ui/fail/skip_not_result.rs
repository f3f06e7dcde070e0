use distlock::distributed_lock;

#[distributed_lock(key = "k", on_busy = "skip")]
async fn settle() -> Option<u32> {
    Some(7)
}

fn main() {}
