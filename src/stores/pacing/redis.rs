//! The send pace in Redis.

use std::sync::Arc;
use std::time::Duration;

use redis::Script;

use crate::stores::pacing::{self, MemoryPacer, PaceExceeded, PaceKey, PaceRefusal, SendPacer};
use crate::stores::redis_link::RedisState;
use crate::transport::BoxFuture;

/// GCRA in Redis: the next send's turn is kept under its account's key; a send
/// takes the turn (moving it on by one interval) unless it would wait longer than
/// allowed. Times in microseconds on Redis's clock.
const PACE: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local max_wait = tonumber(ARGV[2])
local turn = tonumber(redis.call('GET', KEYS[1]) or now)
if turn < now then turn = now end
local wait = turn - now
if wait > max_wait then return {0, wait - max_wait} end
redis.call('SET', KEYS[1], string.format('%.0f', turn + interval), 'PX', math.ceil((wait + interval) / 1000) + 1000)
return {1, wait}
"#;

/// Send turns shared by every replica through Redis; this replica's own turns when
/// Redis cannot be reached (unless it is required).
pub struct RedisPacer {
    state: Arc<RedisState>,
    script: Script,
    fallback: MemoryPacer,
}

impl RedisPacer {
    pub fn new(state: Arc<RedisState>) -> Self {
        Self {
            state,
            script: Script::new(PACE),
            fallback: MemoryPacer::new(),
        }
    }

    /// `pace:<region>:<digest of the access key id>`, or `pace:<region>:default-chain`.
    fn key(&self, pace: &PaceKey) -> String {
        match pace.access_key_id() {
            Some(id) => self
                .state
                .digest_key(&["pace", pace.region()], id.as_bytes()),
            None => self.state.key(&["pace", pace.region(), "default-chain"]),
        }
    }
}

impl SendPacer for RedisPacer {
    fn reserve<'a>(
        &'a self,
        pace: &'a PaceKey,
        rate: f64,
        max_wait: Duration,
    ) -> BoxFuture<'a, Result<Duration, PaceRefusal>> {
        Box::pin(async move {
            let key = &self.key(pace);
            let interval = pacing::interval(rate).as_micros() as u64;
            let max = max_wait.as_micros() as u64;
            let taken = self
                .state
                .call("pace", |mut connection| {
                    let script = self.script.clone();
                    async move {
                        script
                            .key(key)
                            .arg(interval)
                            .arg(max)
                            .invoke_async::<(i64, i64)>(&mut connection)
                            .await
                    }
                })
                .await;
            let micros = |m: i64| Duration::from_micros(m.max(0) as u64);
            match taken {
                Ok((1, wait)) => Ok(micros(wait)),
                Ok((_, over)) => Err(PaceRefusal::Exceeded(PaceExceeded {
                    retry_after: micros(over),
                })),
                Err(_) if self.state.required() => Err(PaceRefusal::StateUnavailable),
                Err(_) => self.fallback.reserve(pace, rate, max_wait).await,
            }
        })
    }
}
