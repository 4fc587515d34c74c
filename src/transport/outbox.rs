//! The dev transport: keeps the last emails in memory instead of sending them.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::address::Recipient;
use crate::feedback::{Event, Notification, Status};
use crate::transport::{BoxFuture, Mailer, OutgoingEmail, SendError};

/// How many emails the outbox keeps.
pub const OUTBOX_CAPACITY: usize = 200;

/// One email as the outbox shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboxEmail {
    pub message_id: String,
    pub sent_at: String,
    pub to: String,
    pub from: Option<String>,
    pub reply_to: Option<String>,
    pub usage_type: String,
    pub subject: String,
    pub html: Option<String>,
    pub text: String,
}

/// In-memory mailer that keeps the newest [`OUTBOX_CAPACITY`] emails.
#[derive(Debug, Default)]
pub struct Outbox {
    emails: Mutex<VecDeque<OutboxEmail>>,
}

impl Outbox {
    pub fn new() -> Self {
        Self::default()
    }

    /// Newest first.
    pub fn list(&self) -> Vec<OutboxEmail> {
        let emails = self.emails.lock().unwrap_or_else(|e| e.into_inner());
        emails.iter().rev().cloned().collect()
    }

    pub fn get(&self, message_id: &str) -> Option<OutboxEmail> {
        let emails = self.emails.lock().unwrap_or_else(|e| e.into_inner());
        emails.iter().find(|e| e.message_id == message_id).cloned()
    }

    fn push(&self, email: OutboxEmail) {
        let mut emails = self.emails.lock().unwrap_or_else(|e| e.into_inner());
        if emails.len() == OUTBOX_CAPACITY {
            emails.pop_front();
        }
        emails.push_back(email);
    }
}

impl Mailer for Outbox {
    fn send(&self, email: OutgoingEmail) -> BoxFuture<'_, Result<String, SendError>> {
        Box::pin(async move {
            let message_id = format!("outbox-{}", uuid::Uuid::new_v4());
            let sent_at = OffsetDateTime::now_utc()
                .format(&Rfc3339)
                .unwrap_or_default();
            self.push(OutboxEmail {
                message_id: message_id.clone(),
                sent_at,
                to: email.to.as_str().to_owned(),
                from: email.from.as_ref().map(|m| m.as_str().to_owned()),
                reply_to: email.reply_to.as_ref().map(|m| m.as_str().to_owned()),
                usage_type: email.usage_type.as_str().to_owned(),
                subject: email.content.subject,
                html: email.content.html,
                text: email.content.text,
            });
            Ok(message_id)
        })
    }

    /// SES's mailbox simulator, imitated: `success@`, `bounce@`, `complaint@` and
    /// `suppressionlist@simulator.amazonses.com` get the event SES would report.
    fn simulated_feedback(&self, message_id: &str, to: &Recipient) -> Option<Notification> {
        let (local, domain) = to.as_str().rsplit_once('@')?;
        if !domain.eq_ignore_ascii_case("simulator.amazonses.com") {
            return None;
        }
        let local = local
            .split('+')
            .next()
            .unwrap_or(local)
            .to_ascii_lowercase();
        let mut event = Event {
            kind: Status::Delivered,
            at: crate::feedback::now(),
            bounce_type: None,
            bounce_sub_type: None,
            diagnostic_code: None,
            feedback_type: None,
            reason: None,
        };
        match local.as_str() {
            "success" => {}
            "bounce" => {
                event.kind = Status::Bounced;
                event.bounce_type = Some("Permanent".into());
                event.bounce_sub_type = Some("General".into());
                event.diagnostic_code =
                    Some("smtp; 550 5.1.1 user unknown (mailbox simulator)".into());
            }
            "suppressionlist" => {
                event.kind = Status::Bounced;
                event.bounce_type = Some("Permanent".into());
                event.bounce_sub_type = Some("OnAccountSuppressionList".into());
                event.diagnostic_code =
                    Some("Amazon SES did not send the message to this address because it is on the suppression list for your account (mailbox simulator)".into());
            }
            "complaint" => {
                event.kind = Status::Complained;
                event.feedback_type = Some("abuse".into());
            }
            _ => return None,
        }
        Some(Notification {
            message_id: message_id.to_owned(),
            recipients: vec![to.as_str().to_owned()],
            event,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::{Region, UsageType};
    use crate::template::RenderedEmail;
    use crate::transport::Account;

    fn email(subject: &str) -> OutgoingEmail {
        OutgoingEmail {
            account: Account {
                region: Region::parse("us-east-1").unwrap(),
                credentials: None,
            },
            to: Recipient::parse("user@example.com").unwrap(),
            from: None,
            reply_to: None,
            from_identity_arn: None,
            feedback_forwarding_address: None,
            feedback_forwarding_identity_arn: None,
            configuration_set_name: None,
            usage_type: UsageType::SignIn,
            content: RenderedEmail {
                subject: subject.to_owned(),
                html: None,
                text: "t".to_owned(),
            },
        }
    }

    #[tokio::test]
    async fn the_outbox_keeps_the_newest_emails_first_up_to_its_capacity() {
        let outbox = Outbox::new();
        for i in 0..OUTBOX_CAPACITY + 5 {
            outbox.send(email(&i.to_string())).await.unwrap();
        }
        let list = outbox.list();
        assert_eq!(list.len(), OUTBOX_CAPACITY);
        assert_eq!(list[0].subject, (OUTBOX_CAPACITY + 4).to_string());
        assert_eq!(list[OUTBOX_CAPACITY - 1].subject, "5");
        assert_eq!(
            outbox.get(&list[3].message_id).unwrap().subject,
            list[3].subject
        );
    }
}
