//! A battery of malformed, oversized, hostile and unauthorised requests across every
//! route: each gets its 4xx in the one error shape, none reaches SES, and the
//! service keeps serving.

use crate::harness::*;
use serde_json::{json, Value};

struct Case {
    why: &'static str,
    method: &'static str,
    path: &'static str,
    token: Option<&'static str>,
    content_type: Option<&'static str>,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

const JSON: Option<&str> = Some("application/json");

fn case(
    why: &'static str,
    method: &'static str,
    path: &'static str,
    token: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        why,
        method,
        path,
        token,
        content_type: JSON,
        headers: Vec::new(),
        body,
        status,
        code,
    }
}

fn bytes(value: Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

fn send(to: Value, kind: Value, payload: Value) -> Vec<u8> {
    bytes(json!({"to": to, "type": kind, "payload": payload}))
}

fn cases() -> Vec<Case> {
    let s = Some(SEND_TOKEN);
    let a = Some(ADMIN_TOKEN);
    let good = || {
        send(
            json!("u@example.com"),
            json!("SignIn"),
            json!({"code": "1"}),
        )
    };
    let nested = format!("{{\"to\":{}1{}}}", "[".repeat(3000), "]".repeat(3000)).into_bytes();
    let over_64k = send(
        json!("u@example.com"),
        json!("SignIn"),
        json!({"code": "x".repeat(65 * 1024)}),
    );
    let over_1m = bytes(
        json!({"config": {"templates": "x".repeat(1024 * 1024 + 10)}, "to": "u@example.com"}),
    );
    let long_to = format!("{}@{}.example.com", "a".repeat(64), "b".repeat(190));
    let mut invalid_config = logto_config();
    invalid_config["region"] = json!("mars-1");
    let mut cases = vec![
        // authentication and scope
        case(
            "no token",
            "POST",
            "/v1/messages",
            None,
            good(),
            401,
            "unauthorized",
        ),
        case(
            "wrong token",
            "POST",
            "/v1/messages",
            Some("wrong-token-0123456789abcdef"),
            good(),
            401,
            "unauthorized",
        ),
        case(
            "token with extra characters",
            "POST",
            "/v1/messages",
            Some("send-token-0123456789abcdefX"),
            good(),
            401,
            "unauthorized",
        ),
        case(
            "send token on test-email",
            "POST",
            "/v1/test-email",
            s,
            bytes(json!({"config": logto_config(), "to": "u@example.com"})),
            403,
            "forbidden",
        ),
        case(
            "send token on validate",
            "POST",
            "/v1/config/validate",
            s,
            bytes(logto_config()),
            403,
            "forbidden",
        ),
        case(
            "send token on preview",
            "POST",
            "/v1/preview",
            s,
            bytes(json!({"type": "SignIn"})),
            403,
            "forbidden",
        ),
        case(
            "send token on config",
            "GET",
            "/v1/config",
            s,
            Vec::new(),
            403,
            "forbidden",
        ),
        case(
            "send token on reload",
            "POST",
            "/v1/config/reload",
            s,
            Vec::new(),
            403,
            "forbidden",
        ),
        case(
            "no token on config",
            "GET",
            "/v1/config",
            None,
            Vec::new(),
            401,
            "unauthorized",
        ),
        case(
            "no token on reload",
            "POST",
            "/v1/config/reload",
            None,
            Vec::new(),
            401,
            "unauthorized",
        ),
        case(
            "no token on test-email",
            "POST",
            "/v1/test-email",
            None,
            Vec::new(),
            401,
            "unauthorized",
        ),
        // malformed bodies
        case(
            "malformed JSON",
            "POST",
            "/v1/messages",
            s,
            b"{\"to\": ".to_vec(),
            400,
            "invalid_request_parameters",
        ),
        case(
            "trailing garbage",
            "POST",
            "/v1/messages",
            s,
            [good(), b"}".to_vec()].concat(),
            400,
            "invalid_request_parameters",
        ),
        case(
            "invalid UTF-8",
            "POST",
            "/v1/messages",
            s,
            b"{\"to\": \"\xc3\x28@example.com\"}".to_vec(),
            400,
            "invalid_request_parameters",
        ),
        case(
            "empty body",
            "POST",
            "/v1/messages",
            s,
            Vec::new(),
            400,
            "invalid_request_parameters",
        ),
        case(
            "deeply nested JSON",
            "POST",
            "/v1/messages",
            s,
            nested,
            400,
            "invalid_request_parameters",
        ),
        case(
            "body over 64 KiB",
            "POST",
            "/v1/messages",
            s,
            over_64k,
            413,
            "payload_too_large",
        ),
        case(
            "array body",
            "POST",
            "/v1/messages",
            s,
            b"[]".to_vec(),
            400,
            "invalid_request_parameters",
        ),
        case(
            "null body",
            "POST",
            "/v1/messages",
            s,
            b"null".to_vec(),
            400,
            "invalid_request_parameters",
        ),
        case(
            "string body",
            "POST",
            "/v1/messages",
            s,
            b"\"hello\"".to_vec(),
            400,
            "invalid_request_parameters",
        ),
        // bad fields
        case(
            "display name in to",
            "POST",
            "/v1/messages",
            s,
            send(json!("Eve <e@example.com>"), json!("SignIn"), json!({})),
            400,
            "invalid_request_parameters",
        ),
        case(
            "comma list in to",
            "POST",
            "/v1/messages",
            s,
            send(
                json!("a@example.com,b@example.com"),
                json!("SignIn"),
                json!({}),
            ),
            400,
            "invalid_request_parameters",
        ),
        case(
            "CRLF header injection in to",
            "POST",
            "/v1/messages",
            s,
            send(
                json!("a@example.com\r\nBcc: b@example.com"),
                json!("SignIn"),
                json!({}),
            ),
            400,
            "invalid_request_parameters",
        ),
        case(
            "too long to",
            "POST",
            "/v1/messages",
            s,
            send(json!(long_to), json!("SignIn"), json!({})),
            400,
            "invalid_request_parameters",
        ),
        case(
            "number as to",
            "POST",
            "/v1/messages",
            s,
            send(json!(42), json!("SignIn"), json!({})),
            400,
            "invalid_request_parameters",
        ),
        case(
            "missing to",
            "POST",
            "/v1/messages",
            s,
            bytes(json!({"type": "SignIn"})),
            400,
            "invalid_request_parameters",
        ),
        case(
            "unknown type",
            "POST",
            "/v1/messages",
            s,
            send(json!("u@example.com"), json!("Login"), json!({})),
            400,
            "invalid_request_parameters",
        ),
        case(
            "wrong-case type",
            "POST",
            "/v1/messages",
            s,
            send(json!("u@example.com"), json!("signin"), json!({})),
            400,
            "invalid_request_parameters",
        ),
        case(
            "payload as string",
            "POST",
            "/v1/messages",
            s,
            send(json!("u@example.com"), json!("SignIn"), json!("123456")),
            400,
            "invalid_request_parameters",
        ),
        case(
            "payload as array",
            "POST",
            "/v1/messages",
            s,
            send(json!("u@example.com"), json!("SignIn"), json!(["123456"])),
            400,
            "invalid_request_parameters",
        ),
        case(
            "bad ip",
            "POST",
            "/v1/messages",
            s,
            bytes(json!({"to": "u@example.com", "type": "SignIn", "ip": "999.1.1.1"})),
            400,
            "invalid_request_parameters",
        ),
        case(
            "ip as number",
            "POST",
            "/v1/messages",
            s,
            bytes(json!({"to": "u@example.com", "type": "SignIn", "ip": 1})),
            400,
            "invalid_request_parameters",
        ),
        // test-email
        case(
            "test-email without config",
            "POST",
            "/v1/test-email",
            a,
            bytes(json!({"to": "u@example.com"})),
            400,
            "invalid_request_parameters",
        ),
        case(
            "test-email with invalid config",
            "POST",
            "/v1/test-email",
            a,
            bytes(json!({"config": invalid_config, "to": "u@example.com"})),
            422,
            "invalid_config",
        ),
        case(
            "test-email with config not an object",
            "POST",
            "/v1/test-email",
            a,
            bytes(json!({"config": [1], "to": "u@example.com"})),
            422,
            "invalid_config",
        ),
        case(
            "test-email with bad to",
            "POST",
            "/v1/test-email",
            a,
            bytes(json!({"config": logto_config(), "to": "nobody"})),
            400,
            "invalid_request_parameters",
        ),
        case(
            "test-email with unknown type",
            "POST",
            "/v1/test-email",
            a,
            bytes(json!({"config": logto_config(), "to": "u@example.com", "type": "X"})),
            400,
            "invalid_request_parameters",
        ),
        case(
            "test-email over 1 MiB",
            "POST",
            "/v1/test-email",
            a,
            over_1m,
            413,
            "payload_too_large",
        ),
        // validate and preview
        case(
            "validate malformed JSON",
            "POST",
            "/v1/config/validate",
            a,
            b"{".to_vec(),
            400,
            "invalid_request_parameters",
        ),
        case(
            "preview without type",
            "POST",
            "/v1/preview",
            a,
            bytes(json!({})),
            400,
            "invalid_request_parameters",
        ),
        case(
            "preview with payload not an object",
            "POST",
            "/v1/preview",
            a,
            bytes(json!({"type": "SignIn", "payload": 5})),
            400,
            "invalid_request_parameters",
        ),
        case(
            "preview with invalid config",
            "POST",
            "/v1/preview",
            a,
            bytes(json!({"type": "SignIn", "config": {}})),
            422,
            "invalid_config",
        ),
        // routes and methods
        case(
            "GET on the send route",
            "GET",
            "/v1/messages",
            s,
            Vec::new(),
            405,
            "method_not_allowed",
        ),
        case(
            "PUT on config",
            "PUT",
            "/v1/config",
            a,
            bytes(json!({})),
            405,
            "method_not_allowed",
        ),
        case(
            "DELETE on healthz",
            "DELETE",
            "/healthz",
            None,
            Vec::new(),
            405,
            "method_not_allowed",
        ),
        case(
            "POST on readyz",
            "POST",
            "/readyz",
            None,
            Vec::new(),
            405,
            "method_not_allowed",
        ),
        case(
            "unknown route",
            "GET",
            "/v2/messages",
            None,
            Vec::new(),
            404,
            "not_found",
        ),
        case("API root", "GET", "/v1", None, Vec::new(), 404, "not_found"),
        case(
            "route suffix",
            "POST",
            "/v1/messages/extra/more",
            s,
            good(),
            404,
            "not_found",
        ),
        case(
            "encoded traversal",
            "GET",
            "/v1/%2e%2e/etc/passwd",
            None,
            Vec::new(),
            404,
            "not_found",
        ),
        case(
            "outbox without the outbox transport",
            "GET",
            "/outbox",
            None,
            Vec::new(),
            404,
            "not_found",
        ),
        case(
            "outbox JSON without the outbox transport",
            "GET",
            "/v1/outbox",
            a,
            Vec::new(),
            404,
            "not_found",
        ),
    ];
    let mut with_headers = |why,
                            content_type: Option<&'static str>,
                            headers: Vec<(&'static str, String)>,
                            status,
                            code| {
        let token = if headers.iter().any(|(name, _)| *name == "authorization") {
            None
        } else {
            s
        };
        cases.push(Case {
            why,
            method: "POST",
            path: "/v1/messages",
            token,
            content_type,
            headers,
            body: good(),
            status,
            code,
        });
    };
    with_headers(
        "text/plain body",
        Some("text/plain"),
        vec![],
        415,
        "unsupported_media_type",
    );
    with_headers(
        "form body",
        Some("application/x-www-form-urlencoded"),
        vec![],
        415,
        "unsupported_media_type",
    );
    with_headers(
        "no content type",
        None,
        vec![],
        415,
        "unsupported_media_type",
    );
    with_headers(
        "idempotency key too long",
        JSON,
        vec![("idempotency-key", "k".repeat(256))],
        400,
        "invalid_request_parameters",
    );
    with_headers(
        "idempotency key with a space",
        JSON,
        vec![("idempotency-key", "a b".to_owned())],
        400,
        "invalid_request_parameters",
    );
    with_headers(
        "basic auth",
        JSON,
        vec![("authorization", "Basic dXNlcjpwYXNz".to_owned())],
        401,
        "unauthorized",
    );
    cases
}

#[tokio::test]
async fn hostile_requests_get_a_4xx_in_the_error_shape_and_never_reach_ses() {
    let fake = FakeSes::start().await;
    fake.accepts("good").await;
    let app = app_with_fake_ses(&fake).await;
    let cases = cases();
    assert!(cases.len() >= 40, "the battery has {} cases", cases.len());
    eprintln!("{} hostile cases", cases.len());

    for case in cases {
        let method = reqwest::Method::from_bytes(case.method.as_bytes()).unwrap();
        let mut request = app
            .client
            .request(method, app.url(case.path))
            .body(case.body);
        if let Some(token) = case.token {
            request = request.bearer_auth(token);
        }
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        for (name, value) in &case.headers {
            request = request.header(*name, value);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.why));
        assert_eq!(response.status().as_u16(), case.status, "{}", case.why);
        let error = error_of(response, case.status, case.code).await;
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            case.why
        );
    }

    assert!(
        fake.requests().await.is_empty(),
        "no hostile request reached SES"
    );
    assert_eq!(
        app.send(&json!({"to": "u@example.com", "type": "SignIn", "payload": {"code": "1"}}))
            .await
            .status(),
        200
    );
    assert_eq!(app.get("/readyz", None).await.status(), 200);
}

