//! `/metrics` moves with the work the service does.

use crate::harness::*;
use serde_json::json;

/// The value of the first sample of `name` whose labels include all of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn counters_and_histograms_move_with_sends() {
    let fake = FakeSes::start().await;
    fake.accepts("id").await;
    let app = spawn_app(AppOptions {
        ses_endpoint: Some(fake.uri()),
        tune: |s| s.rate_limit_recipient = "2/600".parse().unwrap(),
        ..AppOptions::default()
    })
    .await;
    let scrape = || async {
        let response = app.get("/metrics", None).await;
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        response.text().await.unwrap()
    };
    let before = scrape().await;

    // ForgotPassword and Register: usage types no other test here sends, so their
    // series are this test's alone even when tests share the process.
    for _ in 0..3 {
        app.send(
            &json!({"to": "m@example.com", "type": "ForgotPassword", "payload": {"code": "1"}}),
        )
        .await;
    }
    app.send(&json!({"to": "n@example.com", "type": "Register", "payload": {"code": "1"}}))
        .await;
    let after = scrape().await;

    let delta =
        |name: &str, labels: &[&str]| sample(&after, name, labels) - sample(&before, name, labels);
    assert_eq!(
        delta(
            "ses_connector_sends_total",
            &["usage_type=\"ForgotPassword\"", "outcome=\"sent\""]
        ),
        2.0,
        "{after}"
    );
    assert_eq!(
        delta(
            "ses_connector_sends_total",
            &["usage_type=\"Register\"", "outcome=\"sent\""]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "ses_connector_ses_request_duration_seconds_count",
            &["outcome=\"sent\""]
        ),
        3.0
    );
    assert_eq!(
        delta("ses_connector_rate_limited_total", &["limit=\"recipient\""]),
        1.0
    );
    assert_eq!(
        delta(
            "ses_connector_http_requests_total",
            &["route=\"/v1/messages\"", "status=\"200\""]
        ),
        3.0
    );
    assert_eq!(
        delta(
            "ses_connector_http_requests_total",
            &["route=\"/v1/messages\"", "status=\"429\""]
        ),
        1.0
    );
    assert!(
        delta(
            "ses_connector_http_request_duration_seconds_count",
            &["route=\"/v1/messages\""]
        ) >= 4.0
    );
    assert!(after.contains("ses_connector_sends_in_flight"), "{after}");
}

#[tokio::test]
async fn reloads_are_counted_by_outcome() {
    let (app, path, _dir) = app_with_config_file().await;
    let reloads = |text: &str, outcome: &str| {
        sample(
            text,
            "ses_connector_config_reloads_total",
            &[&format!("outcome=\"{outcome}\"")],
        )
    };
    let before = app.get("/metrics", None).await.text().await.unwrap();

    assert_eq!(
        app.post("/v1/config/reload", Some(ADMIN_TOKEN), &json!({}))
            .await
            .status(),
        200
    );
    std::fs::write(&path, "{}").unwrap();
    assert_eq!(
        app.post("/v1/config/reload", Some(ADMIN_TOKEN), &json!({}))
            .await
            .status(),
        422
    );
    std::fs::write(&path, "not json").unwrap();
    assert_eq!(
        app.post("/v1/config/reload", Some(ADMIN_TOKEN), &json!({}))
            .await
            .status(),
        422
    );
    let after = app.get("/metrics", None).await.text().await.unwrap();

    assert_eq!(reloads(&after, "ok") - reloads(&before, "ok"), 1.0);
    assert_eq!(
        reloads(&after, "invalid") - reloads(&before, "invalid"),
        1.0
    );
    assert_eq!(
        reloads(&after, "unreadable") - reloads(&before, "unreadable"),
        1.0
    );
}

#[tokio::test]
async fn metrics_never_carry_recipients_codes_or_secrets() {
    let fake = FakeSes::start().await;
    fake.accepts("id").await;
    let app = app_with_fake_ses(&fake).await;
    app.send(&json!({"to": "private.person@example.com", "type": "SignIn", "payload": {"code": "777333"}})).await;
    let text = app.get("/metrics", None).await.text().await.unwrap();
    for secret in ["private.person", "777333", SECRET, SEND_TOKEN] {
        assert!(!text.contains(secret), "{secret} in metrics");
    }
}

