//! Delivery feedback: what SES learned after a send (delivered, bounced, complained,
//! rejected, delayed), read from its notifications, kept per message id, and turned
//! into suppression of recipients that cannot receive mail. No AWS here: the SQS
//! poller hands message bodies to [`parse`].

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use serde_json::Value;
use sha2::Sha256;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::address::{mask_addresses, suppression_key, Recipient};
use crate::connector::UsageType;
use crate::transport::BoxFuture;

/// What became of a send, as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = DeliveryStatus)]
pub enum Status {
    Sent,
    Delivered,
    Bounced,
    Complained,
    Rejected,
    Delayed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Sent => "sent",
            Status::Delivered => "delivered",
            Status::Bounced => "bounced",
            Status::Complained => "complained",
            Status::Rejected => "rejected",
            Status::Delayed => "delayed",
        }
    }
}

/// One event SES reported about a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = DeliveryEvent)]
pub struct Event {
    /// `delivered`, `bounced`, `complained`, `rejected`, `delayed`.
    #[serde(rename = "type")]
    pub kind: Status,
    /// When SES says it happened (RFC 3339), else when it arrived here.
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounce_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounce_sub_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnostic_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A notification parsed: which message, which recipients, what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub message_id: String,
    /// The recipients the event is about (all of the message's when SES names none).
    pub recipients: Vec<String>,
    pub event: Event,
}

/// Why a queue message was not a usable notification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not an SES notification: {0}")]
    NotSes(String),
    /// An SES event this service does not track (Send, Open, Click, …).
    #[error("an SES {0} event, not tracked")]
    Ignored(String),
}

/// Recipients read from one notification (SES sends to at most 50 per message).
const MAX_RECIPIENTS: usize = 50;
/// Longest diagnostic code kept, in bytes (SES passes on what the remote server said).
pub const MAX_DIAGNOSTIC_BYTES: usize = 1024;
/// Longest other text kept from a notification, in bytes.
pub const MAX_TEXT_BYTES: usize = 256;
/// Events kept per message: the latest ones.
pub const MAX_EVENTS: usize = 20;

