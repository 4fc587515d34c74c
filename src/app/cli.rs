//! The command line: `serve` (the default), `validate`, `render`, `send-test`, `init`,
//! `healthcheck`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::address::{Mailbox, Recipient};
use crate::app::settings::{ServeArgs, Settings};
use crate::app::startup::Application;
use crate::builtin;
use crate::connector::{self, ConnectorConfig, UsageType, ValidationReport};
use crate::send::{EmailService, SendRequest};
use crate::telemetry;
use crate::telemetry::LogFormat;
use crate::transport::ses::{SesMailer, SesOptions};

/// Send sign-in, sign-up and password-reset codes through Amazon SES v2.
///
/// With no command, runs `serve`; with no config either, serves in dev mode.
#[derive(Debug, Parser)]
#[command(
    name = "ses-connector",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (the default command).
    Serve(Box<ServeArgs>),
    /// Check a connector config; exit 0 valid, 1 invalid, 2 unreadable.
    Validate {
        /// Config file (JSON).
        path: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the subject, text and HTML a send would use.
    Render {
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
        /// Usage type, e.g. SignIn.
        #[arg(long = "type", value_name = "TYPE")]
        usage_type: String,
        /// Payload as JSON, e.g. '{"code":"123456"}'.
        #[arg(long, value_name = "JSON")]
        payload: Option<String>,
        /// Locale to render in (sets payload.locale).
        #[arg(long, value_name = "TAG")]
        locale: Option<String>,
    },
    /// Send a test email (Generic, code 000000) through SES with a config file.
    SendTest {
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
        #[arg(long, value_name = "ADDR")]
        to: String,
        #[arg(long = "type", value_name = "TYPE", default_value = "Generic")]
        usage_type: String,
    },
    /// Check a config online against the SES account: exit 0 all good, 1 something
    /// will fail, 2 could not check.
    Doctor {
        /// Config file [default: SES_CONNECTOR_CONFIG].
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a complete, valid starter config using the built-in templates.
    Init {
        /// Where to write it; standard output when absent.
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Exit 0 if the URL answers 200, else 1 (for container health checks).
    Healthcheck {
        /// The health URL [default: http://127.0.0.1:8080/healthz, or /healthz on the
        /// port of SES_CONNECTOR_HEALTH_LISTEN when that is set].
        #[arg(long)]
        url: Option<String>,
    },
}

/// Run the parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(*args).await,
        Some(command) => {
            let level = std::env::var("SES_CONNECTOR_LOG_LEVEL").unwrap_or_else(|_| "warn".into());
            telemetry::init(LogFormat::Text, &level);
            match command {
                Command::Validate { path, json } => validate(&path, json),
                Command::Render {
                    config,
                    usage_type,
                    payload,
                    locale,
                } => render(&config, &usage_type, payload.as_deref(), locale.as_deref()),
                Command::SendTest {
                    config,
                    to,
                    usage_type,
                } => send_test(&config, &to, &usage_type, &cli.serve).await,
                Command::Init { out, force } => init(out.as_deref(), force),
                Command::Doctor { config, json } => {
                    let path = config.or_else(|| cli.serve.config.clone());
                    doctor(path.as_deref(), json, &cli.serve).await
                }
                Command::Healthcheck { url } => {
                    let url = url.unwrap_or_else(|| health_url(cli.serve.health_listen));
                    healthcheck(&url).await
                }
                Command::Serve(_) => unreachable!("handled above"),
            }
        }
    }
}

async fn serve(args: ServeArgs) -> ExitCode {
    telemetry::init(args.log.log_format, &args.log.log_level);
    let settings = match Settings::from_args(args) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A config file read as JSON; `Err` carries the message for exit code 2.
fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    crate::app::reload::parse(&text, &path.display().to_string())
}

fn print_report(report: &ValidationReport) {
    let line = |kind: &str, issue: &connector::Issue| {
        let path = if issue.path.is_empty() {
            "(config)"
        } else {
            &issue.path
        };
        println!("  {kind} {path}: {}", issue.message);
    };
    if report.valid {
        println!("valid");
    } else {
        println!("invalid: {} error(s)", report.errors.len());
    }
    report.errors.iter().for_each(|i| line("error  ", i));
    report.warnings.iter().for_each(|i| line("warning", i));
}

