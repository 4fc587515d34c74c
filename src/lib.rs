//! ses-connector: sends verification-code emails through Amazon SES v2, as Logto's
//! AWS SES connector does, as a standalone HTTP service.
#![forbid(unsafe_code)]

pub mod address;
pub mod app;
pub mod builtin;
pub mod connector;
pub mod doctor;
pub mod feedback;
pub mod http;
pub mod send;
pub mod sqs;
pub mod stores;
pub mod telemetry;
pub mod template;
pub mod transport;
pub mod validation;
