//! A seeded, randomized fault test (Jepsen in miniature): worker processes draw operations from
//! the whole public API, a nemesis injects faults drawn from the same seed, and a checker reads
//! the merged histories (see `distlock_tests::fuzz` for what is checked and the bounds used).
//!
//! One test per deployment; CI runs a short fixed set of seeds. Environment:
//! - `FUZZ_SECONDS=<n>`: seconds of operations per seed (default 15);
//! - `FUZZ_SEED=<n>`: replay one seed (the schedule of operations and faults comes from it;
//!   timing varies);
//! - `FUZZ_SEEDS=<n>`: run `n` fresh seeds (printed) instead of the fixed ones;
//! - `FUZZ_DEPLOYMENT=memory|redis|sentinel|redlock|cluster`: run only that one;
//! - `FUZZ_DUMP=<dir>`: also write each run's merged history to `<dir>/<deployment>-<seed>.history`;
//! - `FUZZ_RECHECK=<dir>/<deployment>-<seed>.history`: only check a written history again
//!   (`recheck_a_written_history`; the leak check needs the live run and is not repeated).
//!   Histories written before the hold fields (`min_hold`, `max_hold`, sightings with their
//!   lease) read as holds without a minimum or cap.
//!
//! A failing run prints its seed, the summary, and the events of the offending key around
//! each violation.

use std::sync::Mutex;
use std::time::Duration;

use distlock_tests::fuzz::checker::{CheckConfig, check, excerpt};
use distlock_tests::fuzz::deploy::Kind;
use distlock_tests::fuzz::history::{Event, read_history};
use distlock_tests::fuzz::rng::seeds_from_env;
use distlock_tests::fuzz::run::{RunConfig, run_one};

/// The runs share two cores with everything else: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn fuzz(kind: Kind, ci_seeds: &[u64]) {
    if let Ok(only) = std::env::var("FUZZ_DEPLOYMENT")
        && only != kind.name()
    {
        eprintln!("fuzz {}: skipped (FUZZ_DEPLOYMENT={only})", kind.name());
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let seeds = seeds_from_env("FUZZ_SEED", "FUZZ_SEEDS", ci_seeds);
    let run = Duration::from_secs(env_u64("FUZZ_SECONDS").unwrap_or(15));
    let mut failed = Vec::new();
    for seed in seeds {
        let config = RunConfig::new(kind, seed, run, env!("CARGO_BIN_EXE_fuzz-worker").into());
        let result = run_one(&config);
        println!("{}", result.describe(&config, 5));
        if let Ok(dir) = std::env::var("FUZZ_DUMP") {
            let path = format!("{dir}/{}-{seed}.history", kind.name());
            let lines: Vec<String> = result.events.iter().map(|e| e.to_line()).collect();
            std::fs::write(&path, lines.join("\n") + "\n").expect("write the history");
            println!("history written to {path}");
        }
        if !result.passed() {
            failed.push(seed);
        }
    }
    assert!(
        failed.is_empty(),
        "fuzz {}: violations with seeds {failed:?} (see above; replay with FUZZ_DEPLOYMENT={} FUZZ_SEED=<seed>)",
        kind.name(),
        kind.name()
    );
}

#[test]
fn fuzz_in_process() {
    fuzz(Kind::Memory, &[101]);
}

#[test]
fn fuzz_one_redis() {
    fuzz(Kind::Redis, &[202]);
}

#[test]
fn fuzz_sentinel() {
    fuzz(Kind::Sentinel, &[303]);
}

#[test]
fn fuzz_redlock() {
    fuzz(Kind::Redlock, &[404]);
}

#[test]
fn fuzz_cluster() {
    fuzz(Kind::Cluster, &[505]);
}

#[test]
fn recheck_a_written_history() {
    let Ok(path) = std::env::var("FUZZ_RECHECK") else {
        return;
    };
    let text = std::fs::read_to_string(&path).expect("the history file");
    let events = read_history(&text);
    let name = std::path::Path::new(&path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let kind = Kind::ALL
        .into_iter()
        .find(|k| name.starts_with(k.name()))
        .expect("a history named <deployment>-<seed>.history");
    let config = RunConfig::new(kind, 0, Duration::ZERO, "".into());
    let origin = events.iter().map(Event::at).min().unwrap_or(0);
    let report = check(
        &events,
        &CheckConfig {
            command_timeout: config.command_timeout,
            redlock_nodes: (kind == Kind::Redlock).then_some(3),
            settle: kind.settle(),
            origin,
            finished: events.iter().map(Event::until).max().unwrap_or(0),
        },
    );
    println!("{}", report.summary());
    for (kind, (n, examples)) in &report.warnings {
        println!("warning {kind}: {n}, e.g. {}", examples.join("; "));
    }
    for v in &report.violations {
        println!("VIOLATION {}: {}", v.kind, v.message);
        println!(
            "{}",
            excerpt(&events, v.key.as_deref(), v.from, v.to, origin, 30)
        );
    }
}
