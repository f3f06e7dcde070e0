// Generic fns, where-clauses, `impl Trait` arguments, custom error types, tuple fields.
use std::fmt::Display;

use distlock::{LockClient, LockError, distributed_lock};

#[derive(Debug, thiserror::Error)]
enum AppError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("not found")]
    NotFound,
}

#[distributed_lock(key = "item:{id}", client = locks)]
async fn generic<T, I>(locks: &LockClient, id: I, value: T) -> Result<T, AppError>
where
    T: Send + 'static,
    I: Display + Send + Sync,
{
    Ok(value)
}

#[distributed_lock(key = "thing:{thing}:{pair.0}", client = locks)]
async fn with_impl(locks: &LockClient, thing: impl Display + Send, pair: (u8, u8)) -> Result<(), AppError> {
    if pair.1 > 10 {
        return Err(AppError::NotFound);
    }
    Ok(())
}

#[distributed_lock(key = "io:{name}", client = locks)]
async fn io_result(locks: &LockClient, name: &str) -> std::io::Result<usize> {
    Ok(name.len())
}

#[distributed_lock(key = "boxed:{name}", client = locks)]
async fn boxed(locks: &LockClient, name: &str) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    Ok(name.len())
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let locks = LockClient::memory();
        assert_eq!(generic(&locks, 5, "v").await.unwrap(), "v");
        with_impl(&locks, "x", (1, 2)).await.unwrap();
        assert!(matches!(with_impl(&locks, 'y', (1, 20)).await, Err(AppError::NotFound)));
        assert_eq!(io_result(&locks, "abc").await.unwrap(), 3);
        assert_eq!(boxed(&locks, "ab").await.unwrap(), 2);
    });
}
