//! Process settings: flags and `SES_CONNECTOR_*` variables, validated before the
//! port is bound.

use crate::stores::redis_link::RedisSettings;
use crate::telemetry::LogFormat;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use crate::stores::limits::Rate;
use crate::transport::ses::SesOptions;

/// How long reading the config source may take (a local file takes microseconds;
/// a FIFO or a hung network mount never finishes).
pub const CONFIG_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the SES account's quota and send rate are read.
pub const QUOTA_INTERVAL: Duration = Duration::from_secs(300);

/// Shortest API token accepted: shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// `serve` flags; every one also reads an environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Connector config file (JSON, as Logto's AWS SES connector saves it).
    #[arg(long, env = "SES_CONNECTOR_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Connector config as inline JSON (instead of a file).
    #[arg(
        long,
        env = "SES_CONNECTOR_CONFIG_JSON",
        value_name = "JSON",
        hide_env_values = true
    )]
    pub config_json: Option<String>,

    /// Address to listen on [default: 0.0.0.0:8080; 127.0.0.1:8080 in dev mode].
    #[arg(long, env = "SES_CONNECTOR_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// A second address serving only /healthz, /readyz and /metrics, with its own
    /// connection cap: probes stay answerable when callers fill the main one.
    #[arg(long, env = "SES_CONNECTOR_HEALTH_LISTEN", value_name = "ADDR")]
    pub health_listen: Option<SocketAddr>,

    /// Dev mode: built-in config, loopback only, no tokens, outbox transport.
    /// Also chosen when no config is given at all.
    #[arg(long)]
    pub dev: bool,

    /// Where emails go: `ses`, or `outbox` to keep them in memory (shown at /outbox).
    #[arg(long, env = "SES_CONNECTOR_TRANSPORT", value_enum)]
    pub transport: Option<Transport>,

    /// Access key id; overrides the config's `accessKeyId`.
    #[arg(long, env = "SES_CONNECTOR_ACCESS_KEY_ID", value_name = "ID")]
    pub access_key_id: Option<String>,

    /// Secret access key; overrides the config's `accessKeySecret`.
    #[arg(
        long,
        env = "SES_CONNECTOR_ACCESS_KEY_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub access_key_secret: Option<SecretString>,

    /// Tokens allowed to send (`POST /v1/messages`), comma-separated.
    #[arg(
        long,
        env = "SES_CONNECTOR_SEND_TOKENS",
        value_name = "TOKENS",
        hide_env_values = true
    )]
    pub send_tokens: Option<SecretString>,

    /// File holding send tokens, one per line or comma-separated.
    #[arg(long, env = "SES_CONNECTOR_SEND_TOKENS_FILE", value_name = "PATH")]
    pub send_tokens_file: Option<PathBuf>,

    /// Tokens allowed to call every route, comma-separated.
    #[arg(
        long,
        env = "SES_CONNECTOR_ADMIN_TOKENS",
        value_name = "TOKENS",
        hide_env_values = true
    )]
    pub admin_tokens: Option<SecretString>,

    /// File holding admin tokens, one per line or comma-separated.
    #[arg(long, env = "SES_CONNECTOR_ADMIN_TOKENS_FILE", value_name = "PATH")]
    pub admin_tokens_file: Option<PathBuf>,

    #[command(flatten)]
    pub log: LogArgs,

    /// Sends per second at most, overriding the SES account's max send rate (read
    /// with GetAccount), 0.001 to 1000000; `0` turns pacing off.
    #[arg(long, env = "SES_CONNECTOR_MAX_SEND_RATE", value_name = "PER_SECOND")]
    pub max_send_rate: Option<f64>,

    /// Longest wait for a send's turn under the send rate before a 429, milliseconds.
    #[arg(
        long,
        env = "SES_CONNECTOR_PACING_MAX_WAIT_MS",
        default_value_t = 2000,
        value_name = "MS"
    )]
    pub pacing_max_wait_ms: u64,

    /// SQS queue URL receiving SES notifications through SNS (bounces, complaints,
    /// deliveries); read with the config's credentials and region.
    #[arg(long, env = "SES_CONNECTOR_FEEDBACK_QUEUE_URL", value_name = "URL")]
    pub feedback_queue_url: Option<String>,

    /// Recipients whose last event was a permanent bounce or a complaint: `enforce`
    /// refuses the send (422), `report` sends and warns, `off` does not look.
    #[arg(
        long,
        env = "SES_CONNECTOR_SUPPRESSION",
        value_enum,
        default_value = "enforce"
    )]
    pub suppression: crate::send::SuppressionPolicy,

    /// Also ask SES's account-level suppression list before a send (GetSuppressedDestination;
    /// answers cached for 5 minutes; a failed lookup never blocks a send).
    #[arg(
        long,
        env = "SES_CONNECTOR_SES_SUPPRESSION_CHECK",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub ses_suppression_check: bool,

    /// Redis (or Valkey) for state shared by replicas: `redis://` or `rediss://`
    /// URL. Unset: limits and idempotency keys live in this process's memory.
    #[arg(
        long,
        env = "SES_CONNECTOR_REDIS_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub redis_url: Option<SecretString>,

    /// File holding the Redis URL (it can carry a password).
    #[arg(long, env = "SES_CONNECTOR_REDIS_URL_FILE", value_name = "PATH")]
    pub redis_url_file: Option<PathBuf>,

    /// Prefix of every Redis key the service writes.
    #[arg(
        long,
        env = "SES_CONNECTOR_REDIS_PREFIX",
        default_value = "ses-connector:",
        value_name = "PREFIX"
    )]
    pub redis_prefix: String,

    /// `true`: when Redis cannot be reached, refuse sends (503 state_unavailable)
    /// instead of falling back to this process's memory.
    #[arg(
        long,
        env = "SES_CONNECTOR_REDIS_REQUIRED",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub redis_required: bool,

    /// Secret that keys the digests of recipients, IPs and idempotency keys in
    /// Redis (HMAC-SHA256); the same value on every replica, at least 32
    /// characters. Required with Redis.
    #[arg(
        long,
        env = "SES_CONNECTOR_STATE_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub state_secret: Option<SecretString>,

    /// File holding the state secret.
    #[arg(long, env = "SES_CONNECTOR_STATE_SECRET_FILE", value_name = "PATH")]
    pub state_secret_file: Option<PathBuf>,

    /// Longest wait for one Redis call before it counts as failed, milliseconds.
    #[arg(
        long,
        env = "SES_CONNECTOR_REDIS_TIMEOUT_MS",
        default_value_t = 100,
        value_name = "MS"
    )]
    pub redis_timeout_ms: u64,

    /// SES connect timeout, seconds.
    #[arg(
        long,
        env = "SES_CONNECTOR_SES_CONNECT_TIMEOUT_SECONDS",
        default_value_t = 3.0,
        value_name = "SECONDS"
    )]
    pub ses_connect_timeout_seconds: f64,

    /// SES timeout for one attempt, seconds.
    #[arg(
        long,
        env = "SES_CONNECTOR_SES_ATTEMPT_TIMEOUT_SECONDS",
        default_value_t = 5.0,
        value_name = "SECONDS"
    )]
    pub ses_attempt_timeout_seconds: f64,

    /// SES timeout for a whole send, retries included, seconds.
    #[arg(
        long,
        env = "SES_CONNECTOR_SES_TIMEOUT_SECONDS",
        default_value_t = 10.0,
        value_name = "SECONDS"
    )]
    pub ses_timeout_seconds: f64,

    /// Attempts per send (1 = no retries) on throttling, 5xx and connection failures.
    #[arg(
        long,
        env = "SES_CONNECTOR_SES_MAX_ATTEMPTS",
        default_value_t = 3,
        value_name = "N"
    )]
    pub ses_max_attempts: u32,

    /// Sends per recipient: `COUNT/SECONDS` in any rolling window; `0` disables.
    #[arg(
        long,
        env = "SES_CONNECTOR_RATE_LIMIT_RECIPIENT",
        default_value = "10/600",
        value_name = "COUNT/SECONDS"
    )]
    pub rate_limit_recipient: Rate,

    /// Sends per client IP (the body's `ip`): `COUNT/SECONDS`; `0` disables.
    #[arg(
        long,
        env = "SES_CONNECTOR_RATE_LIMIT_IP",
        default_value = "100/600",
        value_name = "COUNT/SECONDS"
    )]
    pub rate_limit_ip: Rate,

    /// SES calls in flight at once; more wait in a short queue.
    #[arg(
        long,
        env = "SES_CONNECTOR_MAX_CONCURRENT_SENDS",
        default_value_t = 256,
        value_name = "N"
    )]
    pub max_concurrent_sends: usize,

    /// Open client connections at most; more wait to be accepted (bounds memory).
    #[arg(
        long,
        env = "SES_CONNECTOR_MAX_CONNECTIONS",
        default_value_t = 1024,
        value_name = "N"
    )]
    pub max_connections: usize,

    /// A connection that sends no complete request head within this time is closed:
    /// idle keep-alive connections and slow senders free their slot.
    #[arg(
        long,
        env = "SES_CONNECTOR_IDLE_TIMEOUT_SECONDS",
        default_value_t = 30.0,
        value_name = "SECONDS"
    )]
    pub idle_timeout_seconds: f64,

    /// Sends that may wait for a slot; past this, 503 at once.
    #[arg(
        long,
        env = "SES_CONNECTOR_MAX_QUEUED_SENDS",
        default_value_t = 512,
        value_name = "N"
    )]
    pub max_queued_sends: usize,

    /// Longest wait for a slot before a 503, seconds.
    #[arg(
        long,
        env = "SES_CONNECTOR_QUEUE_TIMEOUT_SECONDS",
        default_value_t = 1.0,
        value_name = "SECONDS"
    )]
    pub queue_timeout_seconds: f64,

    /// Seconds between SIGTERM (when /readyz turns 503) and closing the listener,
    /// so load balancers stop routing here first.
    #[arg(
        long,
        env = "SES_CONNECTOR_SHUTDOWN_DELAY_SECONDS",
        default_value_t = 0,
        value_name = "SECONDS"
    )]
    pub shutdown_delay_seconds: u64,

    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    #[arg(
        long,
        env = "SES_CONNECTOR_SHUTDOWN_GRACE_SECONDS",
        default_value_t = 25,
        value_name = "SECONDS"
    )]
    pub shutdown_grace_seconds: u64,
}

