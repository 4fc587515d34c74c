//! Abuse limits: sends per recipient and per client IP in a rolling window, and a cap
//! on concurrent SES calls with a short wait queue.
//!
//! A rolling window ("at most N in any T seconds", as Logto's message rate guard)
//! is kept as a log of send times per key. GCRA limiters (`governor`) cannot express
//! it: they allow the burst again after each refill interval.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::address::Recipient;
use crate::mailer::BoxFuture;

/// Keys tracked per limiter; past this the least recently used are forgotten.
const MAX_TRACKED_KEYS: u64 = 200_000;

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

type Log = Arc<Mutex<VecDeque<Instant>>>;

/// Remove one hit recorded at `at` (the latest such, should two share an instant).
fn unhit(log: &Log, at: Instant) {
    let mut times = log.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = times.iter().rposition(|t| *t == at) {
        times.remove(i);
    }
}

/// At most `rate.count` hits per key in any `rate.window`.
struct RollingWindow {
    rate: Rate,
    hits: moka::sync::Cache<[u8; 32], Log>,
}

impl RollingWindow {
    fn new(rate: Rate) -> Self {
        Self {
            rate,
            hits: moka::sync::Cache::builder()
                .max_capacity(MAX_TRACKED_KEYS)
                .time_to_idle(rate.window.max(Duration::from_secs(1)))
                .build(),
        }
    }

    /// Record a hit now, or say how long until one would be accepted.
    fn try_hit(&self, key: [u8; 32], now: Instant) -> Result<Log, Duration> {
        let log = self.hits.get_with(key, Log::default);
        let mut times = log.lock().unwrap_or_else(|e| e.into_inner());
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.rate.window)
        {
            times.pop_front();
        }
        if times.len() >= self.rate.count as usize {
            let oldest = *times.front().expect("a full log has a first entry");
            return Err(self.rate.window - now.duration_since(oldest));
        }
        times.push_back(now);
        drop(times);
        Ok(log)
    }
}

/// Per-recipient and per-IP rolling windows, kept in memory. Recipients are kept
/// only as salted hashes of the lower-cased address.
pub struct MemoryLimits {
    recipient: Option<RollingWindow>,
    ip: Option<RollingWindow>,
    salt: [u8; 16],
}

impl MemoryLimits {
    pub fn new(recipient: Rate, ip: Rate) -> Self {
        let window = |rate: Rate| (!rate.is_disabled()).then(|| RollingWindow::new(rate));
        Self {
            recipient: window(recipient),
            ip: window(ip),
            salt: *uuid::Uuid::new_v4().as_bytes(),
        }
    }

    fn key(&self, kind: &[u8], value: &[u8]) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.salt);
        hasher.update(kind);
        hasher.update(value);
        hasher.finalize().into()
    }

    fn admit_at(
        &self,
        recipient: &Recipient,
        ip: Option<IpAddr>,
        now: Instant,
    ) -> Result<Admission, LimitExceeded> {
        let exceeded = |limit| move |retry_after| LimitExceeded { limit, retry_after };
        let mut hits = Vec::with_capacity(2);
        if let Some(window) = &self.recipient {
            let key = self.key(b"recipient", recipient.limit_key().as_bytes());
            hits.push((
                window.try_hit(key, now).map_err(exceeded("recipient"))?,
                now,
            ));
        }
        if let (Some(window), Some(ip)) = (&self.ip, ip) {
            let key = self.key(b"ip", ip_limit_key(ip).as_bytes());
            match window.try_hit(key, now) {
                Ok(log) => hits.push((log, now)),
                Err(retry_after) => {
                    // Refused sends do not count: take back the recipient's hit.
                    Admission(Taken::Memory(hits)).give_back_in_memory();
                    return Err(exceeded("ip")(retry_after));
                }
            }
        }
        Ok(Admission(if hits.is_empty() {
            Taken::Nothing
        } else {
            Taken::Memory(hits)
        }))
    }
}

impl MemoryLimits {
    /// Count this send now, or refuse it without counting it.
    pub fn admit_now(
        &self,
        recipient: &Recipient,
        ip: Option<IpAddr>,
    ) -> Result<Admission, LimitExceeded> {
        self.admit_at(recipient, ip, Instant::now())
    }
}

impl SendLimiter for MemoryLimits {
    fn admit<'a>(
        &'a self,
        recipient: &'a Recipient,
        ip: Option<IpAddr>,
    ) -> BoxFuture<'a, Result<Admission, Refusal>> {
        let admitted = self.admit_now(recipient, ip).map_err(Refusal::from);
        Box::pin(std::future::ready(admitted))
    }

    fn give_back(&self, admission: Admission) -> BoxFuture<'_, ()> {
        // Only this limiter's own (memory) admissions reach it.
        let _ = admission.give_back_in_memory();
        Box::pin(std::future::ready(()))
    }
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

/// Too many sends in flight and waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many sends in flight; retry shortly")]
pub struct Overloaded;

/// At most `max_in_flight` SES calls at once; up to `max_waiting` more wait at most
/// `max_wait` for a slot; the rest are refused at once.
pub struct SendGate {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    max_wait: Duration,
    max_in_flight: usize,
}

/// A slot for one SES call; released on drop.
pub struct SendSlot {
    _permit: OwnedSemaphorePermit,
}

