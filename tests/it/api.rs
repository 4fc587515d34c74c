//! The HTTP API end to end, with SES played by a programmable fake.

use std::time::Duration;

use crate::harness::*;
use serde_json::{json, Value};
use wiremock::ResponseTemplate;

fn signin(to: &str) -> Value {
    json!({"to": to, "type": "SignIn", "payload": {"code": "123456", "user": {"name": "Ann"}, "application": {"name": "Acme"}}, "ip": "203.0.113.7"})
}

/// One sign-in sent with `config` through a fake SES that accepts it: the app, and
/// the request SES received.
async fn send_one_with(config: Value) -> (TestApp, Value) {
    let fake = FakeSes::start().await;
    fake.accepts("id").await;
    let app = spawn_app(AppOptions {
        config: Some(config),
        ses_endpoint: Some(fake.uri()),
        ..AppOptions::default()
    })
    .await;
    assert_eq!(app.send(&signin("user@example.com")).await.status(), 200);
    let sent = fake.requests().await.remove(0);
    (app, sent)
}

#[tokio::test]
async fn a_send_builds_the_same_ses_request_as_logtos_connector_plus_text_and_tag() {
    let fake = FakeSes::start().await;
    fake.accepts("0100018c-ses-id").await;
    let app = app_with_fake_ses(&fake).await;

    let response = app.send(&signin("user@example.com")).await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"messageId": "0100018c-ses-id", "template": {"usageType": "SignIn", "locale": null}})
    );
    let requests = fake.requests().await;
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!(
        sent["Destination"]["ToAddresses"],
        json!(["user@example.com"])
    );
    assert_eq!(sent["FromEmailAddress"], "Acme <noreply@example.com>");
    assert_eq!(
        sent["FromEmailAddressIdentityArn"],
        "arn:aws:ses:us-east-1:123456789012:identity/example.com"
    );
    assert_eq!(
        sent["FeedbackForwardingEmailAddress"],
        "bounces@example.com"
    );
    assert_eq!(
        sent["FeedbackForwardingEmailAddressIdentityArn"],
        "arn:aws:ses:us-east-1:123456789012:identity/example.com"
    );
    assert_eq!(sent["ConfigurationSetName"], "verification-codes");
    let simple = &sent["Content"]["Simple"];
    assert_eq!(
        simple["Subject"],
        json!({"Data": "Your Acme code", "Charset": "UTF-8"})
    );
    assert_eq!(
        simple["Body"]["Html"],
        json!({"Data": "<p>Hello Ann, your code is 123456.</p>", "Charset": "UTF-8"})
    );
    assert_eq!(
        simple["Body"]["Text"]["Data"].as_str().unwrap().trim(),
        "Hello Ann, your code is 123456."
    );
    assert_eq!(
        sent["EmailTags"],
        json!([{"Name": "usage_type", "Value": "SignIn"}])
    );
    assert!(
        sent.get("ReplyToAddresses").is_none(),
        "no reply-to configured: {sent}"
    );
}

#[tokio::test]
async fn empty_optional_fields_are_left_out_of_the_ses_request() {
    let mut config = logto_config();
    for key in [
        "emailAddressIdentityArn",
        "feedbackForwardingEmailAddress",
        "feedbackForwardingEmailAddressIdentityArn",
        "configurationSetName",
    ] {
        config[key] = json!("");
    }
    config["replyTo"] = json!("support@example.com");

    let (_app, sent) = send_one_with(config).await;

    for key in [
        "FromEmailAddressIdentityArn",
        "FeedbackForwardingEmailAddress",
        "FeedbackForwardingEmailAddressIdentityArn",
        "ConfigurationSetName",
    ] {
        assert!(sent.get(key).is_none(), "{key} should be omitted: {sent}");
    }
    assert_eq!(sent["ReplyToAddresses"], json!(["support@example.com"]));
}

