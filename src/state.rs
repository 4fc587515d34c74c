//! State shared by replicas, in Redis (or Valkey): the rolling-window limits, the
//! idempotency records, the send pace and the delivery log. The only module that speaks Redis. Every call is bounded in
//! time; when Redis cannot be reached the stores fall back to this process's memory
//! (or refuse, when Redis is required), and a background probe brings them back.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::address::Recipient;
use crate::feedback::{
    self, DeliveryLog, Event, MemoryDeliveryLog, MessageRecord, Notification, Recorded, Status,
    Suppression, SuppressionReason,
};
use crate::idempotency::{
    Answer, Completed, IdempotencyError, IdempotencyStore, MemoryIdempotencyStore, Weigh, RETENTION,
};
use crate::limits::{ip_limit_key, LimitExceeded, MemoryLimits, Rate, Refusal, SendLimiter};
use crate::mailer::BoxFuture;
use crate::pacing::{self, MemoryPacer, PaceExceeded, PaceRefusal, SendPacer};
use crate::settings::RedisSettings;
use crate::telemetry::names;

/// How often a degraded replica checks whether Redis is back.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Why a Redis call gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis failed: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis is known to be down; not tried until the probe sees it back.
    #[error("Redis is unreachable")]
    Degraded,
}

/// One Redis connection shared by every store, with the health of the link.
pub struct RedisState {
    connection: ConnectionManager,
    prefix: String,
    timeout: Duration,
    required: bool,
    degraded: AtomicBool,
}

impl RedisState {
    /// Prepare the connection (made lazily, so the service starts with Redis down)
    /// and the probe that notices when a lost Redis is back.
    pub fn connect(settings: &RedisSettings) -> anyhow::Result<Arc<Self>> {
        let client = redis::Client::open(settings.url.expose_secret()).map_err(|e| {
            anyhow::anyhow!("SES_CONNECTOR_REDIS_URL is not usable: {:?}", e.kind())
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout.max(Duration::from_millis(250))))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| anyhow::anyhow!("cannot prepare the Redis connection: {:?}", e.kind()))?;
        let state = Arc::new(Self {
            connection,
            prefix: settings.prefix.clone(),
            timeout: settings.timeout,
            required: settings.required,
            degraded: AtomicBool::new(false),
        });
        metrics::gauge!(names::STATE_DEGRADED).set(0.0);
        tokio::spawn(probe(Arc::downgrade(&state)));
        Ok(state)
    }

    /// `true` when Redis is required: a store refuses instead of falling back.
    pub fn required(&self) -> bool {
        self.required
    }

    /// Whether the stores are on their in-memory fallback now.
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::SeqCst)
    }

    /// `prefix` + `parts`, joined by `:`.
    pub fn key(&self, parts: &[&str]) -> String {
        let mut key = self.prefix.clone();
        key.push_str(&parts.join(":"));
        key
    }

    /// Run one Redis call within the time bound; failures mark the link degraded.
    pub async fn call<T, F, Fut>(&self, operation: &'static str, call: F) -> Result<T, StateError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if self.is_degraded() {
            return Err(StateError::Degraded);
        }
        let result = match tokio::time::timeout(self.timeout, call(self.connection.clone())).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => StateError::Redis(error),
            Err(_) => StateError::Timeout(self.timeout),
        };
        metrics::counter!(names::STATE_ERRORS, "operation" => operation).increment(1);
        self.set_degraded(true, Some(&result));
        Err(result)
    }

    fn set_degraded(&self, degraded: bool, cause: Option<&StateError>) {
        if self.degraded.swap(degraded, Ordering::SeqCst) == degraded {
            return;
        }
        metrics::gauge!(names::STATE_DEGRADED).set(if degraded { 1.0 } else { 0.0 });
        match (degraded, self.required) {
            (true, false) => tracing::error!(
                error = cause.map(ToString::to_string).unwrap_or_default(),
                "Redis unreachable: limits and idempotency fall back to this replica's memory until it is back"
            ),
            (true, true) => tracing::error!(
                error = cause.map(ToString::to_string).unwrap_or_default(),
                "Redis unreachable and required: sends are refused with 503 state_unavailable until it is back"
            ),
            (false, _) => tracing::warn!("Redis is back: limits and idempotency are shared again"),
        }
    }
}

