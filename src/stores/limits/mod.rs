//! Abuse limits: sends per recipient and per client IP in a rolling window, and a cap
//! on concurrent SES calls with a short wait queue.
//!
//! A rolling window ("at most N in any T seconds", as Logto's message rate guard)
//! is kept as a log of send times per key. GCRA limiters (`governor`) cannot express
//! it: they allow the burst again after each refill interval.

mod memory;
mod redis;

use std::net::IpAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::address::Recipient;
use crate::transport::BoxFuture;

pub use self::memory::MemoryLimits;
use self::memory::{unhit, Log};
pub use self::redis::RedisLimits;

/// `COUNT/SECONDS`, e.g. `10/600`; `0` disables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub window: Duration,
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let input = input.trim();
        if input == "0" {
            return Ok(Self {
                count: 0,
                window: Duration::ZERO,
            });
        }
        let expected =
            || format!("\"{input}\" is not COUNT/SECONDS such as 10/600 (or 0 to disable)");
        let (count, seconds) = input.split_once('/').ok_or_else(expected)?;
        let count: u32 = count.trim().parse().map_err(|_| expected())?;
        let seconds: u64 = seconds.trim().parse().map_err(|_| expected())?;
        if count == 0 || seconds == 0 {
            return Ok(Self {
                count: 0,
                window: Duration::ZERO,
            });
        }
        if seconds > 7 * 24 * 3600 || count > 1_000_000 {
            return Err(format!(
                "\"{input}\" is too large; at most 1000000 per 604800 seconds"
            ));
        }
        Ok(Self {
            count,
            window: Duration::from_secs(seconds),
        })
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_disabled() {
            f.write_str("0")
        } else {
            write!(f, "{}/{}", self.count, self.window.as_secs())
        }
    }
}

impl Rate {
    /// No limit.
    pub const OFF: Rate = Rate {
        count: 0,
        window: Duration::ZERO,
    };

    pub fn is_disabled(&self) -> bool {
        self.count == 0
    }
}

/// A limit was hit: which one, and when a send would be accepted again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitExceeded {
    pub limit: &'static str,
    pub retry_after: Duration,
}

/// Why a send was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A limit was hit.
    Exceeded(LimitExceeded),
    /// The shared state that holds the limits cannot be reached, and it is required.
    StateUnavailable,
}

impl From<LimitExceeded> for Refusal {
    fn from(exceeded: LimitExceeded) -> Self {
        Refusal::Exceeded(exceeded)
    }
}

/// What an admitted send took from its windows, so that a send that never reaches
/// SES (refused by pacing or the gate, or its caller gone) can give it back.
#[derive(Debug, Default)]
pub struct Admission(pub(crate) Taken);

/// The hits an admission recorded, by backend.
#[derive(Debug, Default)]
pub(crate) enum Taken {
    /// Every limit is off (or the send named no IP for the only limit on).
    #[default]
    Nothing,
    /// The time recorded in each in-memory log.
    Memory(Vec<(Log, Instant)>),
    /// The member recorded under each Redis key.
    Shared { keys: Vec<String>, member: String },
}

impl Admission {
    /// Take the hits back from this process's memory; a shared admission is the
    /// Redis limiter's to give back.
    pub(crate) fn give_back_in_memory(self) -> Option<Self> {
        match self.0 {
            Taken::Nothing => None,
            Taken::Memory(hits) => {
                for (log, at) in hits {
                    unhit(&log, at);
                }
                None
            }
            shared @ Taken::Shared { .. } => Some(Admission(shared)),
        }
    }
}

/// Decides whether a send may go ahead: in memory, or in Redis shared by replicas.
pub trait SendLimiter: Send + Sync {
    /// Count this send against its limits, or refuse it without counting it.
    fn admit<'a>(
        &'a self,
        recipient: &'a Recipient,
        ip: Option<IpAddr>,
    ) -> BoxFuture<'a, Result<Admission, Refusal>>;

    /// Uncount an admitted send that never reached SES. Best effort: when the
    /// shared state cannot be reached, the hit stays until it leaves its window.
    fn give_back(&self, admission: Admission) -> BoxFuture<'_, ()>;
}

/// The client a limit counts: an IPv4-mapped IPv6 address as the IPv4 address, any
/// other IPv6 address by its /64 (one host usually holds a whole /64).
pub fn ip_limit_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{}/64", std::net::Ipv6Addr::from(prefix))
        }
    }
}
