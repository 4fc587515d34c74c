//! Idempotent retries, abuse limits, bounded work, graceful shutdown, hot reload and
//! SES faults, against a programmable fake SES.

use std::time::Duration;

use crate::harness::*;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

fn signin(to: &str) -> Value {
    json!({"to": to, "type": "SignIn", "payload": {"code": "123456"}})
}

async fn send_with_key(app: &TestApp, token: &str, key: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/messages"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// A fake SES that accepts every send after `delay`.
async fn slow_fake(message_id: &str, delay: Duration) -> FakeSes {
    let fake = FakeSes::start().await;
    fake.answer(
        ResponseTemplate::new(200)
            .set_body_json(json!({"MessageId": message_id}))
            .set_delay(delay),
    )
    .await;
    fake
}

/// SES timeouts longer than any slow fake here, so only the test's cut-off ends a send.
fn patient_ses() -> ses_connector::transport::ses::SesOptions {
    ses_connector::transport::ses::SesOptions {
        attempt_timeout: Duration::from_secs(60),
        operation_timeout: Duration::from_secs(60),
        ..fast_ses_options()
    }
}

/// Wait until the fake has received `n` sends (bounded).
async fn until_received(fake: &FakeSes, n: usize) {
    for _ in 0..500 {
        if fake.requests().await.len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the fake SES did not receive {n} sends");
}

// --- idempotency ----------------------------------------------------------------

#[tokio::test]
async fn a_repeat_with_the_same_key_and_body_gets_the_same_answer_without_a_second_send() {
    let fake = FakeSes::start().await;
    fake.accepts("only-once").await;
    let app = app_with_fake_ses(&fake).await;

    let first = send_with_key(&app, SEND_TOKEN, "key-1", &signin("u@example.com")).await;
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let second = send_with_key(&app, SEND_TOKEN, "key-1", &signin("u@example.com")).await;

    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    assert_eq!(second.json::<Value>().await.unwrap(), first);
    assert_eq!(fake.requests().await.len(), 1);
}

#[tokio::test]
async fn five_concurrent_duplicates_make_exactly_one_ses_call() {
    let fake = FakeSes::start().await;
    fake.answer(
        ResponseTemplate::new(200)
            .set_body_json(json!({"MessageId": "one"}))
            .set_delay(Duration::from_millis(300)),
    )
    .await;
    let app = app_with_fake_ses(&fake).await;

    let body = signin("u@example.com");
    let requests = (0..5).map(|_| send_with_key(&app, SEND_TOKEN, "dup", &body));
    let responses = futures_util::future::join_all(requests).await;

    for response in responses {
        assert_eq!(response.status(), 200);
        assert_eq!(response.json::<Value>().await.unwrap()["messageId"], "one");
    }
    assert_eq!(fake.requests().await.len(), 1);
}

/// A client that gives up after `after`, hanging up mid-request.
async fn send_and_hang_up(app: &TestApp, key: Option<&str>, body: &Value, after: Duration) {
    let mut request = reqwest::Client::new()
        .post(app.url("/v1/messages"))
        .bearer_auth(SEND_TOKEN)
        .timeout(after)
        .json(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let outcome = request.send().await;
    assert!(outcome.is_err_and(|e| e.is_timeout()), "the client hung up");
}

#[tokio::test]
async fn a_caller_that_hangs_up_mid_send_leaves_one_send_and_its_answer_for_the_duplicate() {
    let fake = slow_fake("one", Duration::from_millis(1500)).await;
    let app = app_with_fake_ses(&fake).await;
    let body = signin("u@example.com");

    send_and_hang_up(&app, Some("hang-up"), &body, Duration::from_millis(300)).await;
    until_received(&fake, 1).await;
    let duplicate = send_with_key(&app, SEND_TOKEN, "hang-up", &body).await;

    assert_eq!(duplicate.status(), 200);
    assert_eq!(duplicate.headers()["idempotent-replayed"], "true");
    assert_eq!(duplicate.json::<Value>().await.unwrap()["messageId"], "one");
    assert_eq!(fake.requests().await.len(), 1, "exactly one SES call");
}

#[tokio::test]
async fn the_in_flight_gauge_returns_to_zero_when_a_request_is_cancelled() {
    let fake = slow_fake("late", Duration::from_secs(60)).await;
    let app = spawn_app(AppOptions {
        ses_endpoint: Some(fake.uri()),
        ses: patient_ses(),
        ..AppOptions::default()
    })
    .await;
    let in_flight = || async {
        let text = app.get("/metrics", None).await.text().await.unwrap();
        text.lines()
            .find(|l| l.starts_with("ses_connector_sends_in_flight "))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };

    send_and_hang_up(
        &app,
        None,
        &signin("u@example.com"),
        Duration::from_millis(300),
    )
    .await;
    until_received(&fake, 1).await;

    for _ in 0..500 {
        if in_flight().await == Some(0.0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the in-flight gauge stayed at {:?}", in_flight().await);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_a_422() {
    let fake = FakeSes::start().await;
    fake.accepts("id").await;
    let app = app_with_fake_ses(&fake).await;

    send_with_key(&app, SEND_TOKEN, "k", &signin("a@example.com")).await;
    let response = send_with_key(&app, SEND_TOKEN, "k", &signin("b@example.com")).await;

    error_of(response, 422, "idempotency_key_reused").await;
    assert_eq!(fake.requests().await.len(), 1);
}

#[tokio::test]
async fn keys_are_scoped_to_the_calling_token() {
    let fake = FakeSes::start().await;
    fake.accepts("id").await;
    let app = app_with_fake_ses(&fake).await;

    send_with_key(&app, SEND_TOKEN, "shared", &signin("u@example.com")).await;
    let other = send_with_key(&app, ADMIN_TOKEN, "shared", &signin("u@example.com")).await;

    assert_eq!(other.status(), 200);
    assert!(other.headers().get("idempotent-replayed").is_none());
    assert_eq!(fake.requests().await.len(), 2);
}

#[tokio::test]
async fn an_over_long_or_malformed_key_is_a_400() {
    let fake = FakeSes::start().await;
    let app = app_with_fake_ses(&fake).await;
    for key in ["k".repeat(256), "has space".to_owned()] {
        let error = error_of(
            send_with_key(&app, SEND_TOKEN, &key, &signin("u@example.com")).await,
            400,
            "invalid_request_parameters",
        )
        .await;
        assert_eq!(error["details"][0]["path"], "Idempotency-Key");
    }
    let ok = send_with_key(&app, SEND_TOKEN, &"k".repeat(255), &signin("u@example.com")).await;
    assert_ne!(ok.status(), 400);
    assert!(fake.requests().await.len() <= 1);
}

#[tokio::test]
async fn a_transient_failure_is_not_kept_so_a_retry_with_the_key_sends() {
    let fake = FakeSes::start().await;
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("x-amzn-ErrorType", "TooManyRequestsException"),
        )
        .up_to_n_times(3)
        .mount(&fake.server)
        .await;
    fake.accepts("second-try").await;
    let app = app_with_fake_ses(&fake).await;

    let throttled = send_with_key(&app, SEND_TOKEN, "retry-me", &signin("u@example.com")).await;
    error_of(throttled, 429, "rate_limit_exceeded").await;
    let retried = send_with_key(&app, SEND_TOKEN, "retry-me", &signin("u@example.com")).await;

    assert_eq!(retried.status(), 200);
    assert_eq!(
        retried.json::<Value>().await.unwrap()["messageId"],
        "second-try"
    );
}

#[tokio::test]
async fn a_rejection_is_kept_so_a_repeat_does_not_call_ses_again() {
    let fake = FakeSes::start().await;
    fake.fails_with(400, "MessageRejected", "Email address is not verified.")
        .await;
    let app = app_with_fake_ses(&fake).await;

    error_of(
        send_with_key(&app, SEND_TOKEN, "rej", &signin("u@example.com")).await,
        502,
        "invalid_response",
    )
    .await;
    let repeat = send_with_key(&app, SEND_TOKEN, "rej", &signin("u@example.com")).await;

    assert_eq!(repeat.headers()["idempotent-replayed"], "true");
    error_of(repeat, 502, "invalid_response").await;
    assert_eq!(fake.requests().await.len(), 1);
}

#[tokio::test]
async fn test_emails_are_idempotent_too() {
    let fake = FakeSes::start().await;
    fake.accepts("test").await;
    let app = app_with_fake_ses(&fake).await;
    let body = json!({"config": logto_config(), "to": "admin@example.com"});
    for _ in 0..2 {
        let response = app
            .client
            .post(app.url("/v1/test-email"))
            .bearer_auth(ADMIN_TOKEN)
            .header("idempotency-key", "test-1")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(fake.requests().await.len(), 1);
}

// --- rate limits ----------------------------------------------------------------

fn with_default_limits(settings: &mut ses_connector::app::settings::Settings) {
    settings.rate_limit_recipient = "10/600".parse().unwrap();
    settings.rate_limit_ip = "100/600".parse().unwrap();
}

#[tokio::test]
async fn the_eleventh_send_to_a_recipient_in_ten_minutes_is_a_429() {
    let fake = FakeSes::start().await;
    fake.accepts("id").await;
    let app = spawn_app(AppOptions {
        ses_endpoint: Some(fake.uri()),
        tune: with_default_limits,
        ..AppOptions::default()
    })
    .await;

    for i in 0..10 {
        let to = if i % 2 == 0 {
            "user@example.com"
        } else {
            "USER@example.com"
        };
        assert_eq!(app.send(&signin(to)).await.status(), 200, "send {i}");
    }
    let response = app.send(&signin("User@Example.com")).await;

    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((590..=600).contains(&retry_after), "{retry_after}");
    let error = error_of(response, 429, "rate_limit_exceeded").await;
    assert_eq!(error["limit"], "recipient");
    assert_eq!(fake.requests().await.len(), 10);
    assert_eq!(
        app.send(&signin("someone-else@example.com")).await.status(),
        200
    );
}

#[tokio::test]
async fn the_ip_limit_counts_sends_from_one_client_ip() {
    let fake = FakeSes::start().await;
    fake.accepts("id").await;
    let app = spawn_app(AppOptions {
        ses_endpoint: Some(fake.uri()),
        tune: |s| s.rate_limit_ip = "3/60".parse().unwrap(),
        ..AppOptions::default()
    })
    .await;
    let from_ip = |i: usize, ip: &str| json!({"to": format!("u{i}@example.com"), "type": "SignIn", "payload": {"code": "1"}, "ip": ip});

    for i in 0..3 {
        assert_eq!(app.send(&from_ip(i, "203.0.113.7")).await.status(), 200);
    }
    let error = error_of(
        app.send(&from_ip(3, "203.0.113.7")).await,
        429,
        "rate_limit_exceeded",
    )
    .await;

    assert_eq!(error["limit"], "ip");
    let mapped = app.send(&from_ip(6, "::ffff:203.0.113.7")).await;
    let retry_after: u64 = mapped.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (50..=60).contains(&retry_after),
        "until the first send leaves the 60 s window: {retry_after}"
    );
    let error = error_of(mapped, 429, "rate_limit_exceeded").await;
    assert_eq!(
        error["limit"], "ip",
        "an IPv4-mapped address is the same client"
    );
    assert_eq!(app.send(&from_ip(4, "198.51.100.1")).await.status(), 200);
    assert_eq!(app.send(&from_ip(5, "2001:db8::1")).await.status(), 200);
}

#[tokio::test]
async fn limits_set_to_zero_are_off() {
    let fake = FakeSes::start().await;
    fake.accepts("id").await;
    let app = app_with_fake_ses(&fake).await;
    for _ in 0..15 {
        assert_eq!(app.send(&signin("same@example.com")).await.status(), 200);
    }
}

// --- bounded work ---------------------------------------------------------------

#[tokio::test]
async fn a_burst_far_above_the_cap_gets_an_answer_for_every_request() {
    let fake = FakeSes::start().await;
    fake.answer(
        ResponseTemplate::new(200)
            .set_body_json(json!({"MessageId": "slow"}))
            .set_delay(Duration::from_millis(400)),
    )
    .await;
    let app = spawn_app(AppOptions {
        ses_endpoint: Some(fake.uri()),
        tune: |s| {
            s.max_concurrent_sends = 2;
            s.max_queued_sends = 2;
            s.queue_timeout = Duration::from_millis(100);
            s.pacing_max_wait = Duration::ZERO;
        },
        ..AppOptions::default()
    })
    .await;

    let bodies: Vec<Value> = (0..40)
        .map(|i| signin(&format!("u{i}@example.com")))
        .collect();
    let burst = bodies.iter().map(|body| app.send(body));
    let responses = futures_util::future::join_all(burst).await;

    let mut sent = 0;
    let mut refused = 0;
    for response in responses {
        match response.status().as_u16() {
            200 => sent += 1,
            503 => {
                assert_eq!(response.headers()["retry-after"], "1");
                error_of(response, 503, "service_unavailable").await;
                refused += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(sent + refused, 40);
    assert!(sent >= 2 && refused > 0, "sent {sent}, refused {refused}");
    assert_eq!(
        fake.requests().await.len(),
        sent,
        "every 200 is one SES call; no refused one reached SES"
    );
    assert_eq!(
        app.send(&signin("after@example.com")).await.status(),
        200,
        "capacity comes back"
    );
}

#[tokio::test]
async fn sends_refused_by_the_concurrency_gate_do_not_use_up_the_recipients_limit() {
    let fake = FakeSes::start().await;
    // The one slot is held by a slow send to someone else.
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .and(wiremock::matchers::body_string_contains(
            "holder@example.com",
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"MessageId": "slow"}))
                .set_delay(Duration::from_secs(2)),
        )
        .mount(&fake.server)
        .await;
    fake.accepts("fast").await;
    let app = arc(spawn_app(AppOptions {
        ses_endpoint: Some(fake.uri()),
        ses: patient_ses(),
        tune: |s| {
            s.rate_limit_recipient = "2/600".parse().unwrap();
            s.max_concurrent_sends = 1;
            s.max_queued_sends = 0;
        },
        ..AppOptions::default()
    })
    .await);
    let holder = tokio::spawn({
        let app = app.clone();
        async move { app.send(&signin("holder@example.com")).await.status() }
    });
    until_received(&fake, 1).await;

    for _ in 0..3 {
        let response = app.send(&signin("victim@example.com")).await;
        error_of(response, 503, "service_unavailable").await;
    }
    assert_eq!(holder.await.unwrap(), 200);

    for i in 0..2 {
        let response = app.send(&signin("victim@example.com")).await;
        assert_eq!(response.status(), 200, "send {i} that reaches SES");
    }
    let error = error_of(
        app.send(&signin("victim@example.com")).await,
        429,
        "rate_limit_exceeded",
    )
    .await;
    assert_eq!(error["limit"], "recipient");
}

#[tokio::test]
async fn a_caller_that_hangs_up_before_its_send_reaches_ses_does_not_use_up_the_recipient() {
    let fake = FakeSes::start().await;
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .and(wiremock::matchers::body_string_contains(
            "holder@example.com",
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"MessageId": "slow"}))
                .set_delay(Duration::from_secs(1)),
        )
        .mount(&fake.server)
        .await;
    fake.accepts("fast").await;
    let app = arc(spawn_app(AppOptions {
        ses_endpoint: Some(fake.uri()),
        ses: patient_ses(),
        tune: |s| {
            s.rate_limit_recipient = "1/600".parse().unwrap();
            s.max_concurrent_sends = 1;
            s.max_queued_sends = 1;
            s.queue_timeout = Duration::from_secs(5);
        },
        ..AppOptions::default()
    })
    .await);
    let holder = tokio::spawn({
        let app = app.clone();
        async move { app.send(&signin("holder@example.com")).await.status() }
    });
    until_received(&fake, 1).await;

    // Admitted, then waiting at the gate when its caller gives up.
    let victim = signin("victim@example.com");
    send_and_hang_up(&app, None, &victim, Duration::from_millis(300)).await;
    assert_eq!(holder.await.unwrap(), 200);

    // The slot comes back once the server has seen the hang-up (bounded).
    for _ in 0..100 {
        let response = app.send(&victim).await;
        if response.status() == 200 {
            assert_eq!(
                fake.requests().await.len(),
                2,
                "the hung-up send never left"
            );
            return;
        }
        let error = error_of(response, 429, "rate_limit_exceeded").await;
        assert_eq!(error["limit"], "recipient", "{error}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the hung-up send still counts against the recipient");
}

/// Reads until the server closes the connection; what it sent before closing.
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    stream.read_to_end(&mut received).await.unwrap_or_default();
    received
}

#[tokio::test]
async fn idle_and_slow_connections_are_closed_and_give_their_slot_back() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app(AppOptions {
        tune: |s| {
            s.max_connections = 2;
            s.idle_timeout = Duration::from_millis(300);
        },
        ..AppOptions::default()
    })
    .await;
    let address = app.address.trim_start_matches("http://").to_owned();

    // One connection says nothing; another starts a request head and stalls.
    let mut idle = tokio::net::TcpStream::connect(&address).await.unwrap();
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        (
            read_until_closed(&mut idle).await,
            read_until_closed(&mut slow).await,
        )
    })
    .await
    .expect("the service closes both within the idle timeout");
    assert!(closed.0.is_empty(), "nothing is sent to an idle connection");

    // Both slots are free again: two new callers are served at once.
    let first = reqwest::Client::new().get(app.url("/healthz")).send();
    let second = reqwest::Client::new().get(app.url("/healthz")).send();
    let (first, second) = tokio::time::timeout(Duration::from_secs(5), async {
        futures_util::join!(first, second)
    })
    .await
    .expect("the freed slots serve new connections");
    assert_eq!(first.unwrap().status(), 200);
    assert_eq!(second.unwrap().status(), 200);
}