impl SendGate {
    pub fn new(max_in_flight: usize, max_waiting: usize, max_wait: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_in_flight.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting,
            max_wait,
            max_in_flight: max_in_flight.max(1),
        }
    }

    pub async fn enter(&self) -> Result<SendSlot, Overloaded> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(SendSlot { _permit: permit });
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(Overloaded);
        }
        let acquired =
            tokio::time::timeout(self.max_wait, self.permits.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        match acquired {
            Ok(Ok(permit)) => Ok(SendSlot { _permit: permit }),
            _ => Err(Overloaded),
        }
    }

    /// SES calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight - self.permits.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(s: &str) -> Rate {
        s.parse().unwrap()
    }

    #[test]
    fn rates_parse_from_count_per_seconds() {
        assert_eq!(
            rate("10/600"),
            Rate {
                count: 10,
                window: Duration::from_secs(600)
            }
        );
        assert!(rate("0").is_disabled());
        assert!(rate("0/600").is_disabled());
        for bad in ["10", "ten/600", "10/", "/600", "10/600s", "-1/5"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
        assert_eq!(rate("10/600").to_string(), "10/600");
    }

    #[test]
    fn the_recipient_limit_counts_case_insensitively_in_a_rolling_window() {
        let limits = MemoryLimits::new(rate("3/600"), rate("0"));
        let start = Instant::now();
        let lower = Recipient::parse("user@example.com").unwrap();
        let upper = Recipient::parse("USER@Example.com").unwrap();
        for (i, who) in [&lower, &upper, &lower].into_iter().enumerate() {
            limits
                .admit_at(who, None, start + Duration::from_secs(i as u64 * 100))
                .unwrap();
        }
        let refused = limits
            .admit_at(&upper, None, start + Duration::from_secs(300))
            .unwrap_err();
        assert_eq!(refused.limit, "recipient");
        assert_eq!(
            refused.retry_after,
            Duration::from_secs(300),
            "until the first send leaves the window"
        );
        // A refused send is not counted: the window frees up on schedule.
        limits
            .admit_at(&lower, None, start + Duration::from_secs(600))
            .unwrap();
        let other = Recipient::parse("other@example.com").unwrap();
        limits
            .admit_at(&other, None, start + Duration::from_secs(300))
            .unwrap();
    }

    #[test]
    fn the_ip_limit_is_separate_and_a_refusal_there_does_not_use_up_the_recipient() {
        let limits = MemoryLimits::new(rate("2/600"), rate("1/600"));
        let now = Instant::now();
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let a = Recipient::parse("a@example.com").unwrap();
        limits.admit_at(&a, Some(ip), now).unwrap();
        let refused = limits
            .admit_at(&a, Some(ip), now + Duration::from_secs(1))
            .unwrap_err();
        assert_eq!(refused.limit, "ip");
        assert_eq!(refused.retry_after, Duration::from_secs(599));
        // The recipient still has one send left.
        limits
            .admit_at(
                &a,
                Some("198.51.100.1".parse().unwrap()),
                now + Duration::from_secs(2),
            )
            .unwrap();
        limits
            .admit_at(&a, None, now + Duration::from_secs(3))
            .unwrap_err();
    }

    #[test]
    fn spellings_of_one_mailbox_share_a_recipient_window() {
        let limits = MemoryLimits::new(rate("1/600"), rate("0"));
        limits
            .admit_now(&Recipient::parse("victim@example.org").unwrap(), None)
            .unwrap();
        for spelling in [
            r#""victim"@example.org"#,
            r#""vic\tim"@example.org"#,
            "victim+1@example.org",
            "Victim+codes@EXAMPLE.org",
            r#""victim+x"@Example.Org"#,
        ] {
            let recipient = Recipient::parse(spelling).unwrap();
            assert_eq!(recipient.as_str(), spelling, "sent to as given");
            assert_eq!(
                limits.admit_now(&recipient, None).unwrap_err().limit,
                "recipient",
                "{spelling}"
            );
        }
        limits
            .admit_now(&Recipient::parse("victim2@example.org").unwrap(), None)
            .unwrap();
    }

    #[test]
    fn ip_keys_are_canonical() {
        let key = |s: &str| ip_limit_key(s.parse().unwrap());
        assert_eq!(key("::ffff:203.0.113.7"), key("203.0.113.7"));
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("2001:db8:1:2::1"), "2001:db8:1:2::/64");
        assert_ne!(key("203.0.113.7"), key("203.0.113.8"));
    }

    #[test]
    fn disabled_limits_admit_everything() {
        let limits = MemoryLimits::new(rate("0"), rate("0"));
        let a = Recipient::parse("a@example.com").unwrap();
        for _ in 0..1000 {
            limits
                .admit_now(&a, Some("203.0.113.7".parse().unwrap()))
                .unwrap();
        }
    }

    #[test]
    fn recipients_are_not_kept_in_clear() {
        let limits = MemoryLimits::new(rate("5/600"), rate("0"));
        let a = Recipient::parse("secret.person@example.com").unwrap();
        limits.admit_now(&a, None).unwrap();
        let window = limits.recipient.as_ref().unwrap();
        for (key, _) in window.hits.iter() {
            assert!(!String::from_utf8_lossy(key.as_ref()).contains("secret.person"));
        }
    }

    #[tokio::test]
    async fn the_gate_queues_briefly_then_refuses() {
        let gate = SendGate::new(1, 1, Duration::from_millis(50));
        let first = gate.enter().await.unwrap();
        assert_eq!(gate.in_flight(), 1);
        assert_eq!(
            gate.enter().await.err(),
            Some(Overloaded),
            "waited 50 ms, still full"
        );
        drop(first);
        assert!(gate.enter().await.is_ok());
    }
}
