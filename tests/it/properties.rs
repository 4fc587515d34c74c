//! Property tests: no JSON value, as a config or a request body, can panic the
//! service or get a 5xx. Driven through the router without a socket.

use std::sync::OnceLock;

use crate::harness::*;
use axum::body::Body;
use axum::http::Request;
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use tower::ServiceExt;

struct Harness {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let router = runtime.block_on(async {
            let app = build_app(AppOptions {
                transport: ses_connector::app::settings::Transport::Outbox,
                ..AppOptions::default()
            })
            .await;
            app.router()
        });
        Harness { runtime, router }
    })
}

/// POST `body` to `path` with the admin token; the status and the parsed answer.
fn post(path: &str, body: Vec<u8>) -> (u16, Value) {
    let h = harness();
    h.runtime.block_on(async {
        let request = Request::post(path)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .body(Body::from(body))
            .unwrap();
        let response = h.router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let value = serde_json::from_slice(&bytes).expect("every answer is JSON");
        (status, value)
    })
}

/// A send's answer as a caller reads it: 200 with `messageId` and the `template`
/// used, or a 4xx in the one error shape.
fn assert_send_answer(status: u16, answer: &Value) -> Result<(), TestCaseError> {
    match status {
        200 => {
            let id = answer["messageId"].as_str();
            prop_assert!(id.is_some_and(|id| !id.is_empty()), "{}", answer);
            prop_assert!(answer["template"]["usageType"].is_string(), "{}", answer);
        }
        400..=499 => {
            let error = &answer["error"];
            let code = error["code"].as_str();
            prop_assert!(code.is_some_and(|c| !c.is_empty()), "{} {}", status, answer);
            let message = error["message"].as_str();
            prop_assert!(
                message.is_some_and(|m| !m.is_empty()),
                "{} {}",
                status,
                answer
            );
            let id = answer["requestId"].as_str();
            prop_assert!(id.is_some_and(|id| !id.is_empty()), "{} {}", status, answer);
        }
        _ => prop_assert!(false, "{} is neither 200 nor a 4xx: {}", status, answer),
    }
    Ok(())
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        interesting_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((field_name(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Strings that tend to find bugs: handlebars syntax, addresses, control characters.
fn interesting_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        Just("{{code}}".to_owned()),
        Just("{{#if code}}x{{/if}}".to_owned()),
        Just("{{#each x}}{{/each}}".to_owned()),
        Just("{{> missing}}".to_owned()),
        Just("{{{{raw}}}}".to_owned()),
        Just("{{#if}}".to_owned()),
        Just("user@example.com".to_owned()),
        Just("A <a@example.com>".to_owned()),
        Just("a@example.com\r\nBcc: b@example.com".to_owned()),
        Just("us-east-1".to_owned()),
        Just("SignIn".to_owned()),
        Just("Generic".to_owned()),
        Just("fr-CA".to_owned()),
        "[a-zA-Z{}#/> ]{0,24}",
    ]
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("to".to_owned()),
        Just("type".to_owned()),
        Just("payload".to_owned()),
        Just("ip".to_owned()),
        Just("config".to_owned()),
        Just("region".to_owned()),
        Just("templates".to_owned()),
        Just("usageType".to_owned()),
        Just("subject".to_owned()),
        Just("content".to_owned()),
        Just("locale".to_owned()),
        Just("uiLocales".to_owned()),
        Just("code".to_owned()),
        "[a-zA-Z]{1,12}",
    ]
}

/// A config close to valid, with arbitrary values in its template strings.
fn near_valid_config() -> impl Strategy<Value = Value> {
    let template = (
        prop_oneof![
            Just("SignIn"),
            Just("Register"),
            Just("ForgotPassword"),
            Just("Generic"),
            Just("Other")
        ],
        interesting_string(),
        interesting_string(),
        proptest::option::of(interesting_string()),
        proptest::option::of(prop_oneof![
            Just("text/plain"),
            Just("text/html"),
            Just("x")
        ]),
        proptest::option::of(interesting_string()),
    )
        .prop_map(|(usage, subject, content, text, content_type, locale)| {
            let mut t = json!({"usageType": usage, "subject": subject, "content": content});
            if let Some(text) = text {
                t["text"] = json!(text);
            }
            if let Some(ct) = content_type {
                t["contentType"] = json!(ct);
            }
            if let Some(l) = locale {
                t["locale"] = json!(l);
            }
            t
        });
    (prop::collection::vec(template, 0..8), interesting_string()).prop_map(
        |(mut templates, sender)| {
            for usage in ["SignIn", "Register", "ForgotPassword", "Generic"] {
                templates.push(json!({"usageType": usage, "subject": "s", "content": "c"}));
            }
            json!({"region": "us-east-1", "emailAddress": sender, "templates": templates})
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn any_json_as_a_config_gets_a_report_never_a_5xx(config in any_json()) {
        let (status, report) = post("/v1/config/validate", config.to_string().into_bytes());
        prop_assert_eq!(status, 200);
        prop_assert!(report["valid"].is_boolean());
    }

    #[test]
    fn any_json_as_a_send_body_is_never_a_5xx(body in any_json()) {
        let (status, answer) = post("/v1/messages", body.to_string().into_bytes());
        assert_send_answer(status, &answer)?;
    }

    #[test]
    fn any_payload_in_a_well_formed_send_is_never_a_5xx(payload in any_json(), kind in prop_oneof![Just("SignIn"), Just("Register"), Just("OrganizationInvitation")]) {
        let body = json!({"to": "u@example.com", "type": kind, "payload": payload});
        let (status, answer) = post("/v1/messages", body.to_string().into_bytes());
        assert_send_answer(status, &answer)?;
        if status == 200 {
            // The one template the config has for the type, else Generic.
            let expected = if kind == "OrganizationInvitation" { "Generic" } else { kind };
            prop_assert_eq!(&answer["template"]["usageType"], expected, "{}", answer);
        }
    }

    #[test]
    fn near_valid_configs_validate_preview_and_test_send_without_a_5xx(config in near_valid_config(), payload in any_json()) {
        let (status, _) = post("/v1/config/validate", config.to_string().into_bytes());
        prop_assert_eq!(status, 200);
        let preview = json!({"type": "SignIn", "payload": payload, "config": config});
        let (status, answer) = post("/v1/preview", preview.to_string().into_bytes());
        prop_assert!(status < 500, "{} {}", status, answer);
        let test = json!({"to": "u@example.com", "config": config, "payload": payload});
        let (status, answer) = post("/v1/test-email", test.to_string().into_bytes());
        prop_assert!(status < 500, "{} {}", status, answer);
    }

    #[test]
    fn arbitrary_bytes_are_never_a_5xx(body in prop::collection::vec(any::<u8>(), 0..256)) {
        for path in ["/v1/messages", "/v1/config/validate", "/v1/preview", "/v1/test-email"] {
            let (status, _) = post(path, body.clone());
            prop_assert!(status < 500);
        }
    }
}