fn validate(path: &Path, json: bool) -> ExitCode {
    let value = match read_json(path) {
        Ok(value) => value,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let report = connector::validate(&value);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print_report(&report);
    }
    if report.valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn load(path: &Path) -> Result<ConnectorConfig, ExitCode> {
    let value = read_json(path).map_err(|message| {
        eprintln!("error: {message}");
        ExitCode::from(2)
    })?;
    ConnectorConfig::load(value).map_err(|report| {
        print_report(&report);
        ExitCode::from(1)
    })
}

fn usage_type(name: &str) -> Result<UsageType, ExitCode> {
    UsageType::parse(name).ok_or_else(|| {
        eprintln!(
            "error: \"{name}\" is not a usage type; expected one of {}",
            UsageType::names()
        );
        ExitCode::from(2)
    })
}

fn render(config: &Path, usage: &str, payload: Option<&str>, locale: Option<&str>) -> ExitCode {
    let run = || -> Result<(), ExitCode> {
        let config = load(config)?;
        let usage = usage_type(usage)?;
        let mut payload: Map<String, Value> = match payload {
            None => Map::new(),
            Some(text) => {
                match serde_json::from_str(text) {
                    Ok(Value::Object(map)) => map,
                    _ => {
                        eprintln!("error: --payload must be a JSON object such as '{{\"code\":\"123456\"}}'");
                        return Err(ExitCode::from(2));
                    }
                }
            }
        };
        if let Some(locale) = locale {
            payload.insert("locale".into(), Value::String(locale.to_owned()));
        }
        let preview = EmailService::preview(&config, usage, &payload).map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(1)
        })?;
        let locale = preview.template.locale.as_deref().unwrap_or("(none)");
        println!(
            "Template: {} / locale {locale}",
            preview.template.usage_type
        );
        println!(
            "From: {}",
            preview.from.as_ref().map_or("(none)", Mailbox::as_str)
        );
        if let Some(reply_to) = &preview.reply_to {
            println!("Reply-To: {reply_to}");
        }
        println!("Subject: {}", preview.email.subject);
        println!("\n----- text -----\n{}", preview.email.text);
        match &preview.email.html {
            Some(html) => println!("\n----- html -----\n{html}"),
            None => println!("\n(no HTML part: text/plain template)"),
        }
        Ok(())
    };
    run().err().unwrap_or(ExitCode::SUCCESS)
}

/// Why a config file could not be used: unreadable (exit 2) or invalid (exit 1).
enum Refusal {
    Unreadable(String),
    Invalid(ValidationReport),
}

impl Refusal {
    fn exit_code(&self) -> ExitCode {
        match self {
            Self::Unreadable(_) => ExitCode::from(2),
            Self::Invalid(_) => ExitCode::from(1),
        }
    }

    /// Said on the terminal: the message on stderr, or the report.
    fn print(&self) {
        match self {
            Self::Unreadable(message) => eprintln!("error: {message}"),
            Self::Invalid(report) => print_report(report),
        }
    }

    /// In the report's shape, so a JSON reader meets one shape whatever happened.
    fn into_report(self) -> ValidationReport {
        match self {
            Self::Unreadable(message) => ValidationReport {
                valid: false,
                errors: vec![connector::Issue {
                    path: String::new(),
                    code: connector::IssueCode::Unreadable,
                    message,
                }],
                warnings: Vec::new(),
            },
            Self::Invalid(report) => report,
        }
    }
}

/// A config file with the `SES_CONNECTOR_ACCESS_KEY_*` overrides `serve` applies, so
/// a key kept out of the file works here too.
fn load_with_overrides(path: &Path, settings: &ServeArgs) -> Result<ConnectorConfig, Refusal> {
    let mut value = read_json(path).map_err(Refusal::Unreadable)?;
    crate::app::reload::override_credentials(
        &mut value,
        settings
            .access_key_id
            .clone()
            .filter(|s| !s.trim().is_empty()),
        settings
            .access_key_secret
            .as_ref()
            .filter(|s| !secrecy::ExposeSecret::expose_secret(*s).trim().is_empty()),
    );
    ConnectorConfig::load(value).map_err(Refusal::Invalid)
}

/// The doctor's JSON: the validation report plus `account` (`null` when SES was not
/// asked), the same shape for every outcome.
fn print_doctor_json(report: &ValidationReport, account: Option<&crate::doctor::AccountSummary>) {
    let mut json = serde_json::to_value(report).unwrap_or_default();
    json["account"] = serde_json::to_value(account).unwrap_or_default();
    println!(
        "{}",
        serde_json::to_string_pretty(&json).unwrap_or_default()
    );
}

async fn doctor(path: Option<&Path>, json: bool, settings: &ServeArgs) -> ExitCode {
    let config = match path {
        Some(path) => load_with_overrides(path, settings),
        None => Err(Refusal::Unreadable(
            "give the config with --config PATH (or SES_CONNECTOR_CONFIG)".to_owned(),
        )),
    };
    let config = match config {
        Ok(config) => config,
        Err(refusal) => {
            let code = refusal.exit_code();
            if json {
                print_doctor_json(&refusal.into_report(), None);
            } else {
                refusal.print();
            }
            return code;
        }
    };
    let mailer = SesMailer::new(&SesOptions::default()).await;
    let diagnosis = crate::doctor::diagnose(&config, &mailer, DOCTOR_TIMEOUT).await;
    if json {
        print_doctor_json(&diagnosis.report, diagnosis.account.as_ref());
    } else {
        print_report(&diagnosis.report);
        if let Some(account) = &diagnosis.account {
            println!(
                "account: {} in {}, sending {}, enforcement {}, max {} sends/s, {} of {} sent in the last 24 h",
                if account.production_access_enabled { "production" } else { "sandbox" },
                config.region,
                if account.sending_enabled { "enabled" } else { "paused" },
                account.enforcement_status.as_deref().unwrap_or("unknown"),
                account.max_send_rate,
                account.sent_last_24_hours,
                account.max_24_hour_send,
            );
        }
        if diagnosis.incomplete {
            println!("some checks could not run; see the warnings above");
        }
    }
    ExitCode::from(diagnosis.exit_code())
}

