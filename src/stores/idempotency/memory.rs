//! Idempotency records in this process's memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::{Answer, Completed, IdempotencyError, IdempotencyStore, Weigh, RETENTION};
use crate::transport::BoxFuture;

struct Entry<T> {
    fingerprint: [u8; 32],
    /// `None` while the first request's work is in flight.
    answer: watch::Receiver<Option<T>>,
    /// Bytes held, known once the answer is in.
    weight: usize,
}

/// In-memory store: kept answers bounded in bytes and expiring after
/// [`RETENTION`]; the keys in flight apart from them, so that no amount of kept
/// answers can evict a claim whose work is still running (its duplicate would run
/// the work again). Keys in flight are bounded by the sends in flight.
pub struct MemoryIdempotencyStore<T: Clone + Weigh + Send + Sync + 'static> {
    entries: moka::sync::Cache<String, Arc<Entry<T>>>,
    in_flight: Arc<Mutex<HashMap<String, Arc<Entry<T>>>>>,
}

/// What an entry costs besides its key and answer.
const ENTRY_OVERHEAD: usize = 160;

impl<T: Clone + Weigh + Send + Sync + 'static> MemoryIdempotencyStore<T> {
    /// A store holding at most `max_bytes` of keys and answers.
    pub fn new(max_bytes: u64) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|key: &String, entry: &Arc<Entry<T>>| {
                    u32::try_from(key.len() + entry.weight + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
                })
                .time_to_live(RETENTION)
                .build(),
            in_flight: Arc::default(),
        }
    }

    /// Entries held now (for tests and metrics).
    pub fn entry_count(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    /// Bytes held now, as weighed (for tests and metrics).
    pub fn weighted_size(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }
}

fn lock<T>(map: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    map.lock().unwrap_or_else(|e| e.into_inner())
}

impl<T: Clone + Weigh + Send + Sync + 'static> IdempotencyStore<T> for MemoryIdempotencyStore<T> {
    fn execute<'a>(
        &'a self,
        key: String,
        fingerprint: [u8; 32],
        work: BoxFuture<'static, Completed<T>>,
    ) -> BoxFuture<'a, Result<Answer<T>, IdempotencyError>> {
        Box::pin(async move {
            // Under the lock a key is either in flight, kept, or claimed now: two
            // duplicates cannot both claim it.
            let (entry, first) = {
                let mut in_flight = lock(&self.in_flight);
                if let Some(entry) = in_flight.get(&key) {
                    (entry.clone(), false)
                } else if let Some(entry) = self.entries.get(&key) {
                    (entry, false)
                } else {
                    let (answer_tx, answer_rx) = watch::channel(None);
                    let claim = Arc::new(Entry {
                        fingerprint,
                        answer: answer_rx,
                        weight: 0,
                    });
                    in_flight.insert(key.clone(), claim.clone());
                    // The work and the storing of its answer run in their own task,
                    // so a caller that hangs up cancels neither: a duplicate waiting
                    // for this answer gets it instead of starting a second send.
                    let entries = self.entries.clone();
                    let in_flight = self.in_flight.clone();
                    let key = key.clone();
                    tokio::spawn(async move {
                        let completed = work.await;
                        {
                            let mut in_flight = lock(&in_flight);
                            if completed.keep {
                                let (_, answer) = watch::channel(Some(completed.value.clone()));
                                let done = Arc::new(Entry {
                                    fingerprint,
                                    answer,
                                    weight: completed.value.weight(),
                                });
                                entries.insert(key.clone(), done);
                            }
                            in_flight.remove(&key);
                        }
                        let _ = answer_tx.send(Some(completed.value));
                    });
                    (claim, true)
                }
            };
            if !first && entry.fingerprint != fingerprint {
                return Err(IdempotencyError::KeyReused);
            }
            let mut answer = entry.answer.clone();
            let value = answer
                .wait_for(Option::is_some)
                .await
                .map(|value| value.clone())
                .ok()
                .flatten();
            // The work's task ended without an answer (it panicked): forget the key.
            let Some(value) = value else {
                let mut in_flight = lock(&self.in_flight);
                if in_flight
                    .get(&key)
                    .is_some_and(|current| Arc::ptr_eq(current, &entry))
                {
                    in_flight.remove(&key);
                }
                return Err(IdempotencyError::Lost);
            };
            Ok(Answer {
                value,
                replayed: !first,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    impl Weigh for &'static str {
        fn weight(&self) -> usize {
            self.len()
        }
    }

    impl Weigh for String {
        fn weight(&self) -> usize {
            self.len()
        }
    }

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
        assert_eq!(reused, Err(IdempotencyError::KeyReused));
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
    async fn memory_is_bounded_in_bytes() {
        let store = MemoryIdempotencyStore::new(100_000);
        for i in 0..50 {
            store
                .execute(
                    format!("k{i}"),
                    [1; 32],
                    Box::pin(async {
                        Completed {
                            value: "x".repeat(20_000),
                            keep: true,
                        }
                    }),
                )
                .await
                .unwrap();
        }
        assert!(store.weighted_size() <= 100_000);
        assert!(store.entry_count() <= 5);
    }

    #[tokio::test]
    async fn a_caller_that_hangs_up_neither_cancels_the_work_nor_lets_a_duplicate_run_it_again() {
        let store = Arc::new(MemoryIdempotencyStore::new(100_000));
        let calls = Arc::new(AtomicUsize::new(0));
        let first = {
            let store = store.clone();
            let work = work(&calls, "first", true);
            tokio::spawn(async move { store.execute("k".into(), [1; 32], work).await })
        };
        // Hang up once the work has begun.
        while calls.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        first.abort();
        let duplicate = store
            .execute("k".into(), [1; 32], work(&calls, "second", true))
            .await
            .unwrap();
        assert_eq!(
            duplicate,
            Answer {
                value: "first",
                replayed: true
            }
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn kept_answers_never_evict_a_key_in_flight() {
        let store = Arc::new(MemoryIdempotencyStore::new(20_000));
        let calls = Arc::new(AtomicUsize::new(0));
        let slow = {
            let calls = calls.clone();
            Box::pin(async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                Completed {
                    value: "x".to_owned(),
                    keep: true,
                }
            })
        };
        let first = {
            let store = store.clone();
            tokio::spawn(async move { store.execute("k".into(), [1; 32], slow).await })
        };
        while calls.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Far more kept answers than the store holds, read often so that they
        // look more valuable than the claim.
        for round in 0..3 {
            for i in 0..200 {
                let key = format!("filler-{i}");
                let filler = Box::pin(async move {
                    Completed {
                        value: format!("{round}").repeat(500),
                        keep: true,
                    }
                });
                store.execute(key, [2; 32], filler).await.unwrap();
            }
        }
        let again = Box::pin(async {
            Completed {
                value: "a second send".to_owned(),
                keep: true,
            }
        });
        let duplicate = store.execute("k".into(), [1; 32], again).await.unwrap();
        assert_eq!(duplicate.value, "x", "the duplicate waited for the first");
        assert!(duplicate.replayed);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        first.await.unwrap().unwrap();
    }
}
