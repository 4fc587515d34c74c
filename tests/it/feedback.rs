//! Delivery feedback: what SES reports after a send reaches `GET /v1/messages/{id}`,
//! and recipients that bounced permanently or complained are refused before SES is
//! called. In dev mode the outbox imitates SES's mailbox simulator; against moto, the
//! notifications travel through a real SQS queue.

use std::time::Duration;

use crate::harness::*;
use serde_json::{json, Value};

fn signin(to: &str) -> Value {
    json!({"to": to, "type": "SignIn", "payload": {"code": "123456"}})
}

async fn dev_app() -> TestApp {
    spawn_app(AppOptions {
        config: None,
        ..AppOptions::default()
    })
    .await
}

async fn message_id(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["messageId"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_mailbox_simulator_shows_the_loop_in_dev_mode() {
    let app = dev_app().await;
    let cases = [
        ("success@simulator.amazonses.com", "delivered", None),
        ("bounce@simulator.amazonses.com", "bounced", Some("bounce")),
        (
            "complaint@simulator.amazonses.com",
            "complained",
            Some("complaint"),
        ),
        (
            "suppressionlist@simulator.amazonses.com",
            "bounced",
            Some("bounce"),
        ),
    ];
    for (to, status, suppressed) in cases {
        let id = message_id(app.send(&signin(to)).await).await;
        let record: Value = app
            .get(&format!("/v1/messages/{id}"), None)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(record["messageId"], id);
        assert_eq!(record["status"], status, "{record}");
        assert_eq!(record["usageType"], "SignIn");
        assert!(
            !record["recipient"].as_str().unwrap().contains(to),
            "masked: {record}"
        );
        assert_eq!(record["events"][0]["type"], status);

        let again = app.send(&signin(to)).await;
        match suppressed {
            None => assert_eq!(again.status(), 200, "{to}"),
            Some(reason) => {
                let error = error_of(again, 422, "recipient_suppressed").await;
                assert_eq!(error["suppression"]["reason"], reason, "{error}");
                assert!(error["suppression"]["since"].is_string());
            }
        }
    }
    let bounced: Value = app
        .get(
            &format!(
                "/v1/messages/{}",
                message_id(app.send(&signin("success@simulator.amazonses.com")).await).await
            ),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(bounced["status"], "delivered");
    let page = app.get("/outbox", None).await.text().await.unwrap();
    assert!(
        page.contains("<td class=\"status\">bounced</td>"),
        "the outbox page shows each status"
    );
    error_of(
        app.get("/v1/messages/never-sent", None).await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn an_admin_can_see_and_lift_a_suppression() {
    let app = dev_app().await;
    let to = "bounce@simulator.amazonses.com";
    message_id(app.send(&signin(to)).await).await;
    let status: Value = app
        .get(&format!("/v1/suppressions/{to}"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["suppressed"], true, "{status}");
    assert_eq!(status["refused"], true, "enforce: a send is refused");
    assert_eq!(status["suppression"]["reason"], "bounce");

    let lifted = app
        .client
        .delete(app.url(&format!("/v1/suppressions/{to}")))
        .send()
        .await
        .unwrap();
    assert_eq!(lifted.status(), 200);
    let status: Value = app
        .get(&format!("/v1/suppressions/{to}"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["suppressed"], false);
    assert_eq!(
        app.send(&signin(to)).await.status(),
        200,
        "sends go out again"
    );
}

#[tokio::test]
async fn under_the_report_policy_a_suppressed_recipient_is_sent_to_with_a_warning() {
    let app = spawn_app(AppOptions {
        config: None,
        tune: |s| s.suppression = ses_connector::send::SuppressionPolicy::Report,
        ..AppOptions::default()
    })
    .await;
    let to = "complaint@simulator.amazonses.com";
    message_id(app.send(&signin(to)).await).await;

    let again = app.send(&signin(to)).await;

    assert_eq!(again.status(), 200);
    let body: Value = again.json().await.unwrap();
    assert_eq!(
        body["warnings"][0]["code"], "recipient_suppressed",
        "{body}"
    );
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("ses_connector_suppressed_total{policy=\"report\"} 1"),
        "{metrics}"
    );
    let status: Value = app
        .get(&format!("/v1/suppressions/{to}"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["suppressed"], true, "{status}");
    assert_eq!(status["refused"], false, "report: sent anyway");
}

// --- through a real SQS queue (moto) -------------------------------------------------

async fn sqs() -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "AKIAIOSFODNN7EXAMPLE",
            SECRET,
            None,
            None,
            "test",
        ))
        .endpoint_url(moto_url())
        .http_client(sdk_http_client())
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

/// SES's event-publishing JSON for `kind` about `message_id` to `to`.
fn ses_event(kind: &str, message_id: &str, to: &str) -> Value {
    let mut event = json!({
        "eventType": kind,
        "mail": {"timestamp": "2026-11-29T10:00:00.000Z", "messageId": message_id, "destination": [to],
                 "source": "noreply@example.com", "tags": {"usage_type": ["SignIn"]}}
    });
    match kind {
        "Bounce" => {
            event["bounce"] = json!({"bounceType": "Permanent", "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": to, "action": "failed", "status": "5.1.1",
                                   "diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
            "timestamp": "2026-11-29T10:00:02.000Z", "feedbackId": "f-1"})
        }
        "Delivery" => {
            event["delivery"] = json!({"timestamp": "2026-11-29T10:00:01.000Z",
            "recipients": [to], "processingTimeMillis": 500, "smtpResponse": "250 ok"})
        }
        _ => {}
    }
    event
}

/// SNS's wrapping of `message`, as an SQS subscription without raw delivery gets it.
fn sns_wrapped(message: &Value) -> String {
    json!({"Type": "Notification", "MessageId": uuid::Uuid::new_v4().to_string(),
           "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses-feedback",
           "Message": message.to_string(), "Timestamp": "2026-11-29T10:00:03.000Z"})
    .to_string()
}

async fn record_when(app: &TestApp, id: &str, status: &str) -> Value {
    for _ in 0..300 {
        let record: Value = app
            .get(&format!("/v1/messages/{id}"), Some(SEND_TOKEN))
            .await
            .json()
            .await
            .unwrap();
        if record["status"] == status {
            return record;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("message {id} never became {status}");
}

#[tokio::test]
async fn notifications_on_an_sqs_queue_reach_the_send_and_suppress_the_bounced_recipient() {
    let domain = format!("feedback-{}.example.com", uuid::Uuid::new_v4().simple());
    let sqs = sqs().await;
    let queue = sqs
        .create_queue()
        .queue_name(format!("ses-feedback-{}", uuid::Uuid::new_v4().simple()))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let app = app_reading(&queue, &domain).await;
    let bounced_to = format!("bounced-{}@{domain}", uuid::Uuid::new_v4().simple());
    let delivered_to = format!("fine-{}@{domain}", uuid::Uuid::new_v4().simple());
    let bounced = message_id(app.send(&signin(&bounced_to)).await).await;
    let delivered = message_id(app.send(&signin(&delivered_to)).await).await;

    // Hostile and useless messages first: each is deleted and counted, the poller goes on.
    let hostile = [
        "not json".to_owned(),
        "[1, 2]".to_owned(),
        json!({"eventType": 3, "mail": "x"}).to_string(),
        json!({"eventType": "Bounce", "mail": {"messageId": "never-sent-by-us"}}).to_string(),
        format!("{{\"pad\": \"{}\"}}", "x".repeat(250 * 1024)),
    ];
    for body in &hostile {
        sqs.send_message()
            .queue_url(&queue)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
    // SNS-wrapped event publishing, then raw delivery; a flood of duplicates.
    let bounce = ses_event("Bounce", &bounced, &bounced_to);
    for _ in 0..5 {
        sqs.send_message()
            .queue_url(&queue)
            .message_body(sns_wrapped(&bounce))
            .send()
            .await
            .unwrap();
    }
    sqs.send_message()
        .queue_url(&queue)
        .message_body(ses_event("Delivery", &delivered, &delivered_to).to_string())
        .send()
        .await
        .unwrap();

    let record = record_when(&app, &bounced, "bounced").await;
    assert_eq!(
        record["events"].as_array().unwrap().len(),
        1,
        "duplicates kept once: {record}"
    );
    assert_eq!(record["events"][0]["bounceType"], "Permanent");
    assert_eq!(record["events"][0]["bounceSubType"], "General");
    assert_eq!(
        record["events"][0]["diagnosticCode"],
        "smtp; 550 5.1.1 user unknown"
    );
    record_when(&app, &delivered, "delivered").await;

    let refused = app.send(&signin(&bounced_to)).await;
    let error = error_of(refused, 422, "recipient_suppressed").await;
    assert_eq!(error["suppression"]["reason"], "bounce");
    assert_eq!(app.send(&signin(&delivered_to)).await.status(), 200);

    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = app.get("/metrics", None).await.text().await.unwrap();
        if metrics.contains("outcome=\"malformed\"} 4") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        metrics.contains("ses_connector_feedback_unused_total{outcome=\"malformed\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ses_connector_feedback_unused_total{outcome=\"unknown_message\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "ses_connector_feedback_events_total{event=\"bounced\",usage_type=\"SignIn\"} 5"
        ),
        "{metrics}"
    );
    let left = sqs
        .get_queue_attributes()
        .queue_url(&queue)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap();
    let left = left
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages))
        .cloned()
        .unwrap_or_default();
    assert_eq!(left, "0", "every message was deleted");
}

/// The service sending through moto from a verified `domain`, reading its feedback
/// from `queue`.
async fn app_reading(queue: &str, domain: &str) -> TestApp {
    app_on(Some(queue), domain, None).await
}

/// The queue URL travels to the settings through the environment (`tune` is a plain
/// function): one app is built at a time.
static QUEUE_ENV: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The service sending through moto from a verified `domain`, reading its feedback
/// from `queue` if one is given, with its state in `redis` if given.
async fn app_on(
    queue: Option<&str>,
    domain: &str,
    redis: Option<ses_connector::stores::redis_link::RedisSettings>,
) -> TestApp {
    let _one_at_a_time = QUEUE_ENV.lock().await;
    std::env::set_var("AWS_ENDPOINT_URL_SQS", moto_url());
    match queue {
        Some(queue) => std::env::set_var("FEEDBACK_QUEUE", queue),
        None => std::env::remove_var("FEEDBACK_QUEUE"),
    }
    verify_domain(domain).await;
    let mut config = logto_config();
    config["emailAddress"] = json!(format!("noreply@{domain}"));
    for key in [
        "emailAddressIdentityArn",
        "feedbackForwardingEmailAddressIdentityArn",
        "feedbackForwardingEmailAddress",
        "configurationSetName",
    ] {
        config[key] = json!("");
    }
    spawn_app(AppOptions {
        config: Some(config),
        ses_endpoint: Some(moto_url()),
        tune: |s| s.feedback_queue_url = std::env::var("FEEDBACK_QUEUE").ok(),
        redis,
        ..AppOptions::default()
    })
    .await
}

/// Verify a domain in moto so sends from it are accepted.
async fn verify_domain(domain: &str) {
    let response = reqwest::Client::new()
        .post(format!("{}/v2/email/identities", moto_url()))
        .header("authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/us-east-1/ses/aws4_request, SignedHeaders=host, Signature=x")
        .json(&json!({"EmailIdentity": domain}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
}

// --- SES's account-level suppression list (the programmable fake) -----------------

async fn list_answers(fake: &FakeSes, local_part: &str, response: wiremock::ResponseTemplate) {
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .and(wiremock::matchers::path_regex(format!(
            "^/v2/email/suppression/addresses/{local_part}(%40|@)"
        )))
        .respond_with(response)
        .mount(&fake.server)
        .await;
}

fn lookups(requests: &[wiremock::Request], local_part: &str) -> usize {
    requests
        .iter()
        .filter(|r| r.method == wiremock::http::Method::GET)
        .filter(|r| {
            r.url
                .path()
                .contains(&format!("/suppression/addresses/{local_part}"))
        })
        .count()
}

#[tokio::test]
async fn ses_suppression_list_is_asked_cached_and_never_blocks_a_send_when_it_fails() {
    let fake = FakeSes::start().await;
    fake.accepts("sent").await;
    let listed = wiremock::ResponseTemplate::new(200).set_body_json(json!({
        "SuppressedDestination": {"EmailAddress": "listed@example.com", "Reason": "COMPLAINT",
                                  "LastUpdateTime": 1764400000.0}
    }));
    list_answers(&fake, "listed", listed).await;
    let not_found = wiremock::ResponseTemplate::new(404)
        .insert_header("x-amzn-ErrorType", "NotFoundException")
        .set_body_json(json!({"message": "not listed"}));
    list_answers(&fake, "clean", not_found).await;
    let throttled = wiremock::ResponseTemplate::new(429)
        .insert_header("x-amzn-ErrorType", "TooManyRequestsException")
        .set_body_json(json!({"message": "Rate exceeded"}));
    list_answers(&fake, "throttled", throttled).await;
    list_answers(&fake, "failing", wiremock::ResponseTemplate::new(500)).await;
    wiremock::Mock::given(wiremock::matchers::method("DELETE"))
        .and(wiremock::matchers::path_regex(
            "^/v2/email/suppression/addresses/listed",
        ))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&fake.server)
        .await;
    let app = spawn_app(AppOptions {
        ses_endpoint: Some(fake.uri()),
        tune: |s| s.ses_suppression_check = true,
        ..AppOptions::default()
    })
    .await;

    let refused = app.send(&signin("listed@example.com")).await;
    let error = error_of(refused, 422, "recipient_suppressed").await;
    assert_eq!(error["suppression"]["reason"], "complaint", "{error}");
    for address in [
        "clean@example.com",
        "throttled@example.com",
        "failing@example.com",
    ] {
        assert_eq!(app.send(&signin(address)).await.status(), 200, "{address}");
    }
    assert_eq!(app.send(&signin("clean@example.com")).await.status(), 200);
    let requests = fake.server.received_requests().await.unwrap();
    assert_eq!(
        lookups(&requests, "clean"),
        1,
        "a not-listed answer is cached"
    );
    assert_eq!(lookups(&requests, "listed"), 1);
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("ses_connector_suppression_lookup_errors_total 2"),
        "{metrics}"
    );

    let lifted: Value = app
        .client
        .delete(app.url("/v1/suppressions/listed@example.com"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        lifted["ses"].as_str().unwrap().contains("removed"),
        "{lifted}"
    );
    let deletes = fake
        .server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method == wiremock::http::Method::DELETE)
        .count();
    assert_eq!(deletes, 1);
}

#[tokio::test]
async fn bounce_and_complaint_rates_of_the_last_day_are_in_metrics() {
    let app = dev_app().await;
    for to in [
        "success@simulator.amazonses.com",
        "success+2@simulator.amazonses.com",
        "bounce@simulator.amazonses.com",
        "complaint@simulator.amazonses.com",
    ] {
        message_id(app.send(&signin(to)).await).await;
    }

    let metrics = app.get("/metrics", None).await.text().await.unwrap();

    assert!(
        metrics.contains("ses_connector_bounce_rate 0.25"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ses_connector_complaint_rate 0.25"),
        "{metrics}"
    );
}

/// One SNS query-API call to moto; the response XML.
async fn sns(params: &[(&str, &str)]) -> String {
    let mut form: Vec<(&str, &str)> = vec![("Version", "2010-03-31")];
    form.extend_from_slice(params);
    reqwest::Client::new()
        .post(format!("{}/", moto_url()))
        .header("authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/us-east-1/sns/aws4_request, SignedHeaders=host, Signature=x")
        .form(&form)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn between<'a>(xml: &'a str, open: &str, close: &str) -> &'a str {
    let start = xml.find(open).map(|i| i + open.len()).expect(open);
    &xml[start..start + xml[start..].find(close).expect(close)]
}

#[tokio::test]
async fn ses_notifications_published_to_sns_reach_the_send_through_the_subscribed_queue() {
    let sqs = sqs().await;
    let name = format!("ses-sns-{}", uuid::Uuid::new_v4().simple());
    let queue = sqs
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .cloned()
        .unwrap();
    // Two topics: a configuration set's event destination with raw delivery, and an
    // identity's notifications wrapped by SNS.
    let events_topic = sns(&[
        ("Action", "CreateTopic"),
        ("Name", &format!("{name}-events")),
    ])
    .await;
    let events_topic = between(&events_topic, "<TopicArn>", "</TopicArn>").to_owned();
    let identity_topic = sns(&[
        ("Action", "CreateTopic"),
        ("Name", &format!("{name}-identity")),
    ])
    .await;
    let identity_topic = between(&identity_topic, "<TopicArn>", "</TopicArn>").to_owned();
    sns(&[
        ("Action", "Subscribe"),
        ("TopicArn", &events_topic),
        ("Protocol", "sqs"),
        ("Endpoint", &queue_arn),
        ("Attributes.entry.1.key", "RawMessageDelivery"),
        ("Attributes.entry.1.value", "true"),
    ])
    .await;
    sns(&[
        ("Action", "Subscribe"),
        ("TopicArn", &identity_topic),
        ("Protocol", "sqs"),
        ("Endpoint", &queue_arn),
    ])
    .await;

    let domain = format!("sns-{}.example.com", uuid::Uuid::new_v4().simple());
    let app = app_reading(&queue, &domain).await;
    let bounced_to = format!("bounced@{domain}");
    let complained_to = format!("complained@{domain}");
    let bounced = message_id(app.send(&signin(&bounced_to)).await).await;
    let complained = message_id(app.send(&signin(&complained_to)).await).await;

    let bounce = ses_event("Bounce", &bounced, &bounced_to).to_string();
    sns(&[
        ("Action", "Publish"),
        ("TopicArn", &events_topic),
        ("Message", &bounce),
    ])
    .await;
    let complaint = json!({
        "notificationType": "Complaint",
        "mail": {"messageId": complained, "destination": [complained_to], "timestamp": "2026-11-29T10:00:00.000Z"},
        "complaint": {"complaintFeedbackType": "abuse", "timestamp": "2026-11-29T10:10:00.000Z",
                      "complainedRecipients": [{"emailAddress": complained_to}]}
    })
    .to_string();
    sns(&[
        ("Action", "Publish"),
        ("TopicArn", &identity_topic),
        ("Message", &complaint),
    ])
    .await;

    let record = record_when(&app, &bounced, "bounced").await;
    assert_eq!(record["events"][0]["bounceType"], "Permanent");
    let record = record_when(&app, &complained, "complained").await;
    assert_eq!(record["events"][0]["feedbackType"], "abuse");
    for to in [&bounced_to, &complained_to] {
        error_of(app.send(&signin(to)).await, 422, "recipient_suppressed").await;
    }
}

// --- who feedback is about, and how much of it is kept (both stores) ---------------

use std::sync::Arc;

use ses_connector::address::Recipient;
use ses_connector::connector::UsageType;
use ses_connector::feedback::{
    parse, DeliveryLog, MemoryDeliveryLog, MessageRecord, Reader, Recorded, Status,
};
use ses_connector::stores::redis_link::RedisSettings;
use ses_connector::stores::{deliveries::RedisDeliveryLog, redis_link::RedisState};

fn redis_url() -> String {
    std::env::var("REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .expect("REDIS_URL is not set: run the tests with scripts/test.sh, which starts Redis")
}

fn redis_settings() -> RedisSettings {
    RedisSettings {
        url: redis_url().into(),
        secret: "a-state-secret-of-32-characters-at-least".to_owned().into(),
        prefix: format!("test-{}:", uuid::Uuid::new_v4().simple()),
        required: false,
        timeout: Duration::from_millis(200),
    }
}

/// A delivery log under test: its name, the log, and its Redis link if it has one.
type Store = (&'static str, Arc<dyn DeliveryLog>, Option<Arc<RedisState>>);

/// The memory log, and a Redis log whose link is returned to check it stayed up
/// (a Redis log that fell back to memory would pass for the wrong reason).
fn both_logs() -> Vec<Store> {
    let state = RedisState::connect(&redis_settings()).unwrap();
    vec![
        (
            "memory",
            Arc::new(MemoryDeliveryLog::new(64 * 1024 * 1024)) as Arc<dyn DeliveryLog>,
            None,
        ),
        (
            "redis",
            Arc::new(RedisDeliveryLog::new(
                state.clone(),
                MemoryDeliveryLog::new(64 * 1024 * 1024),
            )),
            Some(state),
        ),
    ]
}

fn still_shared(store: &str, state: &Option<Arc<RedisState>>) {
    if let Some(state) = state {
        assert!(!state.is_degraded(), "{store}: Redis answered every call");
    }
}

/// Remember a send of ours to `to`, by `sender`; its message id.
async fn sent(log: &dyn DeliveryLog, to: &str, sender: Option<[u8; 32]>) -> String {
    let id = format!("m-{}", uuid::Uuid::new_v4().simple());
    let to = Recipient::parse(to).unwrap();
    let record = MessageRecord {
        message_id: id.clone(),
        usage_type: UsageType::SignIn,
        recipient: to.masked(),
        sent_at: ses_connector::feedback::now(),
        status: Status::Sent,
        events: Vec::new(),
    };
    log.sent(record, &to, sender).await;
    id
}

/// A permanent bounce of `message_id` naming `recipients`.
fn bounce_of(message_id: &str, recipients: &[&str], diagnostic: &str) -> String {
    let bounced: Vec<Value> = recipients
        .iter()
        .map(|r| json!({"emailAddress": r, "action": "failed", "status": "5.1.1", "diagnosticCode": diagnostic}))
        .collect();
    json!({
        "eventType": "Bounce",
        "mail": {"messageId": message_id, "destination": recipients, "timestamp": "2026-11-29T10:00:00.000Z"},
        "bounce": {"bounceType": "Permanent", "bounceSubType": "General",
                   "bouncedRecipients": bounced, "timestamp": "2026-11-29T10:00:02.000Z"}
    })
    .to_string()
}

fn delivery_of(message_id: &str, recipients: &[&str]) -> String {
    json!({
        "eventType": "Delivery",
        "mail": {"messageId": message_id, "destination": recipients, "timestamp": "2026-11-29T10:00:00.000Z"},
        "delivery": {"timestamp": "2026-11-29T10:05:00.000Z", "recipients": recipients}
    })
    .to_string()
}

async fn suppressed(log: &dyn DeliveryLog, address: &str) -> bool {
    log.suppression(&Recipient::parse(address).unwrap())
        .await
        .is_some()
}

#[tokio::test]
async fn a_bounce_suppresses_the_mailbox_that_bounced_not_its_untagged_relative() {
    for (store, log, state) in both_logs() {
        let id = sent(&*log, "victim+promo@corp.example", None).await;

        let recorded = log
            .record(
                parse(&bounce_of(
                    &id,
                    &["victim+promo@corp.example"],
                    "smtp; 550 5.1.1 <victim+promo@corp.example>: unknown tag",
                ))
                .unwrap(),
            )
            .await;

        assert!(
            matches!(recorded, Recorded::Known { ignored: 0, .. }),
            "{store}: {recorded:?}"
        );
        assert!(
            suppressed(&*log, "victim+promo@corp.example").await,
            "{store}"
        );
        assert!(
            suppressed(&*log, "VICTIM+promo@CORP.example").await,
            "{store}"
        );
        assert!(!suppressed(&*log, "victim@corp.example").await, "{store}");
        assert!(
            !suppressed(&*log, "victim+other@corp.example").await,
            "{store}"
        );
        let record = log.message(&id, Reader::Admin).await.unwrap();
        assert_eq!(
            record.events[0].diagnostic_code.as_deref(),
            Some("smtp; 550 5.1.1 <v***@corp.example>: unknown tag"),
            "{store}: the address SES quoted is masked"
        );
        assert!(
            log.lift(&Recipient::parse("Victim+Promo@corp.example").unwrap())
                .await,
            "{store}"
        );
        assert!(
            !suppressed(&*log, "victim+promo@corp.example").await,
            "{store}"
        );
        still_shared(store, &state);
    }
}

#[tokio::test]
async fn the_suppression_routes_use_the_address_that_bounced_with_its_tag() {
    let app = dev_app().await;
    message_id(
        app.send(&signin("bounce+promo@simulator.amazonses.com"))
            .await,
    )
    .await;
    let status = |address: &'static str| {
        let app = &app;
        async move {
            let response = app.get(&format!("/v1/suppressions/{address}"), None).await;
            response.json::<Value>().await.unwrap()["suppressed"].clone()
        }
    };

    assert_eq!(status("BOUNCE+promo@SIMULATOR.amazonses.com").await, true);
    assert_eq!(status("bounce@simulator.amazonses.com").await, false);
    assert_eq!(status("bounce+other@simulator.amazonses.com").await, false);
    let lifted = app
        .client
        .delete(app.url("/v1/suppressions/Bounce+Promo@simulator.amazonses.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(lifted.status(), 200);
    assert_eq!(status("bounce+promo@simulator.amazonses.com").await, false);
}

#[tokio::test]
async fn forged_feedback_naming_other_recipients_suppresses_and_lifts_nobody_else() {
    for (store, log, state) in both_logs() {
        let ours = sent(&*log, "alice@corp.example", None).await;
        let bob = sent(&*log, "bob@corp.example", None).await;
        log.record(parse(&bounce_of(&bob, &["bob@corp.example"], "smtp; 550")).unwrap())
            .await;
        assert!(suppressed(&*log, "bob@corp.example").await, "{store}");

        let strangers = [
            "ceo@corp.example",
            "cfo@corp.example",
            "ALICE+x@corp.example",
        ];
        let forged = log
            .record(parse(&bounce_of(&ours, &strangers, "smtp; 550")).unwrap())
            .await;
        let mixed = log
            .record(
                parse(&bounce_of(
                    &ours,
                    &["alice@corp.example", "cto@corp.example"],
                    "smtp; 550",
                ))
                .unwrap(),
            )
            .await;
        let lifted = log
            .record(parse(&delivery_of(&ours, &["bob@corp.example"])).unwrap())
            .await;

        assert_eq!(forged, Recorded::OtherRecipients { ignored: 3 }, "{store}");
        assert!(
            matches!(mixed, Recorded::Known { ignored: 1, .. }),
            "{store}: {mixed:?}"
        );
        assert_eq!(lifted, Recorded::OtherRecipients { ignored: 1 }, "{store}");
        for stranger in [
            "ceo@corp.example",
            "cfo@corp.example",
            "alice+x@corp.example",
            "cto@corp.example",
        ] {
            assert!(!suppressed(&*log, stranger).await, "{store}: {stranger}");
        }
        assert!(
            suppressed(&*log, "alice@corp.example").await,
            "{store}: its own recipient"
        );
        assert!(
            suppressed(&*log, "bob@corp.example").await,
            "{store}: a forged delivery lifts nothing"
        );
        let record = log.message(&ours, Reader::Admin).await.unwrap();
        assert_eq!(
            record.events.len(),
            1,
            "{store}: only the event about alice: {record:?}"
        );
        still_shared(store, &state);
    }
}

#[tokio::test]
async fn a_flood_of_huge_delay_events_keeps_the_status_small() {
    for (store, log, state) in both_logs() {
        let id = sent(&*log, "slow@corp.example", None).await;
        let code = format!("smtp; 421 4.4.2 {}", "x".repeat(120 * 1024));
        for i in 0..400 {
            let delay = json!({
                "eventType": "DeliveryDelay",
                "mail": {"messageId": id, "destination": ["slow@corp.example"]},
                "deliveryDelay": {"delayType": "TransientCommunicationFailure",
                                  "timestamp": format!("2026-11-29T10:{:02}:{:02}.000Z", i / 60, i % 60),
                                  "delayedRecipients": [{"emailAddress": "slow@corp.example", "diagnosticCode": code}]}
            });
            log.record(parse(&delay.to_string()).unwrap()).await;
        }

        let record = log.message(&id, Reader::Admin).await.unwrap();

        let answer = serde_json::to_vec(&record).unwrap();
        assert!(answer.len() <= 32 * 1024, "{store}: {} bytes", answer.len());
        assert_eq!(record.events.len(), 20, "{store}");
        assert_eq!(
            record.events.last().unwrap().at,
            "2026-11-29T10:06:39.000Z",
            "{store}: the latest are kept"
        );
        assert!(record
            .events
            .iter()
            .all(|e| e.diagnostic_code.as_ref().unwrap().len() <= 1024));
        still_shared(store, &state);
    }
}

#[tokio::test]
async fn a_send_status_is_answered_only_to_the_token_that_sent_it() {
    for (store, log, state) in both_logs() {
        let (mine, theirs) = ([1u8; 32], [2u8; 32]);
        let id = sent(&*log, "alice@corp.example", Some(mine)).await;
        let unowned = sent(&*log, "bob@corp.example", None).await;

        assert!(
            log.message(&id, Reader::Token(&mine)).await.is_some(),
            "{store}"
        );
        assert!(log.message(&id, Reader::Admin).await.is_some(), "{store}");
        assert!(
            log.message(&id, Reader::Token(&theirs)).await.is_none(),
            "{store}"
        );
        assert!(
            log.message(&unowned, Reader::Token(&mine)).await.is_none(),
            "{store}"
        );
        assert!(
            log.message(&unowned, Reader::Admin).await.is_some(),
            "{store}"
        );
        still_shared(store, &state);
    }
}

// --- no bounce lost while Redis cannot answer ----------------------------------------

/// A link to the test Redis that a test can cut and restore: for the replica behind
/// it Redis stops answering and comes back, while other tests keep using the server.
struct RedisLink {
    url: String,
    cut: tokio::sync::watch::Sender<bool>,
}

impl RedisLink {
    async fn open() -> Self {
        let upstream = redis_url()
            .trim_start_matches("redis://")
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, watch) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut watch = watch.clone();
                if *watch.borrow() {
                    // Closed at once, as a stopped Redis would refuse it.
                    continue;
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watch.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self {
            url: format!("redis://127.0.0.1:{port}/"),
            cut,
        }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

/// Wait (bounded) until `/metrics` of `app` contains `needle`.
async fn metric_appears(app: &TestApp, needle: &str) {
    for _ in 0..300 {
        let metrics = app.get("/metrics", None).await.text().await.unwrap();
        if metrics.contains(needle) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{needle} never appeared in /metrics");
}

#[tokio::test]
async fn a_complaint_read_while_redis_is_unreachable_reaches_every_replica_once_it_is_back() {
    let domain = format!("cut-{}.example.com", uuid::Uuid::new_v4().simple());
    let sqs = sqs().await;
    // A short visibility timeout: a message left on the queue is read again soon.
    let queue = sqs
        .create_queue()
        .queue_name(format!("ses-cut-{}", uuid::Uuid::new_v4().simple()))
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            "1",
        )
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let redis = redis_settings();
    let link = RedisLink::open().await;
    let behind_link = RedisSettings {
        url: link.url.clone().into(),
        ..redis.clone()
    };
    let reader = app_on(Some(&queue), &domain, Some(behind_link)).await;
    let other = app_on(None, &domain, Some(redis)).await;
    let to = format!("complained-{}@{domain}", uuid::Uuid::new_v4().simple());
    let id = message_id(other.send(&signin(&to)).await).await;

    // The reader loses Redis, then the complaint arrives and the reader reads it.
    link.set_cut(true);
    let complaint = json!({
        "notificationType": "Complaint",
        "mail": {"messageId": id, "destination": [to], "timestamp": "2026-11-29T10:00:00.000Z"},
        "complaint": {"complaintFeedbackType": "abuse", "timestamp": "2026-11-29T10:10:00.000Z",
                      "complainedRecipients": [{"emailAddress": to}]}
    });
    sqs.send_message()
        .queue_url(&queue)
        .message_body(sns_wrapped(&complaint))
        .send()
        .await
        .unwrap();
    metric_appears(
        &reader,
        "ses_connector_feedback_unused_total{outcome=\"not_recorded\"}",
    )
    .await;
    let meanwhile: Value = other
        .get(&format!("/v1/messages/{id}"), Some(SEND_TOKEN))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(meanwhile["status"], "sent", "not recorded in Redis yet");

    // Once Redis is back, the replica that never read the queue knows of it.
    link.set_cut(false);
    let record = record_when(&other, &id, "complained").await;
    assert_eq!(record["events"][0]["feedbackType"], "abuse");
    let error = error_of(other.send(&signin(&to)).await, 422, "recipient_suppressed").await;
    assert_eq!(error["suppression"]["reason"], "complaint");
}

// --- who may read a send's status, and what the logs say -----------------------------

const OTHER_SEND_TOKEN: &str = "another-send-token-0123456789";

#[tokio::test]
async fn a_send_status_is_for_the_token_that_sent_it_and_admins() {
    let fake = FakeSes::start().await;
    fake.accepts("status-of-mine").await;
    let app = spawn_app(AppOptions {
        ses_endpoint: Some(fake.uri()),
        tune: |s| s.tokens.send.push(OTHER_SEND_TOKEN.to_owned().into()),
        ..AppOptions::default()
    })
    .await;
    let id = message_id(app.send(&signin("alice@example.com")).await).await;
    let path = format!("/v1/messages/{id}");

    let mine = app.get(&path, Some(SEND_TOKEN)).await;
    let admin = app.get(&path, Some(ADMIN_TOKEN)).await;
    let theirs = app.get(&path, Some(OTHER_SEND_TOKEN)).await;
    let unknown = app
        .get("/v1/messages/never-sent", Some(OTHER_SEND_TOKEN))
        .await;

    assert_eq!(mine.status(), 200);
    assert_eq!(admin.status(), 200);
    let theirs = error_of(theirs, 404, "not_found").await;
    let unknown = error_of(unknown, 404, "not_found").await;
    assert_eq!(
        theirs["message"], unknown["message"],
        "someone else's send answers as an unknown one: {theirs}"
    );
}

/// Everything the service logs in this test binary, as text.
fn captured_logs() -> Arc<std::sync::Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || LogSink(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other subscriber");
        logs
    })
    .clone()
}

struct LogSink(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_sandbox_rejection_is_logged_with_the_address_masked_and_answered_as_ses_said() {
    let logs = captured_logs();
    let to = "sandboxed.person@example.com";
    let reason = format!("Email address is not verified. The following identities failed the check in region US-EAST-1: {to}");
    let fake = FakeSes::start().await;
    fake.fails_with(400, "MessageRejected", &reason).await;
    let app = spawn_app(AppOptions {
        ses_endpoint: Some(fake.uri()),
        ..AppOptions::default()
    })
    .await;
    let test_email = json!({"config": logto_config(), "to": to});

    let sent = app.send(&signin(to)).await;
    let tested = app
        .post("/v1/test-email", Some(ADMIN_TOKEN), &test_email)
        .await;

    error_of(sent, 502, "invalid_response").await;
    let tested = error_of(tested, 502, "invalid_response").await;
    assert!(
        tested.to_string().contains(&reason),
        "the test email answers with SES's own words: {tested}"
    );
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(logs.contains("s***@example.com"), "{logs}");
    assert!(!logs.contains(to), "{logs}");
}

// --- what the service says matches what it does --------------------------------------

#[tokio::test]
async fn the_suppression_status_counts_the_ses_list_a_send_is_checked_against() {
    let fake = FakeSes::start().await;
    fake.accepts("sent").await;
    let listed = wiremock::ResponseTemplate::new(200).set_body_json(json!({
        "SuppressedDestination": {"EmailAddress": "listed@example.com", "Reason": "BOUNCE",
                                  "LastUpdateTime": 1764400000.0}
    }));
    list_answers(&fake, "listed", listed).await;
    let not_found = wiremock::ResponseTemplate::new(404)
        .insert_header("x-amzn-ErrorType", "NotFoundException")
        .set_body_json(json!({"message": "not listed"}));
    list_answers(&fake, "clean", not_found).await;
    let app = spawn_app(AppOptions {
        ses_endpoint: Some(fake.uri()),
        tune: |s| s.ses_suppression_check = true,
        ..AppOptions::default()
    })
    .await;
    let status = |address: &'static str| {
        let app = &app;
        async move {
            let response = app
                .get(&format!("/v1/suppressions/{address}"), Some(ADMIN_TOKEN))
                .await;
            assert_eq!(response.status(), 200, "{address}");
            response.json::<Value>().await.unwrap()
        }
    };

    let listed = status("listed@example.com").await;
    let clean = status("clean@example.com").await;

    assert_eq!(listed["suppressed"], true, "{listed}");
    assert_eq!(listed["suppression"]["reason"], "bounce", "{listed}");
    error_of(
        app.send(&signin("listed@example.com")).await,
        422,
        "recipient_suppressed",
    )
    .await;
    assert_eq!(clean["suppressed"], false, "{clean}");
    assert_eq!(app.send(&signin("clean@example.com")).await.status(), 200);
}

#[tokio::test]
async fn a_reload_that_moves_the_account_says_the_feedback_poller_needs_a_restart() {
    let sqs = sqs().await;
    let queue = sqs
        .create_queue()
        .queue_name(format!("ses-reload-{}", uuid::Uuid::new_v4().simple()))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let mut config = logto_config();
    for key in [
        "emailAddressIdentityArn",
        "feedbackForwardingEmailAddressIdentityArn",
        "feedbackForwardingEmailAddress",
        "configurationSetName",
    ] {
        config[key] = json!("");
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), config.to_string()).unwrap();
    let app = {
        let _one_at_a_time = QUEUE_ENV.lock().await;
        std::env::set_var("AWS_ENDPOINT_URL_SQS", moto_url());
        std::env::set_var("FEEDBACK_QUEUE", &queue);
        spawn_app(AppOptions {
            config_file: Some(file.path().to_owned()),
            ses_endpoint: Some(moto_url()),
            tune: |s| s.feedback_queue_url = std::env::var("FEEDBACK_QUEUE").ok(),
            ..AppOptions::default()
        })
        .await
    };
    let reload = || async {
        let response = app
            .post("/v1/config/reload", Some(ADMIN_TOKEN), &json!({}))
            .await;
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.unwrap()
    };

    let unchanged = reload().await;
    config["region"] = json!("eu-west-1");
    std::fs::write(file.path(), config.to_string()).unwrap();
    let moved = reload().await;

    assert!(unchanged.get("restart_needed").is_none(), "{unchanged}");
    let restart = moved["restart_needed"].as_str().unwrap_or_default();
    assert!(restart.contains("feedback queue"), "{moved}");
}

fn delivery_at(message_id: &str, to: &str, at: &str) -> String {
    json!({
        "notificationType": "Delivery",
        "mail": {"messageId": message_id, "destination": [to], "timestamp": "2026-11-29T09:00:00.000Z"},
        "delivery": {"timestamp": at, "recipients": [to]}
    })
    .to_string()
}

#[tokio::test]
async fn an_older_delivery_read_late_does_not_lift_a_newer_bounce() {
    for (store, log, state) in both_logs() {
        let earlier = sent(&*log, "alice@corp.example", None).await;
        let later = sent(&*log, "alice@corp.example", None).await;
        // The bounce of the later send (at 10:00:02) is read first…
        log.record(parse(&bounce_of(&later, &["alice@corp.example"], "smtp; 550")).unwrap())
            .await;
        // …then the earlier send's delivery, left on the queue during an outage.
        log.record(
            parse(&delivery_at(
                &earlier,
                "alice@corp.example",
                "2026-11-29T09:59:59.5Z",
            ))
            .unwrap(),
        )
        .await;
        assert!(
            suppressed(&*log, "alice@corp.example").await,
            "{store}: an older delivery lifts nothing"
        );
        log.record(
            parse(&delivery_at(
                &earlier,
                "alice@corp.example",
                "2026-11-29T10:00:02.001Z",
            ))
            .unwrap(),
        )
        .await;
        assert!(
            !suppressed(&*log, "alice@corp.example").await,
            "{store}: a later delivery lifts it"
        );
        still_shared(store, &state);
    }
}

#[tokio::test]
async fn a_bounce_of_a_send_made_while_redis_was_unreachable_reaches_every_replica() {
    let shared = redis_settings();
    let link = RedisLink::open().await;
    let behind_link = RedisState::connect(&RedisSettings {
        url: link.url.clone().into(),
        ..shared.clone()
    })
    .unwrap();
    let sender_log = RedisDeliveryLog::new(
        behind_link.clone(),
        MemoryDeliveryLog::new(64 * 1024 * 1024),
    );
    let other_log = RedisDeliveryLog::new(
        RedisState::connect(&shared).unwrap(),
        MemoryDeliveryLog::new(64 * 1024 * 1024),
    );

    // The send is made while its replica cannot reach Redis: only its memory has it.
    link.set_cut(true);
    let id = sent(&sender_log, "alice@corp.example", Some([7; 32])).await;
    assert!(behind_link.is_degraded());
    link.set_cut(false);
    let back = tokio::time::timeout(Duration::from_secs(10), async {
        while behind_link.is_degraded() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(back.is_ok(), "the probe saw Redis back");

    let recorded = sender_log
        .record(parse(&bounce_of(&id, &["alice@corp.example"], "smtp; 550")).unwrap())
        .await;

    assert!(
        matches!(recorded, Recorded::Known { .. }),
        "recorded where every replica reads it: {recorded:?}"
    );
    assert!(
        suppressed(&other_log, "alice@corp.example").await,
        "the other replica refuses the recipient"
    );
    let record = other_log
        .message(&id, Reader::Token(&[7; 32]))
        .await
        .unwrap();
    assert_eq!(record.status, Status::Bounced, "{record:?}");
}

#[tokio::test]
async fn a_send_made_while_redis_was_unreachable_is_shared_once_it_is_back() {
    let shared = redis_settings();
    let link = RedisLink::open().await;
    let sender_log = RedisDeliveryLog::new(
        RedisState::connect(&RedisSettings {
            url: link.url.clone().into(),
            ..shared.clone()
        })
        .unwrap(),
        MemoryDeliveryLog::new(64 * 1024 * 1024),
    );
    let other_log = RedisDeliveryLog::new(
        RedisState::connect(&shared).unwrap(),
        MemoryDeliveryLog::new(64 * 1024 * 1024),
    );
    link.set_cut(true);
    let id = sent(&sender_log, "bob@corp.example", Some([9; 32])).await;
    assert!(other_log.message(&id, Reader::Admin).await.is_none());

    link.set_cut(false);
    let shared_at_last = tokio::time::timeout(Duration::from_secs(10), async {
        while other_log.message(&id, Reader::Admin).await.is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        shared_at_last.is_ok(),
        "the send reached Redis once it was back"
    );

    // The bounce read by the other replica is recorded for everybody.
    let recorded = other_log
        .record(parse(&bounce_of(&id, &["bob@corp.example"], "smtp; 550")).unwrap())
        .await;
    assert!(matches!(recorded, Recorded::Known { .. }), "{recorded:?}");
    assert!(suppressed(&sender_log, "bob@corp.example").await);
    let record = other_log.message(&id, Reader::Token(&[9; 32])).await;
    assert!(record.is_some(), "its sender still reads it");
}
