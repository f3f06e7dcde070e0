// The generated code adds no warnings, and the future is Send when the body is.
#![deny(warnings, unused, missing_docs, clippy::all, clippy::pedantic)]
//! A crate that denies warnings.

use distlock::{LockClient, LockError, distributed_lock};

/// Documented, as `missing_docs` wants.
#[distributed_lock(key = "tidy:{id}", client = locks, wait = "0s")]
pub async fn tidy(locks: &LockClient, id: u32) -> Result<u32, LockError> {
    Ok(id + 1)
}

fn assert_send<T: Send>(value: T) -> T {
    value
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let locks = LockClient::memory();
    let answer = rt.block_on(assert_send(tidy(&locks, 1))).unwrap();
    assert_eq!(answer, 2);
}