#[tokio::test]
async fn a_non_ascii_sender_name_reaches_ses_as_an_encoded_word() {
    use base64::Engine;
    let mut config = logto_config();
    config["emailAddress"] = json!("Société Générale <noreply@example.com>");
    config["replyTo"] = json!("\"Support, Zoë\" <support@example.com>");

    let (app, sent) = send_one_with(config).await;

    // SES refuses a raw non-ASCII name ("Missing '\"'"); RFC 2047 B-encoding is
    // what it documents.
    let decode = |value: &str| -> (String, String) {
        let (word, address) = value.rsplit_once(' ').unwrap();
        let payload = word
            .strip_prefix("=?utf-8?b?")
            .and_then(|w| w.strip_suffix("?="))
            .unwrap_or_else(|| panic!("not an encoded-word: {value}"));
        let name = base64::engine::general_purpose::STANDARD
            .decode(payload)
            .unwrap();
        (String::from_utf8(name).unwrap(), address.to_owned())
    };
    let from = sent["FromEmailAddress"].as_str().unwrap();
    assert!(from.is_ascii(), "{from}");
    assert_eq!(
        decode(from),
        (
            "Société Générale".to_owned(),
            "<noreply@example.com>".to_owned()
        )
    );
    let reply_to = sent["ReplyToAddresses"][0].as_str().unwrap();
    assert_eq!(
        decode(reply_to),
        (
            "Support, Zoë".to_owned(),
            "<support@example.com>".to_owned()
        )
    );

    // The admin preview shows the sender as configured.
    let preview = app
        .post(
            "/v1/preview",
            Some(ADMIN_TOKEN),
            &json!({"type": "SignIn", "payload": {"code": "123456"}}),
        )
        .await;
    assert_eq!(preview.status(), 200);
    let preview: Value = preview.json().await.unwrap();
    assert_eq!(preview["from"], "Société Générale <noreply@example.com>");
}

#[tokio::test]
async fn template_send_from_and_reply_to_override_the_config() {
    let mut config = logto_config();
    config["replyTo"] = json!("support@example.com");
    config["templates"][0]["sendFrom"] = json!("\"Acme, Sign-in\" <signin@example.com>");
    config["templates"][0]["replyTo"] = json!("signin-help@example.com");
    config["templates"][0]["contentType"] = json!("text/plain");

    let (_app, sent) = send_one_with(config).await;

    assert_eq!(
        sent["FromEmailAddress"],
        "\"Acme, Sign-in\" <signin@example.com>"
    );
    assert_eq!(sent["ReplyToAddresses"], json!(["signin-help@example.com"]));
    let body = &sent["Content"]["Simple"]["Body"];
    assert!(
        body.get("Html").is_none(),
        "text/plain sends no HTML part: {body}"
    );
    assert_eq!(
        body["Text"]["Data"],
        "<p>Hello Ann, your code is 123456.</p>"
    );
}

#[tokio::test]
async fn a_type_without_its_own_template_falls_back_to_generic() {
    let fake = FakeSes::start().await;
    fake.accepts("id").await;
    let app = app_with_fake_ses(&fake).await;

    let response = app
        .send(&json!({"to": "u@example.com", "type": "MfaVerification", "payload": {"code": "1"}}))
        .await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["template"]["usageType"], "Generic");
}

#[tokio::test]
async fn send_returns_422_when_no_template_matches() {
    let mut config = logto_config();
    for t in config["templates"].as_array_mut().unwrap() {
        t["locale"] = json!("de");
    }
    let fake = FakeSes::start().await;
    let app = spawn_app(AppOptions {
        config: Some(config),
        ses_endpoint: Some(fake.uri()),
        ..AppOptions::default()
    })
    .await;

    let response = app
        .send(&json!({"to": "u@example.com", "type": "SignIn", "payload": {"locale": "fr"}}))
        .await;

    error_of(response, 422, "template_not_found").await;
    assert!(fake.requests().await.is_empty());
}

// --- authentication -------------------------------------------------------------

