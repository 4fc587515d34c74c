//! Loading the connector config from its source, at start and on every reload (the
//! API and SIGHUP alike): read off the async runtime within a time bound, apply the
//! credential overrides, validate, and swap it in — or keep the old one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::app::settings::{ConfigSource, Settings, Transport};
use crate::builtin;
use crate::connector::{ConnectorConfig, ValidationReport};
use crate::send::EmailService;
use crate::telemetry::names;

/// Why a config could not be (re)loaded.
#[derive(Debug)]
pub enum ReloadError {
    /// The source could not be read (in time) or is not JSON.
    Unreadable(String),
    Invalid(ValidationReport),
}

/// What asked for a reload, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Api,
    Sighup,
}

impl Trigger {
    fn label(self) -> &'static str {
        match self {
            Trigger::Api => "api",
            Trigger::Sighup => "sighup",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Trigger::Api => "API request",
            Trigger::Sighup => "SIGHUP",
        }
    }
}

/// Reads the config source the settings name.
pub struct ConfigLoader {
    source: ConfigSource,
    access_key_id: Option<String>,
    access_key_secret: Option<SecretString>,
    read_timeout: Duration,
    /// Set while a read is under way on a blocking thread, so that a source that
    /// hangs (a FIFO, a dead network mount) ties up one thread, not one per reload.
    reading: Arc<AtomicBool>,
    /// Whether a feedback poller reads SQS with the account of the config it
    /// started with.
    feedback_poller: bool,
}

/// A config swapped in, and what of it needs a restart to take effect.
#[derive(Debug)]
pub struct Reloaded {
    pub config: Arc<ConnectorConfig>,
    pub restart_needed: Option<String>,
}

/// What a reload cannot move: the feedback poller keeps the SQS client it was started
/// with, so new credentials or a new region reach it only with a restart.
const POLLER_RESTART: &str = "the config's credentials or region changed: sends use the new ones, but the feedback queue is still read with those the service started with until it is restarted";

/// Whether two configs reach AWS as the same account and region.
fn same_account(a: &ConnectorConfig, b: &ConnectorConfig) -> bool {
    let credentials = match (&a.credentials, &b.credentials) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.access_key_id == b.access_key_id
                && a.secret_access_key.expose_secret() == b.secret_access_key.expose_secret()
        }
        _ => false,
    };
    credentials && a.region == b.region
}

impl ConfigLoader {
    pub fn new(settings: &Settings) -> Self {
        Self {
            source: settings.config_source.clone(),
            access_key_id: settings.access_key_id.clone(),
            access_key_secret: settings.access_key_secret.clone(),
            read_timeout: settings.config_read_timeout,
            reading: Arc::new(AtomicBool::new(false)),
            feedback_poller: settings.feedback_queue_url.is_some()
                && settings.transport == Transport::Ses,
        }
    }