/// `text` cut to at most `max` bytes, on a character boundary.
fn bounded(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// SES's free text, as kept: addresses masked, then bounded.
fn ses_text(text: &str, max: usize) -> String {
    // Bound before masking too, so a huge text costs no more than a short one.
    let head = bounded(text.chars().take(max).collect(), max * 2);
    bounded(mask_addresses(&head).into_owned(), max)
}

/// Parse one queue message body: an SNS notification wrapping the SES JSON, or the
/// SES JSON itself (raw message delivery); SES's event-publishing format
/// (`eventType`) or its identity-notification format (`notificationType`).
pub fn parse(body: &str) -> Result<Notification, Unusable> {
    let value: Value = serde_json::from_str(body).map_err(|e| Unusable::NotJson(e.to_string()))?;
    let ses = match value.get("Type").and_then(Value::as_str) {
        Some("Notification") => {
            let message = value
                .get("Message")
                .and_then(Value::as_str)
                .ok_or_else(|| Unusable::NotSes("an SNS notification without a Message".into()))?;
            serde_json::from_str::<Value>(message)
                .map_err(|e| Unusable::NotJson(format!("the SNS Message: {e}")))?
        }
        Some(other) => return Err(Unusable::NotSes(format!("an SNS {other} message"))),
        None => value,
    };
    let kind = ses
        .get("eventType")
        .or_else(|| ses.get("notificationType"))
        .and_then(Value::as_str)
        .ok_or_else(|| Unusable::NotSes("no eventType or notificationType".into()))?;
    let mail = ses
        .get("mail")
        .ok_or_else(|| Unusable::NotSes("no mail object".into()))?;
    let message_id = mail
        .get("messageId")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty() && id.len() <= 200)
        .ok_or_else(|| Unusable::NotSes("no mail.messageId".into()))?
        .to_owned();
    let destination: Vec<String> = strings(mail.get("destination"));
    let text = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_str)
            .map(|t| ses_text(t, MAX_TEXT_BYTES))
    };
    let diagnostic = |v: &Value| {
        v.get("diagnosticCode")
            .and_then(Value::as_str)
            .map(|t| ses_text(t, MAX_DIAGNOSTIC_BYTES))
    };
    let addresses = |list: Option<&Value>| -> Vec<String> {
        list.and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|r| r.get("emailAddress").and_then(Value::as_str))
                    .filter(|a| a.len() <= MAX_TEXT_BYTES)
                    .take(MAX_RECIPIENTS)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let section = |key: &str| ses.get(key).cloned().unwrap_or(Value::Null);
    let mut event = Event {
        kind: Status::Sent,
        at: String::new(),
        bounce_type: None,
        bounce_sub_type: None,
        diagnostic_code: None,
        feedback_type: None,
        reason: None,
    };
    let (recipients, at) = match kind {
        "Delivery" => {
            let delivery = section("delivery");
            event.kind = Status::Delivered;
            (
                strings(delivery.get("recipients")),
                text(&delivery, "timestamp"),
            )
        }
        "Bounce" => {
            let bounce = section("bounce");
            event.kind = Status::Bounced;
            event.bounce_type = text(&bounce, "bounceType");
            event.bounce_sub_type = text(&bounce, "bounceSubType");
            event.diagnostic_code = bounce
                .get("bouncedRecipients")
                .and_then(Value::as_array)
                .and_then(|r| r.iter().find_map(diagnostic));
            (
                addresses(bounce.get("bouncedRecipients")),
                text(&bounce, "timestamp"),
            )
        }
        "Complaint" => {
            let complaint = section("complaint");
            event.kind = Status::Complained;
            event.feedback_type = text(&complaint, "complaintFeedbackType");
            (
                addresses(complaint.get("complainedRecipients")),
                text(&complaint, "timestamp"),
            )
        }
        "Reject" => {
            event.kind = Status::Rejected;
            event.reason = text(&section("reject"), "reason");
            (Vec::new(), None)
        }
        "DeliveryDelay" => {
            let delay = section("deliveryDelay");
            event.kind = Status::Delayed;
            event.reason = text(&delay, "delayType");
            event.diagnostic_code = delay
                .get("delayedRecipients")
                .and_then(Value::as_array)
                .and_then(|r| r.iter().find_map(diagnostic));
            (
                addresses(delay.get("delayedRecipients")),
                text(&delay, "timestamp"),
            )
        }
        "RenderingFailure" => {
            event.kind = Status::Rejected;
            event.reason = text(&section("failure"), "errorMessage");
            (Vec::new(), None)
        }
        other => return Err(Unusable::Ignored(other.chars().take(40).collect())),
    };
    event.at = at
        .filter(|t| OffsetDateTime::parse(t, &Rfc3339).is_ok())
        .unwrap_or_else(now);
    Ok(Notification {
        message_id,
        recipients: if recipients.is_empty() {
            destination
        } else {
            recipients
        },
        event,
    })
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .filter(|a| a.len() <= MAX_TEXT_BYTES)
                .take(MAX_RECIPIENTS)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Now, RFC 3339.
pub fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// What the service knows of one message it sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageRecord {
    pub message_id: String,
    pub usage_type: UsageType,
    /// Masked, as in the logs (`u***@example.com`).
    pub recipient: String,
    pub sent_at: String,
    pub status: Status,
    pub events: Vec<Event>,
}

/// Why a recipient is suppressed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Suppression {
    /// `bounce` (permanent) or `complaint`.
    pub reason: SuppressionReason,
    /// When the bounce or complaint happened (RFC 3339).
    pub since: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionReason {
    Bounce,
    Complaint,
}

impl SuppressionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionReason::Bounce => "permanent bounce",
            SuppressionReason::Complaint => "complaint",
        }
    }
}

/// SES's account-level suppression list, asked before a send and cleared by an
/// admin; the SES transport implements it.
pub trait SuppressionList: Send + Sync {
    /// `Ok(None)`: not listed.
    fn lookup<'a>(
        &'a self,
        account: &'a crate::transport::Account,
        address: &'a str,
    ) -> BoxFuture<'a, Result<Option<Suppression>, String>>;
    /// Remove an address; `Ok(false)` when it was not listed.
    fn remove<'a>(
        &'a self,
        account: &'a crate::transport::Account,
        address: &'a str,
    ) -> BoxFuture<'a, Result<bool, String>>;
}

