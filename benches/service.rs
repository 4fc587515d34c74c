//! Criterion benchmarks: rendering a built-in template, validating a full config,
//! and one `POST /v1/messages` through the router, with a no-op mailer and with the
//! SES transport (`aws-sdk-sesv2`) over an HTTP client that answers in-process — the
//! difference is what the SDK costs per send, without sockets.
//!
//!   cargo bench --bench service

mod support;

use criterion::{criterion_group, criterion_main, Criterion};
use ses_connector::builtin::starter_config;
use ses_connector::connector::{ConnectorConfig, UsageType};
use tower::ServiceExt;

fn render(c: &mut Criterion) {
    let config = ConnectorConfig::load(starter_config()).unwrap();
    let payload = support::payload();
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
    bench_request(
        c,
        "POST /v1/messages through the router (no-op mailer)",
        false,
    );
    bench_request(
        c,
        "POST /v1/messages through the router (SES transport, in-process HTTP)",
        true,
    );
}

fn bench_request(c: &mut Criterion, name: &str, ses: bool) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let router = runtime.block_on(support::router(ses));
    let body = support::send_body();
    c.bench_function(name, |b| {
        b.to_async(&runtime).iter(|| {
            let request = support::send_request(&body);
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
