//! Instruction counts (callgrind, through `gungraun`) for rendering, validating and
//! one send through the router with the SES transport over an in-process HTTP
//! client: deterministic numbers that a noisy machine does not move. Setup (and a few
//! warm-up sends) is not counted.
//!
//!   bash scripts/instructions.sh           # run, and compare with benches/instructions.json
//!   bash scripts/instructions.sh --update  # run, and write the counts there

mod support;

use std::hint::black_box;

use axum::body::Body;
use axum::http::{Request, Response};
use axum::Router;
use gungraun::prelude::*;
use serde_json::Value;
use ses_connector::builtin::starter_config;
use ses_connector::connector::{ConnectorConfig, UsageType};
use ses_connector::template::RenderedEmail;
use tower::ServiceExt;

fn compiled_config() -> (ConnectorConfig, Value) {
    (
        ConnectorConfig::load(starter_config()).unwrap(),
        support::payload(),
    )
}

#[library_benchmark]
#[bench::signin(setup = compiled_config)]
fn render(input: (ConnectorConfig, Value)) -> (ConnectorConfig, RenderedEmail) {
    let (config, payload) = input;
    let email = config
        .templates
        .select(UsageType::SignIn, Some("en"))
        .unwrap()
        .render_owned(black_box(payload))
        .unwrap();
    (config, email)
}

#[library_benchmark]
#[bench::builtin(setup = starter_config)]
fn validate(config: Value) -> ConnectorConfig {
    ConnectorConfig::load(black_box(config)).unwrap()
}

/// A single-threaded runtime (so that every instruction of the send is on the
/// measured thread), the router with the in-process SES client, warmed up by a few
/// sends, and the request to measure.
fn warm_router() -> (tokio::runtime::Runtime, Router, Request<Body>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let router = runtime.block_on(support::router(true));
    let body = support::send_body();
    for _ in 0..5 {
        let response = runtime
            .block_on(router.clone().oneshot(support::send_request(&body)))
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    (runtime, router, support::send_request(&body))
}

#[library_benchmark]
#[bench::ses_in_process(setup = warm_router)]
fn send(
    input: (tokio::runtime::Runtime, Router, Request<Body>),
) -> (tokio::runtime::Runtime, Router, Response<Body>) {
    let (runtime, router, request) = input;
    let response = runtime
        .block_on(router.clone().oneshot(black_box(request)))
        .unwrap();
    assert_eq!(response.status(), 200);
    (runtime, router, response)
}

library_benchmark_group!(name = service, benchmarks = [render, validate, send]);

main!(library_benchmark_groups = service);