#[tokio::test]
async fn probes_answer_on_the_health_listener_while_silent_connections_fill_the_cap() {
    let app = spawn_app(AppOptions {
        tune: |s| {
            s.max_connections = 3;
            s.health_listen = Some("127.0.0.1:0".parse().unwrap());
        },
        ..AppOptions::default()
    })
    .await;
    let main = app.address.trim_start_matches("http://").to_owned();
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(tokio::net::TcpStream::connect(&main).await.unwrap());
    }
    let starved = reqwest::Client::new()
        .get(app.url("/healthz"))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(starved.is_err(), "the main listener is full");
    let health = app.health_address.clone().unwrap();
    let client = reqwest::Client::new();

    for path in ["/healthz", "/readyz", "/metrics"] {
        let started = std::time::Instant::now();
        let response = client.get(format!("{health}{path}")).send().await.unwrap();
        let elapsed = started.elapsed();
        assert_eq!(response.status(), 200, "{path}");
        assert!(
            elapsed < Duration::from_millis(100),
            "{path} took {elapsed:?}"
        );
    }
    let other = client
        .post(format!("{health}/v1/messages"))
        .json(&signin("u@example.com"))
        .send()
        .await
        .unwrap();
    error_of(other, 404, "not_found").await;
    drop(silent);
}