#[tokio::test]
async fn requests_without_a_valid_token_are_unauthorized() {
    let fake = FakeSes::start().await;
    let app = app_with_fake_ses(&fake).await;
    for token in [None, Some("wrong-token-0123456789abcdef")] {
        let response = app
            .post("/v1/messages", token, &signin("u@example.com"))
            .await;
        assert_eq!(
            response.headers().get("www-authenticate").unwrap(),
            "Bearer"
        );
        error_of(response, 401, "unauthorized").await;
    }
    assert!(fake.requests().await.is_empty());
}

#[tokio::test]
async fn a_send_token_cannot_call_admin_routes_but_an_admin_token_can_send() {
    let fake = FakeSes::start().await;
    fake.accepts("id").await;
    let app = app_with_fake_ses(&fake).await;

    error_of(
        app.get("/v1/config", Some(SEND_TOKEN)).await,
        403,
        "forbidden",
    )
    .await;
    error_of(
        app.post("/v1/config/validate", Some(SEND_TOKEN), &logto_config())
            .await,
        403,
        "forbidden",
    )
    .await;
    let response = app
        .post("/v1/messages", Some(ADMIN_TOKEN), &signin("u@example.com"))
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn operations_routes_need_no_token() {
    let app = app_with_fake_ses(&FakeSes::start().await).await;
    assert_eq!(app.get("/healthz", None).await.status(), 200);
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
}

// --- SES errors -----------------------------------------------------------------

#[tokio::test]
async fn an_ses_rejection_is_a_502_with_the_ses_reason_and_is_not_retried() {
    let fake = FakeSes::start().await;
    fake.fails_with(400, "MessageRejected", "Email address is not verified. The following identities failed the check in region US-EAST-1: noreply@example.com").await;
    let app = app_with_fake_ses(&fake).await;

    let error = error_of(
        app.send(&signin("u@example.com")).await,
        502,
        "invalid_response",
    )
    .await;

    assert_eq!(error["ses"]["code"], "MessageRejected");
    assert!(error["ses"]["message"]
        .as_str()
        .unwrap()
        .contains("Email address is not verified"));
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("Email address is not verified"));
    assert_eq!(fake.requests().await.len(), 1);
}

/// The README's SES table, row by row: what the caller gets, and how many calls SES
/// receives (3 = retried up to the attempt limit, 1 = never retried).
#[tokio::test]
async fn ses_errors_map_to_the_documented_codes_and_retries() {
    let cases: &[(u16, &str, u16, &str, usize)] = &[
        (400, "MessageRejected", 502, "invalid_response", 1),
        (
            400,
            "MailFromDomainNotVerifiedException",
            502,
            "invalid_response",
            1,
        ),
        (404, "NotFoundException", 502, "invalid_response", 1),
        (400, "BadRequestException", 502, "invalid_response", 1),
        (
            400,
            "SendingPausedException",
            503,
            "usage_limit_exceeded",
            1,
        ),
        (
            400,
            "AccountSuspendedException",
            503,
            "usage_limit_exceeded",
            1,
        ),
        (
            400,
            "LimitExceededException",
            503,
            "usage_limit_exceeded",
            1,
        ),
        (
            429,
            "TooManyRequestsException",
            429,
            "rate_limit_exceeded",
            3,
        ),
        (400, "ThrottlingException", 429, "rate_limit_exceeded", 3),
        (500, "InternalFailure", 502, "general", 3),
    ];
    for (status, ses_code, expected_status, expected_code, calls) in cases {
        let fake = FakeSes::start().await;
        fake.fails_with(*status, ses_code, "reason").await;
        let app = app_with_fake_ses(&fake).await;
        let error = error_of(
            app.send(&signin("u@example.com")).await,
            *expected_status,
            expected_code,
        )
        .await;
        if *expected_code != "rate_limit_exceeded" && *expected_code != "general" {
            assert_eq!(error["ses"]["code"], *ses_code, "{ses_code}");
        }
        assert_eq!(
            fake.requests().await.len(),
            *calls,
            "SES calls for {ses_code}"
        );
    }
}

