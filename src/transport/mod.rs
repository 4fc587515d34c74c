//! The transport seam: the core hands a rendered email to a [`Mailer`] and gets a
//! message id or a [`SendError`] back. SES and the dev outbox implement it.

pub mod outbox;
pub mod ses;

use std::future::Future;
use std::pin::Pin;

use crate::address::{Mailbox, Recipient};
use crate::connector::{ConfigurationSetName, IdentityArn, Region, StaticCredentials, UsageType};
use crate::template::RenderedEmail;

/// A boxed future, so that mailers can be held as `Arc<dyn Mailer>`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The SES account an email is sent from.
#[derive(Debug, Clone)]
pub struct Account {
    pub region: Region,
    /// `None`: the AWS default credential chain.
    pub credentials: Option<StaticCredentials>,
}

/// Everything a transport needs to send one email.
#[derive(Debug, Clone)]
pub struct OutgoingEmail {
    pub account: Account,
    pub to: Recipient,
    pub from: Option<Mailbox>,
    pub reply_to: Option<Mailbox>,
    pub from_identity_arn: Option<IdentityArn>,
    pub feedback_forwarding_address: Option<Mailbox>,
    pub feedback_forwarding_identity_arn: Option<IdentityArn>,
    pub configuration_set_name: Option<ConfigurationSetName>,
    pub usage_type: UsageType,
    pub content: RenderedEmail,
}

/// Why a transport did not send; each maps to one API error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// SES throttled us (after retries).
    #[error("SES throttled the request: {message}")]
    Throttled { message: String },
    /// Sending quota exhausted, sending paused or account suspended.
    #[error("SES refused to send ({code}): {message}")]
    QuotaExhausted { code: String, message: String },
    /// SES rejected this message; its reason is for the caller.
    #[error("SES rejected the message ({code}): {message}")]
    Rejected { code: String, message: String },
    /// No answer within the operation timeout; SES may or may not have sent.
    #[error("SES did not answer in time")]
    Timeout,
    /// SES could not be reached, or answered with a server error, after retries.
    #[error("SES is unreachable: {detail}")]
    Unreachable { detail: String },
    /// No AWS credentials anywhere: the config has no keys and the default chain
    /// found none. An operator's error, not an outage.
    #[error("no AWS credentials: {detail}")]
    NoCredentials { detail: String },
    /// A fault on our side; the detail is logged, not returned.
    #[error("internal error: {detail}")]
    Internal { detail: String },
}

/// What SES says of an account (`GetAccount`).
#[derive(Debug, Clone, PartialEq)]
pub struct AccountFacts {
    /// Emails per second.
    pub max_send_rate: f64,
    pub max_24_hour_send: f64,
    pub sent_last_24_hours: f64,
    pub sending_enabled: bool,
    /// `false`: the account is in the SES sandbox.
    pub production_access_enabled: bool,
    /// `HEALTHY`, `PROBATION` or `SHUTDOWN`.
    pub enforcement_status: Option<String>,
}

/// Sends rendered emails.
pub trait Mailer: Send + Sync {
    /// Send one email; returns the transport's message id.
    fn send(&self, email: OutgoingEmail) -> BoxFuture<'_, Result<String, SendError>>;

    /// What the transport knows of the sending account; `None` when it has no
    /// account (the outbox).
    fn account_facts<'a>(
        &'a self,
        _account: &'a Account,
    ) -> BoxFuture<'a, Result<Option<AccountFacts>, String>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    /// What SES would report at once about this send, for transports that imitate
    /// it (the outbox's mailbox simulator); `None` for real sends.
    fn simulated_feedback(
        &self,
        _message_id: &str,
        _to: &Recipient,
    ) -> Option<crate::feedback::Notification> {
        None
    }

    /// SES's account-level suppression list; `None` when the transport has none.
    fn suppression_list(&self) -> Option<&dyn crate::feedback::SuppressionList> {
        None
    }

    /// The account questions the online doctor asks; `None` when the transport
    /// does not reach SES (the outbox).
    fn probe(&self) -> Option<&dyn crate::doctor::AccountProbe> {
        None
    }
}