#[tokio::test]
async fn a_keep_alive_connection_serves_many_requests_within_the_idle_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app(AppOptions {
        tune: |s| s.idle_timeout = Duration::from_millis(500),
        ..AppOptions::default()
    })
    .await;
    // One socket, five requests: each answered on the same connection proves reuse.
    let mut stream = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    for i in 0..5 {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            let read = stream.read(&mut byte).await.unwrap();
            assert_eq!(read, 1, "request {i}: the connection was closed");
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "request {i}: {head}");
        assert!(!head.contains("connection: close"), "{head}");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// --- graceful shutdown ----------------------------------------------------------

#[tokio::test]
async fn sends_in_flight_at_shutdown_all_finish_with_200() {
    let fake = FakeSes::start().await;
    fake.answer(
        ResponseTemplate::new(200)
            .set_body_json(json!({"MessageId": "finished"}))
            .set_delay(Duration::from_millis(500)),
    )
    .await;
    let app = app_with_fake_ses(&fake).await;
    let client = app.client.clone();
    let url = app.url("/v1/messages");
    let in_flight: Vec<_> = (0..5)
        .map(|i| {
            let request = client
                .post(&url)
                .bearer_auth(SEND_TOKEN)
                .json(&signin(&format!("u{i}@example.com")));
            tokio::spawn(async move { request.send().await })
        })
        .collect();
    until_received(&fake, 5).await;

    app.stop().await.expect("the server stops cleanly");

    for request in in_flight {
        let response = within(
            Duration::from_secs(30),
            "a send in flight answering",
            request,
        )
        .await
        .unwrap()
        .expect("an answer, not a dropped connection");
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.json::<Value>().await.unwrap()["messageId"],
            "finished"
        );
    }
}