#[tokio::test]
async fn ses_throttling_is_a_429_with_retry_after_after_retries() {
    let fake = FakeSes::start().await;
    fake.fails_with(
        429,
        "TooManyRequestsException",
        "Maximum sending rate exceeded.",
    )
    .await;
    let app = app_with_fake_ses(&fake).await;

    let response = app.send(&signin("u@example.com")).await;

    assert!(response.headers().get("retry-after").is_some());
    let error = error_of(response, 429, "rate_limit_exceeded").await;
    assert_eq!(error["limit"], "ses");
    assert_eq!(
        fake.requests().await.len(),
        3,
        "throttling is retried up to the attempt limit"
    );
}

#[tokio::test]
async fn a_server_error_then_success_is_retried_into_a_200() {
    use wiremock::matchers::{method, path};
    let fake = FakeSes::start().await;
    wiremock::Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .respond_with(
            ResponseTemplate::new(500).insert_header("x-amzn-ErrorType", "InternalFailure"),
        )
        .up_to_n_times(1)
        .mount(&fake.server)
        .await;
    fake.accepts("after-retry").await;
    let app = app_with_fake_ses(&fake).await;

    let response = app.send(&signin("u@example.com")).await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["messageId"], "after-retry");
    assert_eq!(fake.requests().await.len(), 2);
}

#[tokio::test]
async fn ses_server_errors_that_persist_are_a_502() {
    let fake = FakeSes::start().await;
    fake.answer(ResponseTemplate::new(503).set_body_string("unavailable"))
        .await;
    let app = app_with_fake_ses(&fake).await;

    error_of(app.send(&signin("u@example.com")).await, 502, "general").await;
    assert_eq!(fake.requests().await.len(), 3);
}

#[tokio::test]
async fn a_slow_ses_beyond_the_timeout_is_a_504() {
    let fake = FakeSes::start().await;
    fake.answer(
        ResponseTemplate::new(200)
            .set_body_json(json!({"MessageId": "late"}))
            .set_delay(Duration::from_secs(30)),
    )
    .await;
    let mut ses = fast_ses_options();
    ses.attempt_timeout = Duration::from_millis(300);
    ses.operation_timeout = Duration::from_millis(800);
    let app = spawn_app(AppOptions {
        ses_endpoint: Some(fake.uri()),
        ses,
        ..AppOptions::default()
    })
    .await;

    let error = error_of(app.send(&signin("u@example.com")).await, 504, "general").await;
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("may or may not"));
}

#[tokio::test]
async fn an_unreachable_ses_is_a_502() {
    // Bind then drop a listener: the port is closed, connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = spawn_app(AppOptions {
        ses_endpoint: Some(format!("http://127.0.0.1:{port}")),
        ..AppOptions::default()
    })
    .await;

    let error = error_of(app.send(&signin("u@example.com")).await, 502, "general").await;
    assert!(
        !error["message"].as_str().unwrap().contains("127.0.0.1"),
        "internal detail stays in the log: {error}"
    );
    assert_eq!(app.get("/readyz", None).await.status(), 200);
}

// --- bad input ------------------------------------------------------------------

