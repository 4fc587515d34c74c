//! Send turns kept in this process's memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{interval, PaceExceeded, PaceKey, PaceRefusal, SendPacer};
use crate::transport::BoxFuture;

/// Accounts whose next turn one process keeps; past this, those whose turn has come
/// are forgotten first (forgetting them changes nothing).
pub(super) const MAX_PACED_ACCOUNTS: usize = 1024;

/// Turns handed out by this process, one pace per account.
#[derive(Default)]
pub struct MemoryPacer {
    /// The theoretical arrival time of each account's next send.
    pub(super) next: Mutex<HashMap<PaceKey, Instant>>,
}

impl MemoryPacer {
    pub fn new() -> Self {
        Self::default()
    }

    pub(super) fn reserve_at(
        &self,
        key: &PaceKey,
        now: Instant,
        rate: f64,
        max_wait: Duration,
    ) -> Result<Duration, PaceExceeded> {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let turn = next.get(key).map_or(now, |t| (*t).max(now));
        let wait = turn - now;
        if wait > max_wait {
            return Err(PaceExceeded {
                retry_after: wait - max_wait,
            });
        }
        if next.len() >= MAX_PACED_ACCOUNTS && !next.contains_key(key) {
            next.retain(|_, turn| *turn > now);
            if next.len() >= MAX_PACED_ACCOUNTS {
                // Every one still waits its turn: forget the soonest, the least lost.
                let soonest = next.iter().min_by_key(|(_, turn)| **turn);
                if let Some(soonest) = soonest.map(|(key, _)| key.clone()) {
                    next.remove(&soonest);
                }
            }
        }
        next.insert(key.clone(), turn + interval(rate));
        Ok(wait)
    }
}

impl SendPacer for MemoryPacer {
    fn reserve<'a>(
        &'a self,
        key: &'a PaceKey,
        rate: f64,
        max_wait: Duration,
    ) -> BoxFuture<'a, Result<Duration, PaceRefusal>> {
        let reserved = self
            .reserve_at(key, Instant::now(), rate, max_wait)
            .map_err(PaceRefusal::Exceeded);
        Box::pin(std::future::ready(reserved))
    }
}
