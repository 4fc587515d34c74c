//! What the benchmarks share: the payload, a mailer that accepts at once, an SES
//! HTTP client that answers in-process, and the router with either.

#![allow(dead_code)] // each benchmark uses part of it

use std::sync::Arc;

use aws_sdk_sesv2::config::http::{HttpRequest, HttpResponse};
use aws_sdk_sesv2::config::{RuntimeComponents, SharedHttpClient};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use axum::body::Body;
use axum::http::Request;
use axum::Router;
use clap::Parser;
use serde_json::json;
use ses_connector::app::cli::Cli;
use ses_connector::app::settings::Settings;
use ses_connector::app::startup::Application;
use ses_connector::builtin::starter_config;
use ses_connector::transport::ses::{SesMailer, SesOptions};
use ses_connector::transport::{BoxFuture, Mailer, OutgoingEmail, SendError};

pub const TOKEN: &str = "bench-send-token-0123456789";

/// Accepts every email at once.
pub struct NoopMailer;

impl Mailer for NoopMailer {
    fn send(&self, _email: OutgoingEmail) -> BoxFuture<'_, Result<String, SendError>> {
        Box::pin(async { Ok("noop".to_owned()) })
    }
}

/// The payload Logto's HTTP Email connector posts for a sign-in code.
pub fn payload() -> serde_json::Value {
    json!({
        "code": "123456",
        "locale": "en",
        "application": {"name": "Acme", "branding": {"logoUrl": "https://cdn.example.com/logo.png"}},
        "organization": {"name": "Acme Team"},
        "user": {"name": "Ann"}
    })
}

/// The body of one `POST /v1/messages`.
pub fn send_body() -> String {
    json!({"to": "user@example.com", "type": "SignIn", "payload": payload(), "ip": "203.0.113.7"})
        .to_string()
}

/// One `POST /v1/messages` with `body`, as a caller sends it.
pub fn send_request(body: &str) -> Request<Body> {
    Request::post("/v1/messages")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::from(body.to_owned()))
        .unwrap()
}

/// Answers every SES request at once with a `SendEmail` success, without a socket.
#[derive(Debug)]
pub struct InstantSes;

impl HttpConnector for InstantSes {
    fn call(&self, _request: HttpRequest) -> HttpConnectorFuture {
        let response = HttpResponse::new(
            StatusCode::try_from(200).unwrap(),
            SdkBody::from(r#"{"MessageId":"0100018c-bench-0000"}"#),
        );
        HttpConnectorFuture::ready(Ok(response))
    }
}

impl HttpClient for InstantSes {
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(InstantSes)
    }
}

/// The service's router with the SES transport over [`InstantSes`], or with
/// [`NoopMailer`]; rate limits off.
pub async fn router(ses: bool) -> Router {
    application(ses).await.router()
}

/// The service, bound to a free loopback port, with the SES transport over
/// [`InstantSes`] or with [`NoopMailer`]; rate limits off.
pub async fn application(ses: bool) -> Application {
    application_with(
        ses,
        &["--rate-limit-recipient", "0", "--rate-limit-ip", "0"],
    )
    .await
}

/// As [`application`], with `args` added to the command line.
pub async fn application_with(ses: bool, args: &[&str]) -> Application {
    let mailer: Arc<dyn Mailer> = if ses {
        Arc::new(
            SesMailer::with_http_client(&SesOptions::default(), SharedHttpClient::new(InstantSes))
                .await,
        )
    } else {
        Arc::new(NoopMailer)
    };
    application_for(mailer, args).await
}

/// The service with `mailer` as its transport and `args` added to the command line.
pub async fn application_for(mailer: Arc<dyn Mailer>, args: &[&str]) -> Application {
    let mut config = starter_config();
    config["accessKeyId"] = json!("AKIAIOSFODNN7EXAMPLE");
    config["accessKeySecret"] = json!("bench-secret");
    let config = config.to_string();
    let mut line = vec![
        "ses-connector",
        "--config-json",
        &config,
        "--send-tokens",
        TOKEN,
        "--listen",
        "127.0.0.1:0",
    ];
    line.extend_from_slice(args);
    let cli = Cli::parse_from(line);
    let settings = Settings::from_args(cli.serve).unwrap();
    Application::build_with(settings, Some(mailer))
        .await
        .unwrap()
}