#[tokio::test]
async fn bad_requests_get_a_4xx_in_the_error_shape_and_never_reach_ses() {
    let fake = FakeSes::start().await;
    fake.accepts("id").await;
    let app = app_with_fake_ses(&fake).await;
    let nested = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    let big = json!({"to": "u@example.com", "type": "SignIn", "payload": {"code": "x".repeat(70 * 1024)}}).to_string();
    let long_address = format!("{}@{}.com", "a".repeat(64), "b".repeat(200));
    type Case = (
        &'static str,
        &'static str,
        Option<&'static str>,
        Vec<u8>,
        u16,
        &'static str,
    );
    let json = Some("application/json");
    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            "/v1/messages",
            json,
            b"{\"to\":".to_vec(),
            400,
            "invalid_request_parameters",
        ),
        (
            "invalid UTF-8",
            "/v1/messages",
            json,
            b"{\"to\":\"\xff\xfe\"}".to_vec(),
            400,
            "invalid_request_parameters",
        ),
        (
            "wrong content type",
            "/v1/messages",
            Some("text/plain"),
            signin("u@example.com").to_string().into_bytes(),
            415,
            "unsupported_media_type",
        ),
        (
            "no content type",
            "/v1/messages",
            None,
            signin("u@example.com").to_string().into_bytes(),
            415,
            "unsupported_media_type",
        ),
        (
            "oversized body",
            "/v1/messages",
            json,
            big.into_bytes(),
            413,
            "payload_too_large",
        ),
        (
            "deeply nested JSON",
            "/v1/messages",
            json,
            nested.into_bytes(),
            400,
            "invalid_request_parameters",
        ),
        (
            "body not an object",
            "/v1/messages",
            json,
            b"[1,2]".to_vec(),
            400,
            "invalid_request_parameters",
        ),
        (
            "display name in to",
            "/v1/messages",
            json,
            signin("Ann <u@example.com>").to_string().into_bytes(),
            400,
            "invalid_request_parameters",
        ),
        (
            "two addresses",
            "/v1/messages",
            json,
            signin("a@example.com, b@example.com")
                .to_string()
                .into_bytes(),
            400,
            "invalid_request_parameters",
        ),
        (
            "CRLF in to",
            "/v1/messages",
            json,
            signin("u@example.com\r\nBcc: x@example.com")
                .to_string()
                .into_bytes(),
            400,
            "invalid_request_parameters",
        ),
        (
            "too long to",
            "/v1/messages",
            json,
            signin(&long_address).to_string().into_bytes(),
            400,
            "invalid_request_parameters",
        ),
        (
            "unknown type",
            "/v1/messages",
            json,
            json!({"to": "u@example.com", "type": "Login"})
                .to_string()
                .into_bytes(),
            400,
            "invalid_request_parameters",
        ),
        (
            "payload not an object",
            "/v1/messages",
            json,
            json!({"to": "u@example.com", "type": "SignIn", "payload": "123456"})
                .to_string()
                .into_bytes(),
            400,
            "invalid_request_parameters",
        ),
        (
            "bad ip",
            "/v1/messages",
            json,
            json!({"to": "u@example.com", "type": "SignIn", "ip": "not-an-ip"})
                .to_string()
                .into_bytes(),
            400,
            "invalid_request_parameters",
        ),
        (
            "empty body",
            "/v1/messages",
            json,
            Vec::new(),
            400,
            "invalid_request_parameters",
        ),
    ];
    for (why, path, content_type, body, status, code) in cases {
        let mut request = app
            .client
            .post(app.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{why}");
        error_of(response, status, code).await;
    }
    error_of(app.get("/v2/nowhere", None).await, 404, "not_found").await;
    error_of(
        app.client
            .delete(app.url("/v1/messages"))
            .send()
            .await
            .unwrap(),
        405,
        "method_not_allowed",
    )
    .await;
    error_of(
        app.get("/v1/messages", Some(SEND_TOKEN)).await,
        405,
        "method_not_allowed",
    )
    .await;
    assert!(
        fake.requests().await.is_empty(),
        "no bad request reached SES"
    );

    assert_eq!(
        app.send(&signin("u@example.com")).await.status(),
        200,
        "the service still serves"
    );
}

#[tokio::test]
async fn field_errors_name_their_paths() {
    let app = app_with_fake_ses(&FakeSes::start().await).await;
    let response = app
        .send(&json!({"to": 1, "type": "Nope", "payload": []}))
        .await;
    let error = error_of(response, 400, "invalid_request_parameters").await;
    let paths: Vec<&str> = error["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["payload", "to", "type"], "every bad field, by path");
}

#[tokio::test]
async fn the_request_id_is_taken_from_the_request_or_generated() {
    let app = app_with_fake_ses(&FakeSes::start().await).await;
    let given = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "req-42");
    let generated = app.get("/healthz", None).await;
    assert!(!generated.headers()["x-request-id"].is_empty());
}

