//! Idempotency records in Redis.

use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{RedisState, StateError};
use crate::idempotency::{
    Answer, Completed, IdempotencyError, IdempotencyStore, MemoryIdempotencyStore, Weigh, RETENTION,
};
use crate::mailer::BoxFuture;

/// An idempotency record in Redis: whose claim it is, the body's fingerprint, and
/// the answer once there is one.
#[derive(serde::Serialize, serde::Deserialize)]
struct Record<T> {
    fingerprint: String,
    claim: String,
    answer: Option<T>,
}

/// Store `ARGV[2]` under the key only while `ARGV[1]` still holds the claim (a
/// lease that ran out may have passed it to another replica); with an empty value,
/// delete it instead.
const SETTLE: &str = r#"
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
local record = cjson.decode(current)
if record['claim'] ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', tonumber(ARGV[3]))
end
return 1
"#;

/// How often a duplicate looks for the answer of a request in flight elsewhere.
const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// Idempotency records in Redis, shared by every replica: the first request claims
/// the key (`SET NX` with a lease), does the work and stores the answer; a duplicate
/// on any replica waits for that answer. A claim whose replica died is released when
/// its lease runs out. When Redis cannot be reached, this replica's memory store.
pub struct RedisIdempotencyStore<T: Clone + Weigh + Send + Sync + 'static> {
    state: Arc<RedisState>,
    lease: Duration,
    wait: Duration,
    settle: Script,
    fallback: MemoryIdempotencyStore<T>,
}

impl<T> RedisIdempotencyStore<T>
where
    T: Clone + Weigh + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// `lease`: how long a claim holds without an answer (longer than any request);
    /// `wait`: how long a duplicate waits for the answer (as long as a send may take).
    pub fn new(
        state: Arc<RedisState>,
        lease: Duration,
        wait: Duration,
        fallback: MemoryIdempotencyStore<T>,
    ) -> Self {
        Self {
            state,
            lease,
            wait,
            settle: Script::new(SETTLE),
            fallback,
        }
    }

    async fn execute_shared(
        &self,
        key: &str,
        fingerprint: &str,
        work: &mut Option<BoxFuture<'static, Completed<T>>>,
    ) -> Result<Result<Answer<T>, IdempotencyError>, StateError> {
        let key = self.state.digest_key(&["idempotency"], key.as_bytes());
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            let claim = uuid::Uuid::new_v4().simple().to_string();
            let pending = Record::<T> {
                fingerprint: fingerprint.to_owned(),
                claim: claim.clone(),
                answer: None,
            };
            let pending = serde_json::to_string(&pending).unwrap_or_default();
            let lease = self.lease.as_millis() as u64;
            let pending = &pending;
            let claimed: Option<String> = self
                .state
                .call("idempotency_claim", |mut c| {
                    let key = key.clone();
                    async move {
                        redis::cmd("SET")
                            .arg(&key)
                            .arg(pending)
                            .arg("NX")
                            .arg("PX")
                            .arg(lease)
                            .query_async(&mut c)
                            .await
                    }
                })
                .await?;
            if claimed.is_some() {
                let Some(work) = work.take() else {
                    return Ok(Err(IdempotencyError::Lost));
                };
                return Ok(self
                    .run_claimed(key, claim, fingerprint.to_owned(), work)
                    .await);
            }
            let current: Option<String> = self
                .state
                .call("idempotency_get", |mut c| {
                    let key = key.clone();
                    async move { redis::cmd("GET").arg(&key).query_async(&mut c).await }
                })
                .await?;
            // Gone between the two calls (not kept, or its lease ran out): claim again.
            let Some(current) = current else { continue };
            let Ok(record) = serde_json::from_str::<Record<T>>(&current) else {
                return Ok(Err(IdempotencyError::Lost));
            };
            if record.fingerprint != fingerprint {
                return Ok(Err(IdempotencyError::KeyReused));
            }
            // Our own claim: the SET went through but its answer was lost with the
            // connection, and the retry found the key taken — by us.
            if record.claim == claim && record.answer.is_none() {
                let Some(work) = work.take() else {
                    return Ok(Err(IdempotencyError::Lost));
                };
                return Ok(self
                    .run_claimed(key, claim, fingerprint.to_owned(), work)
                    .await);
            }
            if let Some(value) = record.answer {
                return Ok(Ok(Answer {
                    value,
                    replayed: true,
                }));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Err(IdempotencyError::InFlight));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Do the work in its own task (a caller that hangs up cancels neither the send
    /// nor the storing of its answer), then settle the claim.
    async fn run_claimed(
        &self,
        key: String,
        claim: String,
        fingerprint: String,
        work: BoxFuture<'static, Completed<T>>,
    ) -> Result<Answer<T>, IdempotencyError> {
        let state = self.state.clone();
        let settle = self.settle.clone();
        let task = tokio::spawn(async move {
            let completed = work.await;
            let stored = if completed.keep {
                serde_json::to_string(&Record {
                    fingerprint,
                    claim: claim.clone(),
                    answer: Some(completed.value.clone()),
                })
                .unwrap_or_default()
            } else {
                String::new()
            };
            let retention = RETENTION.as_millis() as u64;
            let (settle, key, claim, stored) = (&settle, &key, &claim, &stored);
            let settled = state
                .call("idempotency_settle", |mut c| async move {
                    settle
                        .key(key)
                        .arg(claim)
                        .arg(stored)
                        .arg(retention)
                        .invoke_async::<i64>(&mut c)
                        .await
                })
                .await;
            if let Err(error) = settled {
                tracing::warn!(%error, "an idempotency answer could not be stored in Redis; a repeat may send again");
            }
            completed.value
        });
        match task.await {
            Ok(value) => Ok(Answer {
                value,
                replayed: false,
            }),
            Err(_) => Err(IdempotencyError::Lost),
        }
    }
}

impl<T> IdempotencyStore<T> for RedisIdempotencyStore<T>
where
    T: Clone + Weigh + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn execute<'a>(
        &'a self,
        key: String,
        fingerprint: [u8; 32],
        work: BoxFuture<'static, Completed<T>>,
    ) -> BoxFuture<'a, Result<Answer<T>, IdempotencyError>> {
        Box::pin(async move {
            let mut work = Some(work);
            match self
                .execute_shared(&key, &hex::encode(fingerprint), &mut work)
                .await
            {
                Ok(answer) => answer,
                Err(_) if self.state.required() => Err(IdempotencyError::StateUnavailable),
                // Redis failed before this replica claimed the key: this replica's
                // memory decides, as a single instance would.
                Err(_) => match work {
                    Some(work) => self.fallback.execute(key, fingerprint, work).await,
                    None => Err(IdempotencyError::Lost),
                },
            }
        })
    }
}
