//! The macro without `client = ..`: the default client, and the error when none is set.

use distlock::{LockClient, LockError, distributed_lock};

#[distributed_lock(key = "nightly:{day}")]
async fn nightly(day: u32) -> Result<String, LockError> {
    Ok(distlock::current().unwrap().key().to_owned())
}

#[tokio::test]
async fn the_default_client_is_used_and_its_absence_is_an_error() {
    let err = nightly(1).await.unwrap_err();
    assert!(matches!(err, LockError::NoDefaultClient), "{err}");
    assert!(err.to_string().contains("set_default_client"));

    let server = distlock_tests::RedisServer::start();
    let client = LockClient::connect(&server.url()).await.unwrap();
    distlock::set_default_client(client.clone());
    assert_eq!(nightly(2).await.unwrap(), "nightly:2");
    let _held = client.lock("nightly:3").await.unwrap();
    assert!(nightly(3).await.unwrap_err().is_busy());
}