// --- admin routes ---------------------------------------------------------------

#[tokio::test]
async fn validate_reports_every_problem_with_200() {
    let app = app_with_fake_ses(&FakeSes::start().await).await;
    let mut config = logto_config();
    config["region"] = json!("moon-base");
    config["templates"] = json!([template("Register")]);
    config["emailAdress"] = json!("typo@example.com");

    let response = app
        .post("/v1/config/validate", Some(ADMIN_TOKEN), &config)
        .await;

    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["valid"], false);
    let codes: Vec<&str> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    assert!(
        codes.contains(&"invalid_format") && codes.contains(&"missing_usage_types"),
        "{report}"
    );
    assert_eq!(report["warnings"][0]["path"], "emailAdress");

    let valid: Value = app
        .post("/v1/config/validate", Some(ADMIN_TOKEN), &logto_config())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(valid["valid"], true);
}

#[tokio::test]
async fn preview_renders_without_sending() {
    let fake = FakeSes::start().await;
    let app = app_with_fake_ses(&fake).await;

    let response = app
        .post("/v1/preview", Some(ADMIN_TOKEN), &json!({"type": "Register", "payload": {"code": "42", "user": {"name": "<b>Bo</b>"}, "application": {"name": "A&B"}}}))
        .await;

    assert_eq!(response.status(), 200);
    let preview: Value = response.json().await.unwrap();
    assert_eq!(preview["subject"], "Your A&B code");
    assert_eq!(
        preview["html"],
        "<p>Hello &lt;b&gt;Bo&lt;/b&gt;, your code is 42.</p>"
    );
    assert_eq!(
        preview["text"].as_str().unwrap().trim(),
        "Hello <b>Bo</b>, your code is 42."
    );
    assert_eq!(preview["from"], "Acme <noreply@example.com>");
    assert_eq!(
        preview["template"],
        json!({"usageType": "Register", "locale": null})
    );
    assert!(fake.requests().await.is_empty());
}

#[tokio::test]
async fn preview_with_an_invalid_config_is_a_422_with_details() {
    let app = app_with_fake_ses(&FakeSes::start().await).await;
    let response = app
        .post(
            "/v1/preview",
            Some(ADMIN_TOKEN),
            &json!({"type": "SignIn", "config": {"region": "us-east-1"}}),
        )
        .await;
    let error = error_of(response, 422, "invalid_config").await;
    assert!(error["details"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["path"] == "templates"));
}

#[tokio::test]
async fn the_active_config_is_shown_with_the_secret_masked() {
    let app = app_with_fake_ses(&FakeSes::start().await).await;
    let response = app.get("/v1/config", Some(ADMIN_TOKEN)).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(!text.contains(SECRET), "{text}");
    let config: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(config["accessKeySecret"], "********");
    assert_eq!(config["accessKeyId"], "AKIAIOSFODNN7EXAMPLE");
}

