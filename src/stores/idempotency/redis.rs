//! Idempotency records in Redis, in front of which this replica's own memory
//! always answers first for the keys it has seen.

use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::stores::idempotency::{
    Answer, Completed, IdempotencyError, IdempotencyStore, MemoryIdempotencyStore, Weigh, RETENTION,
};
use crate::stores::redis_link::{RedisState, StateError};
use crate::transport::BoxFuture;

/// An idempotency record in Redis: whose claim it is, the body's fingerprint, and
/// the answer once there is one.
/// Short field names and no claim once answered: each record is kept for a day.
#[derive(serde::Serialize, serde::Deserialize)]
struct Record<T> {
    #[serde(rename = "f")]
    fingerprint: String,
    #[serde(rename = "c", default, skip_serializing_if = "String::is_empty")]
    claim: String,
    #[serde(rename = "a", skip_serializing_if = "Option::is_none")]
    answer: Option<T>,
}

/// Store `ARGV[2]` under the key only while `ARGV[1]` still holds the claim (a
/// lease that ran out may have passed it to another replica); with an empty value,
/// delete it instead.
const SETTLE: &str = r#"
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
local record = cjson.decode(current)
if record['c'] ~= ARGV[1] then return 0 end
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
/// its lease runs out.
///
/// Every key also goes through this replica's memory store first, claimed or
/// answered there too: a duplicate on the same replica waits for the local work or
/// gets its kept answer without asking Redis, so a Redis that stalls, fails over or
/// restarts mid-send never makes one replica send twice for one key.
pub struct RedisIdempotencyStore<T: Clone + Weigh + Send + Sync + 'static> {
    shared: Shared,
    local: MemoryIdempotencyStore<Local<T>>,
}

/// What the Redis side needs, cloned into the work that runs under a local claim.
#[derive(Clone)]
struct Shared {
    state: Arc<RedisState>,
    lease: Duration,
    wait: Duration,
    settle: Script,
}

/// What the local store keeps per key: the outcome of the shared path, and whether
/// its value was another replica's answer.
#[derive(Clone)]
struct Local<T> {
    outcome: Result<T, IdempotencyError>,
    replayed: bool,
}

impl<T: Weigh> Weigh for Local<T> {
    fn weight(&self) -> usize {
        self.outcome.as_ref().map_or(0, Weigh::weight)
    }
}

impl<T> RedisIdempotencyStore<T>
where
    T: Clone + Weigh + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// `lease`: how long a claim holds without an answer (longer than any request);
    /// `wait`: how long a duplicate waits for the answer (as long as a send may take);
    /// `local_max_bytes`: the bound of this replica's own store.
    pub fn new(
        state: Arc<RedisState>,
        lease: Duration,
        wait: Duration,
        local_max_bytes: u64,
    ) -> Self {
        Self {
            shared: Shared {
                state,
                lease,
                wait,
                settle: Script::new(SETTLE),
            },
            local: MemoryIdempotencyStore::new(local_max_bytes),
        }
    }
}

impl Shared {
    /// The shared path, run once per key on this replica (under the local claim):
    /// claim the key in Redis and do the work, or wait for the replica that holds it.
    /// When Redis cannot answer before this replica holds the claim, the work runs
    /// here (this replica's memory still stops a second local send), unless Redis is
    /// required.
    async fn run<T>(
        self,
        key: String,
        fingerprint: String,
        work: BoxFuture<'static, Completed<T>>,
    ) -> Completed<Local<T>>
    where
        T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        match self.claim_or_wait::<T>(&key, &fingerprint).await {
            Ok(Claimed::Answer(value)) => Completed {
                value: Local {
                    outcome: Ok(value),
                    replayed: true,
                },
                keep: true,
            },
            Ok(Claimed::Refused(error)) => refused(error),
            Ok(Claimed::Ours { key, claim }) => {
                let completed = work.await;
                self.settle(&key, &claim, &fingerprint, &completed).await;
                done(completed)
            }
            Err(_) if self.state.required() => refused(IdempotencyError::StateUnavailable),
            Err(_) => done(work.await),
        }
    }

    async fn claim_or_wait<T>(&self, key: &str, fingerprint: &str) -> Result<Claimed<T>, StateError>
    where
        T: Serialize + DeserializeOwned,
    {
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
            let (pending, key_ref) = (&pending, &key);
            let claimed: Option<String> = self
                .state
                .call("idempotency_claim", |mut c| async move {
                    redis::cmd("SET")
                        .arg(key_ref)
                        .arg(pending)
                        .arg("NX")
                        .arg("PX")
                        .arg(lease)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            if claimed.is_some() {
                return Ok(Claimed::Ours { key, claim });
            }
            let current: Option<String> = self
                .state
                .call("idempotency_get", |mut c| async move {
                    redis::cmd("GET").arg(key_ref).query_async(&mut c).await
                })
                .await?;
            // Gone between the two calls (not kept, or its lease ran out): claim again.
            let Some(current) = current else { continue };
            let Ok(record) = serde_json::from_str::<Record<T>>(&current) else {
                return Ok(Claimed::Refused(IdempotencyError::Lost));
            };
            if record.fingerprint != fingerprint {
                return Ok(Claimed::Refused(IdempotencyError::KeyReused));
            }
            // Our own claim: the SET went through but its answer was lost with the
            // connection, and the retry found the key taken — by us.
            if record.claim == claim && record.answer.is_none() {
                return Ok(Claimed::Ours { key, claim });
            }
            if let Some(value) = record.answer {
                return Ok(Claimed::Answer(value));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Claimed::Refused(IdempotencyError::InFlight));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Store the answer under our claim (or release the claim for a transient one).
    async fn settle<T: Serialize>(
        &self,
        key: &str,
        claim: &str,
        fingerprint: &str,
        completed: &Completed<T>,
    ) {
        let stored = if completed.keep {
            serde_json::to_string(&Record {
                fingerprint: fingerprint.to_owned(),
                claim: String::new(),
                answer: Some(&completed.value),
            })
            .unwrap_or_default()
        } else {
            String::new()
        };
        let retention = RETENTION.as_millis() as u64;
        let (settle, stored) = (&self.settle, &stored);
        let settled = self
            .state
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
            tracing::warn!(%error, "an idempotency answer could not be stored in Redis; this replica keeps it, a repeat on another replica may send again");
        }
    }
}

/// Where the shared path stands for a key.
enum Claimed<T> {
    /// This replica holds the claim under `key`.
    Ours { key: String, claim: String },
    /// Another replica's answer.
    Answer(T),
    /// No answer to give: reused with another body, still in flight elsewhere, …
    Refused(IdempotencyError),
}

fn done<T>(completed: Completed<T>) -> Completed<Local<T>> {
    Completed {
        value: Local {
            outcome: Ok(completed.value),
            replayed: false,
        },
        keep: completed.keep,
    }
}

fn refused<T>(error: IdempotencyError) -> Completed<Local<T>> {
    Completed {
        value: Local {
            outcome: Err(error),
            replayed: false,
        },
        keep: false,
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
            let shared =
                self.shared
                    .clone()
                    .run(key.clone(), hex::encode(&fingerprint[..16]), work);
            let answer = self
                .local
                .execute(key, fingerprint, Box::pin(shared))
                .await?;
            let Local { outcome, replayed } = answer.value;
            outcome.map(|value| Answer {
                value,
                replayed: replayed || answer.replayed,
            })
        })
    }
}
