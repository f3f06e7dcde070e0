// `impl Trait` in the return type: the output type is inferred, never written by the macro.
use std::fmt::Display;

use distlock::{LockClient, LockError, distributed_lock};

#[derive(Debug, thiserror::Error)]
enum AppError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("empty name")]
    Empty,
}

#[distributed_lock(key = "greet:{name}", client = locks)]
async fn greet(locks: &LockClient, name: &str) -> Result<impl Display, AppError> {
    if name.is_empty() {
        return Err(AppError::Empty);
    }
    let fence = distlock::current().ok_or(AppError::Empty)?.fencing_token();
    Ok(format!("hello {name} ({})", fence > 0))
}

#[distributed_lock(key = "items", client = locks, on_busy = "skip")]
async fn items(locks: &LockClient) -> Result<Option<impl Iterator<Item = impl Display>>, LockError> {
    Ok(Some(vec![1, 2, 3].into_iter()))
}

#[distributed_lock(key = "boxed", client = locks)]
async fn boxed(locks: &LockClient) -> Result<Box<dyn Display + Send>, AppError> {
    Err(AppError::Empty)?;
    Ok(Box::new(7))
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let locks = LockClient::memory();
        assert_eq!(greet(&locks, "ann").await.unwrap().to_string(), "hello ann (true)");
        assert!(matches!(greet(&locks, "").await, Err(AppError::Empty)));
        let listed: Vec<String> = items(&locks).await.unwrap().unwrap().map(|i| i.to_string()).collect();
        assert_eq!(listed, ["1", "2", "3"]);
        assert!(matches!(boxed(&locks).await, Err(AppError::Empty)));
    });
}
