//! Adversarial tests, round 5: attacks on the two fixes of round 4 (one coalesced call out at
//! a time; each operation of a batch run under `pcall`, with its own outcome, and a
//! tombstone- or reservation-shaped value with a non-numeric fence taken as foreign) and
//! their surroundings: values of every foreign shape at lock keys, locks replaced by foreign
//! data while held, errors for whole calls (OOM, `CLIENT PAUSE WRITE`, `READONLY` after a
//! demotion), and waits bounded through a silent connection. Only the public API, against
//! real redis-server processes.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use distlock::{LockClient, LockError, LockGuard};
use distlock_tests::attack::not_free;
use distlock_tests::{RedisServer, StormLedger, TcpProxy, flush_and_kill_storm};
use futures_util::future::join_all;

const MS: Duration = Duration::from_millis(1);

async fn client(url: String) -> LockClient {
    client_with(url, Duration::from_secs(2)).await
}

use distlock_tests::client_with_timeout as client_with;

/// A key's whole value (`DUMP`, any type) and its lease (`PTTL`).
fn snapshot(server: &RedisServer, key: &str) -> (Vec<u8>, i64) {
    (server.cmd(&["DUMP", key]), server.cmd(&["PTTL", key]))
}

/// Reads `key`'s value every 2 ms on its own connection until `stop`: every value it saw
/// that differs from `expected`.
fn watch_value(
    server: &RedisServer,
    key: &str,
    expected: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    let mut conn = server.conn();
    let key = key.to_owned();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let v: Option<String> = redis::cmd("GET").arg(&key).query(&mut conn).unwrap();
            if v.as_deref() != Some(expected.as_str()) && !seen.contains(&format!("{v:?}")) {
                seen.push(format!("{v:?}"));
            }
            std::thread::sleep(2 * MS);
        }
        seen
    })
}

/// A port on which nothing listens.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

type Op<'a> = Pin<Box<dyn Future<Output = (String, Result<(), LockError>)> + Send + 'a>>;

// ---------------------------------------------------------------------------------------
// Findings
// ---------------------------------------------------------------------------------------

