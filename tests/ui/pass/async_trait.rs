// Methods inside an `#[async_trait]` impl.
use async_trait::async_trait;
use distlock::{LockClient, LockError, distributed_lock};

#[async_trait]
trait Job {
    async fn run(&self, tick: u64) -> Result<u64, LockError>;
}

struct Report {
    locks: LockClient,
    name: String,
}

#[async_trait]
impl Job for Report {
    #[distributed_lock(key = "job:{self.name}:{tick}", client = self.locks, ttl = "5s")]
    async fn run(&self, tick: u64) -> Result<u64, LockError> {
        let held = distlock::current().expect("held");
        assert_eq!(held.key(), format!("job:{}:{tick}", self.name));
        Ok(tick * 2)
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let job: Box<dyn Job + Send + Sync> = Box::new(Report { locks: LockClient::memory(), name: "r".into() });
        assert_eq!(job.run(21).await.unwrap(), 42);
    });
}
