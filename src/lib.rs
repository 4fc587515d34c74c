//! ses-connector: sends verification-code emails through Amazon SES v2, as Logto's
//! AWS SES connector does, as a standalone HTTP service.
#![forbid(unsafe_code)]

pub mod address;
pub mod builtin;
pub mod cli;
pub mod connector;
pub mod doctor;
pub mod feedback;
pub mod http;
pub mod mailer;
pub mod outbox;
pub mod reload;
pub mod send;
pub mod ses;
pub mod settings;
pub mod sqs;
pub mod startup;
pub mod stores;
pub mod telemetry;
pub mod template;
pub mod validation;