/// Log settings, shared by every command.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(
        long,
        env = "SES_CONNECTOR_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,

    /// Log filter: a level (`info`) or `tracing` directives (`ses_connector=debug`).
    #[arg(
        long,
        env = "SES_CONNECTOR_LOG_LEVEL",
        default_value = "info",
        global = true,
        value_name = "FILTER"
    )]
    pub log_level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    Ses,
    Outbox,
}

/// Where the connector config comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    File(PathBuf),
    Inline(String),
    BuiltIn,
}

/// API tokens by scope.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    pub send: Vec<SecretString>,
    pub admin: Vec<SecretString>,
}

impl Tokens {
    pub fn is_empty(&self) -> bool {
        self.send.is_empty() && self.admin.is_empty()
    }
}

/// Validated settings for `serve`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Where probes and metrics are also served, on a listener of their own.
    pub health_listen: Option<SocketAddr>,
    pub dev: bool,
    pub transport: Transport,
    pub config_source: ConfigSource,
    pub access_key_id: Option<String>,
    pub access_key_secret: Option<SecretString>,
    pub tokens: Tokens,
    pub ses: SesOptions,
    pub rate_limit_recipient: Rate,
    pub rate_limit_ip: Rate,
    pub max_concurrent_sends: usize,
    pub max_queued_sends: usize,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub queue_timeout: Duration,
    pub shutdown_delay: Duration,
    pub shutdown_grace: Duration,
    /// How long reading the config source may take before a (re)load fails.
    pub config_read_timeout: Duration,
    /// `None`: state in memory.
    pub redis: Option<RedisSettings>,
    /// `Some(0.0)`: no pacing; `None`: the account's max send rate.
    pub max_send_rate: Option<f64>,
    pub pacing_max_wait: Duration,
    /// How often the SES account's quota is read.
    pub quota_interval: Duration,
    pub feedback_queue_url: Option<String>,
    pub suppression: crate::send::SuppressionPolicy,
    pub ses_suppression_check: bool,
}