    /// Read and validate the config. The file is read, and the templates compiled,
    /// on a blocking thread: a read that does not finish within the read timeout is
    /// a failure, and the runtime's workers never wait for it.
    pub async fn load(&self) -> Result<ConnectorConfig, ReloadError> {
        if self.reading.swap(true, Ordering::SeqCst) {
            return Err(ReloadError::Unreadable(format!(
                "an earlier read of {} has not finished; the source is not answering",
                self.source.describe()
            )));
        }
        let source = self.source.clone();
        let access_key_id = self.access_key_id.clone();
        let access_key_secret = self.access_key_secret.clone();
        let reading = self.reading.clone();
        let read = tokio::task::spawn_blocking(move || {
            let value = read_source(&source);
            reading.store(false, Ordering::SeqCst);
            let mut value = value?;
            override_credentials(&mut value, access_key_id, access_key_secret.as_ref());
            ConnectorConfig::load(value).map_err(ReloadError::Invalid)
        });
        match tokio::time::timeout(self.read_timeout, read).await {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(join)) => Err(ReloadError::Unreadable(format!(
                "reading the config failed: {join}"
            ))),
            Err(_) => Err(ReloadError::Unreadable(format!(
                "reading {} did not finish within {} ms",
                self.source.describe(),
                self.read_timeout.as_millis()
            ))),
        }
    }

    /// Load the config again and swap it into `service`; on failure the old one
    /// keeps serving. Logged and counted by `trigger`.
    pub async fn reload(
        &self,
        service: &EmailService,
        trigger: Trigger,
    ) -> Result<Reloaded, ReloadError> {
        let label = trigger.label();
        match self.load().await {
            Ok(config) => {
                metrics::counter!(names::RELOADS, "outcome" => "ok", "trigger" => label)
                    .increment(1);
                tracing::info!(
                    trigger = label,
                    templates = config.templates.len(),
                    "config reloaded on {}",
                    trigger.name()
                );
                let restart_needed = (self.feedback_poller
                    && !same_account(&service.config(), &config))
                .then(|| POLLER_RESTART.to_owned());
                if let Some(restart) = &restart_needed {
                    tracing::warn!(trigger = label, "{restart}");
                }
                let config = Arc::new(config);
                service.replace_config(config.clone());
                Ok(Reloaded {
                    config,
                    restart_needed,
                })
            }
            Err(ReloadError::Invalid(report)) => {
                metrics::counter!(names::RELOADS, "outcome" => "invalid", "trigger" => label)
                    .increment(1);
                tracing::error!(
                    trigger = label,
                    errors = report.errors.len(),
                    "config reload on {} refused: the new config is invalid; the old one keeps serving",
                    trigger.name()
                );
                Err(ReloadError::Invalid(report))
            }
            Err(ReloadError::Unreadable(message)) => {
                metrics::counter!(names::RELOADS, "outcome" => "unreadable", "trigger" => label)
                    .increment(1);
                tracing::error!(
                    trigger = label,
                    %message,
                    "config reload on {} refused: the config cannot be read; the old one keeps serving",
                    trigger.name()
                );
                Err(ReloadError::Unreadable(message))
            }
        }
    }
}

/// Put `SES_CONNECTOR_ACCESS_KEY_ID` / `_SECRET` in place of the config's keys, so
/// that secrets need not sit in the config file.
pub fn override_credentials(
    value: &mut Value,
    access_key_id: Option<String>,
    access_key_secret: Option<&SecretString>,
) {
    if let Some(object) = value.as_object_mut() {
        if let Some(id) = access_key_id {
            object.insert("accessKeyId".into(), Value::String(id));
        }
        if let Some(secret) = access_key_secret {
            object.insert(
                "accessKeySecret".into(),
                Value::String(secret.expose_secret().to_owned()),
            );
        }
    }
}

impl ConfigSource {
    /// The source, for messages.
    fn describe(&self) -> String {
        match self {
            ConfigSource::File(path) => format!("config file {}", path.display()),
            ConfigSource::Inline(_) => "SES_CONNECTOR_CONFIG_JSON".to_owned(),
            ConfigSource::BuiltIn => "the built-in config".to_owned(),
        }
    }
}

fn read_source(source: &ConfigSource) -> Result<Value, ReloadError> {
    let value = match source {
        ConfigSource::BuiltIn => Ok(builtin::starter_config()),
        ConfigSource::Inline(json) => parse(json, "SES_CONNECTOR_CONFIG_JSON"),
        ConfigSource::File(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))
            .and_then(|text| parse(&text, &format!("config file {}", path.display()))),
    };
    value.map_err(ReloadError::Unreadable)
}

/// Parse JSON text; a UTF-8 byte order mark at the start (as some editors save) is
/// not part of the JSON.
pub fn parse(text: &str, what: &str) -> Result<Value, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    serde_json::from_str(text).map_err(|e| format!("{what} is not valid JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_order_mark_before_the_json_is_accepted() {
        let value = parse("\u{feff}{\"region\": \"us-east-1\"}", "test").unwrap();
        assert_eq!(value["region"], "us-east-1");
        assert!(parse("{", "test").is_err());
    }
}
