//! The delivery log in Redis.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::address::{suppression_key, Recipient};
use crate::connector::UsageType;
use crate::feedback::{
    self, add_event, DeliveryLog, Event, MemoryDeliveryLog, MessageRecord, Notification, Reader,
    Recorded, Status, Suppression, SuppressionChange,
};
use crate::stores::redis_link::{RedisState, StateError};
use crate::telemetry::names;
use crate::transport::BoxFuture;

/// How long a suppression is kept in Redis (every key has a TTL).
const SUPPRESSION_RETENTION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Delete `KEYS[1]` only while it still holds `ARGV[1]`.
const DELETE_IF_SAME: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

/// A send as Redis keeps it for a week, in few bytes: what the status answer needs
/// besides the id (the key is derived from the id, which the reader brings), with
/// keyed digests of its recipient and of the send token that made it (never the
/// values themselves).
#[derive(Serialize, Deserialize)]
struct StoredSend {
    #[serde(rename = "u")]
    usage_type: UsageType,
    /// Masked, as in the logs.
    #[serde(rename = "r")]
    recipient: String,
    #[serde(rename = "t")]
    sent_at: String,
    /// Digest of the recipient's suppression key.
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    to: Option<String>,
    /// Digest of the sending token.
    #[serde(rename = "b", default, skip_serializing_if = "Option::is_none")]
    by: Option<String>,
}

impl StoredSend {
    fn new(record: &MessageRecord, to: String, by: Option<String>) -> Self {
        Self {
            usage_type: record.usage_type,
            recipient: record.recipient.clone(),
            sent_at: record.sent_at.clone(),
            to: Some(to),
            by,
        }
    }

    /// The record of message `id`, before its events.
    fn into_record(self, id: &str) -> MessageRecord {
        MessageRecord {
            message_id: id.to_owned(),
            usage_type: self.usage_type,
            recipient: self.recipient,
            sent_at: self.sent_at,
            status: Status::Sent,
            events: Vec::new(),
        }
    }
}

/// Sends and their feedback in Redis, shared by replicas: `message:<id>` (the send),
/// `events:<id>` (a list of the latest events; duplicates dropped when read) and
/// `suppressed:<digest of the mailbox's suppression key>`. When Redis cannot be
/// reached, this replica's memory log; sends made meanwhile are written to Redis
/// once it is back.
pub struct RedisDeliveryLog {
    state: Arc<RedisState>,
    fallback: MemoryDeliveryLog,
    backlog: Arc<Backlog>,
}

/// Sends made while Redis could not take their record, to write there once it is
/// back (so that feedback read by any replica finds them); the oldest are dropped
/// past [`MAX_BACKLOG`].
#[derive(Default)]
struct Backlog(std::sync::Mutex<std::collections::VecDeque<Unshared>>);

/// A send kept for [`Backlog`].
struct Unshared {
    record: MessageRecord,
    recipient: String,
    sender: Option<[u8; 32]>,
}

/// Sends a replica keeps to write to Redis once it is back (about 300 bytes each).
const MAX_BACKLOG: usize = 10_000;

impl Backlog {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<Unshared>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, send: Unshared) {
        let mut sends = self.lock();
        if sends.len() >= MAX_BACKLOG {
            sends.pop_front();
            metrics::counter!(names::DELIVERY_BACKLOG_DROPPED).increment(1);
        }
        sends.push_back(send);
    }
}

/// Each time Redis is back, write the sends made while it was not; stops with the log.
async fn share_backlog(state: std::sync::Weak<RedisState>, backlog: std::sync::Weak<Backlog>) {
    let Some(mut health) = state.upgrade().map(|s| s.health()) else {
        return;
    };
    loop {
        if health.wait_for(|degraded| !*degraded).await.is_err() {
            return;
        }
        let (Some(state), Some(backlog)) = (state.upgrade(), backlog.upgrade()) else {
            return;
        };
        loop {
            let Some(send) = backlog.lock().pop_front() else {
                break;
            };
            if store_send(&state, &send.record, &send.recipient, send.sender)
                .await
                .is_err()
            {
                // Lost Redis again: keep it for the next time it is back.
                backlog.lock().push_front(send);
                break;
            }
        }
        drop((state, backlog));
        if health.changed().await.is_err() {
            return;
        }
    }
}

/// Write a send's record where every replica reads it.
async fn store_send(
    state: &RedisState,
    record: &MessageRecord,
    recipient: &str,
    sender: Option<[u8; 32]>,
) -> Result<(), StateError> {
    let key = state.digest_key(&["message"], record.message_id.as_bytes());
    let send = StoredSend::new(
        record,
        state.digest(&["recipient"], suppression_key(recipient).as_bytes()),
        sender.map(|token| state.digest(&["sender"], &token)),
    );
    let value = serde_json::to_string(&send).unwrap_or_default();
    let retention = feedback::RETENTION.as_secs();
    let (key, value) = (&key, &value);
    state
        .call("deliveries_sent", |mut c| async move {
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("EX")
                .arg(retention)
                .query_async::<()>(&mut c)
                .await
        })
        .await
}