impl Settings {
    /// The HTTP-layer limit on one request: above everything a send may take,
    /// a wait for its turn under the send rate included.
    pub fn request_timeout(&self) -> Duration {
        self.ses.operation_timeout
            + self.queue_timeout
            + self.pacing_max_wait
            + Duration::from_secs(5)
    }
}

/// A setting that cannot be used; the message says how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(String);

impl Settings {
    /// Check and resolve `serve` flags: read token files, pick dev mode, check timeouts.
    pub fn from_args(args: ServeArgs) -> Result<Self, SettingsError> {
        // An empty variable counts as unset, as the AWS endpoint variables do.
        let config_json = args.config_json.as_ref().filter(|j| !j.trim().is_empty());
        let config = args.config.as_ref().filter(|p| !p.as_os_str().is_empty());
        let config_source = match (config, config_json) {
            (Some(_), Some(_)) => {
                return Err(SettingsError(
                    "set either SES_CONNECTOR_CONFIG (--config) or SES_CONNECTOR_CONFIG_JSON (--config-json), not both".into(),
                ))
            }
            (Some(path), None) => ConfigSource::File(path.clone()),
            (None, Some(json)) => ConfigSource::Inline(json.clone()),
            (None, None) => ConfigSource::BuiltIn,
        };
        let dev = args.dev || matches!(config_source, ConfigSource::BuiltIn);
        let listen = match args.listen {
            Some(addr) => addr,
            None if dev => SocketAddr::from(([127, 0, 0, 1], 8080)),
            None => SocketAddr::from(([0, 0, 0, 0], 8080)),
        };
        if let Some(health) = args.health_listen.filter(|a| dev && !a.ip().is_loopback()) {
            return Err(SettingsError(format!(
                "dev mode listens on loopback only, but SES_CONNECTOR_HEALTH_LISTEN is {health}; use 127.0.0.1"
            )));
        }
        if dev && !listen.ip().is_loopback() {
            return Err(SettingsError(format!(
                "dev mode listens on loopback only, but {listen} was asked for; use 127.0.0.1, or give a config and tokens to serve on other addresses"
            )));
        }
        let transport = if dev {
            Transport::Outbox
        } else {
            args.transport.unwrap_or(Transport::Ses)
        };
        let tokens = Tokens {
            send: tokens(
                "SEND_TOKENS",
                args.send_tokens.as_ref(),
                args.send_tokens_file.as_ref(),
            )?,
            admin: tokens(
                "ADMIN_TOKENS",
                args.admin_tokens.as_ref(),
                args.admin_tokens_file.as_ref(),
            )?,
        };
        if !dev && tokens.is_empty() {
            return Err(SettingsError(
                "no API token is configured. Set SES_CONNECTOR_ADMIN_TOKENS and/or SES_CONNECTOR_SEND_TOKENS \
                 (comma-separated, at least 16 characters each, e.g. from `openssl rand -hex 32`), \
                 or their _FILE variants, or run `ses-connector serve --dev` to try the service locally"
                    .into(),
            ));
        }
        let seconds = |name: &str, value: f64| {
            if value.is_finite() && value > 0.0 && value <= 3600.0 {
                Ok(Duration::from_secs_f64(value))
            } else {
                Err(SettingsError(format!(
                    "SES_CONNECTOR_{name} must be a number of seconds above 0 and at most 3600, got {value}"
                )))
            }
        };
        let ses = SesOptions {
            connect_timeout: seconds(
                "SES_CONNECT_TIMEOUT_SECONDS",
                args.ses_connect_timeout_seconds,
            )?,
            attempt_timeout: seconds(
                "SES_ATTEMPT_TIMEOUT_SECONDS",
                args.ses_attempt_timeout_seconds,
            )?,
            operation_timeout: seconds("SES_TIMEOUT_SECONDS", args.ses_timeout_seconds)?,
            max_attempts: args.ses_max_attempts,
            ..SesOptions::default()
        };
        if args.max_concurrent_sends == 0 {
            return Err(SettingsError(
                "SES_CONNECTOR_MAX_CONCURRENT_SENDS must be at least 1".into(),
            ));
        }
        if ses.max_attempts == 0 || ses.max_attempts > 10 {
            return Err(SettingsError(format!(
                "SES_CONNECTOR_SES_MAX_ATTEMPTS must be between 1 and 10, got {}",
                ses.max_attempts
            )));
        }
        if ses.attempt_timeout > ses.operation_timeout {
            return Err(SettingsError(
                "SES_CONNECTOR_SES_ATTEMPT_TIMEOUT_SECONDS must not exceed SES_CONNECTOR_SES_TIMEOUT_SECONDS".into(),
            ));
        }
        let redis = redis_settings(&args)?;
        let access_key_id = args.access_key_id.filter(|s| !s.trim().is_empty());
        let access_key_secret = args
            .access_key_secret
            .filter(|s| !secrecy::ExposeSecret::expose_secret(s).trim().is_empty());
        Ok(Self {
            listen,
            health_listen: args.health_listen,
            dev,
            transport,
            config_source,
            access_key_id,
            access_key_secret,
            tokens,
            ses,
            rate_limit_recipient: args.rate_limit_recipient,
            rate_limit_ip: args.rate_limit_ip,
            max_concurrent_sends: args.max_concurrent_sends,
            max_queued_sends: args.max_queued_sends,
            max_connections: args.max_connections,
            idle_timeout: seconds("IDLE_TIMEOUT_SECONDS", args.idle_timeout_seconds)?,
            queue_timeout: seconds("QUEUE_TIMEOUT_SECONDS", args.queue_timeout_seconds)?,
            shutdown_delay: Duration::from_secs(args.shutdown_delay_seconds),
            shutdown_grace: Duration::from_secs(args.shutdown_grace_seconds),
            config_read_timeout: CONFIG_READ_TIMEOUT,
            redis,
            max_send_rate: args.max_send_rate.map(max_send_rate).transpose()?,
            pacing_max_wait: Duration::from_millis(args.pacing_max_wait_ms),
            quota_interval: QUOTA_INTERVAL,
            feedback_queue_url: args.feedback_queue_url.filter(|u| !u.trim().is_empty()),
            suppression: args.suppression,
            ses_suppression_check: args.ses_suppression_check,
        })
    }
}

