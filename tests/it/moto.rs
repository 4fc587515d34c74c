//! End to end against moto, an independent implementation of the SES API.
//! The test script starts moto and sets `MOTO_URL`.

use crate::harness::*;
use aws_sdk_sesv2::config::{BehaviorVersion, Credentials, Region};
use serde_json::{json, Value};

/// Verify an identity in moto, as the SES sandbox requires before sending.
pub async fn verify_identity(region: &str, identity: &str) {
    let config = aws_sdk_sesv2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .credentials_provider(Credentials::new(
            "AKIAIOSFODNN7EXAMPLE",
            SECRET,
            None,
            None,
            "test",
        ))
        .endpoint_url(moto_url())
        .http_client(sdk_http_client())
        .build();
    aws_sdk_sesv2::Client::from_conf(config)
        .create_email_identity()
        .email_identity(identity)
        .send()
        .await
        .expect("moto verifies the identity");
}

fn config_for(domain: &str, region: &str) -> Value {
    let mut config = logto_config();
    config["region"] = json!(region);
    config["emailAddress"] = json!(format!("noreply@{domain}"));
    config["emailAddressIdentityArn"] = json!("");
    config["feedbackForwardingEmailAddressIdentityArn"] = json!("");
    config["feedbackForwardingEmailAddress"] = json!("");
    config["configurationSetName"] = json!("");
    config
}

/// The service with `config`, sending through moto.
async fn app_sending_to_moto(config: Value) -> TestApp {
    spawn_app(AppOptions {
        config: Some(config),
        ses_endpoint: Some(moto_url()),
        ..AppOptions::default()
    })
    .await
}

#[tokio::test]
async fn a_send_from_a_verified_sender_reaches_moto() {
    let domain = format!("verified-{}.example.com", uuid::Uuid::new_v4().simple());
    verify_identity("us-east-1", &domain).await;
    let app = app_sending_to_moto(config_for(&domain, "us-east-1")).await;
    let to = unique_recipient();

    let response = app
        .send(&json!({"to": to, "type": "SignIn", "payload": {"code": "314159", "user": {"name": "Ann"}, "application": {"name": "Acme"}}}))
        .await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let message_id = body["messageId"].as_str().unwrap();
    assert!(!message_id.is_empty());
    let messages = moto_messages_to(&to).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    let message = &messages[0];
    assert_eq!(message["id"], message_id);
    assert_eq!(message["source"], format!("noreply@{domain}"));
    assert_eq!(message["subject"], "Your Acme code");
    assert_eq!(message["body"], "<p>Hello Ann, your code is 314159.</p>");
    assert!(message["destinations"].to_string().contains(&to));
}

#[tokio::test]
async fn a_verified_sender_with_a_non_ascii_name_reaches_moto() {
    let domain = format!("verified-{}.example.com", uuid::Uuid::new_v4().simple());
    verify_identity("us-east-1", &domain).await;
    let mut config = config_for(&domain, "us-east-1");
    config["emailAddress"] = json!(format!("Société Générale <noreply@{domain}>"));
    let app = app_sending_to_moto(config).await;
    let to = unique_recipient();

    let response = app
        .send(&json!({"to": to, "type": "SignIn", "payload": {"code": "271828"}}))
        .await;

    assert_eq!(response.status(), 200);
    let messages = moto_messages_to(&to).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    let source = messages[0]["source"].as_str().unwrap();
    assert!(
        source.starts_with("=?utf-8?b?") && source.ends_with(&format!("<noreply@{domain}>")),
        "{source}"
    );
}

#[tokio::test]
async fn an_unverified_sender_is_rejected_with_ses_reason() {
    let domain = format!("unverified-{}.example.com", uuid::Uuid::new_v4().simple());
    let app = app_sending_to_moto(config_for(&domain, "us-east-1")).await;
    let to = unique_recipient();

    let response = app
        .send(&json!({"to": to, "type": "SignIn", "payload": {"code": "1"}}))
        .await;

    let error = error_of(response, 502, "invalid_response").await;
    assert_eq!(error["ses"]["code"], "MessageRejected");
    assert!(
        error["ses"]["message"]
            .as_str()
            .unwrap()
            .contains("not verified"),
        "{error}"
    );
    assert!(moto_messages_to(&to).await.is_empty());
}

