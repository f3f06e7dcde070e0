//! What a distlock lock promises, per deployment, and when to use fencing tokens.
//!
//! A distributed lock built on leases is an agreement with a deadline: "this key is yours
//! until the lease runs out, unless you renew it". Everything below follows from that.
//!
//! # Per deployment
//!
//! | deployment | builder | while Redis and the network behave | when things fail |
//! |---|---|---|---|
//! | one Redis server | [`LockClient::connect`](crate::LockClient::connect) | at most one holder per key | a server restart without persistence forgets every lock: holders learn it at their next renewal (within ttl/3) through [`LockGuard::lost`](crate::LockGuard::lost); until then two holders can overlap. Fencing tokens keep increasing across the restart (they come from the server clock). |
//! | a primary with replicas under Sentinel | [`LockClientBuilder::sentinel`](crate::LockClientBuilder::sentinel) | as one server; the client follows a failover to the new primary (on errors, and at once on Sentinel's `+switch-master`) | replication is asynchronous: a lock not yet copied to the replica that takes over is gone after the failover, and the holder learns it at its next renewal through [`LockGuard::lost`](crate::LockGuard::lost). With [`sentinel_wait_replicas`](crate::LockClientBuilder::sentinel_wait_replicas) an acquire succeeds only once replicas have it (`WAIT`), so it survives a failover to one of them. Around a failover the old primary may accept writes for a moment (Sentinel's split-brain window); fence your writes. |
//! | Redis Cluster (feature `cluster`) | [`LockClientBuilder::cluster`](crate::LockClientBuilder::cluster) | as one server, per key: each lock lives on the primary owning its key's slot; resharding and failover redirections are followed, and waiters keep their release notices when a slot moves | replication to the slot's replicas is asynchronous: without acknowledgement, a failover to a replica that had not yet received the lock (the window is the replication lag, typically under a millisecond, unbounded when the replica is stalled or cut off) loses it, and a second client can acquire while the first still believes it holds, until the first learns it at its next renewal (within ttl/3) through `lost()`. With [`cluster_wait_replicas`](crate::LockClientBuilder::cluster_wait_replicas) an acquire succeeds only once that many replicas of the slot's primary acknowledged it (`WAIT`), so it survives a failover to one of them; an unacknowledged acquire is released and fails. Redis Cluster's own split-brain window (a partitioned primary accepting writes until `cluster-node-timeout`) remains; fence your writes. Fencing tokens come from the slot owner's clock. |
//! | Redlock, N independent primaries | [`LockClientBuilder::redlock`](crate::LockClientBuilder::redlock) | at most one holder per key as long as a majority of nodes is up and keeps its data | survives a minority of nodes down or frozen: a slow node costs an acquire or renewal at most `min(command timeout, lease / 10)`, and none at all once a majority has answered. A renewal a majority granted also puts the lease back on the nodes that lost their copy (it expired while the node was frozen, the node restarted empty, the key was deleted or evicted), where the key holds nothing or another token's tombstone, to run out when the copied lease does; so a held lock survives one minority fault after another as long as a renewal ran in between. A node votes only once its data is at least the quarantine (your longest lease) old, measured by the boot marker on its own clock — whatever the other nodes say, so nodes that restarted empty cannot vouch for each other. An empty node cannot tell "brand new" from "restarted", so a brand-new deployment grants no lock during its first quarantine ("quorum unavailable"). Safety still rests on bounded clock drift (also of each node's clock against the quarantine) and bounded pauses (below). Fencing tokens are the granting nodes' server clocks, so they only increase as long as those clocks agree to better than the time between two holders. |
//! | in process | [`LockClient::memory`](crate::LockClient::memory) | exact, within one process | nothing outlives the process |
//!
//! The primitives made of several locks ([`Semaphore`](crate::Semaphore),
//! [`RwLock`](crate::RwLock), [`lock_all`](crate::LockClient::lock_all)) promise exactly what
//! their locks do, on each deployment: a permit or a read slot is one lock, a write hold or a
//! set is several, and a [`LockSetGuard`](crate::LockSetGuard) believes it holds only while
//! every one of its locks does. Where a row above lets two holders overlap (a restart that
//! forgot the locks, a failover that lost them), a permit, a read/write hold or a set can
//! overlap the same way, until its holder learns it at the next renewal.
//!
//! # The bound every holder keeps
//!
//! A guard believes it holds its lock from the moment the acquire returns until
//! [`LockGuard::lost`](crate::LockGuard::lost) fires, [`LockGuard::is_held`](crate::LockGuard::is_held)
//! turns false, or it is released. That belief ends at the guard's *deadline*, and the
//! deadline never exceeds what the server can have granted:
//!
//! - it is measured from *before* the command that set the lease was sent (acquire, renewal
//!   or [`extend`](crate::LockGuard::extend)), minus a drift margin of `ttl / 100 + 2 ms`, so
//!   it ends before the server's TTL does when the two clocks run at the same rate;
//! - commands on one lease never race: an extension waits for a renewal in flight, so the last
//!   answered command is the one the server applied; `extend` to a shorter lease moves the
//!   deadline earlier, and an extension or renewal whose answer is lost (an error, a timeout, a
//!   dropped future) can only move it earlier, never later;
//! - a renewal that finds another token, or none, ends the belief at once;
//! - the watchdog runs on a thread of the library's own, so it keeps renewing (and checking
//!   deadlines) whichever runtime took the lock, also after that runtime is gone.
//!
//! So on a deployment that keeps its data (and, on Redlock, with a majority of nodes that
//! vote), the interval in which one guard believes it holds a key and the interval in which
//! the next holder does overlap by at most the drift margin plus the time it takes this
//! process to notice a passed deadline (a timer tick, plus scheduling delay on a loaded
//! machine). `lost()` fires by the deadline at the latest: the holder is told through
//! `lost()` (and `#[distributed_lock]` drops the body), before the server lets anyone else in.
//! The randomized fault checker in the repository's `tests/` (`tests/tests/fuzz.rs`) records
//! when every client believed it held each key and fails a run on any overlap larger than the
//! drift margin plus 5 ms of scheduling slack and its polling interval, on a fenced write
//! accepted out of order, on a wait that outlived its bound, and on a key leaked after the run.
//!
//! Where a deployment can lose data (a restart without persistence, a failover to a replica
//! that missed the write, Redlock nodes restarted empty before the quarantine) the table above
//! says what remains; fencing tokens (below) close what leases cannot.
//!
//! # What no lease can promise
//!
//! A holder can be paused for longer than its lease — a stop-the-world pause, a swapped-out
//! process, a VM migration, a slow network — and wake up still believing it holds the lock.
//! By then the lease has run out and someone else holds it. No check the holder does before
//! writing closes this gap completely: it can be paused between the check and the write.
//!
//! That is the heart of the argument Martin Kleppmann made against using Redlock for
//! correctness: timing-based locks assume bounded pauses, bounded network delay and clocks
//! that do not jump, and when those assumptions break, two holders can act at once.
//! Salvatore Sanfilippo's answer was that Redlock's assumptions are the usual ones for any
//! system with leases, that monotonic time and careful deployment (no clock jumps, delayed
//! restarts) keep them true in practice, and that a lock service cannot fix a holder that
//! ignores its lease anyway. Both are right about different things: Redlock (and any lease)
//! is a fine *efficiency* lock — it keeps two workers from doing the same job most of the
//! time — and on its own it is not a *correctness* lock for a resource that must never see
//! two writers.
//!
//! distlock narrows the gap where it can: the local deadline is measured from before the
//! acquire was sent and kept a drift margin short of the lease; an acquire whose answer comes
//! back too late is released, not used; [`LockGuard::lost`](crate::LockGuard::lost) fires as
//! soon as a renewal finds the lock gone or the deadline passes, and `#[distributed_lock]`
//! drops the guarded body at that moment.
//!
//! # Fencing tokens close it
//!
//! Every acquisition carries a fencing token ([`LockGuard::fencing_token`](crate::LockGuard::fencing_token),
//! [`current`](crate::current)) larger than every earlier one for the same key. Send it with
//! every write to the protected resource, and have the resource remember the largest token it
//! has accepted and refuse smaller ones (a conditional update, a `WHERE fence <= $1`, a
//! compare-and-set). A holder that was paused past its lease then fails at the resource,
//! however long it slept. Use fencing whenever a doubled write would be wrong rather than
//! merely wasteful.
//!
//! On one Redis server the tokens come from the server clock in microseconds, raised above the
//! last token the key still remembers, so they increase across releases, expiry and restarts.
//! Under Redlock there is no single counter: each node derives its own, and the token handed
//! out is the largest among the granting nodes. Prefer one server (with replicas for
//! availability) when you rely on fencing.
//!
//! # Scheduled jobs: at least, at most, skip
//!
//! A lock alone does not make a scheduled job run once per tick: an instance whose trigger
//! fires a few milliseconds after another one finished finds the lock free and runs the job
//! again. Three settings close that (on a request, or as `#[distributed_lock]` arguments):
//!
//! - **`min_hold` / `at_least`**: letting go within the minimum does not delete the lock but
//!   sets its lease to what remains (one compare-token `PEXPIRE`; no watchdog, no task), so
//!   every instance triggered later within the window is turned away. It rests on the
//!   triggers of one tick being closer together than the minimum: **the skew between the
//!   instances' clocks (and their schedulers' jitter) must stay below `at_least`**, and
//!   `at_least` below the period between ticks, or the next tick finds the lock held. The
//!   minimum is measured from when the acquire was sent, on the holder's clock (as the cap
//!   is), plus the drift margin; the acquire's own lease and every later command's are made
//!   to last through it, so the server keeps the key at least that long, watchdog or not. On
//!   failure (an `Err`, a panic, a dropped guard) the minimum is kept by default, so a failing
//!   job is not retried by every instance at once; `on_error = "release"` /
//!   [`release_now`](crate::LockGuard::release_now) releases at once instead.
//! - **`max_hold` / `at_most`**: a cap measured from before the acquire was sent. Every
//!   command on the lease (acquire, renewal, `extend`, the minimum hold's rest) is shortened,
//!   when it is sent, to end by it; the server's TTL can pass the cap only by the time such a
//!   command spends on its way (the server starts its TTL when the command arrives). The
//!   holder's deadline ends before the cap like any other (see the bound above): at the cap
//!   `lost()` fires and `#[distributed_lock]` drops the body (`on_lost = "cancel"`). A hung
//!   job can no longer keep its lock for ever.
//! - **`on_busy = "skip"`**: a turned-away instance returns `Ok(None)` instead of
//!   [`LockError::Busy`](crate::LockError::Busy); with the default `wait` of zero it leaves no
//!   trace on the lock.
//!
//! "Exactly one run per tick" therefore rests on the lease rule above (no two holders) plus
//! the skew rule; what a run writes is protected against a paused holder by its fencing
//! token, as everywhere.
//!
//! # Examples
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), distlock::LockError> {
//! use std::sync::Mutex;
//!
//! /// A store that refuses writes older than the newest it has seen.
//! struct FencedStore {
//!     highest: Mutex<u64>,
//! }
//!
//! impl FencedStore {
//!     fn write(&self, fence: u64) -> bool {
//!         let mut highest = self.highest.lock().unwrap();
//!         if fence < *highest {
//!             return false; // a holder whose lease ran out
//!         }
//!         *highest = fence;
//!         true
//!     }
//! }
//!
//! let store = FencedStore { highest: Mutex::new(0) };
//! let client = distlock::LockClient::memory();
//! let old = client.lock("ledger").await?;
//! let stale_fence = old.fencing_token();
//! drop(old); // pretend it was paused past its lease
//! let new = client.lock("ledger").wait(std::time::Duration::from_secs(1)).await?;
//! assert!(store.write(new.fencing_token()));
//! assert!(!store.write(stale_fence)); // the stale holder is refused
//! # Ok(())
//! # }
//! ```