/// `SES_CONNECTOR_MAX_SEND_RATE`: 0 (pacing off), or a rate the pacer can keep.
fn max_send_rate(rate: f64) -> Result<f64, SettingsError> {
    use crate::stores::pacing::{MAX_SEND_RATE, MIN_SEND_RATE};
    if rate == 0.0 || (MIN_SEND_RATE..=MAX_SEND_RATE).contains(&rate) {
        return Ok(rate);
    }
    Err(SettingsError(format!(
        "SES_CONNECTOR_MAX_SEND_RATE must be 0 (pacing off) or between {MIN_SEND_RATE} and {MAX_SEND_RATE:.0} sends per second, got {rate}"
    )))
}

/// The Redis settings, when a URL is given (inline or in a file).
fn redis_settings(args: &ServeArgs) -> Result<Option<RedisSettings>, SettingsError> {
    let Some(url) = secret_setting(
        "SES_CONNECTOR_REDIS_URL",
        args.redis_url.as_ref(),
        args.redis_url_file.as_deref(),
    )?
    else {
        if args.redis_required {
            return Err(SettingsError(
                "SES_CONNECTOR_REDIS_REQUIRED is true but no SES_CONNECTOR_REDIS_URL is set".into(),
            ));
        }
        return Ok(None);
    };
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        // The URL may hold a password: say what is wrong without repeating it.
        return Err(SettingsError(
            "SES_CONNECTOR_REDIS_URL must start with redis:// or rediss://".into(),
        ));
    }
    if args.redis_timeout_ms == 0 || args.redis_timeout_ms > 10_000 {
        return Err(SettingsError(format!(
            "SES_CONNECTOR_REDIS_TIMEOUT_MS must be between 1 and 10000, got {}",
            args.redis_timeout_ms
        )));
    }
    let secret = state_secret(args)?;
    Ok(Some(RedisSettings {
        url: SecretString::from(url),
        secret,
        prefix: args.redis_prefix.clone(),
        required: args.redis_required,
        timeout: Duration::from_millis(args.redis_timeout_ms),
    }))
}

