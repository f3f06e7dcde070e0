// The generated code adds no warnings, and the future is Send when the body is.
#![deny(warnings, unused, missing_docs, clippy::all, clippy::pedantic)]
//! A crate that denies warnings.

use distlock::{LockClient, LockError, distributed_lock};

/// Something with fields.
pub struct Room {
    /// Which.
    pub number: u32,
    /// Where.
    pub floor: (u8, u8),
}

/// Documented, as `missing_docs` wants.
#[distributed_lock(key = "tidy:{id}:{room.number}:{room.floor.1}", client = locks, wait = "0s")]
pub async fn tidy(locks: &LockClient, id: u32, room: &Room) -> Result<u32, LockError> {
    Ok(id + room.number)
}

/// A scheduled job: every scheduling argument, and `impl Trait` in the return type.
#[distributed_lock(
    key = "job:{id}",
    client = locks,
    on_busy = "skip",
    at_least = "1s",
    at_most = "1m",
    on_error = "release"
)]
pub async fn job(locks: &LockClient, id: u32) -> Result<Option<impl std::fmt::Display>, LockError> {
    Ok(Some(id))
}

/// A return type clippy would call complex in a `let`: the generated code says nothing.
#[distributed_lock(key = "pair", client = locks)]
pub async fn pair(locks: &LockClient) -> Result<(Result<u8, LockError>, Result<u8, LockError>), LockError> {
    Ok((Ok(1), Ok(2)))
}

fn assert_send<T: Send>(value: T) -> T {
    value
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let locks = LockClient::memory();
    let room = Room { number: 1, floor: (0, 2) };
    let answer = rt.block_on(assert_send(tidy(&locks, 1, &room))).unwrap();
    assert_eq!(answer, 2);
    let ran = rt.block_on(assert_send(job(&locks, 3))).unwrap();
    assert_eq!(ran.map(|id| id.to_string()).as_deref(), Some("3"));
    assert!(rt.block_on(job(&locks, 3)).unwrap().is_none());
    let (a, b) = rt.block_on(pair(&locks)).unwrap();
    assert_eq!((a.unwrap(), b.unwrap()), (1, 2));
}
