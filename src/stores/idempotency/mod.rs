//! Idempotency keys: the first request with a key does the work; repeats with the same
//! body get its answer, waiting for it while it is in flight.
mod memory;
mod redis;

use std::time::Duration;

use crate::transport::BoxFuture;

pub use self::memory::MemoryIdempotencyStore;
pub use self::redis::RedisIdempotencyStore;

/// Longest `Idempotency-Key` accepted.
pub const MAX_KEY_LEN: usize = 255;
/// How long an answer is kept for repeats.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Why a request with a key got no answer of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdempotencyError {
    /// The same key was used with a different request body.
    #[error("this Idempotency-Key was used with a different request")]
    KeyReused,
    /// The first request's work ended without an answer (it panicked).
    #[error("the first request with this Idempotency-Key failed without an answer")]
    Lost,
    /// The first request is still in flight (on another replica) after the wait.
    #[error("a request with this Idempotency-Key is still in flight")]
    InFlight,
    /// The shared store is required and cannot be reached.
    #[error("the shared state store cannot be reached")]
    StateUnavailable,
}

/// What the work produced, and whether to keep it for repeats.
pub struct Completed<T> {
    pub value: T,
    /// `false` for transient failures: a retry with the key should try again.
    pub keep: bool,
}

/// An answer, fresh or replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer<T> {
    pub value: T,
    pub replayed: bool,
}

/// The memory an answer holds, so that stores are bounded in bytes.
pub trait Weigh {
    fn weight(&self) -> usize;
}

/// Where answers are kept: this process's memory, or Redis shared by replicas.
pub trait IdempotencyStore<T>: Send + Sync {
    /// Run `work` once per `key`; a repeat with the same `fingerprint` gets the
    /// first answer, one with another fingerprint gets
    /// [`IdempotencyError::KeyReused`]. The work runs to its end and its answer is
    /// stored even when every caller waiting for it has gone.
    fn execute<'a>(
        &'a self,
        key: String,
        fingerprint: [u8; 32],
        work: BoxFuture<'static, Completed<T>>,
    ) -> BoxFuture<'a, Result<Answer<T>, IdempotencyError>>;
}