/// A value that may hold a secret, from `NAME` or the file `NAME_FILE` (not
/// both), trimmed; empty counts as unset. Errors never repeat the value.
fn secret_setting(
    name: &str,
    inline: Option<&SecretString>,
    file: Option<&std::path::Path>,
) -> Result<Option<String>, SettingsError> {
    use secrecy::ExposeSecret;
    let inline = inline
        .map(|v| v.expose_secret().trim().to_owned())
        .filter(|v| !v.is_empty());
    let from_file = match file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| {
                    SettingsError(format!("cannot read {name}_FILE {}: {e}", path.display()))
                })?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    match (inline, from_file) {
        (Some(_), Some(_)) => Err(SettingsError(format!(
            "set either {name} or {name}_FILE, not both"
        ))),
        (value, None) | (None, value) => Ok(value),
    }
}

/// Shortest state secret accepted: 32 characters (e.g. 16 random bytes in hex).
pub const MIN_STATE_SECRET_LEN: usize = 32;

/// The secret that keys Redis digests: inline or from a file, required with Redis.
fn state_secret(args: &ServeArgs) -> Result<SecretString, SettingsError> {
    const HOW: &str = "set SES_CONNECTOR_STATE_SECRET (or SES_CONNECTOR_STATE_SECRET_FILE) to the same random value on every replica, e.g. the output of `openssl rand -hex 32`";
    let Some(secret) = secret_setting(
        "SES_CONNECTOR_STATE_SECRET",
        args.state_secret.as_ref(),
        args.state_secret_file.as_deref(),
    )?
    else {
        return Err(SettingsError(format!(
            "SES_CONNECTOR_REDIS_URL is set but SES_CONNECTOR_STATE_SECRET is not: the digests of recipients and IPs kept in Redis are keyed with it; {HOW}"
        )));
    };
    if secret.chars().count() < MIN_STATE_SECRET_LEN {
        return Err(SettingsError(format!(
            "SES_CONNECTOR_STATE_SECRET is too short ({} characters, at least {MIN_STATE_SECRET_LEN}); {HOW}",
            secret.chars().count()
        )));
    }
    Ok(SecretString::from(secret))
}