#[tokio::test]
async fn when_the_grace_period_ends_the_server_stops_without_waiting_for_slow_sends() {
    let fake = slow_fake("too-late", Duration::from_secs(20)).await;
    let app = spawn_app(AppOptions {
        ses_endpoint: Some(fake.uri()),
        ses: patient_ses(),
        tune: |s| s.shutdown_grace = Duration::from_millis(300),
        ..AppOptions::default()
    })
    .await;
    let request = app
        .client
        .post(app.url("/v1/messages"))
        .bearer_auth(SEND_TOKEN)
        .json(&signin("u@example.com"));
    let in_flight = tokio::spawn(request.send());
    until_received(&fake, 1).await;

    let started = std::time::Instant::now();
    app.stop().await.expect("the server stops");
    let waited = started.elapsed();

    assert!(
        waited < Duration::from_secs(10),
        "stopped after the 300 ms grace, not after the 20 s send: {waited:?}"
    );
    assert!(!in_flight.is_finished(), "the slow send had no answer yet");
    in_flight.abort();
}

struct Hanging;

impl ses_connector::transport::Mailer for Hanging {
    fn send(
        &self,
        _: ses_connector::transport::OutgoingEmail,
    ) -> ses_connector::transport::BoxFuture<'_, Result<String, ses_connector::transport::SendError>>
    {
        Box::pin(std::future::pending())
    }
}

