//! The link to Redis (or Valkey) that every store's Redis backend shares: one
//! connection, keys under the deployment's prefix, keyed digests, and the link's
//! health. Every call is bounded in time; when Redis cannot be reached the stores
//! fall back to this process's memory (or refuse, when Redis is required), and a
//! background probe brings them back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret;
use sha2::Sha256;

use crate::telemetry::names;

/// How often a degraded replica checks whether Redis is back.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Where shared state lives, when it is shared.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: secrecy::SecretString,
    /// Keys the digests written to Redis, so they cannot be reversed by guessing.
    pub secret: secrecy::SecretString,
    pub prefix: String,
    pub required: bool,
    pub timeout: Duration,
}

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
    /// HMAC-SHA256 keyed with the deployment's state secret, ready to clone.
    mac: Hmac<Sha256>,
    timeout: Duration,
    required: bool,
    degraded: AtomicBool,
    /// The same, for tasks that wait for Redis to come back.
    health: tokio::sync::watch::Sender<bool>,
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
        let mac = Hmac::<Sha256>::new_from_slice(settings.secret.expose_secret().as_bytes())
            .map_err(|_| anyhow::anyhow!("the state secret cannot key HMAC-SHA256"))?;
        let state = Arc::new(Self {
            connection,
            prefix: settings.prefix.clone(),
            mac,
            timeout: settings.timeout,
            required: settings.required,
            degraded: AtomicBool::new(false),
            health: tokio::sync::watch::Sender::new(false),
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

    /// `prefix` + `parts` + the keyed digest of `value`: the key of something that
    /// must not be readable from Redis (a recipient, an IP, an idempotency key).
    /// HMAC under the deployment's secret, so a dump cannot be reversed by trying
    /// every IPv4 address or a dictionary of mailboxes.
    pub fn digest_key(&self, parts: &[&str], value: &[u8]) -> String {
        let mut key = self.key(parts);
        key.push(':');
        key.push_str(&self.digest(parts, value));
        key
    }

    /// The keyed digest of `value` under `parts` alone, in hex: 128 bits of the MAC
    /// (as HMAC-SHA256-128), as unguessable in half the bytes.
    pub fn digest(&self, parts: &[&str], value: &[u8]) -> String {
        let mut mac = self.mac.clone();
        for part in parts {
            mac.update(part.as_bytes());
            mac.update(b":");
        }
        mac.update(value);
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    /// Whether the link is degraded, now and as it changes.
    pub fn health(&self) -> tokio::sync::watch::Receiver<bool> {
        self.health.subscribe()
    }

    /// Run one Redis call within the time bound; failures mark the link degraded.
    /// A call that failed on a broken connection (Redis restarted, a proxy cut it)
    /// is tried once more on a fresh one within the same bound: the connection
    /// manager reconnects when it sees the break, so the second try usually answers.
    pub async fn call<T, F, Fut>(&self, operation: &'static str, call: F) -> Result<T, StateError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if self.is_degraded() {
            return Err(StateError::Degraded);
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut retried = false;
        let result = loop {
            match tokio::time::timeout_at(deadline, call(self.connection.clone())).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) if !retried && broken_connection(&error) => {
                    retried = true;
                    metrics::counter!(names::STATE_RETRIES, "operation" => operation).increment(1);
                }
                Ok(Err(error)) => break StateError::Redis(error),
                Err(_) => break StateError::Timeout(self.timeout),
            }
        };
        metrics::counter!(names::STATE_ERRORS, "operation" => operation).increment(1);
        self.set_degraded(true, Some(&result));
        Err(result)
    }

    fn set_degraded(&self, degraded: bool, cause: Option<&StateError>) {
        if self.degraded.swap(degraded, Ordering::SeqCst) == degraded {
            return;
        }
        self.health.send_replace(degraded);
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

/// Whether a failed call may answer on a fresh connection: the connection broke
/// (or could not be made), as opposed to Redis answering with an error.
fn broken_connection(error: &redis::RedisError) -> bool {
    error.is_connection_dropped() || error.is_connection_refusal() || error.is_io_error()
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