/// Tokens from a variable and/or a file, comma- or newline-separated.
fn tokens(
    name: &str,
    inline: Option<&SecretString>,
    file: Option<&PathBuf>,
) -> Result<Vec<SecretString>, SettingsError> {
    use secrecy::ExposeSecret;
    let mut sources = Vec::new();
    if let Some(inline) = inline {
        sources.push(inline.expose_secret().to_owned());
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            SettingsError(format!(
                "cannot read SES_CONNECTOR_{name}_FILE {}: {e}",
                path.display()
            ))
        })?;
        sources.push(text);
    }
    let mut tokens = Vec::new();
    for source in &sources {
        for token in source.split([',', '\n', '\r']).map(str::trim) {
            if token.is_empty() {
                continue;
            }
            if token.len() < MIN_TOKEN_LEN
                || token.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(SettingsError(format!(
                    "a token in SES_CONNECTOR_{name} is shorter than {MIN_TOKEN_LEN} characters or contains spaces; use long random tokens, e.g. from `openssl rand -hex 32`"
                )));
            }
            tokens.push(SecretString::from(token.to_owned()));
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn settings(args: &[&str]) -> Result<Settings, SettingsError> {
        let mut argv = vec!["serve"];
        argv.extend_from_slice(args);
        Settings::from_args(Cli::try_parse_from(argv).unwrap().serve)
    }

    #[test]
    fn no_config_at_all_means_dev_mode_on_loopback() {
        let s = settings(&[]).unwrap();
        assert!(s.dev);
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.transport, Transport::Outbox);
    }

    #[test]
    fn outside_dev_mode_a_token_is_required_and_the_error_says_how() {
        let err = settings(&["--config", "x.json"]).unwrap_err().to_string();
        assert!(err.contains("SES_CONNECTOR_ADMIN_TOKENS"), "{err}");
        assert!(err.contains("--dev"), "{err}");
    }

    #[test]
    fn short_tokens_are_refused() {
        let err = settings(&["--config", "x.json", "--send-tokens", "short"]).unwrap_err();
        assert!(err.to_string().contains("16"), "{err}");
    }

    #[test]
    fn tokens_are_split_on_commas_and_read_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin");
        std::fs::write(&file, "admin-token-0123456789\n").unwrap();
        let s = settings(&[
            "--config",
            "x.json",
            "--send-tokens",
            "send-token-0123456789,send-token-abcdefghij",
            "--admin-tokens-file",
            file.to_str().unwrap(),
        ])
        .unwrap();
        assert_eq!(s.tokens.send.len(), 2);
        assert_eq!(s.tokens.admin.len(), 1);
        assert!(!format!("{s:?}").contains("send-token-0123456789"));
    }

    #[test]
    fn redis_urls_are_checked_and_never_echoed() {
        let base = [
            "--config",
            "x.json",
            "--admin-tokens",
            "admin-token-0123456789",
            "--state-secret",
            "0123456789abcdef0123456789abcdef",
        ];
        let mut args = base.to_vec();
        args.extend(["--redis-url", "redis://:hunter2@127.0.0.1:6379/0"]);
        let s = settings(&args).unwrap();
        let redis = s.redis.unwrap();
        assert_eq!(redis.prefix, "ses-connector:");
        assert!(!redis.required);
        assert!(!format!("{redis:?}").contains("hunter2"));
        let mut args = base.to_vec();
        args.extend(["--redis-url", "http://:hunter2@example.com"]);
        let err = settings(&args).unwrap_err().to_string();
        assert!(
            err.contains("redis://") && !err.contains("hunter2"),
            "{err}"
        );
        let mut args = base.to_vec();
        args.extend(["--redis-required", "true"]);
        assert!(settings(&args).is_err(), "required without a URL");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("redis-url");
        std::fs::write(&file, "rediss://:hunter2@redis.internal:6380/0\n").unwrap();
        let mut args = base.to_vec();
        args.extend([
            "--redis-url-file",
            file.to_str().unwrap(),
            "--redis-required",
            "true",
        ]);
        let redis = settings(&args).unwrap().redis.unwrap();
        assert!(redis.required);
        assert_eq!(
            secrecy::ExposeSecret::expose_secret(&redis.url),
            "rediss://:hunter2@redis.internal:6380/0"
        );
        assert!(settings(&base).unwrap().redis.is_none());
    }

    #[test]
    fn redis_needs_a_state_secret_of_32_characters_and_says_how_to_make_one() {
        let base = [
            "--config",
            "x.json",
            "--admin-tokens",
            "admin-token-0123456789",
            "--redis-url",
            "redis://127.0.0.1:6379/0",
        ];
        let missing = settings(&base).unwrap_err().to_string();
        assert!(
            missing.contains("SES_CONNECTOR_STATE_SECRET") && missing.contains("openssl rand"),
            "{missing}"
        );
        let mut args = base.to_vec();
        args.extend(["--state-secret", "short-secret"]);
        let short = settings(&args).unwrap_err().to_string();
        assert!(
            short.contains("too short") && !short.contains("short-secret"),
            "{short}"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state-secret");
        std::fs::write(&file, "0123456789abcdef0123456789abcdef\n").unwrap();
        let mut args = base.to_vec();
        args.extend(["--state-secret-file", file.to_str().unwrap()]);
        let redis = settings(&args).unwrap().redis.unwrap();
        assert_eq!(
            secrecy::ExposeSecret::expose_secret(&redis.secret),
            "0123456789abcdef0123456789abcdef"
        );
    }

    #[test]
    fn an_empty_inline_config_counts_as_unset() {
        let s = settings(&[
            "--config",
            "x.json",
            "--config-json",
            "",
            "--admin-tokens",
            "admin-token-0123456789",
        ])
        .unwrap();
        assert!(matches!(s.config_source, ConfigSource::File(_)));
        assert!(settings(&["--config-json", " "]).unwrap().dev);
    }

    #[test]
    fn dev_mode_refuses_a_public_address() {
        let err = settings(&["--dev", "--listen", "0.0.0.0:8080"]).unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
    }

    #[test]
    fn rate_limits_default_to_logtos_and_can_be_disabled() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.rate_limit_recipient.to_string(), "10/600");
        assert_eq!(s.rate_limit_ip.to_string(), "100/600");
        let s = settings(&["--rate-limit-recipient", "0", "--rate-limit-ip", "5/60"]).unwrap();
        assert!(s.rate_limit_recipient.is_disabled());
        assert_eq!(s.rate_limit_ip.count, 5);
    }

    #[test]
    fn bad_timeouts_are_refused() {
        let base = [
            "--config",
            "x.json",
            "--admin-tokens",
            "admin-token-0123456789",
        ];
        let mut args = base.to_vec();
        args.extend(["--ses-timeout-seconds", "0"]);
        assert!(settings(&args).is_err());
        let mut args = base.to_vec();
        args.extend(["--ses-attempt-timeout-seconds", "20"]);
        assert!(settings(&args).is_err());
    }
    #[test]
    fn the_max_send_rate_is_0_or_a_rate_the_pacer_can_keep() {
        let with = |rate: &str| {
            let flag = format!("--max-send-rate={rate}");
            settings(&["--dev", &flag]).map(|s| s.max_send_rate)
        };
        for (rate, expected) in [
            ("0", Some(0.0)),
            ("0.001", Some(0.001)),
            ("14", Some(14.0)),
            ("1000000", Some(1_000_000.0)),
        ] {
            assert_eq!(with(rate).unwrap(), expected, "{rate}");
        }
        for (rate, why) in [
            ("1e-25", "tiny: one send in 10^25 s"),
            ("0.0009", "below the slowest pace"),
            ("1000001", "above the fastest pace"),
            ("1e300", "huge"),
            ("NaN", "not a number"),
            ("inf", "infinite"),
            ("-1", "negative"),
        ] {
            let error = with(rate).unwrap_err().to_string();
            assert!(
                error.contains("SES_CONNECTOR_MAX_SEND_RATE")
                    && error.contains("between 0.001 and 1000000"),
                "{why}: {error}"
            );
        }
    }
}
