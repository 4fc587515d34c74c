//! The delivery log in Redis.

use std::sync::Arc;
use std::time::Duration;

use super::{RedisState, StateError};
use crate::address::Recipient;
use crate::feedback::{
    self, DeliveryLog, Event, MemoryDeliveryLog, MessageRecord, Notification, Recorded, Status,
    Suppression, SuppressionReason,
};
use crate::mailer::BoxFuture;

/// How long a suppression is kept in Redis (every key has a TTL).
const SUPPRESSION_RETENTION: Duration = Duration::from_secs(365 * 24 * 3600);
/// Events kept per message.
const MAX_EVENTS: isize = 50;

/// Sends and their feedback in Redis, shared by replicas: `message:<id>` (the send),
/// `events:<id>` (a list of events; duplicates dropped when read) and
/// `suppressed:<digest of the canonical mailbox>`. When Redis cannot be reached,
/// this replica's memory log.
pub struct RedisDeliveryLog {
    state: Arc<RedisState>,
    fallback: MemoryDeliveryLog,
}

impl RedisDeliveryLog {
    pub fn new(state: Arc<RedisState>, fallback: MemoryDeliveryLog) -> Self {
        Self { state, fallback }
    }

    fn message_key(&self, id: &str) -> String {
        self.state.digest_key(&["message"], id.as_bytes())
    }

    fn events_key(&self, id: &str) -> String {
        self.state.digest_key(&["events"], id.as_bytes())
    }

    fn suppressed_key(&self, address: &str) -> String {
        let canonical = Recipient::parse(address)
            .map(|r| r.limit_key())
            .unwrap_or_else(|_| address.to_ascii_lowercase());
        self.state.digest_key(&["suppressed"], canonical.as_bytes())
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
        let Some(record) = stored.and_then(|s| serde_json::from_str::<MessageRecord>(&s).ok())
        else {
            return Ok(Recorded::UnknownMessage);
        };
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
            .arg(-MAX_EVENTS)
            .arg(-1)
            .ignore()
            .cmd("EXPIRE")
            .arg(&events_key)
            .arg(retention)
            .ignore();
        let kind = notification.event.kind;
        let permanent = notification.event.bounce_type.as_deref() == Some("Permanent");
        for address in &notification.recipients {
            let key = self.suppressed_key(address);
            let suppression = match (kind, permanent) {
                (Status::Bounced, true) => Some(SuppressionReason::Bounce),
                (Status::Complained, _) => Some(SuppressionReason::Complaint),
                (Status::Delivered, _) => {
                    pipe.cmd("DEL").arg(&key).ignore();
                    None
                }
                _ => None,
            };
            if let Some(reason) = suppression {
                let value = serde_json::to_string(&Suppression {
                    reason,
                    since: notification.event.at.clone(),
                })
                .unwrap_or_default();
                pipe.cmd("SET")
                    .arg(&key)
                    .arg(value)
                    .arg("EX")
                    .arg(SUPPRESSION_RETENTION.as_secs())
                    .ignore();
            }
        }
        let pipe = &pipe;
        self.state
            .call("deliveries_record", |mut c| async move {
                pipe.query_async::<()>(&mut c).await
            })
            .await?;
        Ok(Recorded::Known(record.usage_type))
    }

    async fn message_shared(&self, id: &str) -> Result<Option<MessageRecord>, StateError> {
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
        let Some(mut record) = stored.and_then(|s| serde_json::from_str::<MessageRecord>(&s).ok())
        else {
            return Ok(None);
        };
        for event in events
            .iter()
            .filter_map(|e| serde_json::from_str::<Event>(e).ok())
        {
            // SES may deliver a notification twice: keep one of each.
            if !record.events.contains(&event) {
                record.events.push(event);
            }
        }
        record.events.sort_by(|a, b| a.at.cmp(&b.at));
        record.status = record.events.last().map_or(Status::Sent, |e| e.kind);
        Ok(Some(record))
    }
}

impl DeliveryLog for RedisDeliveryLog {
    fn sent(&self, record: MessageRecord, recipient: &Recipient) -> BoxFuture<'_, ()> {
        let recipient = recipient.clone();
        Box::pin(async move {
            let key = self.message_key(&record.message_id);
            let value = serde_json::to_string(&record).unwrap_or_default();
            let retention = feedback::RETENTION.as_secs();
            let (key, value) = (&key, &value);
            let stored = self
                .state
                .call("deliveries_sent", |mut c| async move {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(value)
                        .arg("EX")
                        .arg(retention)
                        .query_async::<()>(&mut c)
                        .await
                })
                .await;
            // The reputation gauges are this replica's; the record is everybody's.
            self.fallback.sent(record, &recipient).await;
            if let Err(error) = stored {
                tracing::debug!(%error, "a send was remembered in this replica only");
            }
        })
    }

    fn record(&self, notification: Notification) -> BoxFuture<'_, Recorded> {
        Box::pin(async move {
            match self.record_shared(&notification).await {
                Ok(recorded) => recorded,
                Err(_) => self.fallback.record(notification).await,
            }
        })
    }

    fn message<'a>(&'a self, message_id: &'a str) -> BoxFuture<'a, Option<MessageRecord>> {
        Box::pin(async move {
            match self.message_shared(message_id).await {
                Ok(record) => record,
                Err(_) => self.fallback.message(message_id).await,
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