#[tokio::test]
async fn a_request_past_the_http_timeout_is_cut_off_with_a_504() {
    let app = spawn_app(AppOptions {
        mailer: Some(arc(Hanging)),
        tune: |s| {
            s.ses.attempt_timeout = Duration::from_millis(100);
            s.ses.operation_timeout = Duration::from_millis(100);
            s.queue_timeout = Duration::from_millis(100);
            s.pacing_max_wait = Duration::ZERO;
        },
        ..AppOptions::default()
    })
    .await;

    let response = app.send(&signin("u@example.com")).await;

    let error = error_of(response, 504, "general").await;
    assert!(
        error["message"].as_str().unwrap().contains("took too long"),
        "{error}"
    );
    assert_eq!(app.get("/healthz", None).await.status(), 200);
}

#[tokio::test]
async fn readyz_turns_503_when_draining_begins() {
    let app = spawn_app(AppOptions {
        transport: ses_connector::app::settings::Transport::Outbox,
        tune: |s| s.shutdown_delay = Duration::from_secs(20),
        ..AppOptions::default()
    })
    .await;
    assert_eq!(app.get("/readyz", None).await.status(), 200);
    let client = app.client.clone();
    let readyz = app.url("/readyz");
    let healthz = app.url("/healthz");

    let stopping = tokio::spawn(app.stop());
    let mut status = 200;
    for _ in 0..500 {
        status = client.get(&readyz).send().await.unwrap().status().as_u16();
        if status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    assert_eq!(status, 503);
    assert_eq!(
        client.get(&healthz).send().await.unwrap().status(),
        200,
        "alive while draining"
    );
    stopping.abort();
}

// --- hot reload -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_that_never_answers_fails_the_reload_and_the_service_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, logto_config().to_string()).unwrap();
    let app = spawn_app(AppOptions {
        config_file: Some(path.clone()),
        transport: ses_connector::app::settings::Transport::Outbox,
        tune: |s| s.config_read_timeout = Duration::from_millis(300),
        ..AppOptions::default()
    })
    .await;
    // A FIFO with no writer: reading it blocks until someone writes.
    std::fs::remove_file(&path).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success());
    let empty = json!({});
    let reload = || async {
        let request = app.post("/v1/config/reload", Some(ADMIN_TOKEN), &empty);
        tokio::time::timeout(Duration::from_secs(10), request)
            .await
            .expect("the reload answers; the runtime is not blocked")
    };

    let first = error_of(reload().await, 422, "invalid_config").await;
    assert!(
        first["details"][0]["message"]
            .as_str()
            .unwrap()
            .contains("did not finish within 300 ms"),
        "{first}"
    );
    let second = error_of(reload().await, 422, "invalid_config").await;
    assert!(
        second["details"][0]["message"]
            .as_str()
            .unwrap()
            .contains("has not finished"),
        "{second}"
    );
    assert_eq!(app.get("/healthz", None).await.status(), 200);
    let sent = app.send(&signin("u@example.com")).await;
    assert_eq!(sent.status(), 200, "the old config keeps serving");

    // Let the stuck read finish; the next reload reads the file again.
    let writer = tokio::task::spawn_blocking({
        let path = path.clone();
        move || std::fs::write(&path, logto_config().to_string())
    });
    within(
        Duration::from_secs(10),
        "the write releasing the stuck read",
        writer,
    )
    .await
    .unwrap()
    .unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, format!("\u{feff}{}", logto_config())).unwrap();
    for _ in 0..100 {
        let response = reload().await;
        if response.status() == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the reload never succeeded after the read was released");
}

