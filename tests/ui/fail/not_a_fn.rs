use distlock::distributed_lock;

#[distributed_lock(key = "k")]
struct Settle;

fn main() {}
