// Methods on `&self` and `&mut self`, the client taken from a field, an `Arc` and a parameter.
use std::sync::Arc;

use distlock::{LockClient, LockError, distributed_lock};

struct Billing {
    tenant: String,
    locks: LockClient,
    shared: Arc<LockClient>,
    runs: u32,
}

struct Invoice {
    id: u64,
}

impl Billing {
    #[distributed_lock(key = "invoice:{self.tenant}:{invoice.id}", ttl = "10s", wait = "2s", client = self.locks)]
    async fn settle(&self, invoice: &Invoice) -> Result<u64, LockError> {
        Ok(invoice.id)
    }

    #[distributed_lock(key = "runs:{self.tenant}", client = self.shared)]
    async fn count(&mut self) -> Result<u32, LockError> {
        self.runs += 1;
        Ok(self.runs)
    }
}

#[distributed_lock(key = "job:{name}", client = locks, on_lost = "ignore")]
async fn job(locks: &LockClient, name: &str) -> Result<(), LockError> {
    Ok(())
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let locks = LockClient::memory();
        let mut billing = Billing {
            tenant: "acme".into(),
            locks: locks.clone(),
            shared: Arc::new(locks.clone()),
            runs: 0,
        };
        assert_eq!(billing.settle(&Invoice { id: 3 }).await.unwrap(), 3);
        assert_eq!(billing.count().await.unwrap(), 1);
        job(&locks, "nightly").await.unwrap();
    });
}