/// What recording a notification did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Tied to a send of ours, of this usage type; `ignored` other recipients named
    /// in the notification were not the send's and were left alone.
    Known {
        usage_type: UsageType,
        ignored: usize,
    },
    /// A message id this service did not send (or no longer remembers).
    UnknownMessage,
    /// A send of ours, but the notification names only recipients it was not sent
    /// to (`ignored` of them): forged or misrouted, nothing recorded.
    OtherRecipients { ignored: usize },
    /// The store every replica reads could not be written: leave the queue message
    /// for SQS to hand out again.
    NotRecorded,
}

/// Who asks for a message's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader<'a> {
    /// An admin (or dev mode without tokens): any message.
    Admin,
    /// A send token, by the digest the auth layer keeps: only the sends it made.
    Token(&'a [u8; 32]),
}

/// Where sends and their feedback are kept: memory, or a shared store later.
pub trait DeliveryLog: Send + Sync {
    /// Remember a send to `recipient`, made by the send token `sender` (`None`: no
    /// token, as in dev mode, the CLI or an admin's test email).
    fn sent(
        &self,
        record: MessageRecord,
        recipient: &Recipient,
        sender: Option<[u8; 32]>,
    ) -> BoxFuture<'_, ()>;
    /// Add what SES reported about the send's own recipient; suppress or lift it
    /// accordingly. Other recipients a notification names are ignored.
    fn record(&self, notification: Notification) -> BoxFuture<'_, Recorded>;
    /// The send and its events, if `reader` may see it.
    fn message<'a>(
        &'a self,
        message_id: &'a str,
        reader: Reader<'a>,
    ) -> BoxFuture<'a, Option<MessageRecord>>;
    /// The recipient's suppression, if its last event was a permanent bounce or a complaint.
    fn suppression<'a>(&'a self, recipient: &'a Recipient) -> BoxFuture<'a, Option<Suppression>>;
    /// Lift a suppression; `true` when there was one.
    fn lift<'a>(&'a self, recipient: &'a Recipient) -> BoxFuture<'a, bool>;
}

/// How long sends are remembered.
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The rates at which SES puts an account under review.
const BOUNCE_REVIEW_RATE: f64 = 0.05;
const COMPLAINT_REVIEW_RATE: f64 = 0.001;
/// Sends in the last 24 h before a rate is worth a warning.
const MIN_SENDS_FOR_RATES: u64 = 20;

/// Sends, permanent bounces and complaints per hour over the last 24 hours: the
/// account's reputation as SES judges it, in `/metrics`.
#[derive(Default)]
pub struct Reputation {
    /// `(unix hour, sent, bounced, complained)`, oldest first.
    hours: std::sync::Mutex<std::collections::VecDeque<(i64, u64, u64, u64)>>,
    warned_bounces: std::sync::atomic::AtomicBool,
    warned_complaints: std::sync::atomic::AtomicBool,
}

impl Reputation {
    fn count(&self, sent: u64, bounced: u64, complained: u64) {
        let hour = OffsetDateTime::now_utc().unix_timestamp() / 3600;
        let (sent_24h, bounced_24h, complained_24h) = {
            let mut hours = self.hours.lock().unwrap_or_else(|e| e.into_inner());
            while hours.front().is_some_and(|(h, ..)| *h <= hour - 24) {
                hours.pop_front();
            }
            match hours.back_mut() {
                Some(last) if last.0 == hour => {
                    last.1 += sent;
                    last.2 += bounced;
                    last.3 += complained;
                }
                _ => hours.push_back((hour, sent, bounced, complained)),
            }
            hours
                .iter()
                .fold((0, 0, 0), |(s, b, c), h| (s + h.1, b + h.2, c + h.3))
        };
        let rate = |n: u64| {
            if sent_24h == 0 {
                0.0
            } else {
                n as f64 / sent_24h as f64
            }
        };
        let (bounce_rate, complaint_rate) = (rate(bounced_24h), rate(complained_24h));
        metrics::gauge!(crate::telemetry::names::BOUNCE_RATE).set(bounce_rate);
        metrics::gauge!(crate::telemetry::names::COMPLAINT_RATE).set(complaint_rate);
        let enough = sent_24h >= MIN_SENDS_FOR_RATES;
        warn_once(
            &self.warned_bounces,
            enough && bounce_rate >= BOUNCE_REVIEW_RATE / 2.0,
            || {
                tracing::warn!(bounce_rate, sends = sent_24h, "the permanent bounce rate of the last 24 h is past half of the 5 % at which SES puts an account under review")
            },
        );
        warn_once(
            &self.warned_complaints,
            enough && complaint_rate >= COMPLAINT_REVIEW_RATE / 2.0,
            || {
                tracing::warn!(complaint_rate, sends = sent_24h, "the complaint rate of the last 24 h is past half of the 0.1 % at which SES puts an account under review")
            },
        );
    }
}