#[tokio::test]
async fn a_misspelled_or_nested_secret_is_masked_too() {
    let mut config = logto_config();
    config["accessKeySercet"] = json!("typo-secret-value");
    config["templates"][0]["smtpPassword"] = json!("nested-secret-value");
    let app = spawn_app(AppOptions {
        config: Some(config),
        ..AppOptions::default()
    })
    .await;

    let text = app
        .get("/v1/config", Some(ADMIN_TOKEN))
        .await
        .text()
        .await
        .unwrap();

    for secret in [SECRET, "typo-secret-value", "nested-secret-value"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    let shown: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(shown["accessKeySercet"], "********");
}

#[tokio::test]
async fn a_test_email_sends_generic_with_code_000000_using_the_unsaved_config() {
    let fake = FakeSes::start().await;
    fake.accepts("test-id").await;
    let app = app_with_fake_ses(&fake).await;
    let mut config = logto_config();
    config["emailAddress"] = json!("tester@example.org");
    config["unknownThing"] = json!(1);

    let response = app
        .post(
            "/v1/test-email",
            Some(ADMIN_TOKEN),
            &json!({"config": config, "to": "admin@example.com"}),
        )
        .await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["messageId"], "test-id");
    assert_eq!(body["template"]["usageType"], "Generic");
    assert_eq!(body["warnings"][0]["path"], "unknownThing");
    let sent = &fake.requests().await[0];
    assert_eq!(sent["FromEmailAddress"], "tester@example.org");
    assert!(sent["Content"]["Simple"]["Body"]["Html"]["Data"]
        .as_str()
        .unwrap()
        .contains("000000"));
}

#[tokio::test]
async fn a_test_email_with_an_invalid_config_is_a_422_and_returns_ses_rejections() {
    let fake = FakeSes::start().await;
    fake.fails_with(400, "MessageRejected", "Email address is not verified.")
        .await;
    let app = app_with_fake_ses(&fake).await;

    let invalid = app
        .post(
            "/v1/test-email",
            Some(ADMIN_TOKEN),
            &json!({"config": {"region": "x"}, "to": "a@example.com"}),
        )
        .await;
    let error = error_of(invalid, 422, "invalid_config").await;
    assert!(error["details"].as_array().unwrap().len() >= 2);

    let rejected = app
        .post(
            "/v1/test-email",
            Some(ADMIN_TOKEN),
            &json!({"config": logto_config(), "to": "a@example.com"}),
        )
        .await;
    let error = error_of(rejected, 502, "invalid_response").await;
    assert_eq!(error["ses"]["message"], "Email address is not verified.");
}

#[tokio::test]
async fn no_response_ever_contains_the_secret() {
    let fake = FakeSes::start().await;
    fake.fails_with(400, "MessageRejected", "nope").await;
    let app = app_with_fake_ses(&fake).await;
    let mut bad = logto_config();
    bad["region"] = json!("bad region");
    let responses = vec![
        app.get("/v1/config", Some(ADMIN_TOKEN)).await,
        app.post("/v1/config/validate", Some(ADMIN_TOKEN), &logto_config())
            .await,
        app.post("/v1/config/validate", Some(ADMIN_TOKEN), &bad)
            .await,
        app.post(
            "/v1/test-email",
            Some(ADMIN_TOKEN),
            &json!({"config": bad, "to": "a@example.com"}),
        )
        .await,
        app.post(
            "/v1/test-email",
            Some(ADMIN_TOKEN),
            &json!({"config": logto_config(), "to": "a@example.com"}),
        )
        .await,
        app.send(&signin("u@example.com")).await,
        app.post("/v1/config/reload", Some(ADMIN_TOKEN), &json!({}))
            .await,
    ];
    for response in responses {
        let text = response.text().await.unwrap();
        assert!(!text.contains(SECRET), "{text}");
        assert!(
            !text.contains(ADMIN_TOKEN) && !text.contains(SEND_TOKEN),
            "{text}"
        );
    }
}

// --- dev mode and the outbox ----------------------------------------------------

