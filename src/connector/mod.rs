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
pub use validate::{type_name, validate, validate_loaded, Issue, IssueCode, ValidationReport};

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

/// Replace every field that looks like a secret, at any depth, with [`REDACTED`]:
/// `accessKeySecret`, its likely misspellings (`accessKeySercet`), and any field whose
/// name speaks of a secret, password, token, credential or private key. A config is
/// shown back to admins; a secret typed under a wrong name must not be.
pub fn redact(raw: &Value) -> Value {
    match raw {
        Value::Object(object) => Value::Object(
            object
                .iter()
                .map(|(key, value)| {
                    let value = if looks_secret(key) && !value.is_null() {
                        Value::String(REDACTED.to_owned())
                    } else {
                        redact(value)
                    };
                    (key.clone(), value)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

/// Whether a field name is, or is probably a misspelling of, a secret's.
fn looks_secret(key: &str) -> bool {
    const WORDS: &[&str] = &[
        "secret",
        "password",
        "passwd",
        "token",
        "credential",
        "privatekey",
        "private_key",
    ];
    let lower = key.to_ascii_lowercase();
    WORDS.iter().any(|w| lower.contains(w))
        || strsim::damerau_levenshtein(&lower, "accesskeysecret") <= 3
        || lower
            .as_bytes()
            .windows(6)
            .any(|w| strsim::damerau_levenshtein(&String::from_utf8_lossy(w), "secret") <= 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_masked_whatever_their_spelling_and_depth() {
        let raw = json!({
            "accessKeyId": "AKIAIOSFODNN7EXAMPLE",
            "accessKeySecret": "s1",
            "accessKeySercet": "s2",
            "AccessKeySecert": "s3",
            "acessKeySecret": "s4",
            "region": "us-east-1",
            "templates": [{"usageType": "SignIn", "smtpPassword": "s5", "nested": {"apiToken": "s6", "clientSecert": "s7"}}],
            "extra": {"deeper": [{"secret": "s8"}]}
        });
        let shown = redact(&raw);
        let text = shown.to_string();
        for secret in [
            "\"s1\"", "\"s2\"", "\"s3\"", "\"s4\"", "\"s5\"", "\"s6\"", "\"s7\"", "\"s8\"",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(shown["accessKeyId"], "AKIAIOSFODNN7EXAMPLE");
        assert_eq!(shown["region"], "us-east-1");
        assert_eq!(shown["templates"][0]["usageType"], "SignIn");
        assert_eq!(shown["accessKeySercet"], REDACTED);
    }
}