impl RedisDeliveryLog {
    pub fn new(state: Arc<RedisState>, fallback: MemoryDeliveryLog) -> Self {
        let backlog = Arc::new(Backlog::default());
        tokio::spawn(share_backlog(
            Arc::downgrade(&state),
            Arc::downgrade(&backlog),
        ));
        Self {
            state,
            fallback,
            backlog,
        }
    }

    fn message_key(&self, id: &str) -> String {
        self.state.digest_key(&["message"], id.as_bytes())
    }

    fn events_key(&self, id: &str) -> String {
        self.state.digest_key(&["events"], id.as_bytes())
    }

    fn suppressed_key(&self, address: &str) -> String {
        self.state
            .digest_key(&["suppressed"], suppression_key(address).as_bytes())
    }

    fn digest(&self, part: &str, value: &[u8]) -> String {
        self.state.digest(&[part], value)
    }

    fn recipient_digest(&self, address: &str) -> String {
        self.digest("recipient", suppression_key(address).as_bytes())
    }

    async fn record_shared(&self, notification: &Notification) -> Result<Recorded, StateError> {
        let message_key = self.message_key(&notification.message_id);
        let stored: Option<String> = self
            .state
            .call("deliveries_get", |mut c| {
                let key = message_key.clone();
                async move { redis::cmd("GET").arg(&key).query_async(&mut c).await }
            })
            .await?;
        let Some(send) = stored.and_then(|s| serde_json::from_str::<StoredSend>(&s).ok()) else {
            return Ok(Recorded::UnknownMessage);
        };
        let (ours, ignored): (Vec<&String>, Vec<&String>) = notification
            .recipients
            .iter()
            .partition(|a| send.to.as_ref() == Some(&self.recipient_digest(a)));
        if ours.is_empty() && !ignored.is_empty() {
            return Ok(Recorded::OtherRecipients {
                ignored: ignored.len(),
            });
        }
        let event = serde_json::to_string(&notification.event).unwrap_or_default();
        let events_key = self.events_key(&notification.message_id);
        let retention = feedback::RETENTION.as_secs();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("RPUSH")
            .arg(&events_key)
            .arg(event)
            .ignore()
            .cmd("LTRIM")
            .arg(&events_key)
            .arg(-(feedback::MAX_EVENTS as isize))
            .arg(-1)
            .ignore()
            .cmd("EXPIRE")
            .arg(&events_key)
            .arg(retention)
            .ignore();
        // One recipient per send: the first of ours names the mailbox.
        if let Some(address) = ours.first() {
            let key = self.suppressed_key(address);
            match SuppressionChange::of(&notification.event) {
                SuppressionChange::Suppress(suppression) => {
                    let value = serde_json::to_string(&suppression).unwrap_or_default();
                    pipe.cmd("SET")
                        .arg(&key)
                        .arg(value)
                        .arg("EX")
                        .arg(SUPPRESSION_RETENTION.as_secs())
                        .ignore();
                }
                SuppressionChange::Lift { at } => {
                    let current: Option<String> = self
                        .state
                        .call("deliveries_suppression", |mut c| {
                            let key = &key;
                            async move { redis::cmd("GET").arg(key).query_async(&mut c).await }
                        })
                        .await?;
                    let lifted = current.as_deref().filter(|value| {
                        serde_json::from_str::<Suppression>(value)
                            .map_or(true, |s| feedback::lifts(&at, &s))
                    });
                    // Deleted only if still the suppression read: one written meanwhile
                    // (a newer bounce) stays.
                    if let Some(value) = lifted {
                        pipe.cmd("EVAL")
                            .arg(DELETE_IF_SAME)
                            .arg(1)
                            .arg(&key)
                            .arg(value)
                            .ignore();
                    }
                }
                SuppressionChange::None => {}
            }
        }
        let pipe = &pipe;
        self.state
            .call("deliveries_record", |mut c| async move {
                pipe.query_async::<()>(&mut c).await
            })
            .await?;
        Ok(Recorded::Known {
            usage_type: send.usage_type,
            ignored: ignored.len(),
        })
    }