#[tokio::test]
async fn a_test_email_shows_why_ses_refused_and_then_succeeds_once_verified() {
    let domain = format!("later-{}.example.com", uuid::Uuid::new_v4().simple());
    let app = spawn_app(AppOptions {
        ses_endpoint: Some(moto_url()),
        ..AppOptions::default()
    })
    .await;
    let to = unique_recipient();
    let body = json!({"config": config_for(&domain, "eu-west-1"), "to": to});

    let refused = app.post("/v1/test-email", Some(ADMIN_TOKEN), &body).await;
    let error = error_of(refused, 502, "invalid_response").await;
    assert!(
        error["message"].as_str().unwrap().contains("not verified"),
        "{error}"
    );

    verify_identity("eu-west-1", &domain).await;
    let sent = app.post("/v1/test-email", Some(ADMIN_TOKEN), &body).await;
    assert_eq!(sent.status(), 200);
    let messages = moto_messages_to(&to).await;
    assert_eq!(messages.len(), 1);
    assert!(messages[0]["body"].as_str().unwrap().contains("000000"));
}

#[tokio::test]
async fn identities_are_per_region() {
    let domain = format!("regional-{}.example.com", uuid::Uuid::new_v4().simple());
    verify_identity("us-west-2", &domain).await;
    let app = app_sending_to_moto(config_for(&domain, "ap-southeast-2")).await;
    let response = app
        .send(&json!({"to": unique_recipient(), "type": "Register", "payload": {"code": "1"}}))
        .await;
    error_of(response, 502, "invalid_response").await;
}

/// `POST /v1/config/validate?online=true` with `config`, through an app on moto.
async fn online_report(config: &Value) -> Value {
    let app = app_sending_to_moto(config_for("unused.example.com", "us-east-1")).await;
    let response = app
        .post("/v1/config/validate?online=true", Some(ADMIN_TOKEN), config)
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn has(report: &Value, kind: &str, path: &str, code: &str) -> bool {
    report[kind]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["path"] == path && i["code"] == code)
}

#[tokio::test]
async fn the_online_doctor_finds_unverified_senders_and_a_missing_configuration_set() {
    let domain = format!("doctor-{}.example.com", uuid::Uuid::new_v4().simple());
    verify_identity("us-east-1", &domain).await;
    let mut config = config_for(&domain, "us-east-1");
    config["templates"][1]["sendFrom"] = json!("Other <other@not-verified.example.net>");
    config["configurationSetName"] = json!("no-such-set");

    let report = online_report(&config).await;

    assert_eq!(report["valid"], false, "{report}");
    assert!(
        !has(&report, "errors", "emailAddress", "identity_not_verified"),
        "{report}"
    );
    assert!(
        has(
            &report,
            "errors",
            "templates[1].sendFrom",
            "identity_not_verified"
        ),
        "{report}"
    );
    assert!(
        has(
            &report,
            "errors",
            "configurationSetName",
            "configuration_set_not_found"
        ),
        "{report}"
    );
    assert!(
        !has(&report, "warnings", "emailAddress", "check_failed"),
        "the verified sender was checked: {report}"
    );
    let message = report["errors"].to_string();
    assert!(
        message.contains("other@not-verified.example.net"),
        "{message}"
    );
    assert!(
        !report.to_string().contains(SECRET),
        "the secret never appears"
    );
}

#[tokio::test]
async fn the_doctor_command_exits_1_when_something_will_fail_and_2_when_it_could_not_check() {
    let domain = format!("doctor-cli-{}.example.com", uuid::Uuid::new_v4().simple());
    verify_identity("us-east-1", &domain).await;
    let dir = tempfile::tempdir().unwrap();
    let run = |config: &Value| {
        let path = dir
            .path()
            .join(format!("{}.json", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, config.to_string()).unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ses-connector"));
        for (key, _) in std::env::vars() {
            if key.starts_with("SES_CONNECTOR_") || key.starts_with("AWS_") {
                command.env_remove(key);
            }
        }
        let output = command
            .args(["doctor", "--json", "--config"])
            .arg(&path)
            .env("AWS_ENDPOINT_URL_SESV2", moto_url())
            .env("AWS_ENDPOINT_URL_STS", moto_url())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|_| panic!("a JSON report: {output:?}"));
        (output.status.code(), report)
    };

    let mut broken = config_for(&domain, "us-east-1");
    broken["emailAddress"] = json!("noreply@unverified.example.org");
    let (code, report) = run(&broken);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        has(&report, "errors", "emailAddress", "identity_not_verified"),
        "{report}"
    );

    // Everything moto can answer is fine; it has no GetAccount, so the account
    // could not be checked.
    let (code, report) = run(&config_for(&domain, "us-east-1"));
    assert_eq!(code, Some(2), "{report}");
    assert!(report["errors"].as_array().unwrap().is_empty(), "{report}");
    assert!(has(&report, "warnings", "", "check_failed"), "{report}");
}