#[tokio::test]
async fn a_send_in_flight_during_a_reload_finishes_on_its_config() {
    let fake = FakeSes::start().await;
    fake.answer(
        ResponseTemplate::new(200)
            .set_body_json(json!({"MessageId": "x"}))
            .set_delay(Duration::from_millis(300)),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.json");
    std::fs::write(&file, logto_config().to_string()).unwrap();
    let app = spawn_app(AppOptions {
        config_file: Some(file.clone()),
        ses_endpoint: Some(fake.uri()),
        ..AppOptions::default()
    })
    .await;

    let request = app
        .client
        .post(app.url("/v1/messages"))
        .bearer_auth(SEND_TOKEN)
        .json(&signin("u@example.com"));
    let in_flight = tokio::spawn(async move { request.send().await });
    until_received(&fake, 1).await;
    let mut changed = logto_config();
    changed["emailAddress"] = json!("changed@example.com");
    std::fs::write(&file, changed.to_string()).unwrap();
    assert_eq!(
        app.post("/v1/config/reload", Some(ADMIN_TOKEN), &json!({}))
            .await
            .status(),
        200
    );

    let answered = within(
        Duration::from_secs(30),
        "the send in flight answering",
        in_flight,
    );
    assert_eq!(answered.await.unwrap().unwrap().status(), 200);
    assert_eq!(app.send(&signin("v@example.com")).await.status(), 200);
    let requests = fake.requests().await;
    assert_eq!(
        requests[0]["FromEmailAddress"],
        "Acme <noreply@example.com>"
    );
    assert_eq!(requests[1]["FromEmailAddress"], "changed@example.com");
}

// --- SES faults -----------------------------------------------------------------

/// A TCP server that accepts connections and drops them without answering.
async fn dropping_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    address
}

