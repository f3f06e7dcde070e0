//! One worker process of the fuzz test (`tests/tests/fuzz.rs`).
//!
//! `fuzz-worker id=<n> seed=<s> run_ms=<ms> keys=<k,k,..> tasks=<n> default=<0|1>
//! timeout_ms=<ms> store=<redis-url> out=<history file> target=<redis|sentinel|redlock|cluster>
//! urls=<url,..> [master=<name>] [quarantine_ms=<ms>]`: runs the operations drawn from the seed
//! against the target for `run_ms`, writing one history line per event to `out`. With
//! `default=1` it also installs a default client built on another runtime for
//! `#[distributed_lock]` calls that name none.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distlock_tests::fuzz::history::Sink;
use distlock_tests::fuzz::store::FencedStore;
use distlock_tests::fuzz::worker::{self, Target, WorkerSpec};

fn main() {
    let args: HashMap<String, String> = std::env::args()
        .skip(1)
        .filter_map(|a| a.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let get = |name: &str| {
        args.get(name)
            .unwrap_or_else(|| panic!("fuzz-worker: missing {name}="))
            .clone()
    };
    let num = |name: &str| -> u64 {
        get(name)
            .parse()
            .unwrap_or_else(|_| panic!("fuzz-worker: {name}= is not a number"))
    };
    let spec = WorkerSpec {
        id: u32::try_from(num("id")).expect("a worker id"),
        seed: num("seed"),
        run: Duration::from_millis(num("run_ms")),
        keys: get("keys").split(',').map(str::to_owned).collect(),
        tasks: u32::try_from(num("tasks")).expect("a task count"),
        uses_default_client: num("default") == 1,
    };
    let timeout = Duration::from_millis(num("timeout_ms"));
    let target = Target::from_args(&args).expect("fuzz-worker: a target= and its urls=");
    let out = std::fs::File::create(get("out")).expect("fuzz-worker: the history file");
    let sink = Sink::File(Arc::new(Mutex::new(out)));
    if spec.uses_default_client {
        distlock::set_default_client(worker::client_made_on_another_runtime(&target, timeout));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let client = target.client(timeout).await;
        let store = FencedStore::connect(&get("store")).await;
        worker::run_worker(spec, client, store, sink).await;
    });
    // Tasks stuck in an acquire would keep the runtime from shutting down.
    runtime.shutdown_timeout(Duration::from_millis(100));
}
