//! Fixtures shared by the end-to-end tests: the same test body runs on Redis and in-process.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use distlock::{LockClient, MemoryStore};
use distlock_tests::RedisServer;

/// Where the locks live for one test.
pub enum Env {
    Redis(RedisServer),
    Memory(MemoryStore),
}

impl Env {
    pub fn redis() -> Self {
        Env::Redis(RedisServer::start())
    }

    pub fn memory() -> Self {
        Env::Memory(MemoryStore::new())
    }

    /// A new, independent client (its own watchdog, gates and connections), as another
    /// process would have.
    pub async fn client(&self) -> LockClient {
        self.builder().build().await.expect("client")
    }

    pub fn builder(&self) -> distlock::LockClientBuilder {
        match self {
            Env::Redis(server) => LockClient::builder().url(server.url()),
            Env::Memory(store) => LockClient::builder().memory(store.clone()),
        }
    }

    /// Forget every lock (FLUSHALL, or clearing the store).
    pub fn flush(&self) {
        match self {
            Env::Redis(server) => server.cmd::<()>(&["FLUSHALL"]),
            Env::Memory(store) => store.clear(),
        }
    }

    pub fn server(&self) -> Option<&RedisServer> {
        match self {
            Env::Redis(server) => Some(server),
            Env::Memory(_) => None,
        }
    }
}

/// Runs each listed `async fn(&Env)` twice: once on a fresh redis-server, once in-process.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod on_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&$crate::common::Env::redis()).await;
                }
            )*
        }
        mod in_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&$crate::common::Env::memory()).await;
                }
            )*
        }
    };
}

pub const MS: Duration = Duration::from_millis(1);
