//! A seeded, randomized fault test: Jepsen in miniature.
//!
//! Worker processes (or, in process, worker threads) draw operations from the whole public API
//! ([`worker`]) and record what they did and believed ([`history`]); a nemesis injects faults
//! drawn from the same seed ([`nemesis`]) into a deployment ([`deploy`]) through per-connection
//! fault proxies ([`proxy`]); writes go through a fenced store ([`store`]); [`run`] ties one
//! seed together, and the [`checker`] reads the merged histories and reports overlapping
//! holders, stale fenced writes and fence regressions, waits that outlived their bound, leaked
//! locks, phantom holders, leases lost with no fault around, broken re-entrancy, minimum holds
//! cut short and leases believed or kept past their maximum hold. A failing
//! run prints its seed and the events of the offending key around the violation;
//! `FUZZ_SEED` replays it (`tests/tests/fuzz.rs` lists the knobs).
//!
//! Only the public API of `distlock` and `#[distributed_lock]` is used, so the checker keeps
//! working as the runtime changes underneath.

pub mod checker;
pub mod deploy;
pub mod history;
pub mod nemesis;
pub mod proxy;
pub mod rng;
pub mod run;
pub mod store;
pub mod worker;
