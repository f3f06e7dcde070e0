//! A soak: worker processes on a few keys for a bounded time while faults are injected at
//! random (a worker frozen past its lease, the server frozen for less than a lease), every
//! write fenced through a checking store.
//!
//! CI runs a short one; `SOAK_SECONDS=300 cargo nextest run -E 'test(soak)'` runs a long one.
//! Checks: no two guards that never reported loss overlap on a key (mutual exclusion), the
//! store accepted no write older than one it had seen (stale writes are refused, and counted),
//! and every store ends on the largest fence it accepted.

use std::collections::HashMap;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use distlock_tests::RedisServer;

struct Record {
    key: String,
    fence: u64,
    start: u128,
    end: u128,
    lost: bool,
    write: char,
}

fn parse(output: &str) -> Vec<Record> {
    output
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            Some(Record {
                key: f.first()?.to_string(),
                fence: f.get(1)?.parse().ok()?,
                start: f.get(2)?.parse().ok()?,
                end: f.get(3)?.parse().ok()?,
                lost: *f.get(4)? == "1",
                write: f.get(5)?.chars().next()?,
            })
        })
        .collect()
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status();
}

#[test]
fn soak_with_faults_keeps_exclusion_and_fencing() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let server = RedisServer::start();
    let ttl_ms = 400;
    let mut workers: Vec<Child> = (0..3)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_soak-worker"))
                .args([
                    server.url().as_str(),
                    "a,b",
                    &seconds.to_string(),
                    &ttl_ms.to_string(),
                ])
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn soak-worker")
        })
        .collect();

    // Faults at pseudo-random moments until the workers are done.
    let started = Instant::now();
    let mut faults = HashMap::<&str, u32>::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id());
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    while started.elapsed() < Duration::from_secs(seconds.saturating_sub(1)) {
        std::thread::sleep(Duration::from_millis(300 + next() % 500));
        match next() % 3 {
            0 => {
                let w = &workers[(next() % 3) as usize];
                signal(w, "-STOP");
                std::thread::sleep(Duration::from_millis(ttl_ms + 300));
                signal(w, "-CONT");
                *faults.entry("worker frozen past its lease").or_default() += 1;
            }
            1 => {
                server.pause();
                std::thread::sleep(Duration::from_millis(ttl_ms / 4));
                server.resume();
                *faults.entry("server frozen under a lease").or_default() += 1;
            }
            _ => {}
        }
    }

    let mut records = Vec::new();
    for worker in &mut workers {
        let mut out = String::new();
        worker
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert!(worker.wait().unwrap().success());
        records.extend(parse(&out));
    }

    // Mutual exclusion among guards that never reported loss.
    let mut violations = 0;
    for key in ["a", "b"] {
        let mut held: Vec<&Record> = records.iter().filter(|r| r.key == key && !r.lost).collect();
        held.sort_by_key(|r| r.start);
        for pair in held.windows(2) {
            if pair[1].start < pair[0].end {
                violations += 1;
            }
        }
        // The store ends on the largest fence it accepted.
        let accepted = records
            .iter()
            .filter(|r| r.key == key && r.write == 'a')
            .map(|r| r.fence)
            .max();
        let stored: Option<u64> = server.cmd(&["GET", &format!("store:{key}")]);
        assert_eq!(stored, accepted, "store:{key}");
    }
    let lost = records.iter().filter(|r| r.lost).count();
    let refused = records.iter().filter(|r| r.write == 'r').count();
    let accepted = records.iter().filter(|r| r.write == 'a').count();
    println!(
        "soak: {seconds}s, 3 processes, 2 keys: {} acquisitions, {accepted} fenced writes accepted, \
         {refused} stale writes refused, {lost} guards reported lost, faults {faults:?}, \
         {violations} exclusion violations",
        records.len()
    );
    assert!(
        records.len() > 50,
        "the workers made progress: {}",
        records.len()
    );
    assert_eq!(
        violations, 0,
        "two holders that never reported loss overlapped"
    );
}
