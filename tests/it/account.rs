//! Knowing the SES account: its quota read into `/metrics`, and sends paced under its
//! maximum send rate instead of being throttled by SES.

use std::time::Duration;

use crate::harness::*;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

/// The fake's `GetAccount`: a production account allowed `rate` sends per second.
async fn account_allows(fake: &FakeSes, rate: f64) {
    Mock::given(method("GET"))
        .and(path("/v2/email/account"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "SendQuota": {"Max24HourSend": 50000.0, "MaxSendRate": rate, "SentLast24Hours": 1200.0},
            "SendingEnabled": true,
            "ProductionAccessEnabled": true,
            "EnforcementStatus": "HEALTHY"
        })))
        .mount(&fake.server)
        .await;
}

fn signin_to(i: usize) -> Value {
    json!({"to": format!("u{i}@example.com"), "type": "SignIn", "payload": {"code": "1"}})
}

fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Wait until the service has read the account (bounded).
async fn until_account_read(app: &TestApp) -> String {
    for _ in 0..500 {
        let text = app.get("/metrics", None).await.text().await.unwrap();
        if gauge(&text, "ses_connector_ses_max_send_rate").is_some() {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the service never read the SES account");
}

#[tokio::test]
async fn the_accounts_quota_is_read_into_metrics() {
    let fake = FakeSes::start().await;
    account_allows(&fake, 14.0).await;
    let app = app_with_fake_ses(&fake).await;

    let text = until_account_read(&app).await;

    assert_eq!(gauge(&text, "ses_connector_ses_max_send_rate"), Some(14.0));
    assert_eq!(
        gauge(&text, "ses_connector_ses_max_24_hour_send"),
        Some(50000.0)
    );
    assert_eq!(
        gauge(&text, "ses_connector_ses_sent_last_24_hours"),
        Some(1200.0)
    );
    assert_eq!(gauge(&text, "ses_connector_ses_sending_enabled"), Some(1.0));
}

#[tokio::test]
async fn a_burst_above_the_accounts_rate_is_paced_and_the_rest_refused_with_ses_send_rate() {
    let fake = FakeSes::start().await;
    account_allows(&fake, 10.0).await;
    let arrivals = fake.notes_arrivals().await;
    let app = app_with_fake_ses(&fake).await;
    until_account_read(&app).await;

    let bodies: Vec<Value> = (0..100).map(signin_to).collect();
    let sends = bodies.iter().map(|body| app.send(body));
    let responses = futures_util::future::join_all(sends).await;

    let mut sent = 0;
    for response in responses {
        match response.status().as_u16() {
            200 => sent += 1,
            429 => {
                assert!(response.headers().get("retry-after").is_some());
                let error: Value = response.json().await.unwrap();
                assert_eq!(error["error"]["limit"], "ses_send_rate", "{error}");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    let times = arrivals.lock().unwrap().clone();
    assert_eq!(times.len(), sent, "every 200 is one send that reached SES");
    assert!(
        (15..=25).contains(&sent),
        "about 2 s of turns at 10/s were given: {sent}"
    );
    assert_at_most_per_second(&times, 11);
}

#[tokio::test]
async fn a_configured_rate_of_zero_turns_pacing_off() {
    let fake = FakeSes::start().await;
    account_allows(&fake, 1.0).await;
    fake.accepts("unpaced").await;
    let app = spawn_app(AppOptions {
        ses_endpoint: Some(fake.uri()),
        tune: |s| s.max_send_rate = Some(0.0),
        ..AppOptions::default()
    })
    .await;
    until_account_read(&app).await;

    let bodies: Vec<Value> = (0..20).map(signin_to).collect();
    let sends = bodies.iter().map(|body| app.send(body));
    for response in futures_util::future::join_all(sends).await {
        assert_eq!(response.status(), 200);
    }
}

/// The fake's `GetAccount` answer.
async fn account_says(fake: &FakeSes, account: Value) {
    Mock::given(method("GET"))
        .and(path("/v2/email/account"))
        .respond_with(ResponseTemplate::new(200).set_body_json(account))
        .mount(&fake.server)
        .await;
}

/// The fake's `GetEmailIdentity`: every identity is verified.
async fn identities_verified(fake: &FakeSes) {
    Mock::given(method("GET"))
        .and(wiremock::matchers::path_regex("^/v2/email/identities/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "IdentityType": "DOMAIN", "VerifiedForSendingStatus": true,
            "DkimAttributes": {"Status": "SUCCESS"}
        })))
        .mount(&fake.server)
        .await;
}

/// A config with no ARNs and no configuration set: only the account is at stake.
fn plain_config() -> Value {
    let mut config = logto_config();
    for key in [
        "emailAddressIdentityArn",
        "feedbackForwardingEmailAddressIdentityArn",
        "configurationSetName",
    ] {
        config[key] = json!("");
    }
    config
}

async fn online(app: &TestApp) -> Value {
    let response = app
        .post(
            "/v1/config/validate?online=true",
            Some(ADMIN_TOKEN),
            &plain_config(),
        )
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn codes(report: &Value, kind: &str) -> Vec<String> {
    report[kind]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_doctor_names_the_sandbox_a_paused_account_and_probation() {
    let cases = [
        (
            json!({"SendQuota": {"Max24HourSend": 200.0, "MaxSendRate": 1.0, "SentLast24Hours": 0.0},
                   "SendingEnabled": true, "ProductionAccessEnabled": false, "EnforcementStatus": "HEALTHY"}),
            vec![],
            vec!["sandbox"],
        ),
        (
            json!({"SendQuota": {"Max24HourSend": 50000.0, "MaxSendRate": 14.0, "SentLast24Hours": 10.0},
                   "SendingEnabled": false, "ProductionAccessEnabled": true, "EnforcementStatus": "HEALTHY"}),
            vec!["sending_paused"],
            vec![],
        ),
        (
            json!({"SendQuota": {"Max24HourSend": 50000.0, "MaxSendRate": 14.0, "SentLast24Hours": 10.0},
                   "SendingEnabled": true, "ProductionAccessEnabled": true, "EnforcementStatus": "PROBATION"}),
            vec![],
            vec!["account_under_review"],
        ),
        (
            json!({"SendQuota": {"Max24HourSend": 50000.0, "MaxSendRate": 14.0, "SentLast24Hours": 10.0},
                   "SendingEnabled": true, "ProductionAccessEnabled": true, "EnforcementStatus": "HEALTHY"}),
            vec![],
            vec![],
        ),
    ];
    for (account, errors, warnings) in cases {
        let fake = FakeSes::start().await;
        account_says(&fake, account.clone()).await;
        identities_verified(&fake).await;
        let app = app_with_fake_ses(&fake).await;

        let report = online(&app).await;

        assert_eq!(codes(&report, "errors"), errors, "{account}: {report}");
        assert_eq!(codes(&report, "warnings"), warnings, "{account}: {report}");
        assert_eq!(report["valid"], errors.is_empty());
        assert_eq!(
            report["account"]["productionAccessEnabled"],
            account["ProductionAccessEnabled"]
        );
    }
}

#[tokio::test]
async fn the_doctor_says_when_ses_refuses_the_credentials_keeping_aws_words_and_not_the_secret() {
    let fake = FakeSes::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/email/account"))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("x-amzn-ErrorType", "UnrecognizedClientException")
                .set_body_json(
                    json!({"message": "The security token included in the request is invalid."}),
                ),
        )
        .mount(&fake.server)
        .await;
    let app = app_with_fake_ses(&fake).await;

    let report = online(&app).await;

    assert_eq!(
        codes(&report, "errors"),
        ["credentials_invalid"],
        "{report}"
    );
    let text = report.to_string();
    assert!(
        text.contains("The security token included in the request is invalid"),
        "{text}"
    );
    assert!(!text.contains(SECRET));
}

#[tokio::test]
async fn a_test_email_carries_the_doctors_warnings() {
    let fake = FakeSes::start().await;
    account_says(
        &fake,
        json!({"SendQuota": {"Max24HourSend": 200.0, "MaxSendRate": 1.0, "SentLast24Hours": 0.0},
               "SendingEnabled": true, "ProductionAccessEnabled": false, "EnforcementStatus": "HEALTHY"}),
    )
    .await;
    identities_verified(&fake).await;
    fake.accepts("test-send").await;
    let app = app_with_fake_ses(&fake).await;

    let response = app
        .post(
            "/v1/test-email",
            Some(ADMIN_TOKEN),
            &json!({"to": "admin@example.com", "config": plain_config()}),
        )
        .await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["messageId"], "test-send");
    assert!(
        codes(&body, "warnings").contains(&"sandbox".to_owned()),
        "{body}"
    );
}

/// Send `body` until SES takes it, each refusal on the way being the pace's
/// (bounded: the pace gives a turn within seconds).
async fn send_when_paced_through(app: &TestApp, body: &Value) {
    for refusals in 0..100 {
        let response = app.send(body).await;
        if response.status() == 200 {
            return;
        }
        let error = error_of(response, 429, "rate_limit_exceeded").await;
        assert_eq!(
            error["limit"], "ses_send_rate",
            "after {refusals} paced refusals"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no turn was given in 10 s");
}

#[tokio::test]
async fn paced_refusals_do_not_use_up_the_recipients_limit() {
    let fake = FakeSes::start().await;
    let arrivals = fake.notes_arrivals().await;
    let app = spawn_app(AppOptions {
        ses_endpoint: Some(fake.uri()),
        tune: |s| {
            s.rate_limit_recipient = "2/600".parse().unwrap();
            // One turn every 2 s, and no waiting for one.
            s.max_send_rate = Some(0.5);
            s.pacing_max_wait = Duration::ZERO;
        },
        ..AppOptions::default()
    })
    .await;
    let body = json!({"to": "victim@example.com", "type": "SignIn", "payload": {"code": "1"}});
    assert_eq!(app.send(&body).await.status(), 200);

    let refused = futures_util::future::join_all((0..3).map(|_| app.send(&body))).await;
    for response in refused {
        let error = error_of(response, 429, "rate_limit_exceeded").await;
        assert_eq!(error["limit"], "ses_send_rate", "{error}");
    }

    // The recipient's second send still goes once the pace allows it…
    send_when_paced_through(&app, &body).await;
    // …and the limit holds for the sends that reached SES.
    let error = error_of(app.send(&body).await, 429, "rate_limit_exceeded").await;
    assert_eq!(error["limit"], "recipient", "{error}");
    assert_eq!(arrivals.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_rate_too_small_for_a_duration_still_answers_every_send() {
    // What a GetAccount MaxSendRate of 1e-30 used to become; set directly, since
    // start-up refuses it as a setting and the quota gauge that says when the
    // account was read is one for the whole test process.
    let fake = FakeSes::start().await;
    fake.accepts("ok").await;
    let app = spawn_app(AppOptions {
        ses_endpoint: Some(fake.uri()),
        tune: |s| s.max_send_rate = Some(1e-30),
        ..AppOptions::default()
    })
    .await;

    assert_eq!(app.send(&signin_to(1)).await.status(), 200);
    // Paced at the slowest rate there is: one send in 1 000 s.
    let error = error_of(app.send(&signin_to(2)).await, 429, "rate_limit_exceeded").await;
    assert_eq!(error["limit"], "ses_send_rate", "{error}");
}

#[tokio::test]
async fn a_test_email_from_another_account_takes_none_of_the_configs_turns() {
    let fake = FakeSes::start().await;
    fake.accepts("ok").await;
    let app = spawn_app(AppOptions {
        ses_endpoint: Some(fake.uri()),
        tune: |s| {
            // One turn in 1 000 s, and no waiting for one.
            s.max_send_rate = Some(0.001);
            s.pacing_max_wait = Duration::ZERO;
        },
        ..AppOptions::default()
    })
    .await;
    let test_email = |config: Value| json!({"to": "admin@example.com", "config": config});
    let mut other_keys = plain_config();
    other_keys["accessKeyId"] = json!("AKIAOTHERACCOUNT0000");
    let mut other_region = plain_config();
    other_region["region"] = json!("eu-west-1");

    assert_eq!(app.send(&signin_to(1)).await.status(), 200);
    for (other, config) in [("credentials", other_keys), ("region", other_region)] {
        let response = app
            .post("/v1/test-email", Some(ADMIN_TOKEN), &test_email(config))
            .await;
        assert_eq!(response.status(), 200, "another {other}");
    }

    // The config's own account has used its turn, also for a test email with it.
    let response = app
        .post(
            "/v1/test-email",
            Some(ADMIN_TOKEN),
            &test_email(plain_config()),
        )
        .await;
    let error = error_of(response, 429, "rate_limit_exceeded").await;
    assert_eq!(error["limit"], "ses_send_rate", "{error}");
    let error = error_of(app.send(&signin_to(2)).await, 429, "rate_limit_exceeded").await;
    assert_eq!(error["limit"], "ses_send_rate", "{error}");
}