/// The fix of round 4 makes a tombstone- or reservation-shaped value whose fence is not a
/// number foreign. A held-shaped value (`H`/`W`, ':' at byte 50) is still taken as a held
/// lock whatever its fence: an acquire answers `Busy` (while `inspect` and `list`, which do
/// check the fence, say nobody holds it), and an acquire that waits writes into it
/// (`SETRANGE 0 W`, `APPEND |id|`). The same for a reservation-shaped value (`R`, 16 digits,
/// more than 50 bytes) whose token and queue are free text: a waiting acquire appends its id.
/// What must hold (`LockError::KeyConflict`: "distlock leaves such keys untouched rather than
/// overwrite user data"): a value distlock cannot have written is never written to, and its
/// acquires fail with `KeyConflict`, or at least `Busy` (as documented for a shape distlock
/// writes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_shaped_like_a_held_lock_or_reservation_but_not_distlocks_are_never_written() {
    let server = RedisServer::start();
    let a = client(server.url()).await;
    let text = "this is a note somebody keeps here, not a lock";
    let values = [
        // ':' at byte 50, but no token and no fence: letters and spaces.
        (
            "held-shaped",
            format!("H{}{}:{text}", "x".repeat(32), "not-a-fence-here"),
        ),
        (
            "waited-shaped",
            format!("W{}{}:{text}", "y".repeat(32), "no fence either!"),
        ),
        ("colons", format!("H{}", ":".repeat(60))),
        // 'R' and a 16-digit number, then free text where a token and a queue would be.
        ("reservation-shaped", format!("R1234567890123456 {text}")),
        (
            "reservation-shaped-1MiB",
            format!("R1234567890123456{}", "q".repeat(1 << 20)),
        ),
    ];
    let mut problems = Vec::new();
    for (key, value) in &values {
        let full = format!("distlock:{key}");
        server.cmd::<()>(&["SET", &full, value]);
        let one_try = a.lock(*key).await.map(drop);
        // No fence: foreign, as for a tombstone or reservation without one (round 4).
        let conflict = matches!(one_try, Err(LockError::KeyConflict { .. }));
        let busy_too =
            key.starts_with("reservation") && matches!(one_try, Err(LockError::Busy { .. }));
        if !(conflict || busy_too) {
            problems.push(format!("{key}: a one-try acquire answered {one_try:?}"));
        }
        let info = a.inspect(key).await;
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = watch_value(&server, &full, value.clone(), stop.clone());
        let waited = a.lock(*key).wait(300 * MS).await.map(drop);
        stop.store(true, Ordering::Relaxed);
        let changed = watcher.join().unwrap();
        if !matches!(
            waited,
            Err(LockError::KeyConflict { .. } | LockError::Busy { .. })
        ) {
            problems.push(format!("{key}: a waiting acquire answered {waited:?}"));
        }
        if !changed.is_empty() {
            let short = |v: &str| v.chars().take(120).collect::<String>();
            let changed: Vec<String> = changed.iter().map(|c| short(c)).collect();
            problems.push(format!(
                "{key}: a waiting acquire ({waited:?}; inspect says {info:?}) wrote into \
                 {:?}: {changed:?}",
                short(value)
            ));
        }
        let after: String = server.cmd(&["GET", &full]);
        if &after != value {
            let tail = &after[after.len().saturating_sub(40)..];
            problems.push(format!(
                "{key}: left as {} bytes ending {tail:?}",
                after.len()
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// A value shaped like a tombstone, with a fence that is a number but larger than any the
/// server clock gives (at or past 2^53, or 16 nines), is taken as a tombstone, and the next
/// fence is computed as `tonumber(last) + 1` in floating point and formatted with `%016.0f`:
/// past 2^53 the addition rounds (the new fence is not larger; two holders in a row get the
/// same fence), and from 16 nines it gives 17 digits, which breaks the fixed layout (the lock
/// then looks foreign to every other acquirer, `inspect` cannot see it, and the release
/// writes a tombstone with the fence cut to 16 digits, so the next fence goes down).
/// What must hold: successive holders of a key get strictly increasing fences, and a held
/// lock is `Busy` for others and shown by `inspect` (or the value is refused as foreign).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_shaped_value_with_a_huge_fence_never_breaks_fencing() {
    let server = RedisServer::start();
    let a = client(server.url()).await;
    let b = client(server.url()).await;
    let mut problems = Vec::new();
    for (key, last) in [
        ("past-2-53", "9007199254740993"),
        ("nines", "9999999999999999"),
    ] {
        server.cmd::<()>(&["SET", &format!("distlock:{key}"), &format!("T{last}")]);
        let mut fences: Vec<u64> = Vec::new();
        for round in 0..3 {
            let g = match a.lock(key).await {
                Ok(g) => g,
                // Refusing the value as foreign is fine: nothing is taken over.
                Err(LockError::KeyConflict { .. }) if round == 0 => break,
                Err(e) => {
                    problems.push(format!("{key} round {round}: {e}"));
                    break;
                }
            };
            if let Some(&prev) = fences.last()
                && g.fencing_token() <= prev
            {
                problems.push(format!(
                    "{key}: holder {round} got fence {} after {prev}",
                    g.fencing_token()
                ));
            }
            fences.push(g.fencing_token());
            let other = b.lock(key).await.map(drop);
            if !matches!(other, Err(LockError::Busy { .. })) {
                problems.push(format!(
                    "{key}: while held (fence {}), another acquire answered {other:?}",
                    g.fencing_token()
                ));
            }
            let info = b.inspect(key).await;
            if !matches!(&info, Ok(Some(i)) if i.fencing_token == g.fencing_token()) {
                problems.push(format!(
                    "{key}: while held (fence {}), inspect says {info:?}",
                    g.fencing_token()
                ));
            }
            if let Err(e) = g.release().await {
                problems.push(format!("{key} round {round}: release: {e}"));
            }
        }
        problems.push(format!("(info) {key}: T{last} then fences {fences:?}"));
    }
    let real: Vec<&String> = problems
        .iter()
        .filter(|p| !p.starts_with("(info)"))
        .collect();
    assert!(real.is_empty(), "{problems:#?}");
}

// ---------------------------------------------------------------------------------------
// Attacks that held (regression tests)
// ---------------------------------------------------------------------------------------

/// The values of foreign shapes: odd lengths around the tombstone (17, 49) and reservation
/// (> 50) layouts, non-digit fences (letters, signs, spaces, multi-byte characters), '|' and
/// ':' in the wrong places, the empty string, 1 MiB values, and the other types.
fn foreign_values(server: &RedisServer) -> Vec<String> {
    let d16 = "1234567890123456";
    let strings = [
        "T".to_owned(),
        String::new(),
        format!("T{}", &d16[..15]),
        format!("T{d16}x"),
        format!("T{}", "abcdefghijklmnop"),
        format!("T+{}", &d16[..15]),
        format!("T {}", &d16[..15]),
        format!("T{}", "é".repeat(8)),
        format!("T{d16}{}", "z".repeat(31)),
        format!("T12345678901234x6{}", "z".repeat(32)),
        format!("T{d16}{}", "z".repeat(33)),
        format!("T{d16}{}:", "z".repeat(32)),
        format!("T{d16}{}", "|".repeat(40)),
        format!("R{d16}{}", "z".repeat(33)),
        format!("R-{}{}|", &d16[..15], "z".repeat(40)),
        format!("R{}{}|", "0x00000000000001", "a".repeat(40)),
        format!("R{}{}", "é".repeat(8), "a".repeat(40)),
        "H".to_owned(),
        "W|".to_owned(),
        format!("H{}|{}", "a".repeat(48), "x".repeat(10)),
        format!("W{}:{}", "a".repeat(49), "x".repeat(10)),
        format!("T{}", "9".repeat(1 << 20)),
        format!("H{}", "9".repeat(1 << 20)),
        "plain user data".to_owned(),
    ];
    let mut keys = Vec::new();
    for (i, v) in strings.iter().enumerate() {
        let key = format!("foreign:s{i}");
        server.cmd::<()>(&["SET", &format!("distlock:{key}"), v]);
        keys.push(key);
    }
    for (i, cmd) in [
        &["RPUSH", "x", "T1234567890123456"][..],
        &["HSET", "x", "f", "v"],
        &["SADD", "x", "m"],
        &["ZADD", "x", "1", "m"],
        &["XADD", "x", "*", "f", "v"],
    ]
    .iter()
    .enumerate()
    {
        let key = format!("foreign:t{i}");
        let full = format!("distlock:{key}");
        let mut args = cmd.to_vec();
        args[1] = &full;
        server.cmd::<redis::Value>(&args);
        keys.push(key);
    }
    keys
}

/// Foreign values of every shape, each acquired (one try and waiting) in the same coalesced
/// calls as ordinary acquires and releases of the same client, and force-released: each
/// foreign key's own acquires fail with `KeyConflict` (fast, even when waiting), nothing of
/// them is changed (value and lease), and every ordinary acquire and release succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_values_of_every_shape_fail_only_their_own_operations() {
    let server = RedisServer::start();
    let foreign = foreign_values(&server);
    let before: Vec<(Vec<u8>, i64)> = foreign
        .iter()
        .map(|k| snapshot(&server, &format!("distlock:{k}")))
        .collect();
    let a = client(server.url()).await;
    let b = client(server.url()).await;
    let mut problems = Vec::new();
    let mut released = Vec::new();
    for round in 0..3 {
        let mut guards = Vec::new();
        for i in 0..24 {
            let key = format!("rel:{round}:{i}");
            guards.push((
                key.clone(),
                a.lock(key).ttl(Duration::from_secs(30)).await.unwrap(),
            ));
        }
        let mut ops: Vec<Op<'_>> = Vec::new();
        for (i, (key, guard)) in guards.into_iter().enumerate() {
            let a = &a;
            let acquire_key = format!("acq:{round}:{i}");
            ops.push(Box::pin(async move {
                let r = a.lock(acquire_key.as_str()).await.map(drop);
                (acquire_key, r)
            }));
            released.push(key.clone());
            ops.push(Box::pin(async move { (key, guard.release().await) }));
        }
        for f in &foreign {
            let a = &a;
            ops.push(Box::pin(async move {
                let r = a.lock(f.as_str()).await.map(drop);
                (format!("foreign {f} one-try"), r)
            }));
            ops.push(Box::pin(async move {
                let t0 = Instant::now();
                let r = a
                    .lock(f.as_str())
                    .wait(Duration::from_secs(5))
                    .await
                    .map(drop);
                let r = match r {
                    Ok(()) => Ok(()),
                    Err(e) if t0.elapsed() > Duration::from_secs(1) => Err(LockError::Backend {
                        kind: distlock::BackendErrorKind::Timeout,
                        message: format!("waited {:?} for {e}", t0.elapsed()),
                        source: None,
                    }),
                    Err(e) => Err(e),
                };
                (format!("foreign {f} waiting"), r)
            }));
        }
        for (what, r) in join_all(ops).await {
            match (what.starts_with("foreign"), r) {
                (false, Ok(())) => {}
                (true, Err(LockError::KeyConflict { key })) if what.contains(&key) => {}
                (_, r) => problems.push(format!("round {round}: {what}: {r:?}")),
            }
        }
        for f in &foreign {
            match a.force_release(f, 1234567890123456).await {
                Ok(false) | Err(LockError::Backend { .. }) => {}
                other => problems.push(format!("force_release {f}: {other:?}")),
            }
        }
    }
    for (k, was) in foreign.iter().zip(&before) {
        if snapshot(&server, &format!("distlock:{k}")) != *was {
            problems.push(format!("{k} was changed"));
        }
    }
    let left = not_free(&b, &released, 500 * MS).await;
    assert!(
        problems.is_empty() && left.is_empty(),
        "{problems:#?}\nreleased keys still held: {left:#?}"
    );
}

/// Locks whose values were replaced by foreign data while held (a string, a list, a
/// tombstone-shaped string with a non-numeric fence), one renewed by the watchdog, one
/// extended, one released, in calls shared with ordinary operations: the extend and the
/// release fail with `Lost`, the watchdog's lease is reported lost within its TTL, the data
/// is untouched, and the ordinary operations succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_replaced_by_foreign_data_while_held_is_lost_and_the_data_kept() {
    let server = RedisServer::start();
    let a = client(server.url()).await;
    let renewed = a
        .lock("r:renewed")
        .ttl(Duration::from_secs(1))
        .await
        .unwrap();
    let extended = a
        .lock("r:extended")
        .ttl(Duration::from_secs(30))
        .await
        .unwrap();
    let released = a
        .lock("r:released")
        .ttl(Duration::from_secs(30))
        .await
        .unwrap();
    let ordinary: Vec<LockGuard> =
        join_all((0..16).map(|i| a.lock(format!("r:ok:{i}")).into_future()))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    server.cmd::<()>(&["SET", "distlock:r:renewed", "user data"]);
    server.cmd::<()>(&["DEL", "distlock:r:extended"]);
    server.cmd::<()>(&["RPUSH", "distlock:r:extended", "a list now"]);
    server.cmd::<()>(&[
        "SET",
        "distlock:r:released",
        &format!("T{}", "q".repeat(48)),
    ]);
    let before: Vec<(Vec<u8>, i64)> = ["r:renewed", "r:extended", "r:released"]
        .iter()
        .map(|k| snapshot(&server, &format!("distlock:{k}")))
        .collect();
    let t0 = Instant::now();
    let (ext, rel, ok, lost) = tokio::join!(
        extended.extend(Duration::from_secs(60)),
        released.release(),
        join_all(ordinary.into_iter().map(LockGuard::release)),
        tokio::time::timeout(Duration::from_millis(1500), renewed.lost()),
    );
    assert!(
        matches!(ext, Err(LockError::Lost { .. })),
        "extend: {ext:?}"
    );
    assert!(
        matches!(rel, Err(LockError::Lost { .. })),
        "release: {rel:?}"
    );
    assert!(ok.iter().all(Result::is_ok), "ordinary releases: {ok:?}");
    assert!(
        lost.is_ok(),
        "the watchdog never saw the lease gone ({:?})",
        t0.elapsed()
    );
    assert!(!renewed.is_held() && !extended.is_held());
    let after: Vec<(Vec<u8>, i64)> = ["r:renewed", "r:extended", "r:released"]
        .iter()
        .map(|k| snapshot(&server, &format!("distlock:{k}")))
        .collect();
    assert_eq!(before, after, "the foreign data was changed");
    let again = a.lock("r:renewed").await.map(drop);
    assert!(
        matches!(again, Err(LockError::KeyConflict { .. })),
        "{again:?}"
    );
}

/// Runs `n` acquires (fresh keys `{tag}:acq:i`, 30 s leases) and releases `guards`, all at
/// once, each timed: what each answered and how long it took.
async fn acquires_and_releases(
    a: &LockClient,
    tag: &str,
    n: usize,
    guards: Vec<LockGuard>,
) -> Vec<(String, Duration, Result<(), LockError>)> {
    let acquires = (0..n).map(|i| async move {
        let key = format!("{tag}:acq:{i}");
        let t0 = Instant::now();
        let r = a
            .lock(key.as_str())
            .ttl(Duration::from_secs(30))
            .await
            .map(drop);
        (key, t0.elapsed(), r)
    });
    let releases = guards.into_iter().map(|g| async move {
        let key = g.key().to_owned();
        let t0 = Instant::now();
        let r = g.release().await;
        (key, t0.elapsed(), r)
    });
    let (mut x, y) = tokio::join!(join_all(acquires), join_all(releases));
    x.extend(y);
    x
}

/// Checks a whole-call failure: every operation answered an error within `bound`.
fn all_failed_within(
    what: &str,
    answers: &[(String, Duration, Result<(), LockError>)],
    bound: Duration,
) -> Vec<String> {
    answers
        .iter()
        .filter(|(_, took, r)| r.is_ok() || *took > bound || !r.as_ref().unwrap_err().is_backend())
        .map(|(k, took, r)| format!("{what}: {k}: {r:?} after {took:?}"))
        .collect()
}

/// Held leases (1.5 s, renewed every 500 ms) through 2 s of a server out of memory
/// (`maxmemory 1`, `noeviction`: every write that may grow memory is refused): acquires and
/// releases sent meanwhile each fail with a server error within the command timeout; the
/// held leases are kept (renewal only sets expiries); once memory is back the client works at
/// once and nothing the failed calls touched is left held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_fails_each_call_in_bound_keeps_held_leases_and_recovers() {
    let server = RedisServer::start();
    let timeout = 500 * MS;
    let a = client_with(server.url(), timeout).await;
    let kept: Vec<LockGuard> = join_all((0..8).map(|i| {
        a.lock(format!("oom:kept:{i}"))
            .ttl(Duration::from_millis(1500))
            .into_future()
    }))
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect();
    let to_release: Vec<LockGuard> = join_all((0..8).map(|i| {
        a.lock(format!("oom:rel:{i}"))
            .ttl(Duration::from_millis(1500))
            .into_future()
    }))
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect();
    server.cmd::<()>(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    server.cmd::<()>(&["CONFIG", "SET", "maxmemory", "1"]);
    let t0 = Instant::now();
    let answers = acquires_and_releases(&a, "oom", 32, to_release).await;
    let wrong = all_failed_within("oom", &answers, timeout + 300 * MS);
    assert!(wrong.is_empty(), "{wrong:#?}");
    // Time is the subject: the leases must outlive 2 s of refused writes.
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(t0.elapsed())).await;
    let lost: Vec<&str> = kept
        .iter()
        .filter(|g| !g.is_held())
        .map(LockGuard::key)
        .collect();
    server.cmd::<()>(&["CONFIG", "SET", "maxmemory", "0"]);
    assert!(
        lost.is_empty(),
        "leases lost while the server was out of memory: {lost:?}"
    );
    for g in &kept {
        let info = a.inspect(g.key()).await.unwrap();
        assert_eq!(
            info.map(|i| i.fencing_token),
            Some(g.fencing_token()),
            "{}",
            g.key()
        );
    }
    let t1 = Instant::now();
    a.lock("oom:after").await.unwrap().release().await.unwrap();
    assert!(t1.elapsed() < Duration::from_secs(1));
    let b = client(server.url()).await;
    let keys: Vec<String> = answers.iter().map(|(k, _, _)| k.clone()).collect();
    // The failed releases leave their locks to run out (1.5 s leases).
    let left = not_free(&b, &keys, Duration::from_secs(3)).await;
    assert!(left.is_empty(), "{left:#?}");
    for g in kept {
        g.release().await.unwrap();
    }
}