#[tokio::test]
async fn a_dropped_connection_is_a_502_and_the_service_stays_ready() {
    let app = spawn_app(AppOptions {
        ses_endpoint: Some(dropping_server().await),
        ..AppOptions::default()
    })
    .await;
    error_of(app.send(&signin("u@example.com")).await, 502, "general").await;
    assert_eq!(app.get("/readyz", None).await.status(), 200);
}

#[tokio::test]
async fn after_every_kind_of_ses_fault_the_service_stays_ready() {
    let faults: Vec<(ResponseTemplate, u16)> = vec![
        (
            ResponseTemplate::new(429)
                .insert_header("x-amzn-ErrorType", "TooManyRequestsException"),
            429,
        ),
        (
            ResponseTemplate::new(400)
                .insert_header("x-amzn-ErrorType", "MessageRejected")
                .set_body_json(json!({"message": "no"})),
            502,
        ),
        (
            ResponseTemplate::new(400).insert_header("x-amzn-ErrorType", "SendingPausedException"),
            503,
        ),
        (ResponseTemplate::new(500), 502),
        (ResponseTemplate::new(200).set_body_string("not json"), 502),
    ];
    for (fault, status) in faults {
        let fake = FakeSes::start().await;
        fake.answer(fault).await;
        let app = app_with_fake_ses(&fake).await;
        assert_eq!(
            app.send(&signin("u@example.com")).await.status().as_u16(),
            status
        );
        assert_eq!(app.get("/readyz", None).await.status(), 200);
    }
}
