// `crate = path` for code that reaches distlock through a re-export.
mod reexport {
    pub use distlock::*;
}

use reexport::{LockClient, LockError};

#[distlock::distributed_lock(key = "renamed", client = locks, crate = crate::reexport)]
async fn renamed(locks: &LockClient) -> Result<(), LockError> {
    Ok(())
}

#[distlock::distributed_lock(key = "quoted", client = locks, crate = "crate::reexport")]
async fn quoted(locks: &LockClient) -> Result<(), LockError> {
    Ok(())
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let locks = LockClient::memory();
        renamed(&locks).await.unwrap();
        quoted(&locks).await.unwrap();
    });
}