/// Eight locks `<prefix>:0..8` with 3 s leases, taken at once.
async fn take_eight(a: &LockClient, prefix: &str) -> Vec<LockGuard> {
    join_all((0..8).map(|i| {
        a.lock(format!("{prefix}:{i}"))
            .ttl(Duration::from_secs(3))
            .into_future()
    }))
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect()
}

/// `CLIENT PAUSE WRITE`: the server holds every script call (they may write) until it is
/// lifted. Acquires and releases sent meanwhile each answer an error within the command
/// timeout; held leases (3 s) are kept through it; once it is lifted the held-back calls run,
/// and the acquires among them, whose callers gave up, must be given back (no 30 s lease left
/// by nobody); the client works at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_pause_write_bounds_every_call_keeps_leases_and_leaves_no_lock() {
    let server = RedisServer::start();
    let timeout = 500 * MS;
    let a = client_with(server.url(), timeout).await;
    let kept = take_eight(&a, "pause:kept").await;
    let to_release = take_eight(&a, "pause:rel").await;
    server.cmd::<()>(&["CLIENT", "PAUSE", "10000", "WRITE"]);
    let answers = acquires_and_releases(&a, "pause", 48, to_release).await;
    // A second wave, sent while the first wave's calls are still held back by the server.
    let second = acquires_and_releases(&a, "pause2", 16, Vec::new()).await;
    server.cmd::<()>(&["CLIENT", "UNPAUSE"]);
    let mut wrong = all_failed_within("pause", &answers, timeout + 300 * MS);
    wrong.extend(all_failed_within("pause2", &second, timeout + 300 * MS));
    assert!(wrong.is_empty(), "{wrong:#?}");
    let lost: Vec<&str> = kept
        .iter()
        .filter(|g| !g.is_held())
        .map(LockGuard::key)
        .collect();
    assert!(lost.is_empty(), "leases lost through the pause: {lost:?}");
    let t1 = Instant::now();
    a.lock("pause:after")
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    assert!(t1.elapsed() < Duration::from_secs(1), "{:?}", t1.elapsed());
    let b = client(server.url()).await;
    let keys: Vec<String> = answers
        .iter()
        .chain(&second)
        .filter(|(k, _, _)| k.contains(":acq:"))
        .map(|(k, _, _)| k.clone())
        .collect();
    let left = not_free(&b, &keys, Duration::from_secs(3)).await;
    assert!(left.is_empty(), "acquires given up left locks: {left:#?}");
    for g in &kept {
        assert!(g.is_held(), "{}", g.key());
        g.extend(Duration::from_secs(3)).await.unwrap();
    }
}

