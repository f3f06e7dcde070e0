//! A seeded, randomized fault test: Jepsen in miniature.
//!
//! Worker processes (or, in process, worker threads) draw operations from the whole public API
//! ([`worker`]) and record what they did and believed ([`history`]); a nemesis injects faults
//! drawn from the same seed ([`nemesis`]) into a deployment ([`deploy`]); the [`checker`] reads
//! the merged histories and reports overlapping holders, stale fenced writes, waits that
//! outlived their bound, leaked locks and phantom holders. A failing run prints its seed and
//! the events of the offending key around the violation; `FUZZ_SEED` replays it.

pub mod checker;
pub mod deploy;
pub mod history;
pub mod nemesis;
pub mod proxy;
pub mod rng;
pub mod run;
pub mod store;
pub mod worker;
