//! One worker process of the soak test.
//!
//! `soak-worker <redis-url> <key,key,..> <seconds> <ttl-ms>`: for the given time, takes the
//! keys in turn (waiting up to 2 s), holds each for a few milliseconds, writes its fence to the
//! fenced store `store:<key>` if its guard still says it holds the lock, and releases. One line
//! per acquisition: `<key> <fence> <start-µs> <end-µs> <lost 0|1> <write a|r|->`, wall-clock
//! times, `lost` when the guard reported the lease lost at any point.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = &args[1];
    let keys: Vec<&str> = args[2].split(',').collect();
    let until = Instant::now() + Duration::from_secs(args[3].parse().unwrap_or(5));
    let ttl = Duration::from_millis(args[4].parse().unwrap_or(500));
    let client = distlock::LockClient::connect(url).await.expect("connect");
    let mut conn = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection())
        .expect("a connection for the store");
    let mut turn = std::process::id() as usize;
    while Instant::now() < until {
        turn += 1;
        let key = keys[turn % keys.len()];
        let Ok(guard) = client.lock(key).ttl(ttl).wait(Duration::from_secs(2)).await else {
            continue;
        };
        let start = now_us();
        tokio::time::sleep(Duration::from_millis(2 + (turn % 5) as u64)).await;
        let write = if guard.is_held() {
            if distlock_tests::fenced_write(
                &mut conn,
                &format!("store:{key}"),
                guard.fencing_token(),
            ) {
                "a"
            } else {
                "r"
            }
        } else {
            "-"
        };
        let end = now_us();
        let fence = guard.fencing_token();
        let lost = !guard.is_held() || guard.release().await.is_err();
        println!("{key} {fence} {start} {end} {} {write}", u8::from(lost));
    }
}