/// Series of `name` in a scrape that requests with invented methods can land in:
/// other tests in the process add series of the routes they call, or of standard
/// methods, never of these.
fn series(text: &str, name: &str) -> usize {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| !OTHER_TESTS_LABELS.iter().any(|label| l.contains(label)))
        .count()
}

/// Labels of the other tests' requests: the routes they call, the methods they use.
const OTHER_TESTS_LABELS: &[&str] = &[
    "method=\"GET\"",
    "method=\"POST\"",
    "method=\"DELETE\"",
    "route=\"/v1/messages\"",
    "route=\"/v1/messages/{message_id}\"",
    "route=\"/v1/suppressions/{address}\"",
    "route=\"/v1/config/reload\"",
    "route=\"/metrics\"",
];

#[tokio::test]
async fn invented_methods_and_paths_do_not_grow_the_metric_series() {
    let app = spawn_app(AppOptions::default()).await;
    // One warm-up round puts the fixed `other`/`unmatched` series in place.
    let hit = |i: usize| {
        let method = reqwest::Method::from_bytes(
            format!("M{}{}", "X".repeat(i % 3000), fastrand_suffix(i)).as_bytes(),
        )
        .unwrap();
        let client = app.client.clone();
        let url = app.url(&format!("/random/{i}/{}", "p".repeat(i % 500)));
        async move { client.request(method, url).send().await.unwrap().status() }
    };
    for i in 0..10 {
        hit(i).await;
    }
    app.get("/metrics", None).await;
    let before = app.get("/metrics", None).await.text().await.unwrap();

    for i in 10..2010 {
        let status = hit(i).await;
        assert!(status.is_client_error(), "{status}");
    }
    let after = app.get("/metrics", None).await.text().await.unwrap();

    for name in [
        "ses_connector_http_requests_total",
        "ses_connector_http_request_duration_seconds_count",
    ] {
        assert_eq!(series(&after, name), series(&before, name), "{name}");
    }
    assert!(after.contains("method=\"other\""), "{after}");
    assert!(after.contains("route=\"unmatched\""), "{after}");
    assert!(!after.contains("MXXX"), "an invented method became a label");
    assert!(
        !after.contains("/random/"),
        "an invented path became a label"
    );
}

fn fastrand_suffix(i: usize) -> String {
    format!("{:x}", i.wrapping_mul(2_654_435_761))
}

#[tokio::test]
async fn routes_with_parameters_are_labelled_by_their_router_template() {
    let app = spawn_app(AppOptions::default()).await;
    let get = app.get("/v1/messages/no-such-id", Some(SEND_TOKEN)).await;
    assert_eq!(get.status(), 404);
    let suppression = app
        .get("/v1/suppressions/someone@example.com", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(suppression.status(), 200);
    let text = app.get("/metrics", None).await.text().await.unwrap();
    for route in ["/v1/messages/{message_id}", "/v1/suppressions/{address}"] {
        assert!(
            sample(
                &text,
                "ses_connector_http_requests_total",
                &[&format!("route=\"{route}\"")]
            ) >= 1.0,
            "{route} is not a label: {text}"
        );
    }
}

#[tokio::test]
async fn with_a_health_listener_metrics_are_served_there_and_not_on_the_callers_port() {
    let app = spawn_app(AppOptions {
        tune: |s| s.health_listen = Some("127.0.0.1:0".parse().unwrap()),
        ..AppOptions::default()
    })
    .await;
    let health = app.health_address.clone().unwrap();

    let on_main = app.get("/metrics", None).await;
    let on_health = app
        .client
        .get(format!("{health}/metrics"))
        .send()
        .await
        .unwrap();

    error_of(on_main, 404, "not_found").await;
    assert_eq!(on_health.status(), 200);
    assert!(on_health
        .text()
        .await
        .unwrap()
        .contains("ses_connector_http_requests_total"));
}
