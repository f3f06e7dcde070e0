use distlock::{LockError, distributed_lock};

struct Meta;

struct Order {
    meta: Meta,
}

#[distributed_lock(key = "order:{order.meta}")]
async fn settle(order: &Order) -> Result<(), LockError> {
    Ok(())
}

fn main() {}
