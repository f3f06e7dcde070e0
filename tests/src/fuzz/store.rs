//! The fenced store the workers write to while they hold a lock: it keeps the largest fence
//! per key and refuses writes carrying a smaller one, as a protected resource would. Each
//! write gets a sequence number in the order the store applied it, so the checker can replay
//! the store's view.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

/// Compare-and-set of the largest fence, plus a global sequence number.
///
/// KEYS[1] the store key, KEYS[2] the sequence counter; ARGV[1] the fence.
/// Reply: {accepted 0|1, sequence number}.
const WRITE: &str = "local seq = redis.call('INCR', KEYS[2]) \
    local seen = tonumber(redis.call('GET', KEYS[1]) or '0') \
    if tonumber(ARGV[1]) < seen then return {0, seq} end \
    redis.call('SET', KEYS[1], ARGV[1]) return {1, seq}";

static WRITE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(WRITE));

/// A fenced store: a redis-server of its own that no fault touches, or a map in this process.
#[derive(Clone)]
pub enum FencedStore {
    /// Keys `store:<key>` on a separate, never-faulted server.
    Redis(redis::aio::MultiplexedConnection),
    /// In this process (for the in-process deployment).
    Memory(Arc<MemoryFences>),
}

impl std::fmt::Debug for FencedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FencedStore::Redis(_) => f.write_str("FencedStore::Redis"),
            FencedStore::Memory(m) => f.debug_tuple("FencedStore::Memory").field(m).finish(),
        }
    }
}

/// The in-process fenced store.
#[derive(Debug, Default)]
pub struct MemoryFences {
    largest: Mutex<HashMap<String, u64>>,
    seq: AtomicU64,
}

impl FencedStore {
    /// Connects to the store server at `url`.
    ///
    /// # Panics
    ///
    /// When it cannot be reached (it is never faulted).
    pub async fn connect(url: &str) -> Self {
        let client = redis::Client::open(url).expect("the store URL");
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the fenced store");
        FencedStore::Redis(conn)
    }

    /// An empty in-process store.
    pub fn memory() -> Self {
        FencedStore::Memory(Arc::default())
    }

    /// Writes `fence` to `key`: `(accepted, sequence number)`.
    ///
    /// # Panics
    ///
    /// When the store server fails (it is never faulted).
    pub async fn write(&self, key: &str, fence: u64) -> (bool, u64) {
        match self {
            FencedStore::Redis(conn) => {
                let (accepted, seq): (i64, u64) = WRITE_SCRIPT
                    .key(format!("store:{key}"))
                    .key("store:seq")
                    .arg(fence.to_string())
                    .invoke_async(&mut conn.clone())
                    .await
                    .expect("the fenced store answers");
                (accepted == 1, seq)
            }
            FencedStore::Memory(store) => {
                let mut largest = store.largest.lock().unwrap_or_else(|p| p.into_inner());
                let seq = store.seq.fetch_add(1, Ordering::SeqCst) + 1;
                let seen = largest.entry(key.to_owned()).or_insert(0);
                if fence < *seen {
                    return (false, seq);
                }
                *seen = fence;
                (true, seq)
            }
        }
    }
}
