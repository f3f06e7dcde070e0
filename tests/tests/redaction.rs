//! Nothing a user passes as a password shows in an error's `Display` or `Debug`, nor in a
//! client's or a builder's `Debug`: many hostile passwords, many URL shapes, a real
//! redis-server that wants another password.

use distlock::{LockClient, LockClientBuilder};
use distlock_tests::RedisServer;

/// Hostile passwords, each with the fragments of it that must not show either.
const PASSWORDS: &[(&str, &[&str])] = &[
    ("pa/ss", &[]),
    ("pa#ss", &[]),
    ("pa?ss", &[]),
    ("p@ss", &[]),
    ("pa:ss", &[]),
    ("%2F", &[]),
    ("pä$$wörd🔑", &[]),
    ("x://y@z", &[]),
    ("S3cr3t-Plain", &[]),
    ("pa&pass=ss", &[]),
];

/// A password whose tail redis-rs echoes when it refuses the URL: with `@` and `?` unencoded
/// the URL parses with host `Fall` and query `protocol=Zq9Tail@127.0.0.1:port`, and "Invalid
/// protocol version" quotes the value.
const ECHOED: (&str, &[&str]) = ("Sn0w@Fall?protocol=Zq9Tail", &["Zq9Tail"]);

/// `pw` percent-encoded, as a careful user writes it into a URL.
fn encoded(pw: &str) -> String {
    pw.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// URLs of every shape carrying `pw`: valid, encoded, an empty user, a user and no password,
/// no scheme, a bad port, garbage after the host.
fn shapes(pw: &str, port: u16) -> Vec<String> {
    let enc = encoded(pw);
    vec![
        format!("redis://:{pw}@127.0.0.1:{port}"),
        format!("redis://alice:{pw}@127.0.0.1:{port}/0"),
        format!("redis://:{enc}@127.0.0.1:{port}"),
        format!("redis://alice:{enc}@127.0.0.1:{port}/0"),
        format!("redis://{pw}@127.0.0.1:{port}"),
        format!("redis://{enc}@127.0.0.1:{port}"),
        format!(":{pw}@127.0.0.1:{port}"),
        format!("alice:{pw}@127.0.0.1:{port}"),
        format!("redis:/:{pw}@127.0.0.1:{port}"),
        format!("redis://:{pw}@127.0.0.1:notaport"),
        format!("redis://:{pw}@127.0.0.1:{port}0"),
        format!("redis://:{pw}@127.0.0.1:{port}/garbage?x=%ZZ#frag"),
        format!("redis://:{pw}@127.0.0.1:{port}@@"),
        format!("redis://:{pw}@"),
        format!("rediss://:{pw}@127.0.0.1:{port}"),
        format!("redis+unix:///tmp/distlock-none.sock?pass={enc}"),
    ]
}

fn secrets(pw: &'static str, fragments: &[&'static str]) -> Vec<String> {
    let mut all = vec![pw.to_owned(), encoded(pw)];
    all.extend(fragments.iter().map(|f| (*f).to_owned()));
    all
}

fn assert_hidden(secrets: &[String], what: &str, url: &str, text: &str) {
    for secret in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "{what} for URL {url:?} shows {secret:?}:\n{text}"
        );
    }
}

/// The error's `Display`, `Debug` and every source's `Display`.
fn assert_error_hidden(secrets: &[String], what: &str, url: &str, err: &distlock::LockError) {
    assert_hidden(secrets, what, url, &err.to_string());
    assert_hidden(secrets, what, url, &format!("{err:?}"));
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        assert_hidden(secrets, what, url, &cause.to_string());
        source = cause.source();
    }
}

/// Connects (one server, and Redlock over three copies of the URL) with every shape of
/// every password in `passwords`, all at once (a refused password costs the connection
/// manager's retries), and checks what comes back.
async fn connect_with_every_shape(passwords: &[(&'static str, &'static [&'static str])]) {
    let server = RedisServer::start_with(&["--requirepass", "the-right-one"]);
    let cases = passwords.iter().flat_map(|(pw, fragments)| {
        let secrets = secrets(pw, fragments);
        shapes(pw, server.port())
            .into_iter()
            .map(move |url| (secrets.clone(), url))
    });
    futures_util::future::join_all(cases.map(|(secrets, url)| async move {
        match LockClient::connect(&url).await {
            Err(err) => assert_error_hidden(&secrets, "connect error", &url, &err),
            Ok(client) => assert_hidden(&secrets, "client Debug", &url, &format!("{client:?}")),
        }
        let redlock = LockClient::builder()
            .redlock([url.clone(), url.clone(), url.clone()])
            .build()
            .await;
        match redlock {
            Err(err) => assert_error_hidden(&secrets, "Redlock error", &url, &err),
            Ok(client) => assert_hidden(&secrets, "client Debug", &url, &format!("{client:?}")),
        }
    }))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_errors_never_show_a_password() {
    connect_with_every_shape(PASSWORDS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_error_that_quotes_the_url_shows_no_password() {
    connect_with_every_shape(&[ECHOED]).await;
}

#[test]
fn builder_debug_never_shows_a_password() {
    let port = 6379;
    for (pw, fragments) in PASSWORDS.iter().chain([&ECHOED]) {
        let secrets = secrets(pw, fragments);
        let debug = |builder: LockClientBuilder| format!("{builder:?}");
        for url in shapes(pw, port) {
            let built = [
                ("url", debug(LockClient::builder().url(url.clone()))),
                (
                    "redlock",
                    debug(LockClient::builder().redlock([
                        "redis://127.0.0.1:1".to_owned(),
                        url.clone(),
                        url.clone(),
                    ])),
                ),
                (
                    "sentinel",
                    debug(LockClient::builder().sentinel("mymaster", [url.clone()])),
                ),
                (
                    "cluster",
                    debug(LockClient::builder().cluster([url.clone()])),
                ),
            ];
            for (what, text) in built {
                assert_hidden(&secrets, what, &url, &text);
            }
        }
        let primary = debug(
            LockClient::builder()
                .sentinel("mymaster", ["redis://127.0.0.1:26379"])
                .sentinel_primary_auth(Some("alice"), pw),
        );
        assert_hidden(&secrets, "sentinel_primary_auth", "-", &primary);
        assert!(
            primary.contains("alice"),
            "the user name is not secret: {primary}"
        );
    }
}
