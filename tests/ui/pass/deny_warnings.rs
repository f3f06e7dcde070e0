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

fn assert_send<T: Send>(value: T) -> T {
    value
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let locks = LockClient::memory();
    let room = Room { number: 1, floor: (0, 2) };
    let answer = rt.block_on(assert_send(tidy(&locks, 1, &room))).unwrap();
    assert_eq!(answer, 2);
}
