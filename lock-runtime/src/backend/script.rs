//! The Lua scripts of the protocol and how they are called (`EVALSHA`, falling back to
//! `EVAL`), with the arguments they share.

use std::sync::OnceLock;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{ErrorKind, FromRedisValue, ServerErrorKind};

use super::deployment::{Attempt, RESERVATION};
use crate::{BackendErrorKind, LockError};

pub(crate) static ACQUIRE: Lua = Lua::new(include_str!("scripts/acquire.lua"));
#[cfg(feature = "cluster")]
pub(crate) static RELEASE: Lua = Lua::new(include_str!("scripts/release.lua"));
pub(crate) static RENEW: Lua = Lua::new(include_str!("scripts/renew.lua"));
pub(crate) static LEAVE: Lua = Lua::new(include_str!("scripts/leave.lua"));
pub(crate) static FORCE_RELEASE: Lua = Lua::new(include_str!("scripts/force_release.lua"));
pub(crate) static PUT_BACK: Lua = Lua::new(include_str!("scripts/put_back.lua"));
/// Acquires and releases in one call: the two scripts above, unchanged, as functions.
pub(crate) static BATCH: Lua = Lua::new(concat!(
    "local function acquire(KEYS, ARGV)\n",
    include_str!("scripts/acquire.lua"),
    "\nend\nlocal function release(KEYS, ARGV)\n",
    include_str!("scripts/release.lua"),
    "\nend\n",
    include_str!("scripts/batch.lua"),
));

/// A Lua script, called by its SHA1 (`EVALSHA`) and sent whole (`EVAL`, which also caches it
/// again) when the server does not know it: after `SCRIPT FLUSH`, a restart, a failover, or
/// on a Cluster node that never saw it. The fallback is one command, so a flush between two
/// steps cannot make it fail, and `NOSCRIPT` never reaches a caller.
pub(crate) struct Lua {
    code: &'static str,
    sha1: OnceLock<String>,
}

impl Lua {
    const fn new(code: &'static str) -> Self {
        Self {
            code,
            sha1: OnceLock::new(),
        }
    }

    fn sha1(&self) -> &str {
        self.sha1
            .get_or_init(|| redis::Script::new(self.code).get_hash().to_owned())
    }

    /// Runs the script with `keys` and `args` (both go in the order given).
    pub(crate) async fn call<T, C, A>(
        &self,
        conn: &mut C,
        keys: &[&str],
        args: &[A],
    ) -> Result<T, LockError>
    where
        T: FromRedisValue,
        C: ConnectionLike,
        A: redis::ToRedisArgs,
    {
        match self.command("EVALSHA", keys, args).query_async(conn).await {
            Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => self
                .command("EVAL", keys, args)
                .query_async(conn)
                .await
                .map_err(LockError::from_redis),
            answer => answer.map_err(LockError::from_redis),
        }
    }

    /// Like [`call`](Self::call), but the reply is returned as it came: an error entry inside
    /// it stays an entry (for the batch script, whose entries are separate operations). An
    /// error reply to the whole call is still an error.
    pub(crate) async fn call_raw<C, A>(
        &self,
        conn: &mut C,
        keys: &[&str],
        args: &[A],
    ) -> Result<redis::Value, LockError>
    where
        C: ConnectionLike,
        A: redis::ToRedisArgs,
    {
        let whole = |answer: redis::RedisResult<redis::Value>| match answer {
            Ok(redis::Value::ServerError(err)) => Err(redis::RedisError::from(err)),
            other => other,
        };
        let evalsha = self.command("EVALSHA", keys, args);
        match whole(conn.req_packed_command(&evalsha).await) {
            Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                let eval = self.command("EVAL", keys, args);
                whole(conn.req_packed_command(&eval).await).map_err(LockError::from_redis)
            }
            answer => answer.map_err(LockError::from_redis),
        }
    }

    /// `EVALSHA` (by hash) or `EVAL` (the code) with `keys` and `args`.
    fn command<A: redis::ToRedisArgs>(&self, name: &str, keys: &[&str], args: &[A]) -> redis::Cmd {
        let mut cmd = redis::cmd(name);
        match name {
            "EVAL" => cmd.arg(self.code),
            _ => cmd.arg(self.sha1()),
        };
        cmd.arg(keys.len()).arg(keys).arg(args);
        cmd
    }
}

/// How long a released lock's tombstone keeps its fence.
const TOMBSTONE: Duration = Duration::from_secs(10);

/// The arguments common to the scripts that may end a hold or a reservation: tombstone and
/// reservation lengths, and the publish command (`"SPUBLISH"` on Redis Cluster).
pub(crate) fn handoff_args(publish: Option<&str>) -> [String; 3] {
    [
        millis(TOMBSTONE).to_string(),
        millis(RESERVATION).to_string(),
        publish.unwrap_or("PUBLISH").to_owned(),
    ]
}

/// A duration as the scripts and commands take it: whole milliseconds, at least one.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Reads the acquire script's reply (see `scripts/acquire.lua`).
pub(crate) fn parse_attempt(reply: &[redis::Value], user_key: &str) -> Result<Attempt, LockError> {
    let int = |v: &redis::Value| redis::from_redis_value_ref::<i64>(v).ok();
    match reply {
        [status, fence, ..] if int(status) == Some(1) => {
            let fence = redis::from_redis_value_ref::<String>(fence)
                .ok()
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| {
                    LockError::backend(
                        BackendErrorKind::Server,
                        "the acquire script answered without a fence",
                    )
                })?;
            Ok(Attempt::Acquired { fence })
        }
        [status, pttl, ..] if int(status) == Some(0) => Ok(Attempt::Busy {
            pttl: int(pttl)
                .and_then(|p| u64::try_from(p).ok())
                .map(Duration::from_millis),
        }),
        _ => Err(LockError::KeyConflict {
            key: user_key.to_owned(),
        }),
    }
}