#[tokio::test]
async fn an_over_long_request_id_is_replaced_not_echoed() {
    let app = app_with_fake_ses(&FakeSes::start().await).await;
    let long = "r".repeat(1000);
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", &long)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-request-id"].to_str().unwrap();
    assert_ne!(id, long);
    assert!(id.len() <= 128);
}

/// Headers as name and value.
type Headers = Vec<(String, String)>;

/// A send with `extra` headers beside the usual ones.
async fn send_with_headers(app: &TestApp, extra: &Headers) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/v1/messages"))
        .bearer_auth(SEND_TOKEN)
        .json(&json!({"to": "u@example.com", "type": "SignIn", "payload": {"code": "1"}}));
    for (name, value) in extra {
        request = request.header(name, value);
    }
    request
        .send()
        .await
        .expect("an answer, not a closed connection")
}

#[tokio::test]
async fn request_heads_over_the_service_limits_get_a_431_in_the_error_shape() {
    let fake = FakeSes::start().await;
    fake.accepts("id").await;
    let app = app_with_fake_ses(&fake).await;
    let many = |n: usize| {
        (0..n)
            .map(|i| (format!("x-extra-{i}"), "1".to_owned()))
            .collect()
    };
    let cases: [(&str, Headers, &str); 2] = [
        ("80 headers", many(80), "headers"),
        (
            "one 20 KiB header",
            vec![("x-big".into(), "b".repeat(20 * 1024))],
            "bytes",
        ),
    ];

    for (why, headers, says) in cases {
        let response = send_with_headers(&app, &headers).await;

        assert!(
            response.headers().get("x-request-id").is_some(),
            "{why}: the answer carries a request id"
        );
        let error = error_of(response, 431, "request_header_fields_too_large").await;
        assert!(
            error["message"].as_str().unwrap().contains(says),
            "{why}: {error}"
        );
    }
    assert!(fake.requests().await.is_empty(), "nothing reached SES");
}

#[tokio::test]
async fn request_heads_just_within_the_service_limits_are_served() {
    let fake = FakeSes::start().await;
    fake.accepts("id").await;
    let app = app_with_fake_ses(&fake).await;
    // With the client's own few headers: under 64 headers and 16 KiB in all.
    let headers: Vec<_> = (0..50)
        .map(|i| (format!("x-extra-{i}"), "v".repeat(250)))
        .collect();

    let response = send_with_headers(&app, &headers).await;

    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn past_hypers_own_header_cap_the_answer_is_still_a_431() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = app_with_fake_ses(&FakeSes::start().await).await;
    let mut head = String::from("GET /healthz HTTP/1.1\r\nHost: localhost\r\n");
    for i in 0..120 {
        head.push_str(&format!("x-extra-{i}: 1\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();

    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    within(
        std::time::Duration::from_secs(10),
        "hyper closing the connection",
        read,
    )
    .await
    .unwrap();

    // hyper's last resort: no request reached the service, so no JSON, no request id.
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 431"), "{answer}");
    assert!(!answer.contains("x-request-id"), "{answer}");
}
