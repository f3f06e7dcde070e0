//! Waiting for a lock: a fair local queue per key, then the backend with release notices.
//!
//! Tasks of one client that want the same key queue up in FIFO order on a local gate, so only
//! the head of the queue talks to the backend and turns come round fairly. The head tries the
//! backend; while someone else (another process) holds the key it waits for the release
//! notice, the holder's lease running out, or a jittered backoff cap, whichever comes first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;

/// The local gates of one client, one per key somebody in this process holds or wants.
#[derive(Debug, Default)]
pub(crate) struct Gates {
    map: Mutex<HashMap<String, Arc<Gate>>>,
}

#[derive(Debug, Default)]
struct Gate {
    turn: Arc<tokio::sync::Mutex<()>>,
    /// The lease of whoever holds the turn, to answer "busy for how long?".
    holder: Mutex<Option<Weak<dyn Held>>>,
    /// The holder's release is on its way to the backend (its guard was dropped).
    releasing: AtomicBool,
}

/// What a gate knows of the lease held by whoever has the turn.
pub(crate) trait Held: Send + Sync + std::fmt::Debug {
    /// Until when the holder trusts its lease.
    fn deadline(&self) -> Instant;
}

/// A place at one key's gate; holding the turn once [`GatePass::wait_turn`] returned.
#[derive(Debug)]
pub(crate) struct GatePass {
    gates: Arc<Gates>,
    key: String,
    gate: Arc<Gate>,
    turn: Option<OwnedMutexGuard<()>>,
}

impl Gates {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Gate>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Join the queue for `key`.
    pub(crate) fn enter(self: &Arc<Self>, key: &str) -> GatePass {
        let gate = self.map().entry(key.to_owned()).or_default().clone();
        GatePass {
            gates: self.clone(),
            key: key.to_owned(),
            gate,
            turn: None,
        }
    }
}

impl GatePass {
    /// Take the turn at once if free. Otherwise the remaining lease of the local holder.
    pub(crate) fn try_turn(&mut self) -> Result<(), Option<Duration>> {
        match self.gate.turn.clone().try_lock_owned() {
            Ok(turn) => {
                self.turn = Some(turn);
                Ok(())
            }
            Err(_) => Err(self.holder_remaining()),
        }
    }

    /// Wait for the turn until `deadline`.
    pub(crate) async fn wait_turn(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<(), Option<Duration>> {
        let turn = self.gate.turn.clone().lock_owned();
        let turn = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, turn).await.ok(),
            None => Some(turn.await),
        };
        match turn {
            Some(turn) => {
                self.turn = Some(turn);
                Ok(())
            }
            None => Err(self.holder_remaining()),
        }
    }

    /// Marks the turn's release as in flight; cleared when the turn is handed on.
    pub(crate) fn set_releasing(&self, releasing: bool) {
        self.gate.releasing.store(releasing, Ordering::Release);
    }

    /// True when the local holder's release is in flight: worth waiting for even on a
    /// zero wait, as it lands within one round trip.
    pub(crate) fn holder_releasing(&self) -> bool {
        self.gate.releasing.load(Ordering::Acquire)
    }

    pub(crate) fn set_holder(&self, lease: Weak<dyn Held>) {
        *self.gate.holder.lock().unwrap_or_else(|p| p.into_inner()) = Some(lease);
    }

    fn holder_remaining(&self) -> Option<Duration> {
        let holder = self.gate.holder.lock().unwrap_or_else(|p| p.into_inner());
        let lease = holder.as_ref()?.upgrade()?;
        Some(lease.deadline().saturating_duration_since(Instant::now()))
    }
}

impl Drop for GatePass {
    fn drop(&mut self) {
        // Hand the turn on first, then leave the map if nobody else is at this gate.
        if self.turn.take().is_some() {
            self.gate.releasing.store(false, Ordering::Release);
        }
        let mut map = self.gates.map();
        // Clones of a gate are only made under the map lock: the map's and ours means we
        // are the last.
        if Arc::strong_count(&self.gate) == 2 {
            map.remove(&self.key);
        }
    }
}

/// The retry pause while another process holds the key: the holder's remaining lease or
/// the jittered backoff cap, whichever is shorter. A release notice cuts it short.
pub(crate) fn pause(pttl: Option<Duration>, backoff: Duration) -> Duration {
    // Jitter of up to ±25% so waiters of several processes do not retry in lockstep.
    let mut raw = [0u8; 2];
    let _ = getrandom::fill(&mut raw);
    let unit = f64::from(u16::from_le_bytes(raw)) / f64::from(u16::MAX);
    let capped = backoff.mul_f64(0.75 + unit * 0.5);
    match pttl {
        // +1ms: retry just after the lease runs out, not just before.
        Some(pttl) => (pttl + Duration::from_millis(1)).min(capped),
        None => capped,
    }
}

pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(25);
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_is_bounded_by_the_holder_lease_and_the_cap() {
        for _ in 0..100 {
            let p = pause(Some(Duration::from_millis(5)), Duration::from_secs(1));
            assert!(p <= Duration::from_millis(6));
            let p = pause(None, Duration::from_millis(100));
            assert!(p >= Duration::from_millis(75) && p <= Duration::from_millis(125));
        }
    }
}
