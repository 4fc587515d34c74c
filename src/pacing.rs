//! Pacing: sends leave at no more than the SES account's maximum send rate. A send
//! over the rate waits its turn, up to a bound, instead of being throttled by SES;
//! past the bound it is refused with the time to retry. One slot every `1/rate`
//! seconds (GCRA with no burst beyond one send): per process, or in Redis for all
//! replicas.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::mailer::BoxFuture;

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
    /// The delay until this send's turn (the turn is taken), or a refusal when that
    /// delay would exceed `max_wait` (nothing is taken).
    fn reserve(
        &self,
        rate: f64,
        max_wait: Duration,
    ) -> BoxFuture<'_, Result<Duration, PaceRefusal>>;
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

/// Turns handed out by this process.
#[derive(Default)]
pub struct MemoryPacer {
    /// The theoretical arrival time of the next send.
    next: Mutex<Option<Instant>>,
}

impl MemoryPacer {
    pub fn new() -> Self {
        Self::default()
    }

    fn reserve_at(
        &self,
        now: Instant,
        rate: f64,
        max_wait: Duration,
    ) -> Result<Duration, PaceExceeded> {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let turn = next.map_or(now, |t| t.max(now));
        let wait = turn - now;
        if wait > max_wait {
            return Err(PaceExceeded {
                retry_after: wait - max_wait,
            });
        }
        *next = Some(turn + interval(rate));
        Ok(wait)
    }
}

impl SendPacer for MemoryPacer {
    fn reserve(
        &self,
        rate: f64,
        max_wait: Duration,
    ) -> BoxFuture<'_, Result<Duration, PaceRefusal>> {
        let reserved = self
            .reserve_at(Instant::now(), rate, max_wait)
            .map_err(PaceRefusal::Exceeded);
        Box::pin(std::future::ready(reserved))
    }
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
    use super::*;

    #[test]
    fn turns_are_spaced_by_the_interval_and_refused_past_the_wait_bound() {
        let pacer = MemoryPacer::new();
        let start = Instant::now();
        let max_wait = Duration::from_millis(250);
        let waits: Vec<Duration> = (0..3)
            .map(|_| pacer.reserve_at(start, 10.0, max_wait).unwrap())
            .collect();
        assert_eq!(
            waits,
            [
                Duration::ZERO,
                Duration::from_millis(100),
                Duration::from_millis(200)
            ]
        );
        let refused = pacer.reserve_at(start, 10.0, max_wait).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_millis(50));
        // A refusal takes no turn: later, turns resume on schedule.
        let later = start + Duration::from_millis(300);
        assert_eq!(
            pacer.reserve_at(later, 10.0, max_wait).unwrap(),
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
        let pacer = MemoryPacer::new();
        let now = Instant::now();
        let max_wait = Duration::from_secs(2);
        assert_eq!(
            pacer.reserve_at(now, 1e-30, max_wait).unwrap(),
            Duration::ZERO
        );
        let refused = pacer.reserve_at(now, 1e-30, max_wait).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(998));
    }
}