#[tokio::test]
async fn dev_mode_sends_to_the_outbox_without_tokens() {
    let app = spawn_app(AppOptions {
        config: None,
        ..AppOptions::default()
    })
    .await;

    let response = app
        .post("/v1/messages", None, &json!({"to": "me@example.com", "type": "SignIn", "payload": {"code": "123456", "application": {"name": "<script>alert(1)</script>"}}}))
        .await;
    assert_eq!(response.status(), 200);
    let sent: Value = response.json().await.unwrap();
    let id = sent["messageId"].as_str().unwrap().to_owned();

    let outbox: Value = app.get("/v1/outbox", None).await.json().await.unwrap();
    assert_eq!(outbox[0]["messageId"], id.as_str());
    assert_eq!(outbox[0]["to"], "me@example.com");
    assert!(outbox[0]["subject"].as_str().unwrap().contains("123456"));
    assert!(outbox[0]["text"].as_str().unwrap().contains("123456"));

    let page = app.get("/outbox", None).await;
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = page.text().await.unwrap();
    assert!(page.contains(&format!("/outbox/{id}")));
    assert!(
        !page.contains("<script>alert"),
        "everything shown is escaped"
    );
    assert!(page.contains("&lt;script&gt;"));

    let detail = app
        .get(&format!("/outbox/{id}"), None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        detail.contains("<iframe") && detail.contains("sandbox=\"\""),
        "{detail}"
    );
    assert!(detail.contains("class=\"text-part\""));
    assert!(!detail.contains("<script>alert"));
    error_of(app.get("/outbox/nope", None).await, 404, "not_found").await;
}

#[tokio::test]
async fn the_outbox_transport_with_a_real_config_needs_an_admin_token() {
    let app = spawn_app(AppOptions {
        transport: ses_connector::app::settings::Transport::Outbox,
        ..AppOptions::default()
    })
    .await;
    assert_eq!(app.send(&signin("u@example.com")).await.status(), 200);
    error_of(app.get("/v1/outbox", None).await, 401, "unauthorized").await;
    error_of(app.get("/outbox", None).await, 401, "unauthorized").await;
    let outbox: Value = app
        .get("/v1/outbox", Some(ADMIN_TOKEN))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(outbox.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_french_template_is_chosen_from_ui_locales() {
    let app = spawn_app(AppOptions {
        config: None,
        ..AppOptions::default()
    })
    .await;
    let response = app
        .post("/v1/messages", None, &json!({"to": "me@example.com", "type": "ForgotPassword", "payload": {"code": "1", "uiLocales": "fr-CA en"}}))
        .await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["template"],
        json!({"usageType": "ForgotPassword", "locale": "fr"})
    );
}

#[tokio::test]
async fn reload_swaps_in_a_valid_file_and_refuses_an_invalid_one() {
    let (app, path, _dir) = app_with_config_file().await;

    let mut changed = logto_config();
    changed["templates"][0]["subject"] = json!("New subject");
    std::fs::write(&path, changed.to_string()).unwrap();
    let response = app
        .post("/v1/config/reload", Some(ADMIN_TOKEN), &json!({}))
        .await;
    assert_eq!(response.status(), 200);
    let preview: Value = app
        .post("/v1/preview", Some(ADMIN_TOKEN), &json!({"type": "SignIn"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(preview["subject"], "New subject");

    std::fs::write(&path, "{\"region\": 5}").unwrap();
    error_of(
        app.post("/v1/config/reload", Some(ADMIN_TOKEN), &json!({}))
            .await,
        422,
        "invalid_config",
    )
    .await;
    let preview: Value = app
        .post("/v1/preview", Some(ADMIN_TOKEN), &json!({"type": "SignIn"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        preview["subject"], "New subject",
        "the old config keeps serving"
    );
}

#[tokio::test]
async fn dev_mode_refuses_requests_addressed_to_another_name() {
    let app = spawn_app(AppOptions {
        config: None,
        ..AppOptions::default()
    })
    .await;
    let body = json!({"to": "u@example.com", "type": "SignIn", "payload": {"code": "1"}});

    let rebound = app
        .client
        .post(app.url("/v1/messages"))
        .header("host", "attacker.example:8080")
        .json(&body)
        .send()
        .await
        .unwrap();
    error_of(rebound, 403, "forbidden").await;
    let outbox = app
        .client
        .get(app.url("/outbox"))
        .header("host", "attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(outbox.status(), 403);

    let local = app
        .client
        .post(app.url("/v1/messages"))
        .header("host", "localhost:8080")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(local.status(), 200);
    assert_eq!(app.send(&body).await.status(), 200, "127.0.0.1 works");
}
