//! Pacing: sends leave at no more than the SES account's maximum send rate. A send
//! over the rate waits its turn, up to a bound, instead of being throttled by SES;
//! past the bound it is refused with the time to retry. One slot every `1/rate`
//! seconds (GCRA with no burst beyond one send): per process, or in Redis for all
//! replicas.

mod memory;
mod redis;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::transport::{Account, BoxFuture};

pub use self::memory::MemoryPacer;
pub use self::redis::RedisPacer;

/// Whose turns a send takes. SES's send rate is per account and region, so every
/// region and set of credentials is paced on its own: a test email to another
/// account, or another deployment on the same Redis, does not take this one's turns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PaceKey {
    region: String,
    /// The config's access key id; `None`: the AWS default credential chain.
    access_key_id: Option<String>,
}

impl PaceKey {
    /// The pace of the account an email is sent from.
    pub fn of(account: &Account) -> Self {
        Self {
            region: account.region.as_str().to_owned(),
            access_key_id: account
                .credentials
                .as_ref()
                .map(|c| c.access_key_id.clone()),
        }
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// `None` for the default credential chain.
    pub fn access_key_id(&self) -> Option<&str> {
        self.access_key_id.as_deref()
    }
}

/// A send that would wait longer than allowed for its turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaceExceeded {
    /// When a send would get a turn within the wait bound again.
    pub retry_after: Duration,
}

/// Why a send got no turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaceRefusal {
    Exceeded(PaceExceeded),
    /// The shared state that holds the pace cannot be reached, and it is required.
    StateUnavailable,
}

/// Hands out send turns at a rate.
pub trait SendPacer: Send + Sync {
    /// The delay until this send's turn under `key`'s pace (the turn is taken), or a
    /// refusal when that delay would exceed `max_wait` (nothing is taken).
    fn reserve<'a>(
        &'a self,
        key: &'a PaceKey,
        rate: f64,
        max_wait: Duration,
    ) -> BoxFuture<'a, Result<Duration, PaceRefusal>>;
}

/// The slowest pace there is: one send in 1 000 s.
pub const MIN_SEND_RATE: f64 = 0.001;
/// The fastest pace there is: one send per microsecond, Redis's clock resolution.
pub const MAX_SEND_RATE: f64 = 1_000_000.0;

/// `rate` within [`MIN_SEND_RATE`, `MAX_SEND_RATE`]; NaN as the slowest.
pub fn clamp_rate(rate: f64) -> f64 {
    if rate.is_nan() {
        MIN_SEND_RATE
    } else {
        rate.clamp(MIN_SEND_RATE, MAX_SEND_RATE)
    }
}

/// The interval between two sends at `rate` per second, for any `rate`: one out of
/// range is taken as the nearest end of it (`1/rate` of a tiny rate overflows a
/// `Duration`).
pub fn interval(rate: f64) -> Duration {
    Duration::from_secs_f64(1.0 / clamp_rate(rate))
}

/// The rate sends are paced at: a configured one, or the account's as SES reports
/// it; none (no pacing) until one is known, and none when configured as 0.
pub struct SendRate {
    configured: Option<f64>,
    /// The account's max send rate (f64 bits), 0 until known.
    learned: AtomicU64,
}