/// While degraded, PING Redis every [`PROBE_INTERVAL`]; a PONG ends the fallback.
async fn probe(state: std::sync::Weak<RedisState>) {
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let Some(state) = state.upgrade() else { return };
        if !state.is_degraded() {
            continue;
        }
        let mut connection = state.connection.clone();
        let ping = redis::cmd("PING");
        let pong = ping.query_async::<String>(&mut connection);
        if let Ok(Ok(_)) = tokio::time::timeout(state.timeout * 5, pong).await {
            state.set_degraded(false, None);
        }
    }
}

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

/// The rolling-window limits in Redis, shared by every replica; this replica's
/// memory when Redis cannot be reached (unless it is required).
pub struct RedisLimits {
    state: Arc<RedisState>,
    recipient: Rate,
    ip: Rate,
    script: Script,
    fallback: MemoryLimits,
}

impl RedisLimits {
    pub fn new(state: Arc<RedisState>, recipient: Rate, ip: Rate) -> Self {
        Self {
            state,
            recipient,
            ip,
            script: Script::new(ROLLING_WINDOW),
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
            let digest = hex(Sha256::digest(recipient.limit_key().as_bytes()).into());
            windows.push((
                "recipient",
                self.state.key(&["limit", "recipient", &digest]),
                self.recipient,
            ));
        }
        if let (false, Some(ip)) = (self.ip.is_disabled(), ip) {
            let digest = hex(Sha256::digest(ip_limit_key(ip).as_bytes()).into());
            windows.push(("ip", self.state.key(&["limit", "ip", &digest]), self.ip));
        }
        windows
    }

