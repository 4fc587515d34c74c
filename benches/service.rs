//! Criterion benchmarks: rendering a built-in template, validating a full config,
//! and one `POST /v1/messages` through the router with a no-op mailer.
//!
//!   cargo bench --bench service

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use clap::Parser;
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use ses_connector::builtin::starter_config;
use ses_connector::cli::Cli;
use ses_connector::connector::{ConnectorConfig, UsageType};
use ses_connector::mailer::{BoxFuture, Mailer, OutgoingEmail, SendError};
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

fn request(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let token = "bench-send-token-0123456789";
    let router = runtime.block_on(async {
        let cli = Cli::parse_from([
            "ses-connector",
            "--config-json",
            &starter_config().to_string(),
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
        let app = Application::build_with(settings, Some(Arc::new(NoopMailer)))
            .await
            .unwrap();
        app.router()
    });
    let body = json!({"to": "user@example.com", "type": "SignIn", "payload": payload(), "ip": "203.0.113.7"}).to_string();
    c.bench_function("POST /v1/messages through the router (no-op mailer)", |b| {
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
