//! The rolling-window limits in Redis.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use redis::Script;

use crate::address::Recipient;
use crate::stores::limits::{
    ip_limit_key, Admission, LimitExceeded, MemoryLimits, Rate, Refusal, SendLimiter, Taken,
};
use crate::stores::redis_link::{RedisState, StateError};
use crate::transport::BoxFuture;

/// "At most N in any rolling T" for every key given, atomically: expire what left
/// the window, refuse (counting nothing) when any key is full — with the
/// milliseconds until its oldest send leaves — else record the send under every key.
/// Times are Redis's own clock, so replicas with skewed clocks agree.
const ROLLING_WINDOW: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
for i = 1, #KEYS do
  local count = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  if redis.call('ZCARD', KEYS[i]) >= count then
    local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
    return {i, tonumber(oldest[2]) + window - now}
  end
end
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], now, ARGV[1])
  redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[2 * i + 1]))
end
return {0, 0}
"#;

/// Take one send's member out of every key it was recorded under (a send refused
/// after admission does not count).
const GIVE_BACK: &str = r#"
for i = 1, #KEYS do
  redis.call('ZREM', KEYS[i], ARGV[1])
end
return 0
"#;

/// The rolling-window limits in Redis, shared by every replica; this replica's
/// memory when Redis cannot be reached (unless it is required).
pub struct RedisLimits {
    state: Arc<RedisState>,
    recipient: Rate,
    ip: Rate,
    script: Script,
    give_back: Script,
    fallback: MemoryLimits,
}

impl RedisLimits {
    pub fn new(state: Arc<RedisState>, recipient: Rate, ip: Rate) -> Self {
        Self {
            state,
            recipient,
            ip,
            script: Script::new(ROLLING_WINDOW),
            give_back: Script::new(GIVE_BACK),
            fallback: MemoryLimits::new(recipient, ip),
        }
    }

    /// The keys and rates this send counts against: `(limit, key, rate)`.
    fn windows(
        &self,
        recipient: &Recipient,
        ip: Option<IpAddr>,
    ) -> Vec<(&'static str, String, Rate)> {
        let mut windows = Vec::with_capacity(2);
        if !self.recipient.is_disabled() {
            windows.push((
                "recipient",
                self.state
                    .digest_key(&["limit", "recipient"], recipient.limit_key().as_bytes()),
                self.recipient,
            ));
        }
        if let (false, Some(ip)) = (self.ip.is_disabled(), ip) {
            let key = self
                .state
                .digest_key(&["limit", "ip"], ip_limit_key(ip).as_bytes());
            windows.push(("ip", key, self.ip));
        }
        windows
    }

    async fn admit_shared(
        &self,
        windows: &[(&'static str, String, Rate)],
    ) -> Result<Result<Admission, LimitExceeded>, StateError> {
        let mut invocation = self.script.prepare_invoke();
        // A member unique to this send; a fast generator, no system call.
        let member = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes())
            .into_uuid()
            .simple()
            .to_string();
        invocation.arg(&member);
        for (_, key, rate) in windows {
            invocation
                .key(key)
                .arg(rate.count)
                .arg(rate.window.as_millis() as u64);
        }
        let invocation = &invocation;
        let (which, retry_ms): (usize, i64) = self
            .state
            .call("limit", |mut connection| async move {
                invocation.invoke_async(&mut connection).await
            })
            .await?;
        Ok(match which.checked_sub(1).and_then(|i| windows.get(i)) {
            None => Ok(Admission(Taken::Shared {
                keys: windows.iter().map(|(_, key, _)| key.clone()).collect(),
                member,
            })),
            Some((limit, _, _)) => Err(LimitExceeded {
                limit,
                retry_after: Duration::from_millis(retry_ms.max(1) as u64),
            }),
        })
    }
}

impl SendLimiter for RedisLimits {
    fn admit<'a>(
        &'a self,
        recipient: &'a Recipient,
        ip: Option<IpAddr>,
    ) -> BoxFuture<'a, Result<Admission, Refusal>> {
        Box::pin(async move {
            let windows = self.windows(recipient, ip);
            if windows.is_empty() {
                return Ok(Admission::default());
            }
            match self.admit_shared(&windows).await {
                Ok(admitted) => admitted.map_err(Refusal::from),
                Err(_) if self.state.required() => Err(Refusal::StateUnavailable),
                Err(_) => self
                    .fallback
                    .admit_now(recipient, ip)
                    .map_err(Refusal::from),
            }
        })
    }

    fn give_back(&self, admission: Admission) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // Admitted by the fallback while Redis was away: given back there.
            let Some(Admission(Taken::Shared { keys, member })) = admission.give_back_in_memory()
            else {
                return;
            };
            let mut invocation = self.give_back.prepare_invoke();
            invocation.arg(&member);
            for key in &keys {
                invocation.key(key);
            }
            let invocation = &invocation;
            // Unanswered, the hit stays until it leaves its window; the call already
            // counted the error and marked the link.
            let _ = self
                .state
                .call("limit", |mut connection| async move {
                    invocation.invoke_async::<i64>(&mut connection).await
                })
                .await;
        })
    }
}