    async fn admit_shared(
        &self,
        windows: &[(&'static str, String, Rate)],
    ) -> Result<Result<(), LimitExceeded>, StateError> {
        let mut invocation = self.script.prepare_invoke();
        // A member unique to this send; a fast generator, no system call.
        let member = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
        invocation.arg(member.simple().to_string());
        for (_, key, rate) in windows {
            invocation
                .key(key)
                .arg(rate.count)
                .arg(rate.window.as_millis() as u64);
        }
        let (which, retry_ms): (usize, i64) = self
            .state
            .call("limit", |mut connection| async move {
                invocation.invoke_async(&mut connection).await
            })
            .await?;
        Ok(match which.checked_sub(1).and_then(|i| windows.get(i)) {
            None => Ok(()),
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
    ) -> BoxFuture<'a, Result<(), Refusal>> {
        Box::pin(async move {
            let windows = self.windows(recipient, ip);
            if windows.is_empty() {
                return Ok(());
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
}

/// Lower-case hex of a digest, in one allocation.
pub fn hex(bytes: [u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(64);
    for byte in bytes {
        text.push(DIGITS[usize::from(byte >> 4)] as char);
        text.push(DIGITS[usize::from(byte & 0x0f)] as char);
    }
    text
}

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
        let key = self
            .state
            .key(&["idempotency", &hex(Sha256::digest(key.as_bytes()).into())]);
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
            let settled = state
                .call("idempotency_settle", |mut c| async move {
                    settle
                        .key(&key)
                        .arg(&claim)
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
                .execute_shared(&key, &hex(fingerprint), &mut work)
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

/// GCRA in Redis: the next send's turn is kept under one key; a send takes the turn
/// (moving it on by one interval) unless it would wait longer than allowed. Times
/// in microseconds on Redis's clock.
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
}

impl SendPacer for RedisPacer {
    fn reserve(
        &self,
        rate: f64,
        max_wait: Duration,
    ) -> BoxFuture<'_, Result<Duration, PaceRefusal>> {
        Box::pin(async move {
            let key = self.state.key(&["pace"]);
            let interval = pacing::interval(rate).as_micros() as u64;
            let max = max_wait.as_micros() as u64;
            let taken = self
                .state
                .call("pace", |mut connection| {
                    let script = self.script.clone();
                    async move {
                        script
                            .key(&key)
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
                Err(_) => self.fallback.reserve(rate, max_wait).await,
            }
        })
    }
}

/// How long a suppression is kept in Redis (every key has a TTL).
const SUPPRESSION_RETENTION: Duration = Duration::from_secs(365 * 24 * 3600);
/// Events kept per message.
const MAX_EVENTS: isize = 50;

/// Sends and their feedback in Redis, shared by replicas: `message:<id>` (the send),
/// `events:<id>` (a list of events; duplicates dropped when read) and
/// `suppressed:<digest of the canonical mailbox>`. When Redis cannot be reached,
/// this replica's memory log.
pub struct RedisDeliveryLog {
    state: Arc<RedisState>,
    fallback: MemoryDeliveryLog,
}

impl RedisDeliveryLog {
    pub fn new(state: Arc<RedisState>, fallback: MemoryDeliveryLog) -> Self {
        Self { state, fallback }
    }

    fn message_key(&self, id: &str) -> String {
        self.state
            .key(&["message", &hex(Sha256::digest(id.as_bytes()).into())])
    }

    fn events_key(&self, id: &str) -> String {
        self.state
            .key(&["events", &hex(Sha256::digest(id.as_bytes()).into())])
    }

    fn suppressed_key(&self, address: &str) -> String {
        let canonical = Recipient::parse(address)
            .map(|r| r.limit_key())
            .unwrap_or_else(|_| address.to_ascii_lowercase());
        self.state.key(&[
            "suppressed",
            &hex(Sha256::digest(canonical.as_bytes()).into()),
        ])
    }

    async fn record_shared(&self, notification: &Notification) -> Result<Recorded, StateError> {
        let message_key = self.message_key(&notification.message_id);
        let stored: Option<String> = self
            .state
            .call("deliveries_get", |mut c| {
                let key = message_key.clone();
                async move { redis::cmd("GET").arg(&key).query_async(&mut c).await }
            })
            .await?;
        let Some(record) = stored.and_then(|s| serde_json::from_str::<MessageRecord>(&s).ok())
        else {
            return Ok(Recorded::UnknownMessage);
        };
        let event = serde_json::to_string(&notification.event).unwrap_or_default();
        let events_key = self.events_key(&notification.message_id);
        let retention = feedback::RETENTION.as_secs();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("RPUSH")
            .arg(&events_key)
            .arg(event)
            .ignore()
            .cmd("LTRIM")
            .arg(&events_key)
            .arg(-MAX_EVENTS)
            .arg(-1)
            .ignore()
            .cmd("EXPIRE")
            .arg(&events_key)
            .arg(retention)
            .ignore();
        let kind = notification.event.kind;
        let permanent = notification.event.bounce_type.as_deref() == Some("Permanent");
        for address in &notification.recipients {
            let key = self.suppressed_key(address);
            let suppression = match (kind, permanent) {
                (Status::Bounced, true) => Some(SuppressionReason::Bounce),
                (Status::Complained, _) => Some(SuppressionReason::Complaint),
                (Status::Delivered, _) => {
                    pipe.cmd("DEL").arg(&key).ignore();
                    None
                }
                _ => None,
            };
            if let Some(reason) = suppression {
                let value = serde_json::to_string(&Suppression {
                    reason,
                    since: notification.event.at.clone(),
                })
                .unwrap_or_default();
                pipe.cmd("SET")
                    .arg(&key)
                    .arg(value)
                    .arg("EX")
                    .arg(SUPPRESSION_RETENTION.as_secs())
                    .ignore();
            }
        }
        self.state
            .call("deliveries_record", |mut c| async move {
                pipe.query_async::<()>(&mut c).await
            })
            .await?;
        Ok(Recorded::Known(record.usage_type))
    }

    async fn message_shared(&self, id: &str) -> Result<Option<MessageRecord>, StateError> {
        let (message_key, events_key) = (self.message_key(id), self.events_key(id));
        let (stored, events): (Option<String>, Vec<String>) = self
            .state
            .call("deliveries_read", |mut c| async move {
                redis::pipe()
                    .cmd("GET")
                    .arg(&message_key)
                    .cmd("LRANGE")
                    .arg(&events_key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let Some(mut record) = stored.and_then(|s| serde_json::from_str::<MessageRecord>(&s).ok())
        else {
            return Ok(None);
        };
        for event in events
            .iter()
            .filter_map(|e| serde_json::from_str::<Event>(e).ok())
        {
            // SES may deliver a notification twice: keep one of each.
            if !record.events.contains(&event) {
                record.events.push(event);
            }
        }
        record.events.sort_by(|a, b| a.at.cmp(&b.at));
        record.status = record.events.last().map_or(Status::Sent, |e| e.kind);
        Ok(Some(record))
    }
}

impl DeliveryLog for RedisDeliveryLog {
    fn sent(&self, record: MessageRecord, recipient: &Recipient) -> BoxFuture<'_, ()> {
        let recipient = recipient.clone();
        Box::pin(async move {
            let key = self.message_key(&record.message_id);
            let value = serde_json::to_string(&record).unwrap_or_default();
            let retention = feedback::RETENTION.as_secs();
            let stored = self
                .state
                .call("deliveries_sent", |mut c| async move {
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(value)
                        .arg("EX")
                        .arg(retention)
                        .query_async::<()>(&mut c)
                        .await
                })
                .await;
            // The reputation gauges are this replica's; the record is everybody's.
            self.fallback.sent(record, &recipient).await;
            if let Err(error) = stored {
                tracing::debug!(%error, "a send was remembered in this replica only");
            }
        })
    }

    fn record(&self, notification: Notification) -> BoxFuture<'_, Recorded> {
        Box::pin(async move {
            match self.record_shared(&notification).await {
                Ok(recorded) => recorded,
                Err(_) => self.fallback.record(notification).await,
            }
        })
    }

    fn message<'a>(&'a self, message_id: &'a str) -> BoxFuture<'a, Option<MessageRecord>> {
        Box::pin(async move {
            match self.message_shared(message_id).await {
                Ok(record) => record,
                Err(_) => self.fallback.message(message_id).await,
            }
        })
    }

    fn suppression<'a>(&'a self, recipient: &'a Recipient) -> BoxFuture<'a, Option<Suppression>> {
        Box::pin(async move {
            let key = self.suppressed_key(recipient.as_str());
            let stored: Result<Option<String>, _> = self
                .state
                .call("deliveries_suppression", |mut c| async move {
                    redis::cmd("GET").arg(&key).query_async(&mut c).await
                })
                .await;
            match stored {
                Ok(stored) => stored.and_then(|s| serde_json::from_str(&s).ok()),
                Err(_) => self.fallback.suppression(recipient).await,
            }
        })
    }

    fn lift<'a>(&'a self, recipient: &'a Recipient) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let key = self.suppressed_key(recipient.as_str());
            let removed: Result<i64, _> = self
                .state
                .call("deliveries_lift", |mut c| async move {
                    redis::cmd("DEL").arg(&key).query_async(&mut c).await
                })
                .await;
            let local = self.fallback.lift(recipient).await;
            removed.map_or(local, |n| n > 0 || local)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case_and_two_digits_per_byte() {
        let mut bytes = [0u8; 32];
        bytes[0] = 0x0f;
        bytes[1] = 0xa0;
        bytes[31] = 0xff;
        let text = hex(bytes);
        assert_eq!(text.len(), 64);
        assert!(text.starts_with("0fa000"));
        assert!(text.ends_with("00ff"));
        assert_eq!(
            hex(Sha256::digest(b"abc").into()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
