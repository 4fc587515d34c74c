//! The feedback queue: long-polls the SQS queue that SES notifications reach through
//! SNS, records each in the delivery log, then deletes it. A message that is not a
//! usable notification is counted, logged with its SQS id and deleted; one that
//! could not be recorded where every replica reads it stays on the queue, and SQS
//! hands it out again after its visibility timeout. SQS errors back off and retry. Trust comes from the queue's access policy: only what SES
//! (through SNS) may write to it is read. The only module besides `ses` that speaks
//! AWS.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::Client;

use crate::feedback::{self, DeliveryLog, Recorded, Unusable};
use crate::telemetry::names;

/// Longest SQS long poll.
const WAIT_SECONDS: i32 = 20;
/// Longest pause after SQS errors.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Poll `queue_url` until the task is dropped (the service stopping).
pub async fn poll(client: Client, queue_url: String, log: Arc<dyn DeliveryLog>) {
    tracing::info!(queue = %queue_url, "reading SES feedback from SQS");
    let mut backoff = Duration::from_millis(500);
    loop {
        let received = client
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(WAIT_SECONDS)
            .send()
            .await;
        let messages = match received {
            Ok(output) => {
                backoff = Duration::from_millis(500);
                output.messages.unwrap_or_default()
            }
            Err(error) => {
                tracing::warn!(
                    error = %aws_sdk_sqs::error::DisplayErrorContext(&error),
                    retry_in_ms = backoff.as_millis() as u64,
                    "cannot read the SES feedback queue"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        for message in messages {
            let id = message.message_id().unwrap_or("?").to_owned();
            if !handle(&*log, &id, message.body().unwrap_or_default()).await {
                continue;
            }
            if let Some(receipt) = message.receipt_handle() {
                if let Err(error) = client
                    .delete_message()
                    .queue_url(&queue_url)
                    .receipt_handle(receipt)
                    .send()
                    .await
                {
                    // It comes back after its visibility timeout; recording is idempotent.
                    tracing::warn!(sqs_message_id = %id, error = %aws_sdk_sqs::error::DisplayErrorContext(&error), "cannot delete a feedback message");
                }
            }
        }
    }
}

/// Record one queue message; `true` when it is done with and may be deleted:
/// recorded, or of no use whatever is tried again.
pub async fn handle(log: &dyn DeliveryLog, sqs_message_id: &str, body: &str) -> bool {
    match feedback::parse(body) {
        Ok(notification) => {
            let event = notification.event.kind.as_str();
            match log.record(notification).await {
                Recorded::Known {
                    usage_type,
                    ignored,
                } => {
                    metrics::counter!(names::FEEDBACK_EVENTS, "event" => event, "usage_type" => usage_type.as_str())
                        .increment(1);
                    ignored_recipients(sqs_message_id, ignored);
                }
                Recorded::UnknownMessage => {
                    metrics::counter!(names::FEEDBACK_UNUSED, "outcome" => "unknown_message")
                        .increment(1);
                    tracing::info!(
                        sqs_message_id,
                        "SES feedback for a message this service did not send; deleted"
                    );
                }
                Recorded::OtherRecipients { ignored } => {
                    metrics::counter!(names::FEEDBACK_UNUSED, "outcome" => "other_recipients")
                        .increment(1);
                    ignored_recipients(sqs_message_id, ignored);
                }
                Recorded::NotRecorded => {
                    metrics::counter!(names::FEEDBACK_UNUSED, "outcome" => "not_recorded")
                        .increment(1);
                    tracing::warn!(
                        sqs_message_id,
                        "SES feedback could not be recorded; left on the queue for another try"
                    );
                    return false;
                }
            }
        }
        Err(Unusable::Ignored(kind)) => {
            metrics::counter!(names::FEEDBACK_UNUSED, "outcome" => "ignored").increment(1);
            tracing::debug!(sqs_message_id, kind, "SES event not tracked; deleted");
        }
        Err(why) => {
            metrics::counter!(names::FEEDBACK_UNUSED, "outcome" => "malformed").increment(1);
            tracing::warn!(sqs_message_id, reason = %why, "a feedback queue message is not an SES notification; deleted");
        }
    }
    true
}

/// Count recipients a notification named that its send was not made to.
fn ignored_recipients(sqs_message_id: &str, ignored: usize) {
    if ignored > 0 {
        metrics::counter!(names::FEEDBACK_IGNORED_RECIPIENTS).increment(ignored as u64);
        tracing::warn!(
            sqs_message_id,
            ignored,
            "SES feedback named recipients its send was not made to; they were left alone"
        );
    }
}