/// How long the doctor's checks may take in all.
const DOCTOR_TIMEOUT: Duration = Duration::from_secs(20);

async fn send_test(config: &Path, to: &str, usage: &str, credentials: &ServeArgs) -> ExitCode {
    let config = match load_with_overrides(config, credentials) {
        Ok(config) => config,
        Err(refusal) => {
            refusal.print();
            return refusal.exit_code();
        }
    };
    let to = match Recipient::parse(to) {
        Ok(to) => to,
        Err(e) => {
            eprintln!("error: --to: recipient {e}");
            return ExitCode::from(2);
        }
    };
    let usage_type = match usage_type(usage) {
        Ok(u) => u,
        Err(code) => return code,
    };
    let mut payload = Map::new();
    payload.insert("code".into(), Value::String("000000".into()));
    let request = SendRequest {
        to,
        usage_type,
        payload,
        ip: None,
        sender: None,
    };
    let mailer = SesMailer::new(&SesOptions::default()).await;
    let service = EmailService::new(
        ConnectorConfig::load(builtin::starter_config()).expect("built-in config is valid"),
        std::sync::Arc::new(mailer),
        crate::send::gate::SendGate::new(1, 0, Duration::ZERO),
        // A test send from a shell is not rate limited, as test emails are not.
        std::sync::Arc::new(crate::stores::limits::MemoryLimits::new(
            crate::stores::limits::Rate::OFF,
            crate::stores::limits::Rate::OFF,
        )),
        crate::send::Pacing::off(),
    );
    match service.send_with(&config, request).await {
        Ok(sent) => {
            println!("sent: message id {}", sent.message_id);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("not sent: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init(out: Option<&Path>, force: bool) -> ExitCode {
    let text = serde_json::to_string_pretty(&builtin::starter_config()).unwrap_or_default() + "\n";
    let Some(path) = out else {
        print!("{text}");
        return ExitCode::SUCCESS;
    };
    if path.exists() && !force {
        eprintln!(
            "error: {} exists; pass --force to overwrite it",
            path.display()
        );
        return ExitCode::from(2);
    }
    match std::fs::write(path, text) {
        Ok(()) => {
            eprintln!(
                "wrote {}: set \"region\" and \"emailAddress\" to your SES identity, then run `ses-connector validate {}`",
                path.display(),
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot write {}: {e}", path.display());
            ExitCode::from(2)
        }
    }
}

/// GET the URL over plain HTTP/1.1; exit 0 on 200. The image has no curl.
/// The default health URL: the health listener's when there is one.
fn health_url(health_listen: Option<std::net::SocketAddr>) -> String {
    match health_listen {
        Some(addr) => {
            let host = if addr.ip().is_unspecified() {
                "127.0.0.1".to_owned()
            } else if addr.is_ipv6() {
                format!("[{}]", addr.ip())
            } else {
                addr.ip().to_string()
            };
            format!("http://{host}:{}/healthz", addr.port())
        }
        None => "http://127.0.0.1:8080/healthz".to_owned(),
    }
}

async fn healthcheck(url: &str) -> ExitCode {
    match tokio::time::timeout(Duration::from_secs(3), get_status(url)).await {
        Ok(Ok(200)) => ExitCode::SUCCESS,
        Ok(Ok(status)) => {
            eprintln!("unhealthy: {url} answered {status}");
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("unhealthy: {url}: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("unhealthy: {url} did not answer within 3 s");
            ExitCode::FAILURE
        }
    }
}

async fn get_status(url: &str) -> Result<u16, String> {
    let uri: axum::http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// URLs are supported".into());
    }
    let host = uri.host().ok_or("the URL has no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut stream = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: ses-connector-healthcheck\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = vec![0u8; 64];
    let n = stream.read(&mut head).await.map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| "not an HTTP answer".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_health_url_follows_the_health_listener() {
        assert_eq!(health_url(None), "http://127.0.0.1:8080/healthz");
        assert_eq!(
            health_url(Some("0.0.0.0:9090".parse().unwrap())),
            "http://127.0.0.1:9090/healthz"
        );
        assert_eq!(
            health_url(Some("[::1]:9090".parse().unwrap())),
            "http://[::1]:9090/healthz"
        );
    }
}