    /// Feedback for a send Redis does not know. When it was made here while Redis
    /// was unreachable (only this replica's memory has it), its record goes to Redis
    /// first and the feedback after it, so that every replica learns of it; should
    /// that fail, the queue message stays for another try. A send nobody here knows
    /// is the memory log's to judge.
    async fn share_kept_send(&self, notification: Notification) -> Recorded {
        let kept = notification.recipients.iter().find_map(|address| {
            self.fallback
                .kept_send(&notification.message_id, address)
                .map(|kept| (address, kept))
        });
        let Some((address, (record, sender))) = kept else {
            return self.fallback.record(notification).await;
        };
        let shared = match store_send(&self.state, &record, address, sender).await {
            Ok(()) => self.record_shared(&notification).await,
            Err(error) => Err(error),
        };
        self.fallback.record(notification).await;
        match shared {
            Ok(recorded) => recorded,
            Err(error) => {
                tracing::warn!(%error, "SES feedback for a send made while Redis was unreachable could not be recorded in Redis; left on the queue");
                Recorded::NotRecorded
            }
        }
    }

    async fn message_shared(
        &self,
        id: &str,
        reader: Reader<'_>,
    ) -> Result<Option<MessageRecord>, StateError> {
        let (message_key, events_key) = (self.message_key(id), self.events_key(id));
        let (message_key, events_key) = (&message_key, &events_key);
        let (stored, events): (Option<String>, Vec<String>) = self
            .state
            .call("deliveries_read", |mut c| async move {
                redis::pipe()
                    .cmd("GET")
                    .arg(message_key)
                    .cmd("LRANGE")
                    .arg(events_key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let Some(send) = stored.and_then(|s| serde_json::from_str::<StoredSend>(&s).ok()) else {
            return Ok(None);
        };
        if let Reader::Token(token) = reader {
            if send.by.as_ref() != Some(&self.digest("sender", token)) {
                return Ok(None);
            }
        }
        let mut record = send.into_record(id);
        for event in events
            .iter()
            .filter_map(|e| serde_json::from_str::<Event>(e).ok())
        {
            add_event(&mut record.events, &event);
        }
        record.status = record.events.last().map_or(Status::Sent, |e| e.kind);
        Ok(Some(record))
    }
}

impl DeliveryLog for RedisDeliveryLog {
    fn sent(
        &self,
        record: MessageRecord,
        recipient: &Recipient,
        sender: Option<[u8; 32]>,
    ) -> BoxFuture<'_, ()> {
        let recipient = recipient.clone();
        Box::pin(async move {
            let stored = store_send(&self.state, &record, recipient.as_str(), sender).await;
            if stored.is_err() {
                // Written to Redis once it is back; meanwhile this replica knows it.
                self.backlog.push(Unshared {
                    record: MessageRecord {
                        events: Vec::new(),
                        ..record.clone()
                    },
                    recipient: recipient.as_str().to_owned(),
                    sender,
                });
            }
            // The reputation gauges are this replica's; the record is everybody's.
            self.fallback.sent(record, &recipient, sender).await;
        })
    }

    fn record(&self, notification: Notification) -> BoxFuture<'_, Recorded> {
        Box::pin(async move {
            match self.record_shared(&notification).await {
                Ok(Recorded::UnknownMessage) => self.share_kept_send(notification).await,
                Ok(recorded) => recorded,
                Err(error) => {
                    // This replica refuses the recipient meanwhile; the queue message
                    // stays, so every replica learns of it once Redis answers.
                    self.fallback.record(notification).await;
                    tracing::warn!(%error, "SES feedback could not be recorded in Redis; left on the queue");
                    Recorded::NotRecorded
                }
            }
        })
    }

    fn message<'a>(
        &'a self,
        message_id: &'a str,
        reader: Reader<'a>,
    ) -> BoxFuture<'a, Option<MessageRecord>> {
        Box::pin(async move {
            match self.message_shared(message_id, reader).await {
                Ok(record) => record,
                Err(_) => self.fallback.message(message_id, reader).await,
            }
        })
    }

    fn suppression<'a>(&'a self, recipient: &'a Recipient) -> BoxFuture<'a, Option<Suppression>> {
        Box::pin(async move {
            let key = &self.suppressed_key(recipient.as_str());
            let stored: Result<Option<String>, _> = self
                .state
                .call("deliveries_suppression", |mut c| async move {
                    redis::cmd("GET").arg(key).query_async(&mut c).await
                })
                .await;
            match stored {
                Ok(stored) => stored.and_then(|s| serde_json::from_str(&s).ok()),
                Err(_) => self.fallback.suppression(recipient).await,
            }
        })
    }

    fn lift<'a>(&'a self, recipient: &'a Recipient) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let key = &self.suppressed_key(recipient.as_str());
            let removed: Result<i64, _> = self
                .state
                .call("deliveries_lift", |mut c| async move {
                    redis::cmd("DEL").arg(key).query_async(&mut c).await
                })
                .await;
            let local = self.fallback.lift(recipient).await;
            removed.map_or(local, |n| n > 0 || local)
        })
    }
}
