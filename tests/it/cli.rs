//! The binary as users run it: subcommands, exit codes, environment, logs.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::*;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_ses-connector");

/// The binary with a clean environment: no settings or AWS variables leak in.
fn command() -> Command {
    let mut command = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("SES_CONNECTOR_") || key.starts_with("AWS_") {
            command.env_remove(key);
        }
    }
    command.env("AWS_EC2_METADATA_DISABLED", "true");
    command
}

struct Server {
    child: Child,
    port: u16,
    logs: Arc<Mutex<Vec<String>>>,
    /// Says when the log reader has read the last line (the process closed stderr).
    drained: std::sync::mpsc::Receiver<()>,
}

impl Server {
    fn start(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        let (drained_tx, drained) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening") {
                    if let Some(port) = port_in(&line) {
                        let _ = port_tx.send(port);
                    }
                }
                sink.lock().unwrap().push(line);
            }
            let _ = drained_tx.send(());
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "the service did not report its port; log: {:?}",
                    logs.lock().unwrap()
                )
            });
        Self {
            child,
            port,
            logs,
            drained,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Whether a log line containing `needle` appears (waits up to about 5 s).
    async fn logged(&self, needle: &str) -> bool {
        for _ in 0..500 {
            if self.logs.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// SIGTERM, then the exit code and the whole log.
    fn stop(mut self) -> (i32, Vec<String>) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let started = Instant::now();
        let code = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status.code().unwrap_or(-1);
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the service did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        self.drained
            .recv_timeout(Duration::from_secs(10))
            .expect("the log reader reads to the end once the process has exited");
        let logs = self.logs.lock().unwrap().clone();
        (code, logs)
    }
}

fn port_in(line: &str) -> Option<u16> {
    let at = line.find("127.0.0.1:")? + "127.0.0.1:".len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// `serve` on a free port with the config file at `path` and the send token.
fn serve_with_config(path: &std::path::Path) -> Command {
    let mut command = command();
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(path)
        .env("SES_CONNECTOR_SEND_TOKENS", SEND_TOKEN);
    command
}

/// Logto's config without its keys: credentials must come from elsewhere.
fn config_without_keys() -> Value {
    let mut config = logto_config();
    config.as_object_mut().unwrap().remove("accessKeyId");
    config.as_object_mut().unwrap().remove("accessKeySecret");
    config
}

/// One SignIn send to a running server.
async fn send_one(server: &Server) -> reqwest::Response {
    reqwest::Client::new()
        .post(server.url("/v1/messages"))
        .bearer_auth(SEND_TOKEN)
        .json(&json!({"to": "u@example.com", "type": "SignIn", "payload": {"code": "1"}}))
        .send()
        .await
        .unwrap()
}

fn write_config(dir: &tempfile::TempDir, config: &Value) -> std::path::PathBuf {
    let path = dir.path().join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(config).unwrap()).unwrap();
    path
}

#[test]
fn init_writes_a_starter_config_that_validate_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("starter.json");

    let init = command()
        .args(["init", "--out"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    let validate = command().arg("validate").arg(&path).output().unwrap();

    assert_eq!(validate.status.code(), Some(0), "{validate:?}");
    assert!(String::from_utf8_lossy(&validate.stdout).starts_with("valid"));
    let again = command()
        .args(["init", "--out"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        again.status.code(),
        Some(2),
        "init does not overwrite without --force"
    );
}

#[test]
fn validate_exits_1_for_an_invalid_config_and_2_for_an_unreadable_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = logto_config();
    config["region"] = json!("nowhere");
    let path = write_config(&dir, &config);

    let invalid = command()
        .arg("validate")
        .arg(&path)
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(invalid.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&invalid.stdout).unwrap();
    assert_eq!(report["valid"], false);
    assert_eq!(report["errors"][0]["path"], "region");

    let human = command().arg("validate").arg(&path).output().unwrap();
    assert!(String::from_utf8_lossy(&human.stdout).contains("region"));

    let missing = command()
        .arg("validate")
        .arg(dir.path().join("missing.json"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    std::fs::write(dir.path().join("broken.json"), "{not json").unwrap();
    let broken = command()
        .arg("validate")
        .arg(dir.path().join("broken.json"))
        .output()
        .unwrap();
    assert_eq!(broken.status.code(), Some(2));
}

#[test]
fn render_prints_subject_text_and_html() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, &logto_config());

    let output = command()
        .args(["render", "--config"])
        .arg(&path)
        .args([
            "--type",
            "SignIn",
            "--payload",
            r#"{"code":"271828","application":{"name":"Acme"}}"#,
        ])
        .output()
        .unwrap();

    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("Subject: Your Acme code"), "{text}");
    assert!(text.contains("----- text -----"));
    assert!(
        text.contains("<p>Hello , your code is 271828.</p>"),
        "{text}"
    );
}

#[test]
fn serve_refuses_to_start_without_tokens_and_says_how_to_set_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, &logto_config());
    let output = command()
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SES_CONNECTOR_ADMIN_TOKENS"), "{stderr}");
}

