//! Listing many held locks, for `scripts/bench-list.sh` (which measures time and peak memory
//! around it with `/usr/bin/time -v`).
//!
//! `list-bench populate <redis-url> <count>`: writes `count` held locks `bench:<n>` under the
//! default prefix, as the acquire script writes them (every tenth with a label, every
//! hundredth with two queued waiters), with a one-hour lease, in pipelines of 1000.
//!
//! `list-bench list <redis-url> [prefix]`: streams `client.list(prefix)` to the end, keeping
//! nothing, and prints how many locks it saw and how long it took.

use std::time::{Duration, Instant};

use futures_util::StreamExt;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: list-bench populate <redis-url> <count> | list <redis-url> [prefix]";
    match args.get(1).map(String::as_str) {
        Some("populate") => {
            let (Some(url), Some(count)) = (args.get(2), args.get(3).and_then(|n| n.parse().ok()))
            else {
                eprintln!("{usage}");
                std::process::exit(2);
            };
            populate(url, count);
        }
        Some("list") => {
            let Some(url) = args.get(2) else {
                eprintln!("{usage}");
                std::process::exit(2);
            };
            list(url, args.get(3).map_or("", String::as_str)).await;
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}

fn populate(url: &str, count: u64) {
    let mut conn = redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .expect("connect");
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query(&mut conn).expect("TIME");
    let base_fence = secs * 1_000_000 + micros;
    let now_ms = base_fence / 1000;
    let started = Instant::now();
    for chunk in (0..count).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for &n in chunk {
            let token = format!(
                "{:032x}",
                u128::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15) + 1
            );
            let fence = base_fence + n;
            let label = if n % 10 == 0 {
                format!("worker-{}/", n % 7)
            } else {
                String::new()
            };
            let (state, queue) = if n % 100 == 0 {
                ('W', "|00000000000000aa|00000000000000bb|")
            } else {
                ('H', "")
            };
            let value = format!(
                "{state}{token}{fence:016}:{label}bench-host/{}/{now_ms}{queue}",
                10_000 + n % 50
            );
            pipe.cmd("SET")
                .arg(format!("distlock:bench:{n:07}"))
                .arg(value)
                .arg("PX")
                .arg(3_600_000)
                .ignore();
        }
        pipe.query::<()>(&mut conn).expect("SET pipeline");
    }
    println!(
        "populated {count} held locks in {:.2}s",
        started.elapsed().as_secs_f64()
    );
}

async fn list(url: &str, prefix: &str) {
    let client = distlock::LockClient::builder()
        .url(url)
        .command_timeout(Duration::from_secs(10))
        .build()
        .await
        .expect("connect");
    let started = Instant::now();
    let mut locks = client.list(prefix);
    let (mut seen, mut waiters, mut labelled) = (0u64, 0usize, 0u64);
    while let Some(info) = locks.next().await {
        let info = info.expect("listing");
        seen += 1;
        waiters += info.waiters;
        labelled += u64::from(info.label.is_some());
    }
    let elapsed = started.elapsed();
    println!(
        "listed {seen} held locks ({labelled} labelled, {waiters} waiters) in {:.3}s: {:.0} locks/s",
        elapsed.as_secs_f64(),
        seen as f64 / elapsed.as_secs_f64()
    );
}
