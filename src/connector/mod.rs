//! The customer's connector config: Logto's AWS SES connector fields, validated into a
//! parsed form whose values cannot be invalid.

mod document;
mod types;
mod validate;

use std::fmt;

use secrecy::SecretString;
use serde_json::Value;

pub use document::{ConnectorConfigDocument, ContentTypeName, TemplateDocument};
pub use types::{ConfigurationSetName, IdentityArn, Locale, Region, UsageType};
pub use validate::{type_name, validate, Issue, IssueCode, ValidationReport};

use crate::address::Mailbox;
use crate::template::TemplateSet;

/// What `GET /v1/config` shows instead of a secret.
pub const REDACTED: &str = "********";

/// Static credentials from the config (or the settings that override it).
#[derive(Clone)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &REDACTED)
            .finish()
    }
}

/// A validated connector config with its templates compiled.
#[derive(Debug)]
pub struct ConnectorConfig {
    /// `None`: use the AWS default credential chain.
    pub credentials: Option<StaticCredentials>,
    pub region: Region,
    pub email_address: Option<Mailbox>,
    pub email_address_identity_arn: Option<IdentityArn>,
    pub feedback_forwarding_email_address: Option<Mailbox>,
    pub feedback_forwarding_email_address_identity_arn: Option<IdentityArn>,
    pub configuration_set_name: Option<ConfigurationSetName>,
    pub reply_to: Option<Mailbox>,
    pub templates: TemplateSet,
    /// Warnings found while loading, kept for test sends and reloads.
    pub warnings: Vec<Issue>,
    raw: RawConfig,
}

/// The config as given; its `Debug` hides the secret.
struct RawConfig(Value);

impl fmt::Debug for RawConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", redact(&self.0))
    }
}

impl ConnectorConfig {
    /// Validate `value`; on success the config, else the report listing every problem.
    pub fn load(value: Value) -> Result<Self, ValidationReport> {
        validate::load(value)
    }

    /// The config as given, with every secret replaced by [`REDACTED`].
    pub fn redacted(&self) -> Value {
        redact(&self.raw.0)
    }
}

/// Replace the secret fields of a raw config value.
pub fn redact(raw: &Value) -> Value {
    let mut value = raw.clone();
    if let Some(object) = value.as_object_mut() {
        if let Some(secret) = object.get_mut("accessKeySecret") {
            *secret = Value::String(REDACTED.to_owned());
        }
    }
    value
}
