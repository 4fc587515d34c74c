//! The cap on concurrent SES calls, with a short wait queue.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
