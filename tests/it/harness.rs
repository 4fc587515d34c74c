//! Test helpers: start the real service on a random port, talk to it, fake SES.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use ses_connector::app::settings::{ConfigSource, Settings, Tokens, Transport};
use ses_connector::app::startup::Application;
use ses_connector::transport::ses::SesOptions;
use tokio::sync::oneshot;

pub const SEND_TOKEN: &str = "send-token-0123456789abcdef";
pub const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";
pub const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

/// How to start the service under test.
pub struct AppOptions {
    /// `None`: dev mode with the built-in config.
    pub config: Option<Value>,
    pub transport: Transport,
    pub ses_endpoint: Option<String>,
    pub ses: SesOptions,
    pub config_file: Option<std::path::PathBuf>,
    /// Adjust the settings before the app is built.
    pub tune: fn(&mut Settings),
    /// A transport in place of the configured one.
    pub mailer: Option<Arc<dyn ses_connector::transport::Mailer>>,
    /// Shared state in Redis instead of memory.
    pub redis: Option<ses_connector::stores::redis_link::RedisSettings>,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            config: Some(logto_config()),
            transport: Transport::Ses,
            ses_endpoint: None,
            ses: fast_ses_options(),
            config_file: None,
            tune: |_| {},
            mailer: None,
            redis: None,
        }
    }
}

/// SES options with short backoff so fault tests finish quickly.
pub fn fast_ses_options() -> SesOptions {
    SesOptions {
        connect_timeout: Duration::from_secs(2),
        attempt_timeout: Duration::from_secs(2),
        operation_timeout: Duration::from_secs(4),
        max_attempts: 3,
        initial_backoff: Duration::from_millis(10),
        endpoint: None,
    }
}

pub struct TestApp {
    pub address: String,
    /// `http://…` of the health listener, when the settings ask for one.
    pub health_address: Option<String>,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// This instance's link to Redis, when state is shared (two instances in one
    /// test process share the metrics, not this).
    pub shared_state: Option<Arc<ses_connector::stores::redis_link::RedisState>>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> reqwest::Response {
        let mut request = self.client.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request reaches the service")
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self.client.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request reaches the service")
    }

    /// Send as Logto's HTTP Email connector does.
    pub async fn send(&self, body: &Value) -> reqwest::Response {
        self.post("/v1/messages", Some(SEND_TOKEN), body).await
    }

    /// Stop like SIGTERM would and wait for the server to finish.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.server.take() {
            Some(server) => within(STOP_LIMIT, "the server stopping", server)
                .await
                .expect("server task completes"),
            None => Ok(()),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// How long a test waits for the server to stop: past any grace period a test sets.
pub const STOP_LIMIT: Duration = Duration::from_secs(60);

/// `future`'s output, or a panic saying that `what` did not happen within `limit`:
/// a test that waits for something never hangs.
pub async fn within<T>(
    limit: Duration,
    what: &str,
    future: impl std::future::Future<Output = T>,
) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what} did not happen within {limit:?}"),
    }
}

/// Build (and bind) the application without serving it.
pub async fn build_app(options: AppOptions) -> Application {
    let (app, _) = build(options).await;
    app
}

pub async fn spawn_app(options: AppOptions) -> TestApp {
    let (app, _) = build(options).await;
    let address = format!("http://127.0.0.1:{}", app.port());
    let health_address = app.health_addr().map(|a| format!("http://{a}"));
    let shared_state = app.shared_state();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stop_rx.await;
    }));
    TestApp {
        address,
        health_address,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        stop: Some(stop_tx),
        server: Some(server),
        shared_state,
    }
}

async fn build(options: AppOptions) -> (Application, Transport) {
    let dev = options.config.is_none() && options.config_file.is_none();
    let config_source = match (&options.config_file, &options.config) {
        (Some(path), _) => ConfigSource::File(path.clone()),
        (None, Some(config)) => ConfigSource::Inline(config.to_string()),
        (None, None) => ConfigSource::BuiltIn,
    };
    let tokens = if dev {
        Tokens::default()
    } else {
        Tokens {
            send: vec![SEND_TOKEN.to_owned().into()],
            admin: vec![ADMIN_TOKEN.to_owned().into()],
        }
    };
    let transport = if dev {
        Transport::Outbox
    } else {
        options.transport
    };
    let mut settings = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        health_listen: None,
        dev,
        transport,
        config_source,
        access_key_id: None,
        access_key_secret: None,
        tokens,
        ses: SesOptions {
            endpoint: options.ses_endpoint,
            ..options.ses
        },
        // Tests share recipients; the limit tests turn these on.
        rate_limit_recipient: "0".parse().unwrap(),
        rate_limit_ip: "0".parse().unwrap(),
        max_concurrent_sends: 256,
        max_queued_sends: 512,
        max_connections: 1024,
        idle_timeout: Duration::from_secs(30),
        queue_timeout: Duration::from_secs(1),
        shutdown_delay: Duration::ZERO,
        shutdown_grace: Duration::from_secs(10),
        config_read_timeout: ses_connector::app::settings::CONFIG_READ_TIMEOUT,
        redis: options.redis.clone(),
        max_send_rate: None,
        pacing_max_wait: Duration::from_secs(2),
        quota_interval: ses_connector::app::settings::QUOTA_INTERVAL,
        feedback_queue_url: None,
        suppression: ses_connector::send::SuppressionPolicy::Enforce,
        ses_suppression_check: false,
    };
    (options.tune)(&mut settings);
    let app = Application::build_with(settings, options.mailer)
        .await
        .expect("the app builds");
    (app, transport)
}

pub fn template(usage: &str) -> Value {
    json!({
        "usageType": usage,
        "subject": "Your {{application.name}} code",
        "content": "<p>Hello {{user.name}}, your code is {{code}}.</p>",
    })
}

