//! The rolling windows in this process's memory.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{ip_limit_key, Admission, LimitExceeded, Rate, Refusal, SendLimiter, Taken};
use crate::address::Recipient;
use crate::transport::BoxFuture;

/// Keys tracked per limiter; past this the least recently used are forgotten.
const MAX_TRACKED_KEYS: u64 = 200_000;

pub(super) type Log = Arc<Mutex<VecDeque<Instant>>>;

/// Remove one hit recorded at `at` (the latest such, should two share an instant).
pub(super) fn unhit(log: &Log, at: Instant) {
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
}
