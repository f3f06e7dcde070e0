//! `distlock-tower` on a real tonic server and client (the gRPC health service's generated
//! code, implemented here with a slow `Check` and a `Watch` that sends one answer and then
//! waits), on a real redis-server and in-process.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::Env;
use distlock::LockClient;
use distlock_tests::wait_until_held;
use distlock_tower::{GrpcMetadata, LockLayer};
use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

on_both_backends!(
    same_key_calls_conflict_and_distinct_keys_run,
    calls_without_metadata_pass_unlocked,
    hostile_metadata_is_refused,
    a_cancelled_call_releases_its_lock,
    a_lost_lease_aborts_the_call,
    a_lost_lease_aborts_a_held_stream,
    the_handler_sees_the_fence_the_lock_holds,
);

/// `Check` sleeps for as many milliseconds as the request's `service` field says.
struct Slow;

#[tonic::async_trait]
impl Health for Slow {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let ms = request.get_ref().service.parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        // The lock the call runs under, as the handler sees it: in the extensions, and as
        // `distlock::current()`; sent back in the response metadata.
        let fences = format!(
            "{:?} {:?}",
            request
                .extensions()
                .get::<distlock::HeldLock>()
                .map(distlock::HeldLock::fencing_token),
            distlock::current().map(|held| held.fencing_token()),
        );
        let mut response = Response::new(HealthCheckResponse { status: 1 });
        response
            .metadata_mut()
            .insert("x-fences", fences.parse().unwrap());
        Ok(response)
    }

    type WatchStream =
        futures_util::stream::BoxStream<'static, Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        use futures_util::StreamExt;
        let first = futures_util::stream::once(async { Ok(HealthCheckResponse { status: 1 }) });
        Ok(Response::new(
            first.chain(futures_util::stream::pending()).boxed(),
        ))
    }
}

