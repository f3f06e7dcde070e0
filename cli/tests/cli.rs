//! The `distlock` binary end to end, against real redis-server processes: output, JSON and
//! exit codes; and no password, ever.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use distlock::{LockClient, LockGuard};
use distlock_tests::{RedisCluster, RedisServer};

const PASSWORD: &str = "s3cret-Pa55";

fn distlock(args: &[&str]) -> Output {
    distlock_with_env(args, &[])
}

fn distlock_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_distlock"));
    cmd.args(args)
        .env_remove("REDIS_URL")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null());
    for (name, value) in env {
        cmd.env(name, value);
    }
    let output = cmd.output().expect("run distlock");
    for stream in [&output.stdout, &output.stderr] {
        let text = String::from_utf8_lossy(stream);
        assert!(!text.contains(PASSWORD), "a password was printed: {text}");
        assert!(
            !text.contains("Pa55"),
            "part of a password was printed: {text}"
        );
    }
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("UTF-8 output")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("an exit code")
}

#[track_caller]
fn assert_code(output: &Output, expected: i32) {
    assert_eq!(
        code(output),
        expected,
        "stdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
}

/// A password-protected server holding a few locks: two labelled jobs (one with two clients
/// queued), one unlabelled, and one under another prefix.
struct Scene {
    server: RedisServer,
    guards: Vec<LockGuard>,
    _waiters: Vec<tokio::task::JoinHandle<()>>,
}

impl Scene {
    async fn start() -> Self {
        let server = RedisServer::start_with(&["--requirepass", PASSWORD]);
        let url = server.url();
        let workers = LockClient::builder()
            .url(&url)
            .label("billing-worker")
            .build()
            .await
            .unwrap();
        let ttl = Duration::from_secs(3);
        let guards = vec![
            workers.lock("jobs:nightly").ttl(ttl).await.unwrap(),
            workers
                .lock("jobs:invoices")
                .ttl(ttl)
                .label("run #7")
                .await
                .unwrap(),
            LockClient::connect(&url)
                .await
                .unwrap()
                .lock("users:42")
                .ttl(ttl)
                .await
                .unwrap(),
        ];
        let mut waiters = Vec::new();
        for _ in 0..2 {
            let client = LockClient::connect(&url).await.unwrap();
            waiters.push(tokio::spawn(async move {
                // Queued, then holding until the test ends.
                let _guard = client
                    .lock("jobs:nightly")
                    .wait(Duration::from_secs(60))
                    .await;
                std::future::pending::<()>().await;
            }));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while workers
            .inspect("jobs:nightly")
            .await
            .unwrap()
            .is_none_or(|i| i.waiters < 2)
        {
            assert!(std::time::Instant::now() < deadline, "waiters never queued");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Self {
            server,
            guards,
            _waiters: waiters,
        }
    }

    fn url(&self) -> String {
        self.server.url()
    }

    fn fence(&self, key: &str) -> u64 {
        self.guards
            .iter()
            .find(|g| g.key() == key)
            .unwrap()
            .fencing_token()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_the_held_locks() {
    let scene = Scene::start().await;
    let url = scene.url();
    let out = distlock(&["--url", &url, "list"]);
    assert_code(&out, 0);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("KEY"), "{text}");
    assert!(
        lines[0].contains("FENCE") && lines[0].contains("WAITERS"),
        "{text}"
    );
    assert!(lines[1].starts_with("jobs:invoices"), "{text}");
    assert!(lines[2].starts_with("jobs:nightly"), "{text}");
    assert!(lines[3].starts_with("users:42"), "{text}");
    assert!(lines[1].contains("run #7"), "{text}");
    assert!(lines[2].contains("billing-worker"), "{text}");
    assert!(
        lines[2].contains(&scene.fence("jobs:nightly").to_string()),
        "{text}"
    );
    assert!(lines[2].trim_end().ends_with('2'), "two waiters: {text}");
    assert!(
        lines[2].contains(&format!("/{}", std::process::id())),
        "{text}"
    );
    assert_eq!(lines[4], "3 locks held, 2 waiting", "{text}");

    // A key prefix; REDIS_URL instead of --url.
    let out = distlock_with_env(&["list", "jobs:"], &[("REDIS_URL", &url)]);
    assert_code(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains("jobs:nightly") && !text.contains("users:42"),
        "{text}"
    );
    let out = distlock_with_env(&["list", "nothing:"], &[("REDIS_URL", &url)]);
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "no locks held under \"distlock:nothing:\"\n");
    // The application's prefix.
    let out = distlock(&["--url", &url, "--prefix", "other:", "list"]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).starts_with("no locks held"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_commands_speak_json() {
    let scene = Scene::start().await;
    let url = scene.url();
    let out = distlock(&["--url", &url, "list", "--json"]);
    assert_code(&out, 0);
    let locks: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let locks = locks.as_array().unwrap();
    assert_eq!(locks.len(), 3);
    let nightly = &locks[1];
    assert_eq!(nightly["key"], "jobs:nightly");
    assert_eq!(nightly["fencing_token"], scene.fence("jobs:nightly"));
    assert_eq!(nightly["label"], "billing-worker");
    assert_eq!(nightly["pid"], std::process::id());
    assert_eq!(nightly["waiters"], 2);
    assert_eq!(nightly["contended"], true);
    assert!(nightly["host"].is_string());
    assert!(nightly["acquired_at_ms"].as_u64().unwrap() > 1_600_000_000_000);
    assert!(nightly["ttl_ms"].as_u64().unwrap() <= 3_000);
    assert_eq!(locks[2]["label"], serde_json::Value::Null);
    let fields: Vec<&String> = nightly.as_object().unwrap().keys().collect();
    assert_eq!(
        fields,
        [
            "acquired_at_ms",
            "contended",
            "fencing_token",
            "host",
            "key",
            "label",
            "pid",
            "ttl_ms",
            "waiters"
        ]
    );

    let out = distlock(&["--url", &url, "inspect", "jobs:invoices", "--json"]);
    assert_code(&out, 0);
    let lock: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(lock["key"], "jobs:invoices");
    assert_eq!(lock["label"], "run #7");
    assert_eq!(lock["waiters"], 0);

    let out = distlock(&["--url", &url, "inspect", "missing", "--json"]);
    assert_code(&out, 3);
    assert_eq!(stdout(&out), "null\n");

    let out = distlock(&[
        "--url",
        &url,
        "watch",
        "jobs:",
        "--json",
        "--iterations",
        "2",
        "--interval",
        "50ms",
    ]);
    assert_code(&out, 0);
    let frames: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(frames.len(), 2);
    for frame in &frames {
        assert!(frame["at_ms"].as_u64().is_some());
        let keys: Vec<&str> = frame["locks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, ["jobs:invoices", "jobs:nightly"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_tells_who_holds_a_lock() {
    let scene = Scene::start().await;
    let url = scene.url();
    let out = distlock(&["--url", &url, "inspect", "jobs:nightly"]);
    assert_code(&out, 0);
    let text = stdout(&out);
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {text}"))[14..]
            .trim()
            .to_owned()
    };
    assert_eq!(field("key"), "jobs:nightly");
    assert_eq!(
        field("fencing token"),
        scene.fence("jobs:nightly").to_string()
    );
    assert_eq!(field("label"), "billing-worker");
    assert_eq!(field("pid"), std::process::id().to_string());
    assert_eq!(field("waiters"), "2");
    assert_eq!(field("contended"), "yes");
    assert!(field("acquired").ends_with("ago)"), "{text}");

    let out = distlock(&["--url", &url, "inspect", "missing"]);
    assert_code(&out, 3);
    assert!(stdout(&out).is_empty());
    assert!(
        stderr(&out).contains("no lock held on \"missing\""),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_needs_the_fence_and_a_confirmation() {
    let scene = Scene::start().await;
    let url = scene.url();
    let fence = scene.fence("jobs:nightly");
    let holder = &scene.guards[0];

    // Another fence: nothing happens, exit 3.
    let wrong = (fence - 1).to_string();
    let out = distlock(&[
        "--url",
        &url,
        "release",
        "jobs:nightly",
        "--fence",
        &wrong,
        "--yes",
    ]);
    assert_code(&out, 3);
    assert!(
        stderr(&out).contains(&format!("held under fence {fence}")),
        "{}",
        stderr(&out)
    );
    // Not held at all: exit 3.
    let out = distlock(&[
        "--url", &url, "release", "nothing", "--fence", &wrong, "--yes",
    ]);
    assert_code(&out, 3);
    // No terminal to confirm on and no --yes: refused as a usage error, nothing touched.
    let right = fence.to_string();
    let out = distlock(&["--url", &url, "release", "jobs:nightly", "--fence", &right]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    assert!(holder.is_held());
    // A fence that is not a number: usage.
    let out = distlock(&[
        "--url",
        &url,
        "release",
        "jobs:nightly",
        "--fence",
        "x",
        "--yes",
    ]);
    assert_code(&out, 2);

    let out = distlock(&[
        "--url",
        &url,
        "release",
        "jobs:nightly",
        "--fence",
        &right,
        "--yes",
    ]);
    assert_code(&out, 0);
    assert_eq!(
        stdout(&out),
        format!("released \"jobs:nightly\" (fence {fence})\n")
    );
    // The holder finds out at its next renewal; a queued waiter gets the lock.
    tokio::time::timeout(Duration::from_secs(5), holder.lost())
        .await
        .expect("the holder sees the lock lost");
    let out = distlock(&["--url", &url, "inspect", "jobs:nightly", "--json"]);
    assert_code(&out, 0);
    let next: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(next["fencing_token"].as_u64().unwrap() > fence);
    assert_eq!(next["waiters"], 1);
    // The old fence again: exit 3.
    let out = distlock(&[
        "--url",
        &url,
        "release",
        "jobs:nightly",
        "--fence",
        &right,
        "--yes",
    ]);
    assert_code(&out, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_renders_a_frame() {
    let scene = Scene::start().await;
    let url = scene.url();
    let out = distlock(&["--url", &url, "watch", "--once"]);
    assert_code(&out, 0);
    let text = stdout(&out);
    assert!(
        !text.contains('\u{1b}'),
        "no terminal, no escape sequences: {text:?}"
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("distlock watch  redis://:***@127.0.0.1:"),
        "{text}"
    );
    assert!(
        lines[0].contains("prefix \"distlock:\"  keys \"*\"  every 1s"),
        "{text}"
    );
    assert_eq!(lines[1], "3 locks held, 2 clients waiting");
    assert_eq!(lines[2], "");
    let header = lines[3];
    for column in [
        "KEY", "HOLDER", "LABEL", "FENCE", "HELD", "LEASE", "WAITERS",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let nightly = lines
        .iter()
        .find(|l| l.starts_with("jobs:nightly"))
        .unwrap();
    assert!(nightly.contains("billing-worker"), "{nightly}");
    assert!(nightly.contains('█'), "a lease bar: {nightly}");
    assert_eq!(
        nightly.chars().filter(|&c| c == '█' || c == '░').count(),
        20
    );
    assert!(nightly.trim_end().ends_with('2'), "{nightly}");
    assert_eq!(lines.len(), 4 + 3, "{text}");

    // Two frames, one after the other.
    let out = distlock(&[
        "--url",
        &url,
        "watch",
        "users:",
        "--iterations",
        "2",
        "--interval",
        "10ms",
    ]);
    assert_code(&out, 0);
    let text = stdout(&out);
    assert_eq!(text.matches("distlock watch").count(), 2, "{text}");
    assert_eq!(text.matches("users:42").count(), 2, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_are_never_printed() {
    let server = RedisServer::start_with(&["--requirepass", PASSWORD]);
    let port = server.port();
    let wrong = format!("redis://:{PASSWORD}-nope@127.0.0.1:{port}");
    let nobody = format!("redis://user:{PASSWORD}@127.0.0.1:1");
    let garbled = format!("redis://:{PASSWORD}@127.0.0.1:notaport");
    // Refused credentials, nobody listening, a URL that does not parse: exit 1, redacted.
    for url in [&wrong, &nobody, &garbled] {
        for command in [vec!["list"], vec!["inspect", "k"], vec!["watch", "--once"]] {
            let mut args = vec!["--url", url.as_str(), "--timeout", "500ms"];
            args.extend(command);
            let out = distlock(&args);
            assert_code(&out, 1);
            assert!(stderr(&out).starts_with("error: "), "{}", stderr(&out));
        }
        let out = distlock_with_env(&["--timeout", "500ms", "list"], &[("REDIS_URL", url)]);
        assert_code(&out, 1);
    }
    let out = distlock(&["--url", &wrong, "--timeout", "500ms", "list"]);
    assert!(
        stderr(&out).contains("(at redis://:***@127.0.0.1:"),
        "{}",
        stderr(&out)
    );
    // Usage errors quote what they refuse: redacted too (exit 2).
    let out = distlock(&["--url", &wrong, "inspect", "k", &nobody]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("redis://user:***@127.0.0.1:1"),
        "{}",
        stderr(&out)
    );
    let out = distlock(&["list", &format!("--url={nobody}"), "--cluster", &nobody]);
    assert_code(&out, 2);
    let out = distlock(&["--sentinel", "mymaster", "list"]);
    assert_code(&out, 2);
    // Help never shows the environment's URL.
    let out = distlock_with_env(&["--help"], &[("REDIS_URL", &wrong)]);
    assert_code(&out, 0);
    assert!(stdout(&out).contains("REDIS_URL"));
    let out = distlock_with_env(&["watch", "--help"], &[("REDIS_URL", &wrong)]);
    assert_code(&out, 0);
    // The right password works, and is not shown in watch's header.
    let out = distlock(&["--url", &server.url(), "watch", "--once"]);
    assert_code(&out, 0);
    assert!(stdout(&out).contains(":***@"), "{}", stdout(&out));
    // No command: usage.
    assert_code(&distlock(&[]), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_and_sentinel_targets() {
    let cluster = RedisCluster::start(3);
    let client = LockClient::builder()
        .cluster(cluster.urls())
        .label("cluster-job")
        .build()
        .await
        .unwrap();
    let mut guards = Vec::new();
    for i in 0..40 {
        guards.push(client.lock(format!("c:{i:02}")).await.unwrap());
    }
    let urls = cluster.urls();
    let out = distlock(&[
        "--cluster",
        &urls[0],
        "--cluster",
        &urls[1],
        "list",
        "--json",
    ]);
    assert_code(&out, 0);
    let locks: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let keys: Vec<&str> = locks
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["key"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..40).map(|i| format!("c:{i:02}")).collect();
    assert_eq!(keys, expected);
    let fence = guards[3].fencing_token().to_string();
    let out = distlock(&[
        "--cluster",
        &urls[2],
        "release",
        "c:03",
        "--fence",
        &fence,
        "-y",
    ]);
    assert_code(&out, 0);
    let out = distlock(&["--cluster", &urls[2], "inspect", "c:03"]);
    assert_code(&out, 3);
    drop(cluster);

    let primary = RedisServer::start();
    let sentinel = RedisServer::start_sentinel("locks", &primary);
    let client = LockClient::connect(&primary.url()).await.unwrap();
    let _held = client.lock("s:1").label("via-sentinel").await.unwrap();
    let out = distlock(&[
        "--sentinel",
        "locks",
        "--sentinel-url",
        &sentinel.url(),
        "list",
    ]);
    assert_code(&out, 0);
    assert!(stdout(&out).contains("via-sentinel"), "{}", stdout(&out));
}
