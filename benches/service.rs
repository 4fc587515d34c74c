//! Criterion benchmarks: rendering a built-in template, validating a full config,
//! and one `POST /v1/messages` through the router, with a no-op mailer and with the
//! SES transport (`aws-sdk-sesv2`) over an HTTP client that answers in-process — the
//! difference is what the SDK costs per send, without sockets.
//!
//!   cargo bench --bench service

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
use clap::Parser;
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use ses_connector::builtin::starter_config;
use ses_connector::cli::Cli;
use ses_connector::connector::{ConnectorConfig, UsageType};
use ses_connector::mailer::{BoxFuture, Mailer, OutgoingEmail, SendError};
use ses_connector::ses::{SesMailer, SesOptions};
use ses_connector::settings::Settings;
use ses_connector::startup::Application;
use tower::ServiceExt;

/// Accepts every email at once.
struct NoopMailer;

impl Mailer for NoopMailer {
    fn send<'a>(&'a self, _email: &'a OutgoingEmail) -> BoxFuture<'a, Result<String, SendError>> {
        Box::pin(async { Ok("noop".to_owned()) })
    }
}

fn payload() -> serde_json::Value {
    json!({
        "code": "123456",
        "locale": "en",
        "application": {"name": "Acme", "branding": {"logoUrl": "https://cdn.example.com/logo.png"}},
        "organization": {"name": "Acme Team"},
        "user": {"name": "Ann"}
    })
}

fn render(c: &mut Criterion) {
    let config = ConnectorConfig::load(starter_config()).unwrap();
    let payload = payload();
    let selected = config
        .templates
        .select(UsageType::SignIn, Some("en"))
        .unwrap();
    c.bench_function("render built-in SignIn (subject + HTML + text)", |b| {
        b.iter(|| selected.render(std::hint::black_box(&payload)).unwrap())
    });
}

fn validate(c: &mut Criterion) {
    let config = starter_config();
    c.bench_function(
        "validate and compile the full built-in config (18 templates)",
        |b| b.iter(|| ConnectorConfig::load(std::hint::black_box(config.clone())).unwrap()),
    );
}

/// Answers every SES request at once with a `SendEmail` success, without a socket.
#[derive(Debug)]
struct InstantSes;

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

fn request(c: &mut Criterion) {
    bench_request(
        c,
        "POST /v1/messages through the router (no-op mailer)",
        None,
    );
    bench_request(
        c,
        "POST /v1/messages through the router (SES transport, in-process HTTP)",
        Some(InstantSes),
    );
}

fn bench_request(c: &mut Criterion, name: &str, ses: Option<InstantSes>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let token = "bench-send-token-0123456789";
    let router = runtime.block_on(async {
        let mailer: Arc<dyn Mailer> = match ses {
            Some(client) => Arc::new(
                SesMailer::with_http_client(&SesOptions::default(), SharedHttpClient::new(client))
                    .await,
            ),
            None => Arc::new(NoopMailer),
        };
        let mut config = starter_config();
        config["accessKeyId"] = json!("AKIAIOSFODNN7EXAMPLE");
        config["accessKeySecret"] = json!("bench-secret");
        let cli = Cli::parse_from([
            "ses-connector",
            "--config-json",
            &config.to_string(),
            "--send-tokens",
            token,
            "--listen",
            "127.0.0.1:0",
            "--rate-limit-recipient",
            "0",
            "--rate-limit-ip",
            "0",
        ]);
        let settings = Settings::from_args(cli.serve).unwrap();
        let app = Application::build_with(settings, Some(mailer))
            .await
            .unwrap();
        app.router()
    });
    let body = json!({"to": "user@example.com", "type": "SignIn", "payload": payload(), "ip": "203.0.113.7"}).to_string();
    c.bench_function(name, |b| {
        b.to_async(&runtime).iter(|| {
            let request = Request::post("/v1/messages")
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {token}"))
                .body(Body::from(body.clone()))
                .unwrap();
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await.unwrap();
                assert_eq!(response.status(), 200);
            }
        })
    });
}

criterion_group!(benches, render, validate, request);
criterion_main!(benches);