async fn serve(layer: LockLayer<GrpcMetadata>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::codegen::tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(async move {
        Server::builder()
            .layer(layer)
            .add_service(HealthServer::new(Slow))
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    addr
}

async fn connect(addr: SocketAddr) -> HealthClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

fn call(account: Option<&str>, ms: u64) -> Request<HealthCheckRequest> {
    let mut request = Request::new(HealthCheckRequest {
        service: ms.to_string(),
    });
    if let Some(account) = account {
        request
            .metadata_mut()
            .insert("x-account-id", account.parse().unwrap());
    }
    request
}

fn layer(client: LockClient) -> LockLayer<GrpcMetadata> {
    LockLayer::new(client, GrpcMetadata::new("x-account-id").per_method())
}

async fn same_key_calls_conflict_and_distinct_keys_run(env: &Env) {
    let client = env.client().await;
    let addr = serve(layer(client.clone())).await;
    let mut grpc = connect(addr).await;
    let slow = tokio::spawn({
        let mut grpc = grpc.clone();
        async move { grpc.check(call(Some("7"), 600)).await }
    });
    wait_until_held(&client, "/grpc.health.v1.Health/Check:7").await;
    let status = grpc.check(call(Some("7"), 0)).await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert!(status.message().contains("locked"), "{}", status.message());
    assert!(
        status.message().contains("retry after"),
        "{}",
        status.message()
    );
    let started = Instant::now();
    grpc.check(call(Some("8"), 0))
        .await
        .expect("a distinct key runs");
    assert!(started.elapsed() < Duration::from_millis(400));
    assert_eq!(slow.await.unwrap().unwrap().get_ref().status, 1);
    grpc.check(call(Some("7"), 0)).await.expect("free again");
}

async fn calls_without_metadata_pass_unlocked(env: &Env) {
    let client = env.client().await;
    let addr = serve(layer(client.clone())).await;
    let mut grpc = connect(addr).await;
    let _held = client.lock("/grpc.health.v1.Health/Check:1").await.unwrap();
    let status = grpc.check(call(Some("1"), 0)).await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    grpc.check(call(None, 0)).await.expect("no key, no lock");
}

async fn hostile_metadata_is_refused(env: &Env) {
    let client = env.client().await;
    let addr = serve(layer(client.clone())).await;
    let mut grpc = connect(addr).await;
    for key in ["{7}", "../8", &"9".repeat(10_000)] {
        let status = grpc.check(call(Some(key), 0)).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{key:.20}: {status:?}"
        );
    }
    assert_eq!(client.held_locks(), 0);
}

async fn a_cancelled_call_releases_its_lock(env: &Env) {
    let client = env.client().await;
    let addr = serve(layer(client.clone())).await;
    let mut grpc = connect(addr).await;
    let cancelled = tokio::time::timeout(
        Duration::from_millis(200),
        grpc.check(call(Some("5"), 10_000)),
    )
    .await;
    assert!(cancelled.is_err(), "the caller gave up");
    let started = Instant::now();
    loop {
        match grpc.check(call(Some("5"), 0)).await {
            Ok(_) => break,
            Err(status) => assert_eq!(status.code(), Code::Aborted),
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the lock outlived its call"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_lost_lease_aborts_the_call(env: &Env) {
    let client = env.client().await;
    let addr = serve(layer(client.clone()).ttl(Duration::from_millis(600))).await;
    let mut grpc = connect(addr).await;
    let slow = tokio::spawn({
        let mut grpc = grpc.clone();
        async move { grpc.check(call(Some("6"), 5_000)).await }
    });
    wait_until_held(&client, "/grpc.health.v1.Health/Check:6").await;
    env.flush();
    let status = slow.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    assert!(status.message().contains("lost"), "{}", status.message());
    grpc.check(call(Some("6"), 0))
        .await
        .expect("free after the loss");
}

async fn a_lost_lease_aborts_a_held_stream(env: &Env) {
    let client = env.client().await;
    let held = layer(client.clone())
        .ttl(Duration::from_millis(600))
        .hold_until_body_sent(true);
    let addr = serve(held).await;
    let mut grpc = connect(addr).await;
    let mut stream = grpc.watch(call(Some("4"), 0)).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().expect("the first answer");
    assert_eq!(first.status, 1);
    env.flush();
    // The stream waits for an answer that never comes: only the lock's loss ends it (the
    // time limit guards against hanging).
    let end = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the stream outlived its lock");
    let status = end.expect_err("the stream ends with a status");
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert!(status.message().contains("lost"), "{}", status.message());
}

#[tokio::test]
async fn a_backend_that_is_down_answers_unavailable() {
    let mut server = distlock_tests::RedisServer::start();
    let client = server.client_with_timeout(Duration::from_millis(300)).await;
    let addr = serve(layer(client)).await;
    let mut grpc = connect(addr).await;
    server.kill();
    let status = grpc.check(call(Some("1"), 0)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

/// The handler sees the fence the lock holds, in the request's extensions and as
/// `distlock::current()`; an unlocked call sees none.
async fn the_handler_sees_the_fence_the_lock_holds(env: &Env) {
    let client = env.client().await;
    let addr = serve(layer(client.clone())).await;
    let mut health = connect(addr).await;
    let response = health.check(call(Some("acct-9"), 0)).await.unwrap();
    let fences = response
        .metadata()
        .get("x-fences")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let (from_extensions, current) = fences.split_once(' ').unwrap();
    assert_eq!(from_extensions, current, "{fences}");
    let fence: u64 = from_extensions
        .strip_prefix("Some(")
        .and_then(|f| f.strip_suffix(')'))
        .and_then(|f| f.parse().ok())
        .unwrap_or_else(|| panic!("no fence in the handler: {fences}"));
    // The next holder's fence is larger: the handler's was the one the lock held.
    let next = client.lock("/grpc.health.v1.Health/Check:acct-9").await;
    let next = match next {
        Ok(guard) => guard.fencing_token(),
        Err(err) => panic!("{err}"),
    };
    assert!(next > fence, "next fence {next} after {fence}");
    let unlocked = health.check(call(None, 0)).await.unwrap();
    assert_eq!(
        unlocked
            .metadata()
            .get("x-fences")
            .unwrap()
            .to_str()
            .unwrap(),
        "None None"
    );
}