/// A primary demoted to a replica of a server that is not there (`REPLICAOF` a dead port: it
/// keeps its data, refuses writes with `READONLY`) for 1.2 s, then promoted back
/// (`REPLICAOF NO ONE`): calls meanwhile fail within the command timeout, held leases (3 s)
/// are kept (the server still holds them), and afterwards acquires, releases and renewals
/// work and the failed acquires left nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demoted_primary_fails_calls_in_bound_keeps_leases_and_recovers() {
    let server = RedisServer::start();
    let timeout = 500 * MS;
    let a = client_with(server.url(), timeout).await;
    let kept = take_eight(&a, "ro:kept").await;
    let to_release = take_eight(&a, "ro:rel").await;
    let port = dead_port().to_string();
    let t0 = Instant::now();
    server.cmd::<()>(&["REPLICAOF", "127.0.0.1", &port]);
    let answers = acquires_and_releases(&a, "ro", 32, to_release).await;
    let wrong = all_failed_within("readonly", &answers, timeout + 300 * MS);
    let readonly = answers
        .iter()
        .filter(|(_, _, r)| matches!(r, Err(e) if e.to_string().contains("READONLY")))
        .count();
    let ext = kept[0].extend(Duration::from_secs(3)).await;
    // Time is the subject: more than one renewal period (1 s) of refused renewals.
    tokio::time::sleep(Duration::from_millis(1200).saturating_sub(t0.elapsed())).await;
    server.cmd::<()>(&["REPLICAOF", "NO", "ONE"]);
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert!(readonly > 0, "no call named READONLY: {answers:?}");
    assert!(ext.is_err(), "an extend on a read-only server: {ext:?}");
    let lost: Vec<&str> = kept
        .iter()
        .filter(|g| !g.is_held())
        .map(LockGuard::key)
        .collect();
    assert!(
        lost.is_empty(),
        "leases lost though the server kept them: {lost:?}"
    );
    for g in &kept {
        g.extend(Duration::from_secs(3)).await.unwrap();
        let info = a.inspect(g.key()).await.unwrap();
        assert_eq!(info.map(|i| i.fencing_token), Some(g.fencing_token()));
    }
    let b = client(server.url()).await;
    let keys: Vec<String> = answers
        .iter()
        .filter(|(k, _, _)| k.contains(":acq:"))
        .map(|(k, _, _)| k.clone())
        .collect();
    let left = not_free(&b, &keys, Duration::from_secs(1)).await;
    assert!(left.is_empty(), "{left:#?}");
    for g in kept {
        g.release().await.unwrap();
    }
}