#[test]
fn serve_refuses_an_invalid_config_listing_the_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, &json!({"region": "us-east-1", "templates": []}));
    let output = command()
        .args(["serve", "--config"])
        .arg(&path)
        .env("SES_CONNECTOR_ADMIN_TOKENS", ADMIN_TOKEN)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Template with UsageType (Register, SignIn, ForgotPassword, Generic) should be provided!"), "{stderr}");
}

#[tokio::test]
async fn with_no_arguments_it_serves_dev_mode_and_the_healthcheck_passes() {
    let server = Server::start({
        let mut c = command();
        c.env("SES_CONNECTOR_LISTEN", "127.0.0.1:0");
        c
    });
    let client = reqwest::Client::new();
    let sent = client
        .post(server.url("/v1/messages"))
        .json(&json!({"to": "me@example.com", "type": "SignIn", "payload": {"code": "123456"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);
    let outbox: Value = client
        .get(server.url("/v1/outbox"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(outbox.as_array().unwrap().len(), 1);

    let healthy = command()
        .args(["healthcheck", "--url", &server.url("/healthz")])
        .status()
        .unwrap();
    assert_eq!(healthy.code(), Some(0));
    let not_found = command()
        .args(["healthcheck", "--url", &server.url("/nope")])
        .status()
        .unwrap();
    assert_eq!(not_found.code(), Some(1));

    let (code, logs) = server.stop();
    assert_eq!(code, 0, "SIGTERM exits 0; log: {logs:?}");
    assert!(
        logs.iter().any(|l| l.contains("dev mode")),
        "the banner says where to look"
    );
    assert!(logs.iter().any(|l| l.contains("/outbox")));
}

#[test]
fn the_healthcheck_fails_when_nothing_listens() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let status = command()
        .args([
            "healthcheck",
            "--url",
            &format!("http://127.0.0.1:{port}/healthz"),
        ])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
}

#[tokio::test]
async fn the_standard_endpoint_variable_is_honoured_and_logs_keep_secrets_out() {
    let fake = FakeSes::start().await;
    fake.accepts("from-env-endpoint").await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, &logto_config());
    let server = Server::start({
        let mut c = serve_with_config(&path);
        c.env("SES_CONNECTOR_ADMIN_TOKENS", ADMIN_TOKEN)
            .env("SES_CONNECTOR_LOG_FORMAT", "json")
            .env("SES_CONNECTOR_LOG_LEVEL", "debug")
            // The service-specific variable wins over the general one.
            .env("AWS_ENDPOINT_URL_SESV2", fake.uri())
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9");
        c
    });
    let client = reqwest::Client::new();
    let link = "https://auth.example.com/magic?token=SECRETLINKVALUE";
    let response = client
        .post(server.url("/v1/messages"))
        .bearer_auth(SEND_TOKEN)
        .header("x-request-id", "trace-me-42")
        .json(&json!({"to": "alice@example.org", "type": "SignIn", "payload": {"code": "918273", "link": link, "user": {"name": "PAYLOADNAME"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let rejected = client
        .get(server.url("/v1/config"))
        .bearer_auth("not-a-valid-token-at-all")
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status(), 401);

    let (code, logs) = server.stop();

    assert_eq!(code, 0);
    assert_eq!(
        fake.requests().await.len(),
        1,
        "the send went to AWS_ENDPOINT_URL"
    );
    let lines: Vec<Value> = logs
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(!lines.is_empty(), "logs are JSON lines: {logs:?}");
    let send_line = lines
        .iter()
        .find(|l| l["message"] == "email sent")
        .expect("one line per send");
    assert_eq!(send_line["recipient"], "a***@example.org");
    assert_eq!(send_line["usage_type"], "SignIn");
    assert_eq!(send_line["message_id"], "from-env-endpoint");
    assert_eq!(send_line["outcome"], "sent");
    assert!(send_line["ses_latency_ms"].is_number());
    assert_eq!(send_line["span"]["request_id"], "trace-me-42");
    let of_request: Vec<&Value> = lines
        .iter()
        .filter(|l| l["span"]["request_id"] == "trace-me-42")
        .collect();
    assert!(
        of_request.len() >= 2,
        "the send line and the request line carry the request id"
    );
    let request_line = lines
        .iter()
        .find(|l| l["message"] == "request" && l["route"] == "/v1/messages")
        .expect("one line per request");
    assert_eq!(request_line["status"], 200);
    assert!(request_line["latency_ms"].is_number());
    let all = logs.join("\n");
    for secret in [
        "918273",
        "SECRETLINKVALUE",
        "PAYLOADNAME",
        SECRET,
        SEND_TOKEN,
        ADMIN_TOKEN,
        "not-a-valid-token-at-all",
        "alice@",
    ] {
        assert!(
            !all.contains(secret),
            "{secret:?} leaked into the log:\n{all}"
        );
    }
}

#[tokio::test]
async fn an_empty_service_endpoint_variable_counts_as_unset() {
    let fake = FakeSes::start().await;
    fake.accepts("via-general-endpoint").await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, &logto_config());
    let server = Server::start({
        let mut c = serve_with_config(&path);
        c.env("AWS_ENDPOINT_URL_SESV2", "")
            .env("AWS_ENDPOINT_URL", fake.uri());
        c
    });
    let response = send_one(&server).await;
    let status = response.status();
    let (code, logs) = server.stop();
    assert_eq!(status, 200, "{logs:?}");
    assert_eq!(code, 0);
    assert_eq!(fake.requests().await.len(), 1);
}

#[tokio::test]
async fn sighup_reloads_the_config_file_and_an_invalid_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, &logto_config());
    let server = Server::start({
        let mut c = command();
        c.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--transport",
            "outbox",
            "--config",
        ])
        .arg(&path)
        .env("SES_CONNECTOR_ADMIN_TOKENS", ADMIN_TOKEN);
        c
    });
    let client = reqwest::Client::new();
    let subject = || async {
        let preview: Value = client
            .post(server.url("/v1/preview"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"type": "SignIn", "payload": {"application": {"name": "A"}}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        preview["subject"].as_str().unwrap().to_owned()
    };
    let hangup = || {
        let status = Command::new("kill")
            .args(["-HUP", &server.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    assert_eq!(subject().await, "Your A code");

    let mut changed = logto_config();
    changed["templates"][0]["subject"] = json!("Reloaded {{application.name}}");
    write_config(&dir, &changed);
    hangup();
    let mut now = String::new();
    for _ in 0..500 {
        now = subject().await;
        if now != "Your A code" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(now, "Reloaded A");

    std::fs::write(&path, "{\"region\": 1}").unwrap();
    hangup();
    let refused = server.logged("reload on SIGHUP refused").await;
    assert!(refused, "an error line says the reload was refused");
    assert_eq!(
        subject().await,
        "Reloaded A",
        "the old config keeps serving"
    );
    let (code, _) = server.stop();
    assert_eq!(code, 0);
}

#[tokio::test]
async fn the_default_credential_chain_and_endpoint_variable_reach_moto() {
    let domain = format!("chain-{}.example.com", uuid::Uuid::new_v4().simple());
    let mut config = logto_config();
    config.as_object_mut().unwrap().remove("accessKeyId");
    config.as_object_mut().unwrap().remove("accessKeySecret");
    config["emailAddress"] = json!(format!("noreply@{domain}"));
    for key in [
        "emailAddressIdentityArn",
        "feedbackForwardingEmailAddressIdentityArn",
        "feedbackForwardingEmailAddress",
        "configurationSetName",
    ] {
        config[key] = json!("");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, &config);
    let env = |c: &mut Command| {
        c.env("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
            .env("AWS_SECRET_ACCESS_KEY", "chain-secret")
            .env("AWS_ENDPOINT_URL_SESV2", moto_url());
    };
    // Verify the sender through the CLI's own SES path is not possible; use moto's API.
    let verify = reqwest::Client::new()
        .post(format!("{}/v2/email/identities", moto_url()))
        .header("authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/us-east-1/ses/aws4_request, SignedHeaders=host, Signature=x")
        .json(&json!({"EmailIdentity": domain}))
        .send()
        .await
        .unwrap();
    assert!(verify.status().is_success(), "{:?}", verify.text().await);

    let server = Server::start({
        let mut c = serve_with_config(&path);
        env(&mut c);
        c
    });
    let to = unique_recipient();
    let response = reqwest::Client::new()
        .post(server.url("/v1/messages"))
        .bearer_auth(SEND_TOKEN)
        .json(&json!({"to": to, "type": "Register", "payload": {"code": "55555"}}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    let (code, _) = server.stop();
    assert_eq!(status, 200, "{body}");
    assert_eq!(code, 0);

    // The CLI's send-test takes the same path.
    let test_to = unique_recipient();
    let mut send_test = command();
    send_test
        .args(["send-test", "--config"])
        .arg(&path)
        .args(["--to", &test_to]);
    env(&mut send_test);
    let output = send_test.output().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("message id"));

    assert_eq!(
        moto_messages_to(&to).await.len(),
        1,
        "the send reached moto"
    );
    assert_eq!(
        moto_messages_to(&test_to).await.len(),
        1,
        "send-test reached moto"
    );
}

#[tokio::test]
async fn serve_and_send_test_both_take_the_keys_from_the_access_key_variables() {
    let fake = FakeSes::start().await;
    fake.accepts("env-keys").await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, &config_without_keys());
    let env = |c: &mut Command| {
        c.env("SES_CONNECTOR_ACCESS_KEY_ID", "AKIAENVOVERRIDE00001")
            .env("SES_CONNECTOR_ACCESS_KEY_SECRET", "env-secret-value")
            .env("AWS_ENDPOINT_URL_SESV2", fake.uri());
    };

    let mut send_test = command();
    send_test
        .args(["send-test", "--config"])
        .arg(&path)
        .args(["--to", "u@example.com"]);
    env(&mut send_test);
    let output = send_test.output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let server = Server::start({
        let mut c = serve_with_config(&path);
        env(&mut c);
        c
    });
    let response = send_one(&server).await;
    assert_eq!(response.status(), 200);
    server.stop();

    let requests: Vec<_> = fake
        .server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == SEND_PATH)
        .collect();
    assert_eq!(requests.len(), 2, "send-test and serve each sent once");
    for request in requests {
        let authorization = request.headers["authorization"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            authorization.contains("Credential=AKIAENVOVERRIDE00001/"),
            "{authorization}"
        );
    }
}

#[tokio::test]
async fn a_send_without_credentials_anywhere_says_where_they_are_looked_for() {
    let fake = FakeSes::start().await;
    fake.accepts("never").await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, &config_without_keys());
    let env = |c: &mut Command| {
        c.env("AWS_ENDPOINT_URL_SESV2", fake.uri())
            .env("HOME", dir.path())
            .env("AWS_CONFIG_FILE", dir.path().join("none"))
            .env("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("none"));
    };
    let server = Server::start({
        let mut c = serve_with_config(&path);
        env(&mut c);
        c
    });

    let response = send_one(&server).await;
    let error = error_of(response, 500, "credentials_unavailable").await;
    server.stop();
    let message = error["message"].as_str().unwrap();
    for place in [
        "accessKeyId",
        "SES_CONNECTOR_ACCESS_KEY_ID",
        "AWS_ACCESS_KEY_ID",
        "instance profile",
    ] {
        assert!(message.contains(place), "{place} in {message}");
    }
    let mut send_test = command();
    send_test
        .args(["send-test", "--config"])
        .arg(&path)
        .args(["--to", "u@example.com"]);
    env(&mut send_test);
    let output = send_test.output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no AWS credentials"));
    assert!(fake.requests().await.is_empty(), "nothing reached SES");
}

#[tokio::test]
async fn a_sighup_right_after_the_service_reports_itself_reloads_instead_of_killing_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, &logto_config());
    let server = Server::start({
        let mut c = serve_with_config(&path);
        c.args(["--transport", "outbox"]);
        c
    });
    // Server::start returns as soon as the `listening` line is read.
    let status = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let reloaded = server.logged("config reloaded on SIGHUP").await;
    let health = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200, "still serving");
    let (code, logs) = server.stop();
    assert!(reloaded, "{logs:?}");
    assert_eq!(code, 0);
}

#[tokio::test]
async fn a_warning_is_logged_when_80_percent_of_the_daily_quota_is_used() {
    let fake = FakeSes::start().await;
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .and(wiremock::matchers::path("/v2/email/account"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(json!({
            "SendQuota": {"Max24HourSend": 50000.0, "MaxSendRate": 14.0, "SentLast24Hours": 45000.0},
            "SendingEnabled": true, "ProductionAccessEnabled": true, "EnforcementStatus": "HEALTHY"
        })))
        .mount(&fake.server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, &logto_config());
    let server = Server::start({
        let mut c = serve_with_config(&path);
        c.env("AWS_ENDPOINT_URL_SESV2", fake.uri());
        c
    });

    let warned = server
        .logged("90 % of the SES 24-hour sending quota is used")
        .await;
    let (_, logs) = server.stop();
    assert!(warned, "{logs:?}");
}

/// One run of `doctor --json` and what it must print.
struct DoctorCase {
    why: &'static str,
    args: Vec<std::ffi::OsString>,
    /// The SES endpoint, when the doctor gets as far as asking it.
    ses: Option<String>,
    exit: i32,
    path: &'static str,
    code: &'static str,
}

/// `doctor --json` with `args`: the exit code and the parsed report.
fn doctor_json(args: &[std::ffi::OsString], ses: Option<&str>) -> (Option<i32>, Value) {
    let mut doctor = command();
    doctor.args(["doctor", "--json"]).args(args);
    if let Some(uri) = ses {
        doctor.env("AWS_ENDPOINT_URL_SESV2", uri);
    }
    let output = doctor.output().unwrap();
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {:?}; stderr: {:?}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code(), report)
}

#[tokio::test]
async fn doctor_json_prints_the_report_shape_for_every_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let mut invalid = logto_config();
    invalid["region"] = json!("nowhere");
    let invalid = write_config(&dir, &invalid);
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{not json").unwrap();
    let missing = dir.path().join("missing.json");
    let good = dir.path().join("good.json");
    std::fs::write(&good, logto_config().to_string()).unwrap();
    // SES refuses the credentials: the doctor's own "something will fail".
    let fake = FakeSes::start().await;
    wiremock::Mock::given(wiremock::matchers::any())
        .respond_with(
            wiremock::ResponseTemplate::new(403)
                .insert_header("x-amzn-ErrorType", "UnrecognizedClientException")
                .set_body_json(
                    json!({"message": "The security token included in the request is invalid."}),
                ),
        )
        .mount(&fake.server)
        .await;
    let with = |path: &std::path::Path| vec!["--config".into(), path.as_os_str().to_owned()];
    let cases = [
        DoctorCase {
            why: "invalid config",
            args: with(&invalid),
            ses: None,
            exit: 1,
            path: "region",
            code: "invalid_format",
        },
        DoctorCase {
            why: "not JSON",
            args: with(&broken),
            ses: None,
            exit: 2,
            path: "",
            code: "unreadable",
        },
        DoctorCase {
            why: "no such file",
            args: with(&missing),
            ses: None,
            exit: 2,
            path: "",
            code: "unreadable",
        },
        DoctorCase {
            why: "no config given",
            args: vec![],
            ses: None,
            exit: 2,
            path: "",
            code: "unreadable",
        },
        DoctorCase {
            why: "credentials refused",
            args: with(&good),
            ses: Some(fake.uri()),
            exit: 1,
            path: "accessKeyId",
            code: "credentials_invalid",
        },
    ];

    for DoctorCase {
        why,
        args,
        ses,
        exit,
        path,
        code,
    } in cases
    {
        let (status, report) = doctor_json(&args, ses.as_deref());

        assert_eq!(status, Some(exit), "{why}: {report}");
        assert_eq!(report["valid"], false, "{why}: {report}");
        assert!(report["warnings"].is_array(), "{why}: {report}");
        assert!(report.get("account").is_some(), "{why}: {report}");
        let error = &report["errors"][0];
        assert_eq!(error["code"], code, "{why}: {report}");
        assert_eq!(error["path"], path, "{why}: {report}");
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{why}: {report}"
        );
    }
}
