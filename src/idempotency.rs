//! Idempotency keys: the first request with a key does the work; repeats with the same
//! body get its answer, waiting for it while it is in flight.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::mailer::BoxFuture;

/// Longest `Idempotency-Key` accepted.
pub const MAX_KEY_LEN: usize = 255;
/// How long an answer is kept for repeats.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// The same key was used with a different request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this Idempotency-Key was used with a different request")]
pub struct KeyReused;

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

/// Where answers are kept; memory now, a shared store for replicas later.
pub trait IdempotencyStore<T>: Send + Sync {
    /// Run `work` once per `key`; a repeat with the same `fingerprint` gets the
    /// first answer, one with another fingerprint gets [`KeyReused`].
    fn execute<'a>(
        &'a self,
        key: String,
        fingerprint: [u8; 32],
        work: BoxFuture<'static, Completed<T>>,
    ) -> BoxFuture<'a, Result<Answer<T>, KeyReused>>;
}

struct Entry<T> {
    fingerprint: [u8; 32],
    answer: OnceCell<T>,
}

/// In-memory store: bounded, entries expire after [`RETENTION`].
pub struct MemoryIdempotencyStore<T: Clone + Send + Sync + 'static> {
    entries: moka::future::Cache<String, Arc<Entry<T>>>,
}

impl<T: Clone + Send + Sync + 'static> MemoryIdempotencyStore<T> {
    pub fn new(max_entries: u64) -> Self {
        Self {
            entries: moka::future::Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(RETENTION)
                .build(),
        }
    }

    /// Entries held now (for tests and metrics).
    pub async fn entry_count(&self) -> u64 {
        self.entries.run_pending_tasks().await;
        self.entries.entry_count()
    }
}

impl<T: Clone + Send + Sync + 'static> IdempotencyStore<T> for MemoryIdempotencyStore<T> {
    fn execute<'a>(
        &'a self,
        key: String,
        fingerprint: [u8; 32],
        work: BoxFuture<'static, Completed<T>>,
    ) -> BoxFuture<'a, Result<Answer<T>, KeyReused>> {
        Box::pin(async move {
            let entry = self
                .entries
                .get_with(key.clone(), async {
                    Arc::new(Entry {
                        fingerprint,
                        answer: OnceCell::new(),
                    })
                })
                .await;
            if entry.fingerprint != fingerprint {
                return Err(KeyReused);
            }
            let mut ran = false;
            let value = entry
                .answer
                .get_or_init(|| async {
                    ran = true;
                    // Spawned, so a caller that hangs up does not cancel a send
                    // that others are waiting for.
                    let completed = match tokio::spawn(work).await {
                        Ok(completed) => completed,
                        Err(e) => std::panic::resume_unwind(e.into_panic()),
                    };
                    if !completed.keep {
                        self.entries.invalidate(&key).await;
                    }
                    completed.value
                })
                .await
                .clone();
            Ok(Answer {
                value,
                replayed: !ran,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn work(
        calls: &Arc<AtomicUsize>,
        value: &'static str,
        keep: bool,
    ) -> BoxFuture<'static, Completed<&'static str>> {
        let calls = calls.clone();
        Box::pin(async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Completed { value, keep }
        })
    }

    #[tokio::test]
    async fn a_repeat_gets_the_first_answer_without_running_again() {
        let store = MemoryIdempotencyStore::new(100);
        let calls = Arc::new(AtomicUsize::new(0));
        let first = store
            .execute("k".into(), [1; 32], work(&calls, "first", true))
            .await
            .unwrap();
        let second = store
            .execute("k".into(), [1; 32], work(&calls, "second", true))
            .await
            .unwrap();
        assert_eq!(
            first,
            Answer {
                value: "first",
                replayed: false
            }
        );
        assert_eq!(
            second,
            Answer {
                value: "first",
                replayed: true
            }
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_repeats_wait_for_the_one_in_flight() {
        let store = Arc::new(MemoryIdempotencyStore::new(100));
        let calls = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..5)
            .map(|_| {
                let store = store.clone();
                let work = work(&calls, "once", true);
                tokio::spawn(async move { store.execute("k".into(), [1; 32], work).await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap().value, "once");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn another_body_with_the_same_key_is_refused() {
        let store = MemoryIdempotencyStore::new(100);
        let calls = Arc::new(AtomicUsize::new(0));
        store
            .execute("k".into(), [1; 32], work(&calls, "a", true))
            .await
            .unwrap();
        let reused = store
            .execute("k".into(), [2; 32], work(&calls, "b", true))
            .await;
        assert_eq!(reused, Err(KeyReused));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn transient_answers_are_not_kept() {
        let store = MemoryIdempotencyStore::new(100);
        let calls = Arc::new(AtomicUsize::new(0));
        store
            .execute("k".into(), [1; 32], work(&calls, "throttled", false))
            .await
            .unwrap();
        let retry = store
            .execute("k".into(), [1; 32], work(&calls, "sent", true))
            .await
            .unwrap();
        assert_eq!(
            retry,
            Answer {
                value: "sent",
                replayed: false
            }
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn memory_is_bounded() {
        let store = MemoryIdempotencyStore::new(10);
        let calls = Arc::new(AtomicUsize::new(0));
        for i in 0..50 {
            store
                .execute(format!("k{i}"), [1; 32], work(&calls, "v", true))
                .await
                .unwrap();
        }
        assert!(store.entry_count().await <= 10);
    }
}