/// A waiting acquire already queued on a held lock (its id in the lock's queue), whose
/// connections then go silent (a blackholed proxy: nothing passes, nothing closes): it
/// answers within its wait plus the command timeout, and the client works again once the
/// network does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_wait_on_a_silent_connection_answers_within_its_bound() {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port());
    let timeout = 400 * MS;
    let a = client_with(proxy.url(), timeout).await;
    let b = client(server.url()).await;
    let holder = b.lock("silent").ttl(Duration::from_secs(30)).await.unwrap();
    let wait = 800 * MS;
    let t0 = Instant::now();
    let waiting = tokio::spawn({
        let a = a.clone();
        async move { a.lock("silent").wait(wait).await.map(drop) }
    });
    // Queued: its id is in the lock's queue.
    while b
        .inspect("silent")
        .await
        .unwrap()
        .is_none_or(|i| i.waiters == 0)
    {
        assert!(t0.elapsed() < wait, "the waiter never queued");
        tokio::time::sleep(2 * MS).await;
    }
    proxy.blackhole(true);
    let r = waiting.await.unwrap();
    let took = t0.elapsed();
    proxy.blackhole(false);
    assert!(r.is_err(), "acquired a held lock: {r:?}");
    assert!(
        took <= wait + timeout + 300 * MS,
        "answered after {took:?}: {r:?}"
    );
    holder.release().await.unwrap();
    let t1 = Instant::now();
    a.lock("silent")
        .wait(Duration::from_secs(2))
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    assert!(t1.elapsed() < Duration::from_secs(2), "{:?}", t1.elapsed());
}

