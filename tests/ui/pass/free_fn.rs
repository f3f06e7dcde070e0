// A free fn with the default client, several placeholders, escapes, docs and attributes kept.
use distlock::{LockError, distributed_lock};

pub struct Order {
    pub id: u64,
    pub region: &'static str,
}

/// Settles an order; only one caller per order at a time.
#[distributed_lock(key = "order:{{{order.region}}}:{order.id}:{attempt}", ttl = "10s", wait = "1s 500ms")]
#[allow(clippy::needless_pass_by_value)]
pub(crate) async fn settle(order: &Order, attempt: u32) -> Result<String, LockError> {
    Ok(distlock::current().expect("held").key().to_owned())
}

/// Inner attributes of the body stay inside it (and still apply to it).
#[distributed_lock(key = "inner")]
#[deny(unused_variables)]
async fn inner_attributes() -> Result<(), LockError> {
    #![allow(unused_variables)]
    let unused = 1;
    Ok(())
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        distlock::set_default_client(distlock::LockClient::memory());
        let key = settle(&Order { id: 7, region: "eu" }, 2).await.unwrap();
        assert_eq!(key, "order:{eu}:7:2");
        inner_attributes().await.unwrap();
    });
}