impl SendRate {
    /// `configured`: `SES_CONNECTOR_MAX_SEND_RATE` (`Some(0.0)` turns pacing off).
    pub fn new(configured: Option<f64>) -> Self {
        Self {
            configured,
            learned: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// Record the account's max send rate from SES, brought within
    /// [`MIN_SEND_RATE`, `MAX_SEND_RATE`]; none (0, negative, NaN) is ignored.
    pub fn learn(&self, rate: f64) {
        if rate > 0.0 {
            self.learned
                .store(clamp_rate(rate).to_bits(), Ordering::Relaxed);
        }
    }

    /// The rate to pace at now, if any, within [`MIN_SEND_RATE`, `MAX_SEND_RATE`].
    pub fn current(&self) -> Option<f64> {
        let rate = match self.configured {
            Some(rate) => rate,
            None => f64::from_bits(self.learned.load(Ordering::Relaxed)),
        };
        (rate > 0.0).then(|| clamp_rate(rate))
    }
}

#[cfg(test)]
mod tests {
    use super::memory::MAX_PACED_ACCOUNTS;
    use super::*;
    use tokio::time::Instant;

    fn key(region: &str, access_key_id: Option<&str>) -> PaceKey {
        PaceKey {
            region: region.to_owned(),
            access_key_id: access_key_id.map(str::to_owned),
        }
    }

    #[test]
    fn turns_are_spaced_by_the_interval_and_refused_past_the_wait_bound() {
        let key = key("us-east-1", None);
        let pacer = MemoryPacer::new();
        let start = Instant::now();
        let max_wait = Duration::from_millis(250);
        let waits: Vec<Duration> = (0..3)
            .map(|_| pacer.reserve_at(&key, start, 10.0, max_wait).unwrap())
            .collect();
        assert_eq!(
            waits,
            [
                Duration::ZERO,
                Duration::from_millis(100),
                Duration::from_millis(200)
            ]
        );
        let refused = pacer.reserve_at(&key, start, 10.0, max_wait).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_millis(50));
        // A refusal takes no turn: later, turns resume on schedule.
        let later = start + Duration::from_millis(300);
        assert_eq!(
            pacer.reserve_at(&key, later, 10.0, max_wait).unwrap(),
            Duration::ZERO
        );
    }

    #[test]
    fn the_configured_rate_wins_and_zero_turns_pacing_off() {
        let learned = SendRate::new(None);
        assert_eq!(learned.current(), None);
        learned.learn(14.0);
        assert_eq!(learned.current(), Some(14.0));
        let configured = SendRate::new(Some(5.0));
        configured.learn(14.0);
        assert_eq!(configured.current(), Some(5.0));
        let off = SendRate::new(Some(0.0));
        off.learn(14.0);
        assert_eq!(off.current(), None);
    }

    #[test]
    fn any_rate_gives_an_interval_and_learned_rates_are_brought_into_range() {
        for (rate, expected) in [
            (1.0, Duration::from_secs(1)),
            (1e-30, Duration::from_secs(1000)),
            (1e-25, Duration::from_secs(1000)),
            (0.0, Duration::from_secs(1000)),
            (-1.0, Duration::from_secs(1000)),
            (f64::NEG_INFINITY, Duration::from_secs(1000)),
            (f64::NAN, Duration::from_secs(1000)),
            (f64::MIN_POSITIVE, Duration::from_secs(1000)),
            (1e300, Duration::from_micros(1)),
            (f64::INFINITY, Duration::from_micros(1)),
        ] {
            assert_eq!(interval(rate), expected, "{rate}");
        }
        for (account_says, paced_at) in [
            (14.0, Some(14.0)),
            (1e-30, Some(MIN_SEND_RATE)),
            (1e300, Some(MAX_SEND_RATE)),
            (f64::INFINITY, Some(MAX_SEND_RATE)),
            (0.0, None),
            (-1.0, None),
            (f64::NAN, None),
        ] {
            let rate = SendRate::new(None);
            rate.learn(account_says);
            assert_eq!(rate.current(), paced_at, "{account_says}");
        }
        assert_eq!(SendRate::new(Some(1e-25)).current(), Some(MIN_SEND_RATE));
    }

    #[test]
    fn at_the_slowest_rate_a_send_gets_its_turn_and_the_next_is_refused() {
        let key = key("us-east-1", None);
        let pacer = MemoryPacer::new();
        let now = Instant::now();
        let max_wait = Duration::from_secs(2);
        assert_eq!(
            pacer.reserve_at(&key, now, 1e-30, max_wait).unwrap(),
            Duration::ZERO
        );
        let refused = pacer.reserve_at(&key, now, 1e-30, max_wait).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(998));
    }
    #[test]
    fn the_turns_kept_are_bounded_and_the_newest_are_kept() {
        // At 1/s the older turns have come when the map is full; at 0.001/s none has.
        for rate in [1.0, 0.001] {
            let pacer = MemoryPacer::new();
            let start = Instant::now();
            for i in 0..MAX_PACED_ACCOUNTS * 2 {
                let now = start + Duration::from_secs(i as u64);
                let key = key("us-east-1", Some(&format!("AKIA{i}")));
                assert_eq!(
                    pacer.reserve_at(&key, now, rate, Duration::ZERO).unwrap(),
                    Duration::ZERO,
                    "{rate}: account {i}'s first send"
                );
                assert!(
                    pacer.reserve_at(&key, now, rate, Duration::ZERO).is_err(),
                    "{rate}: account {i}'s second send"
                );
            }
            let kept = pacer.next.lock().unwrap().len();
            assert!(kept <= MAX_PACED_ACCOUNTS, "{rate}: {kept}");
        }
    }

    #[test]
    fn each_account_and_region_has_its_own_pace() {
        let pacer = MemoryPacer::new();
        let now = Instant::now();
        let accounts = [
            key("us-east-1", Some("AKIAMAIN")),
            key("us-east-1", Some("AKIAOTHER")),
            key("eu-west-1", Some("AKIAMAIN")),
            key("us-east-1", None),
        ];
        for account in &accounts {
            assert_eq!(
                pacer.reserve_at(account, now, 1.0, Duration::ZERO).unwrap(),
                Duration::ZERO,
                "{account:?}"
            );
        }
        for account in &accounts {
            assert!(pacer.reserve_at(account, now, 1.0, Duration::ZERO).is_err());
        }
    }
}