/// Log when `over` becomes true; again only after it was false in between.
fn warn_once(flag: &std::sync::atomic::AtomicBool, over: bool, log: impl FnOnce()) {
    if flag.swap(over, std::sync::atomic::Ordering::Relaxed) != over && over {
        log();
    }
}

/// A send as the memory log keeps it: the record, and who may see and change it.
struct Kept {
    record: MessageRecord,
    /// Salted digest of the recipient's suppression key.
    recipient: [u8; 32],
    sender: Option<[u8; 32]>,
}

/// Bytes a kept send takes in RSS, roughly: its strings and a measured overhead.
fn weight(kept: &Kept) -> u32 {
    let record = &kept.record;
    let events: usize = record
        .events
        .iter()
        .map(|e| {
            64 + e.at.len()
                + [
                    &e.bounce_type,
                    &e.bounce_sub_type,
                    &e.diagnostic_code,
                    &e.feedback_type,
                    &e.reason,
                ]
                .iter()
                .map(|t| t.as_ref().map_or(0, String::len))
                .sum::<usize>()
        })
        .sum();
    // A send with no events measured 838 bytes of RSS (100 000 of them, system
    // allocator): the entry, its moka node and the key, besides the strings.
    let bytes = 704 + record.message_id.len() * 2 + record.recipient.len() + events;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// In-memory delivery log: bounded in bytes, sends kept 7 days.
pub struct MemoryDeliveryLog {
    messages: moka::sync::Cache<String, Arc<std::sync::Mutex<Kept>>>,
    suppressed: moka::sync::Cache<[u8; 32], Suppression>,
    /// Per-process key of the recipient digests.
    mac: Hmac<Sha256>,
    reputation: Reputation,
}

/// Suppressions kept in memory at most (a few dozen bytes each).
const MAX_SUPPRESSIONS: u64 = 100_000;

impl MemoryDeliveryLog {
    /// A log holding about `max_bytes` of sends and their events.
    pub fn new(max_bytes: u64) -> Self {
        let salt = [
            uuid::Uuid::new_v4().into_bytes(),
            uuid::Uuid::new_v4().into_bytes(),
        ]
        .concat();
        Self {
            messages: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_, kept: &Arc<std::sync::Mutex<Kept>>| {
                    weight(&kept.lock().unwrap_or_else(|e| e.into_inner()))
                })
                .time_to_live(RETENTION)
                .build(),
            suppressed: moka::sync::Cache::builder()
                .max_capacity(MAX_SUPPRESSIONS)
                .build(),
            mac: Hmac::<Sha256>::new_from_slice(&salt).expect("HMAC takes a key of any length"),
            reputation: Reputation::default(),
        }
    }

    /// The key a mailbox is known by here: its suppression key, digested with this
    /// process's salt.
    fn recipient_key(&self, address: &str) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(suppression_key(address).as_bytes());
        mac.finalize().into_bytes().into()
    }
}

impl MemoryDeliveryLog {
    /// The send `message_id` kept here, when `address` is its recipient: its record
    /// (without events) and the token that sent it.
    pub(crate) fn kept_send(
        &self,
        message_id: &str,
        address: &str,
    ) -> Option<(MessageRecord, Option<[u8; 32]>)> {
        let entry = self.messages.get(message_id)?;
        let kept = entry.lock().unwrap_or_else(|e| e.into_inner());
        (self.recipient_key(address) == kept.recipient).then(|| {
            let record = MessageRecord {
                events: Vec::new(),
                status: Status::Sent,
                ..kept.record.clone()
            };
            (record, kept.sender)
        })
    }
}

/// A message's status: its latest event's, as SES reports them in order.
fn status_of(events: &[Event]) -> Status {
    events.last().map_or(Status::Sent, |e| e.kind)
}

/// Add `event` to `events` unless it is there already (SES may deliver a
/// notification twice), in time order, keeping the latest [`MAX_EVENTS`].
/// `true` when it was new.
pub(crate) fn add_event(events: &mut Vec<Event>, event: &Event) -> bool {
    if events.contains(event) {
        return false;
    }
    events.push(event.clone());
    events.sort_by(|a, b| a.at.cmp(&b.at));
    if events.len() > MAX_EVENTS {
        events.drain(..events.len() - MAX_EVENTS);
    }
    true
}

