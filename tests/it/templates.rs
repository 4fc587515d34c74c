//! No template can take the service down: templates that recurse or nest without
//! bound are refused wherever a config comes in (validate, reload, preview, test
//! email), and a render that grows past its bound fails in the error shape while the
//! service keeps serving.

use crate::harness::*;
use serde_json::{json, Value};

const RECURSIVE: &str = r#"{{#*inline "p"}}{{> p}}{{/inline}}{{> p}}"#;

fn config_with_content(content: &str) -> Value {
    let mut config = logto_config();
    config["templates"][0]["content"] = json!(content);
    config
}

fn deeply_nested() -> String {
    format!("{}x{}", "{{#if a}}".repeat(3000), "{{/if}}".repeat(3000))
}

async fn sends_still_work(app: &TestApp) {
    let response = app
        .send(&json!({"to": "u@example.com", "type": "SignIn", "payload": {"code": "123456"}}))
        .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

#[tokio::test]
async fn validation_refuses_recursive_and_deeply_nested_templates_with_their_path() {
    let app = spawn_app(AppOptions::default()).await;
    for (content, code) in [
        (RECURSIVE.to_owned(), "template_recursion"),
        (deeply_nested(), "template_too_complex"),
    ] {
        let report: Value = app
            .post(
                "/v1/config/validate",
                Some(ADMIN_TOKEN),
                &config_with_content(&content),
            )
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(report["valid"], false, "{report}");
        assert_eq!(report["errors"][0]["path"], "templates[0].content");
        assert_eq!(report["errors"][0]["code"], code, "{report}");
    }
}

#[tokio::test]
async fn a_reload_to_a_recursive_template_is_refused_and_the_old_config_keeps_serving() {
    let (app, path, _dir) = app_with_config_file().await;
    std::fs::write(&path, config_with_content(RECURSIVE).to_string()).unwrap();

    let response = app
        .post("/v1/config/reload", Some(ADMIN_TOKEN), &json!({}))
        .await;

    let error = error_of(response, 422, "invalid_config").await;
    assert_eq!(error["details"][0]["code"], "template_recursion", "{error}");
    sends_still_work(&app).await;
}

#[tokio::test]
async fn preview_and_test_email_refuse_unbounded_templates() {
    let fake = FakeSes::start().await;
    fake.accepts("id").await;
    let app = app_with_fake_ses(&fake).await;
    for content in [RECURSIVE.to_owned(), deeply_nested()] {
        let config = config_with_content(&content);
        let preview = app
            .post(
                "/v1/preview",
                Some(ADMIN_TOKEN),
                &json!({"type": "SignIn", "config": config}),
            )
            .await;
        error_of(preview, 422, "invalid_config").await;
        let test = app
            .post(
                "/v1/test-email",
                Some(ADMIN_TOKEN),
                &json!({"to": "u@example.com", "type": "SignIn", "config": config}),
            )
            .await;
        error_of(test, 422, "invalid_config").await;
    }
    assert!(fake.requests().await.is_empty(), "nothing reached SES");
    sends_still_work(&app).await;
}

#[tokio::test]
async fn a_send_whose_render_outgrows_the_bound_fails_in_the_error_shape() {
    let fake = FakeSes::start().await;
    fake.accepts("id").await;
    let app = spawn_app(AppOptions {
        ses_endpoint: Some(fake.uri()),
        config: Some(config_with_content(
            "{{#each items}}<p>{{../big}}</p>{{/each}}",
        )),
        ..AppOptions::default()
    })
    .await;
    let items = vec![0; 100];

    let response = app
        .send(&json!({"to": "u@example.com", "type": "SignIn",
            "payload": {"big": "x".repeat(5_000), "items": items}}))
        .await;

    let error = error_of(response, 422, "invalid_config").await;
    assert!(
        error["message"].as_str().unwrap().contains("larger than"),
        "{error}"
    );
    assert!(fake.requests().await.is_empty(), "nothing reached SES");
    let small = app
        .send(&json!({"to": "u@example.com", "type": "SignIn",
            "payload": {"big": "x", "items": items}}))
        .await;
    assert_eq!(small.status(), 200);
}