/// A config as Logto's AWS SES connector saves it.
pub fn logto_config() -> Value {
    json!({
        "accessKeyId": "AKIAIOSFODNN7EXAMPLE",
        "accessKeySecret": SECRET,
        "region": "us-east-1",
        "emailAddress": "Acme <noreply@example.com>",
        "emailAddressIdentityArn": "arn:aws:ses:us-east-1:123456789012:identity/example.com",
        "feedbackForwardingEmailAddress": "bounces@example.com",
        "feedbackForwardingEmailAddressIdentityArn": "arn:aws:ses:us-east-1:123456789012:identity/example.com",
        "configurationSetName": "verification-codes",
        "templates": [template("SignIn"), template("Register"), template("ForgotPassword"), template("Generic")]
    })
}

/// A unique recipient so tests sharing a fake or moto do not see each other's mail.
pub fn unique_recipient() -> String {
    format!("user-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// Assert the one error shape and return the error object.
pub async fn error_of(response: reqwest::Response, status: u16, code: &str) -> Value {
    let actual = response.status().as_u16();
    let header_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = response.json().await.expect("error bodies are JSON");
    assert_eq!(actual, status, "status; body: {body}");
    assert_eq!(body["error"]["code"], code, "code; body: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(body["requestId"].is_string(), "{body}");
    assert_eq!(
        body["requestId"].as_str(),
        header_id.as_deref(),
        "requestId matches the header"
    );
    body["error"].clone()
}

/// A programmable SES stand-in.
pub struct FakeSes {
    pub server: wiremock::MockServer,
}

pub const SEND_PATH: &str = "/v2/email/outbound-emails";

impl FakeSes {
    pub async fn start() -> Self {
        Self {
            server: wiremock::MockServer::start().await,
        }
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    pub async fn answer(&self, response: wiremock::ResponseTemplate) {
        use wiremock::matchers::{method, path};
        wiremock::Mock::given(method("POST"))
            .and(path(SEND_PATH))
            .respond_with(response)
            .mount(&self.server)
            .await;
    }

    pub async fn accepts(&self, message_id: &str) {
        self.answer(
            wiremock::ResponseTemplate::new(200).set_body_json(json!({"MessageId": message_id})),
        )
        .await;
    }

    pub async fn fails_with(&self, status: u16, code: &str, message: &str) {
        self.answer(
            wiremock::ResponseTemplate::new(status)
                .insert_header("x-amzn-ErrorType", code)
                .set_body_json(json!({"message": message})),
        )
        .await;
    }

    /// The SendEmail bodies received so far.
    pub async fn requests(&self) -> Vec<Value> {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.url.path() == SEND_PATH)
            .map(|r| serde_json::from_slice(&r.body).expect("SES requests are JSON"))
            .collect()
    }
}

/// An app whose SES is the fake.
pub async fn app_with_fake_ses(fake: &FakeSes) -> TestApp {
    spawn_app(AppOptions {
        ses_endpoint: Some(fake.uri()),
        ..AppOptions::default()
    })
    .await
}

pub fn arc<T>(value: T) -> Arc<T> {
    Arc::new(value)
}

/// moto's URL. Without it the moto tests fail loudly: run them through `scripts/test.sh`.
pub fn moto_url() -> String {
    std::env::var("MOTO_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .expect("MOTO_URL is not set: run the tests with scripts/test.sh, which starts moto")
}

/// Messages moto recorded for `recipient` (from its data dump).
pub async fn moto_messages_to(recipient: &str) -> Vec<Value> {
    let data: Value = reqwest::get(format!("{}/moto-api/data.json", moto_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    data["ses"]["Message"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.to_string().contains(recipient))
        .collect()
}

/// The outbox-transport app reading its config from a file (Logto's config), so
/// tests can rewrite the file and reload: the app, the file, and the folder that
/// must outlive them.
pub async fn app_with_config_file() -> (TestApp, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, logto_config().to_string()).unwrap();
    let app = spawn_app(AppOptions {
        config_file: Some(path.clone()),
        transport: ses_connector::app::settings::Transport::Outbox,
        ..AppOptions::default()
    })
    .await;
    (app, path, dir)
}

/// The HTTP client the tests' own SDK clients use to reach moto (rustls with ring).
pub fn sdk_http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// A fake SES answer that accepts a send and notes when it arrived.
pub struct Arrivals(pub Arc<std::sync::Mutex<Vec<std::time::Instant>>>);

impl wiremock::Respond for Arrivals {
    fn respond(&self, _: &wiremock::Request) -> wiremock::ResponseTemplate {
        self.0.lock().unwrap().push(std::time::Instant::now());
        wiremock::ResponseTemplate::new(200).set_body_json(json!({"MessageId": "paced"}))
    }
}

impl FakeSes {
    /// Accept every send, noting when each arrived.
    pub async fn notes_arrivals(&self) -> Arc<std::sync::Mutex<Vec<std::time::Instant>>> {
        let arrivals = Arc::new(std::sync::Mutex::new(Vec::new()));
        wiremock::Mock::given(wiremock::matchers::method("POST"))
            .and(wiremock::matchers::path(SEND_PATH))
            .respond_with(Arrivals(arrivals.clone()))
            .mount(&self.server)
            .await;
        arrivals
    }
}

/// No more than `most` arrivals within any one second.
pub fn assert_at_most_per_second(times: &[std::time::Instant], most: usize) {
    for (i, start) in times.iter().enumerate() {
        let within_a_second = times[i..]
            .iter()
            .filter(|t| t.duration_since(*start) < Duration::from_secs(1))
            .count();
        assert!(
            within_a_second <= most,
            "{within_a_second} sends reached SES within one second"
        );
    }
}