/// What an event does to its recipient's suppression.
pub(crate) enum SuppressionChange {
    Suppress(Suppression),
    /// A delivery at `at`: it lifts a suppression from before it, not a later one
    /// (SQS may hand out an old delivery after a newer bounce).
    Lift {
        at: String,
    },
    None,
}

/// Whether a delivery at `delivered` lifts `suppression`: only when it happened
/// after it (times compared as times, not text). An unreadable suppression time
/// does not hold a delivery back; an unreadable delivery time lifts nothing.
pub(crate) fn lifts(delivered: &str, suppression: &Suppression) -> bool {
    let time = |t: &str| OffsetDateTime::parse(t, &Rfc3339).ok();
    match (time(delivered), time(&suppression.since)) {
        (Some(delivered), Some(since)) => delivered > since,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

impl SuppressionChange {
    pub(crate) fn of(event: &Event) -> Self {
        let reason = match (event.kind, event.bounce_type.as_deref()) {
            (Status::Bounced, Some("Permanent")) => SuppressionReason::Bounce,
            (Status::Complained, _) => SuppressionReason::Complaint,
            // A later delivery shows the mailbox works again.
            (Status::Delivered, _) => {
                return SuppressionChange::Lift {
                    at: event.at.clone(),
                }
            }
            _ => return SuppressionChange::None,
        };
        SuppressionChange::Suppress(Suppression {
            reason,
            since: event.at.clone(),
        })
    }
}

impl DeliveryLog for MemoryDeliveryLog {
    fn sent(
        &self,
        record: MessageRecord,
        recipient: &Recipient,
        sender: Option<[u8; 32]>,
    ) -> BoxFuture<'_, ()> {
        self.reputation.count(1, 0, 0);
        let kept = Kept {
            recipient: self.recipient_key(recipient.as_str()),
            sender,
            record,
        };
        self.messages.insert(
            kept.record.message_id.clone(),
            Arc::new(std::sync::Mutex::new(kept)),
        );
        Box::pin(std::future::ready(()))
    }

    fn record(&self, notification: Notification) -> BoxFuture<'_, Recorded> {
        let Some(entry) = self.messages.get(&notification.message_id) else {
            return Box::pin(std::future::ready(Recorded::UnknownMessage));
        };
        let event = &notification.event;
        let (usage_type, new, ours, ignored) = {
            let mut kept = entry.lock().unwrap_or_else(|e| e.into_inner());
            let (ours, ignored): (Vec<&String>, Vec<&String>) = notification
                .recipients
                .iter()
                .partition(|a| self.recipient_key(a) == kept.recipient);
            if ours.is_empty() && !ignored.is_empty() {
                return Box::pin(std::future::ready(Recorded::OtherRecipients {
                    ignored: ignored.len(),
                }));
            }
            let new = add_event(&mut kept.record.events, event);
            kept.record.status = status_of(&kept.record.events);
            (kept.record.usage_type, new, ours.len(), ignored.len())
        };
        if new {
            // Weighed again, now with its new event.
            self.messages
                .insert(notification.message_id.clone(), entry.clone());
            let hard_bounce =
                event.kind == Status::Bounced && event.bounce_type.as_deref() == Some("Permanent");
            let complaint = event.kind == Status::Complained;
            if hard_bounce || complaint {
                self.reputation
                    .count(0, u64::from(hard_bounce), u64::from(complaint));
            }
        }
        if ours > 0 {
            let key = entry.lock().unwrap_or_else(|e| e.into_inner()).recipient;
            match SuppressionChange::of(event) {
                SuppressionChange::Suppress(suppression) => {
                    self.suppressed.insert(key, suppression)
                }
                SuppressionChange::Lift { at } => {
                    if self.suppressed.get(&key).is_some_and(|s| lifts(&at, &s)) {
                        self.suppressed.invalidate(&key);
                    }
                }
                SuppressionChange::None => {}
            }
        }
        Box::pin(std::future::ready(Recorded::Known {
            usage_type,
            ignored,
        }))
    }

    fn message<'a>(
        &'a self,
        message_id: &'a str,
        reader: Reader<'a>,
    ) -> BoxFuture<'a, Option<MessageRecord>> {
        let record = self.messages.get(message_id).and_then(|kept| {
            let kept = kept.lock().unwrap_or_else(|e| e.into_inner());
            let allowed = match reader {
                Reader::Admin => true,
                Reader::Token(token) => kept.sender.as_ref() == Some(token),
            };
            allowed.then(|| kept.record.clone())
        });
        Box::pin(std::future::ready(record))
    }

    fn suppression<'a>(&'a self, recipient: &'a Recipient) -> BoxFuture<'a, Option<Suppression>> {
        let found = self.suppressed.get(&self.recipient_key(recipient.as_str()));
        Box::pin(std::future::ready(found))
    }

    fn lift<'a>(&'a self, recipient: &'a Recipient) -> BoxFuture<'a, bool> {
        let key = self.recipient_key(recipient.as_str());
        let was = self.suppressed.remove(&key).is_some();
        Box::pin(std::future::ready(was))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sns(message: Value) -> String {
        json!({"Type": "Notification", "MessageId": "sns-1", "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses", "Message": message.to_string()}).to_string()
    }

    #[test]
    fn both_formats_wrapped_and_raw_are_read() {
        let event_publishing = json!({
            "eventType": "Bounce",
            "mail": {"messageId": "m-1", "destination": ["a@example.com"], "timestamp": "2026-11-29T10:00:00.000Z"},
            "bounce": {"bounceType": "Permanent", "bounceSubType": "General", "timestamp": "2026-11-29T10:00:01.000Z",
                       "bouncedRecipients": [{"emailAddress": "a@example.com", "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]}
        });
        let identity_notification = json!({
            "notificationType": "Complaint",
            "mail": {"messageId": "m-2", "destination": ["b@example.com"]},
            "complaint": {"complaintFeedbackType": "abuse", "timestamp": "2026-11-29T10:05:00.000Z",
                          "complainedRecipients": [{"emailAddress": "b@example.com"}]}
        });
        for body in [sns(event_publishing.clone()), event_publishing.to_string()] {
            let n = parse(&body).unwrap();
            assert_eq!(n.message_id, "m-1");
            assert_eq!(n.event.kind, Status::Bounced);
            assert_eq!(n.event.bounce_type.as_deref(), Some("Permanent"));
            assert_eq!(
                n.event.diagnostic_code.as_deref(),
                Some("smtp; 550 5.1.1 user unknown")
            );
            assert_eq!(n.recipients, ["a@example.com"]);
        }
        for body in [
            sns(identity_notification.clone()),
            identity_notification.to_string(),
        ] {
            let n = parse(&body).unwrap();
            assert_eq!(n.event.kind, Status::Complained);
            assert_eq!(n.event.feedback_type.as_deref(), Some("abuse"));
        }
    }

    #[test]
    fn ses_texts_are_masked_and_cut_on_a_character_boundary() {
        let long = format!("smtp; 550 <someone@example.org> {}", "é".repeat(2000));
        let bounce = json!({
            "eventType": "Bounce",
            "mail": {"messageId": "m-1", "destination": ["someone@example.org"]},
            "bounce": {"bounceType": "Permanent", "bounceSubType": "é".repeat(500),
                       "bouncedRecipients": [{"emailAddress": "someone@example.org", "diagnosticCode": long}]}
        });
        let event = parse(&bounce.to_string()).unwrap().event;
        let code = event.diagnostic_code.unwrap();
        assert!(code.len() <= MAX_DIAGNOSTIC_BYTES, "{}", code.len());
        assert!(code.starts_with("smtp; 550 <s***@example.org> é"), "{code}");
        assert!(event.bounce_sub_type.unwrap().len() <= MAX_TEXT_BYTES);
    }

    #[test]
    fn unusable_bodies_say_why() {
        assert!(matches!(parse("not json"), Err(Unusable::NotJson(_))));
        assert!(matches!(parse("[1]"), Err(Unusable::NotSes(_))));
        assert!(matches!(
            parse(r#"{"eventType": 3}"#),
            Err(Unusable::NotSes(_))
        ));
        assert!(matches!(
            parse(r#"{"eventType": "Open", "mail": {"messageId": "m"}}"#),
            Err(Unusable::Ignored(_))
        ));
        assert!(matches!(
            parse(r#"{"Type": "SubscriptionConfirmation"}"#),
            Err(Unusable::NotSes(_))
        ));
    }
}
