//! `distlock-tower` on a tonic gRPC server: calls carrying the same `x-account-id` metadata
//! run one at a time; a busy account is answered ABORTED at once. The standard gRPC health
//! service (its generated code ships with `tonic-health`) stands in for your own service; its
//! `Check` here takes 300 ms of "work".
//!
//! ```text
//! cargo run -p examples --example tonic
//! REDIS_URL=redis://127.0.0.1:6379 cargo run -p examples --example tonic
//! ```

use std::time::Duration;

use distlock_tower::{GrpcMetadata, LockLayer};
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

struct Ledger;

/// Where the accounts' work is written.
static LEDGER: std::sync::LazyLock<examples::FencedStore> =
    std::sync::LazyLock::new(examples::FencedStore::default);

#[tonic::async_trait]
impl Health for Ledger {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        tokio::time::sleep(Duration::from_millis(300)).await; // the account's work
        // The lock the call holds is in the request's extensions (and `distlock::current()`
        // answers here too): its fence goes with the write.
        let lock = request
            .extensions()
            .get::<distlock::HeldLock>()
            .ok_or_else(|| Status::internal("not behind the lock layer"))?;
        LEDGER
            .write(lock.key(), lock.fencing_token())
            .map_err(Status::aborted)?;
        Ok(Response::new(HealthCheckResponse { status: 1 }))
    }

    type WatchStream = futures_util::stream::Empty<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("not in this example"))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let locks = examples::client_from_env().await?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let incoming = tonic::codegen::tokio_stream::wrappers::TcpListenerStream::new(listener);
    let layer = LockLayer::new(locks, GrpcMetadata::new("x-account-id").per_method())
        .namespace("ledger:")
        .ttl(Duration::from_secs(10));
    tokio::spawn(
        Server::builder()
            .layer(layer)
            .add_service(HealthServer::new(Ledger))
            .serve_with_incoming(incoming),
    );
    println!("gRPC server on {addr}");

    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let call = |account: &'static str| {
        let mut grpc = HealthClient::new(channel.clone());
        async move {
            let mut request = Request::new(HealthCheckRequest::default());
            request
                .metadata_mut()
                .insert("x-account-id", account.parse().expect("ascii"));
            match grpc.check(request).await {
                Ok(_) => format!("account {account}: OK"),
                Err(status) => format!(
                    "account {account}: {:?} \"{}\"",
                    status.code(),
                    status.message()
                ),
            }
        }
    };
    let (first, second, other) = tokio::join!(call("42"), call("42"), call("7"));
    println!("{first}\n{second}\n{other}");
    println!("after the first finished: {}", call("42").await);
    Ok(())
}