/// The round-4 storm (`SCRIPT FLUSH` every 3 ms, `CLIENT KILL` every 30 ms, one client behind
/// 2 ms of latency, a third of the acquires abandoned after 0..10 ms), now with foreign
/// values at three of the keys acquired in the same calls: never two inside one key, fences
/// only increase, the foreign keys only ever answer `KeyConflict` (or `Busy` from the process's own per-key
/// gate, or a backend error) and
/// stay unchanged, and no ordinary key is left held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storms_with_foreign_keys_keep_exclusion_and_leave_no_lock() {
    let server = Arc::new(RedisServer::start());
    let foreign = [
        ("storm:f0", "Tzzzzzzzzzzzzzzzz".to_owned()),
        ("storm:f1", format!("R{}{}", "x".repeat(16), "y".repeat(40))),
        ("storm:f2", "plain".to_owned()),
    ];
    for (k, v) in &foreign {
        server.cmd::<()>(&["SET", &format!("distlock:{k}"), v]);
    }
    let proxy = TcpProxy::start(server.port());
    proxy.set_latency(2 * MS);
    let clients = [
        client_with(proxy.url(), Duration::from_secs(1)).await,
        client_with(server.url(), Duration::from_secs(1)).await,
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let storm = flush_and_kill_storm(server.clone(), stop.clone());
    let ledger = StormLedger::new(8);
    let until = Instant::now() + Duration::from_millis(2000);
    let tasks: Vec<_> = (0..24)
        .map(|t| {
            let client = clients[t % 2].clone();
            let ledger = ledger.clone();
            tokio::spawn(async move {
                let mut rng = t as u64 * 7919 + 1;
                let mut next = |below: u64| {
                    rng = rng
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    (rng >> 33) % below
                };
                while Instant::now() < until {
                    if next(4) == 0 {
                        let f = ["storm:f0", "storm:f1", "storm:f2"][next(3) as usize];
                        match client.lock(f).wait(50 * MS).await {
                            // Busy: another task of this process is acquiring it (the
                            // per-key gate), for longer than this one waits.
                            Err(
                                LockError::KeyConflict { .. }
                                | LockError::Busy { .. }
                                | LockError::Backend { .. },
                            ) => {}
                            other => ledger.violation(format!("{f}: {:?}", other.map(drop))),
                        }
                        continue;
                    }
                    let k = next(8) as usize;
                    let abandon = (next(3) == 0).then(|| Duration::from_millis(next(10)));
                    let release = next(2) == 0;
                    ledger.round(&client, k, abandon, release).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let storms = storm.join().unwrap();
    assert!(storms > 100, "the storm barely ran ({storms} flushes)");
    let violations = ledger.violations();
    assert!(violations.is_empty(), "{violations:#?}");
    for (k, v) in &foreign {
        let now: String = server.cmd(&["GET", &format!("distlock:{k}")]);
        assert_eq!(&now, v, "{k} was changed");
    }
    let observer = client(server.url()).await;
    let keys: Vec<String> = (0..8).map(|k| format!("storm:{k}")).collect();
    let left = not_free(&observer, &keys, Duration::from_secs(3)).await;
    assert!(left.is_empty(), "locks left behind by nobody: {left:#?}");
}
