//! Shared state through Redis: one conformance suite run against the in-memory and
//! the Redis stores, then two service instances on one Redis behaving as one
//! service, Redis going away and coming back, and Redis required.
//! `scripts/test.sh` installs and starts a Redis server and sets `REDIS_URL`.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::*;
use serde_json::{json, Value};
use ses_connector::address::Recipient;
use ses_connector::stores::idempotency::{
    Completed, IdempotencyError, IdempotencyStore, MemoryIdempotencyStore, Weigh,
};
use ses_connector::stores::limits::{MemoryLimits, Rate, Refusal, SendLimiter};
use ses_connector::stores::pacing::{MemoryPacer, PaceKey, PaceRefusal, SendPacer};
use ses_connector::stores::redis_link::RedisSettings;
use ses_connector::stores::{
    idempotency::RedisIdempotencyStore, limits::RedisLimits, pacing::RedisPacer,
    redis_link::RedisState,
};
use wiremock::ResponseTemplate;

/// The Redis the test script started. Without it these tests fail loudly.
fn redis_url() -> String {
    std::env::var("REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .expect("REDIS_URL is not set: run the tests with scripts/test.sh, which starts Redis")
}

fn redis_settings(url: &str, required: bool) -> RedisSettings {
    RedisSettings {
        url: url.to_owned().into(),
        secret: "a-state-secret-of-32-characters-at-least".to_owned().into(),
        prefix: format!("test-{}:", uuid::Uuid::new_v4().simple()),
        required,
        timeout: Duration::from_millis(200),
    }
}

fn rate(s: &str) -> Rate {
    s.parse().unwrap()
}

#[derive(Clone, Copy, Debug)]
enum Backend {
    Memory,
    Redis,
}

const BACKENDS: [Backend; 2] = [Backend::Memory, Backend::Redis];

fn limiter(backend: Backend, recipient: Rate, ip: Rate) -> Arc<dyn SendLimiter> {
    match backend {
        Backend::Memory => Arc::new(MemoryLimits::new(recipient, ip)),
        // Required, as for the idempotency store below.
        Backend::Redis => {
            let state = RedisState::connect(&redis_settings(&redis_url(), true)).unwrap();
            Arc::new(RedisLimits::new(state, recipient, ip))
        }
    }
}

fn to(address: &str) -> Recipient {
    Recipient::parse(address).unwrap()
}

fn exceeded<T: std::fmt::Debug>(refusal: Result<T, Refusal>) -> (&'static str, Duration) {
    match refusal {
        Err(Refusal::Exceeded(e)) => (e.limit, e.retry_after),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn both_backends_allow_n_sends_in_a_rolling_window_and_say_when_to_retry() {
    for backend in BACKENDS {
        let limits = limiter(backend, rate("3/600"), rate("0"));
        let victim = to("victim@example.org");
        for spelling in [
            "victim@example.org",
            "Victim+1@EXAMPLE.org",
            "\"victim\"@example.org",
        ] {
            limits.admit(&to(spelling), None).await.unwrap();
        }
        let (limit, retry_after) = exceeded(limits.admit(&victim, None).await);
        assert_eq!(limit, "recipient", "{backend:?}");
        assert!(
            retry_after > Duration::from_secs(590) && retry_after <= Duration::from_secs(600),
            "{backend:?}: {retry_after:?}"
        );
        // A refusal is not counted, and other recipients are not affected.
        exceeded(limits.admit(&victim, None).await);
        limits.admit(&to("other@example.org"), None).await.unwrap();
    }
}

#[tokio::test]
async fn both_backends_refuse_on_the_ip_limit_without_using_up_the_recipient() {
    let ip: IpAddr = "203.0.113.7".parse().unwrap();
    let mapped: IpAddr = "::ffff:203.0.113.7".parse().unwrap();
    for backend in BACKENDS {
        let limits = limiter(backend, rate("2/600"), rate("1/600"));
        let a = to("a@example.com");
        limits.admit(&a, Some(ip)).await.unwrap();
        let (limit, _) = exceeded(limits.admit(&a, Some(mapped)).await);
        assert_eq!(limit, "ip", "{backend:?}");
        limits
            .admit(&a, Some("198.51.100.1".parse().unwrap()))
            .await
            .unwrap();
        let (limit, _) = exceeded(limits.admit(&a, None).await);
        assert_eq!(
            limit, "recipient",
            "{backend:?}: two counted, the refused one not"
        );
    }
}

#[tokio::test]
async fn on_both_backends_a_send_given_back_uses_up_no_window() {
    let ip: IpAddr = "203.0.113.9".parse().unwrap();
    for backend in BACKENDS {
        let limits = match backend {
            Backend::Memory => limiter(backend, rate("2/600"), rate("2/600")),
            // Required, so a Redis that cannot answer fails the test instead of
            // passing it on the memory fallback.
            Backend::Redis => {
                let state = RedisState::connect(&redis_settings(&redis_url(), true)).unwrap();
                Arc::new(RedisLimits::new(state, rate("2/600"), rate("2/600")))
            }
        };
        let a = to("a@example.com");
        // Three sends admitted, then refused by pacing or the gate before SES.
        for _ in 0..3 {
            let admission = limits.admit(&a, Some(ip)).await.unwrap();
            limits.give_back(admission).await;
        }
        // Both windows still have both their sends.
        limits.admit(&a, Some(ip)).await.unwrap();
        limits
            .admit(&to("A+codes@example.com"), Some(ip))
            .await
            .unwrap();
        let (limit, _) = exceeded(limits.admit(&a, None).await);
        assert_eq!(limit, "recipient", "{backend:?}");
        let (limit, _) = exceeded(limits.admit(&to("b@example.com"), Some(ip)).await);
        assert_eq!(limit, "ip", "{backend:?}");
    }
}

#[tokio::test]
async fn a_slot_given_back_on_one_replica_is_free_on_the_other() {
    let settings = redis_settings(&redis_url(), true);
    let replica = || {
        let state = RedisState::connect(&settings).unwrap();
        RedisLimits::new(state, rate("1/600"), rate("0"))
    };
    let (a, b) = (replica(), replica());
    let victim = to("victim@example.org");

    let admission = a.admit(&victim, None).await.unwrap();
    exceeded(b.admit(&victim, None).await);
    a.give_back(admission).await;

    b.admit(&victim, None).await.unwrap();
    exceeded(a.admit(&victim, None).await);
}

/// The pace of sends from `region` with `access_key_id` (`None`: the default chain).
fn pace_of(region: &str, access_key_id: Option<&str>) -> PaceKey {
    PaceKey::of(&ses_connector::transport::Account {
        region: ses_connector::connector::Region::parse(region).unwrap(),
        credentials: access_key_id.map(|id| ses_connector::connector::StaticCredentials {
            access_key_id: id.to_owned(),
            secret_access_key: "secret".to_owned().into(),
        }),
    })
}

#[tokio::test]
async fn on_both_backends_two_accounts_paced_at_1_per_second_both_send_at_once() {
    let redis = redis_settings(&redis_url(), true);
    let accounts = [
        pace_of("us-east-1", Some("AKIAMAINACCOUNT")),
        pace_of("us-east-1", Some("AKIAOTHERACCOUNT")),
        pace_of("eu-west-1", Some("AKIAMAINACCOUNT")),
        pace_of("us-east-1", None),
    ];
    for backend in BACKENDS {
        // Redis required, so an unreachable Redis fails instead of pacing in memory;
        // two replicas on one Redis, so the turns are known to be shared.
        let replicas: [Arc<dyn SendPacer>; 2] = match backend {
            Backend::Memory => {
                let pacer = Arc::new(MemoryPacer::new());
                [pacer.clone(), pacer]
            }
            Backend::Redis => [(); 2].map(|_| -> Arc<dyn SendPacer> {
                Arc::new(RedisPacer::new(RedisState::connect(&redis).unwrap()))
            }),
        };
        for account in &accounts {
            let wait = replicas[0].reserve(account, 1.0, Duration::ZERO).await;
            assert_eq!(wait, Ok(Duration::ZERO), "{backend:?}: {account:?}");
        }
        for account in &accounts {
            let refused = replicas[1].reserve(account, 1.0, Duration::ZERO).await;
            assert!(
                matches!(refused, Err(PaceRefusal::Exceeded(_))),
                "{backend:?}: {account:?}'s second send in the second: {refused:?}"
            );
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Reply(String);

impl Weigh for Reply {
    fn weight(&self) -> usize {
        self.0.len()
    }
}

fn store(backend: Backend) -> Arc<dyn IdempotencyStore<Reply>> {
    match backend {
        Backend::Memory => Arc::new(MemoryIdempotencyStore::new(1_000_000)),
        // Required: a Redis that cannot be reached fails these tests instead of
        // passing them on the memory fallback.
        Backend::Redis => {
            let state = RedisState::connect(&redis_settings(&redis_url(), true)).unwrap();
            Arc::new(RedisIdempotencyStore::new(
                state,
                Duration::from_secs(10),
                Duration::from_secs(5),
                1_000_000,
            ))
        }
    }
}

fn work(
    calls: &Arc<AtomicUsize>,
    value: &str,
    keep: bool,
) -> ses_connector::transport::BoxFuture<'static, Completed<Reply>> {
    let calls = calls.clone();
    let value = Reply(value.to_owned());
    Box::pin(async move {
        calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        Completed { value, keep }
    })
}

#[tokio::test]
async fn both_backends_run_a_key_once_and_replay_its_answer() {
    for backend in BACKENDS {
        let store = store(backend);
        let calls = Arc::new(AtomicUsize::new(0));
        let concurrent: Vec<_> = (0..4)
            .map(|i| {
                let store = store.clone();
                let work = work(&calls, &format!("answer {i}"), true);
                tokio::spawn(async move { store.execute("k".into(), [1; 32], work).await })
            })
            .collect();
        let mut answers = Vec::new();
        for task in concurrent {
            answers.push(task.await.unwrap().unwrap());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{backend:?}");
        assert!(
            answers.iter().all(|a| a.value == answers[0].value),
            "{backend:?}"
        );
        assert_eq!(
            answers.iter().filter(|a| !a.replayed).count(),
            1,
            "{backend:?}"
        );

        let reused = store
            .execute("k".into(), [2; 32], work(&calls, "x", true))
            .await;
        assert_eq!(
            reused.unwrap_err(),
            IdempotencyError::KeyReused,
            "{backend:?}"
        );

        store
            .execute("t".into(), [1; 32], work(&calls, "throttled", false))
            .await
            .unwrap();
        let retried = store
            .execute("t".into(), [1; 32], work(&calls, "sent", true))
            .await
            .unwrap();
        assert_eq!(
            retried.value,
            Reply("sent".into()),
            "{backend:?}: transient answers are not kept"
        );
        assert!(!retried.replayed);
    }
}

#[tokio::test]
async fn two_redis_stores_on_one_redis_run_a_key_once_across_them() {
    // Two replicas' stores: the local layer of each cannot see the other's claim,
    // so only Redis makes this hold.
    let settings = redis_settings(&redis_url(), true);
    let store = || -> Arc<dyn IdempotencyStore<Reply>> {
        Arc::new(RedisIdempotencyStore::new(
            RedisState::connect(&settings).unwrap(),
            Duration::from_secs(10),
            Duration::from_secs(5),
            1_000_000,
        ))
    };
    let (a, b) = (store(), store());
    let calls = Arc::new(AtomicUsize::new(0));
    let concurrent: Vec<_> = (0..4)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let work = work(&calls, &format!("answer {i}"), true);
            tokio::spawn(async move { store.execute("k".into(), [1; 32], work).await })
        })
        .collect();
    let mut answers = Vec::new();
    for task in concurrent {
        answers.push(task.await.unwrap().unwrap());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(answers.iter().all(|a| a.value == answers[0].value));
    assert_eq!(answers.iter().filter(|a| !a.replayed).count(), 1);

    let reused = b
        .execute("k".into(), [2; 32], work(&calls, "x", true))
        .await;
    assert_eq!(reused.unwrap_err(), IdempotencyError::KeyReused);
    let later = b
        .execute("k".into(), [1; 32], work(&calls, "again", true))
        .await
        .unwrap();
    assert_eq!(
        later.value, answers[0].value,
        "kept in Redis for the other store"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn both_backends_finish_the_work_when_the_first_caller_hangs_up() {
    for backend in BACKENDS {
        let store = store(backend);
        let calls = Arc::new(AtomicUsize::new(0));
        let first = {
            let store = store.clone();
            let work = work(&calls, "first", true);
            tokio::spawn(async move { store.execute("h".into(), [1; 32], work).await })
        };
        // Hang up once the work has begun.
        let begun = tokio::time::timeout(Duration::from_secs(5), async {
            while calls.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        assert!(begun.is_ok(), "{backend:?}: the work began");
        first.abort();
        let duplicate = store
            .execute("h".into(), [1; 32], work(&calls, "second", true))
            .await
            .unwrap();
        assert_eq!(duplicate.value, Reply("first".into()), "{backend:?}");
        assert!(duplicate.replayed);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{backend:?}");
    }
}

// --- two replicas on one Redis ----------------------------------------------------

/// Two instances of the service sending to `fake`, sharing state in `redis`, with
/// the recipient limit at `recipient_limit`.
async fn replicas(
    fake: &FakeSes,
    redis: &RedisSettings,
    recipient_limit: fn(&mut ses_connector::app::settings::Settings),
) -> (TestApp, TestApp) {
    let options = || AppOptions {
        ses_endpoint: Some(fake.uri()),
        redis: Some(redis.clone()),
        tune: recipient_limit,
        ..AppOptions::default()
    };
    (spawn_app(options()).await, spawn_app(options()).await)
}

fn signin(to: &str) -> Value {
    json!({"to": to, "type": "SignIn", "payload": {"code": "123456"}})
}

#[tokio::test]
async fn two_replicas_share_the_recipient_limit_and_idempotency_keys() {
    let fake = FakeSes::start().await;
    fake.answer(
        ResponseTemplate::new(200)
            .set_body_json(json!({"MessageId": "shared"}))
            .set_delay(Duration::from_millis(200)),
    )
    .await;
    let redis = redis_settings(&redis_url(), false);
    let (a, b) = replicas(&fake, &redis, |s| {
        s.rate_limit_recipient = "10/600".parse().unwrap()
    })
    .await;

    for i in 0..10 {
        let app = if i % 2 == 0 { &a } else { &b };
        assert_eq!(
            app.send(&signin("victim@example.org")).await.status(),
            200,
            "send {i}"
        );
    }
    let error = error_of(
        b.send(&signin("victim@example.org")).await,
        429,
        "rate_limit_exceeded",
    )
    .await;
    assert_eq!(error["limit"], "recipient");
    let error = error_of(
        a.send(&signin("Victim+x@example.org")).await,
        429,
        "rate_limit_exceeded",
    )
    .await;
    assert_eq!(error["limit"], "recipient");

    let keyed = |app: &TestApp| {
        app.client
            .post(app.url("/v1/messages"))
            .bearer_auth(SEND_TOKEN)
            .header("idempotency-key", "one-key")
            .json(&signin("keyed@example.org"))
            .send()
    };
    let before = fake.requests().await.len();
    let (first, second) = tokio::join!(keyed(&a), keyed(&b));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first.status(), 200);
    assert_eq!(second.status(), 200);
    let first: Value = first.json().await.unwrap();
    let second: Value = second.json().await.unwrap();
    assert_eq!(first, second);
    assert_eq!(
        fake.requests().await.len(),
        before + 1,
        "exactly one SES call"
    );
}

/// A Redis server of this test's own, so it can be stopped and started.
struct OwnRedis {
    port: u16,
    child: std::process::Child,
}

impl OwnRedis {
    fn start(port: u16) -> Self {
        let mut child = std::process::Command::new("redis-server")
            .args([
                "--enable-debug-command",
                "yes",
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/test.sh installs it)");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Self { port, child };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server did not start on {port}");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn stop(self) -> u16 {
        self.port
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether this instance is on its memory fallback (its own link, not the
/// process-wide gauge that two instances in one test share).
fn degraded(app: &TestApp) -> bool {
    app.shared_state
        .as_ref()
        .expect("the instance shares state in Redis")
        .is_degraded()
}

/// The process's degraded gauge, as `/metrics` shows it.
async fn degraded_gauge(app: &TestApp) -> f64 {
    let text = app.get("/metrics", None).await.text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with("ses_connector_state_degraded "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0)
}

#[tokio::test]
async fn when_redis_goes_away_sends_go_on_and_when_it_is_back_limits_are_shared_again() {
    let redis = OwnRedis::start(free_port());
    let fake = FakeSes::start().await;
    fake.accepts("id").await;
    let (a, b) = replicas(&fake, &redis_settings(&redis.url(), false), |s| {
        s.rate_limit_recipient = "2/600".parse().unwrap()
    })
    .await;
    assert_eq!(a.send(&signin("one@example.org")).await.status(), 200);
    assert!(!degraded(&a));
    assert_eq!(degraded_gauge(&a).await, 0.0);

    let port = redis.stop();
    for i in 0..3 {
        let response = a.send(&signin(&format!("down{i}@example.org"))).await;
        assert_eq!(response.status(), 200, "sends go on while Redis is down");
    }
    assert!(degraded(&a));
    assert_eq!(degraded_gauge(&a).await, 1.0);

    let _redis = OwnRedis::start(port);
    // b made no call while Redis was down; it may or may not have noticed.
    let mut back = false;
    for _ in 0..100 {
        if !degraded(&a) && !degraded(&b) {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "the replicas noticed Redis is back");
    assert_eq!(degraded_gauge(&a).await, 0.0);
    assert_eq!(a.send(&signin("again@example.org")).await.status(), 200);
    assert_eq!(b.send(&signin("again@example.org")).await.status(), 200);
    let error = error_of(
        a.send(&signin("again@example.org")).await,
        429,
        "rate_limit_exceeded",
    )
    .await;
    assert_eq!(error["limit"], "recipient", "shared again");
}

#[tokio::test]
async fn a_slow_redis_is_not_waited_for_beyond_its_timeout() {
    let redis = OwnRedis::start(free_port());
    let fake = FakeSes::start().await;
    fake.accepts("id").await;
    let app = spawn_app(AppOptions {
        ses_endpoint: Some(fake.uri()),
        redis: Some(redis_settings(&redis.url(), false)),
        tune: |s| s.rate_limit_recipient = "10/600".parse().unwrap(),
        ..AppOptions::default()
    })
    .await;
    assert_eq!(app.send(&signin("u@example.org")).await.status(), 200);

    // Redis stops answering for 2 s; each call gives up after 200 ms.
    let sleeper = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "DEBUG", "SLEEP", "2"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until_redis_stalls(redis.port);
    let started = std::time::Instant::now();
    let response = app.send(&signin("slow@example.org")).await;
    let waited = started.elapsed();

    assert_eq!(response.status(), 200);
    assert!(
        waited < Duration::from_millis(1500),
        "did not wait for Redis: {waited:?}"
    );
    assert!(degraded(&app));
    let mut sleeper = sleeper;
    let _ = sleeper.wait();
}

#[tokio::test]
async fn with_redis_required_and_down_sends_are_refused_and_nothing_is_sent() {
    let nobody_listens = format!("redis://127.0.0.1:{}/", free_port());
    let fake = FakeSes::start().await;
    fake.accepts("never").await;
    let app = spawn_app(AppOptions {
        ses_endpoint: Some(fake.uri()),
        redis: Some(redis_settings(&nobody_listens, true)),
        tune: |s| s.rate_limit_recipient = "10/600".parse().unwrap(),
        ..AppOptions::default()
    })
    .await;

    let response = app.send(&signin("u@example.org")).await;

    assert!(response.headers().get("retry-after").is_some());
    error_of(response, 503, "state_unavailable").await;
    assert!(fake.requests().await.is_empty(), "no SES call");
    assert_eq!(
        app.get("/readyz", None).await.status(),
        200,
        "readiness keeps its meaning"
    );
}

#[tokio::test]
async fn two_replicas_share_one_send_rate() {
    let fake = FakeSes::start().await;
    let arrivals = fake.notes_arrivals().await;
    let redis = redis_settings(&redis_url(), false);
    let (a, b) = replicas(&fake, &redis, |s| s.max_send_rate = Some(10.0)).await;

    let bodies: Vec<Value> = (0..60)
        .map(|i| signin(&format!("u{i}@example.org")))
        .collect();
    let sends = bodies.iter().enumerate().map(|(i, body)| {
        if i % 2 == 0 {
            a.send(body)
        } else {
            b.send(body)
        }
    });
    let responses = futures_util::future::join_all(sends).await;

    let sent = responses.iter().filter(|r| r.status() == 200).count();
    assert!(
        responses
            .iter()
            .all(|r| r.status() == 200 || r.status() == 429),
        "every caller is answered 200 or 429"
    );
    let times = arrivals.lock().unwrap().clone();
    assert_eq!(times.len(), sent);
    assert!(
        (15..=25).contains(&sent),
        "about 2 s of turns at 10/s in all: {sent}"
    );
    assert_at_most_per_second(&times, 11);
}

#[tokio::test]
async fn paced_refusals_on_either_replica_do_not_use_up_the_shared_recipient_limit() {
    let fake = FakeSes::start().await;
    let arrivals = fake.notes_arrivals().await;
    // Required: a Redis that cannot answer fails the sends instead of passing the
    // test on each replica's memory.
    let redis = redis_settings(&redis_url(), true);
    let (a, b) = replicas(&fake, &redis, |s| {
        s.rate_limit_recipient = "2/600".parse().unwrap();
        // One turn every 2 s for the two, and no waiting for one.
        s.max_send_rate = Some(0.5);
        s.pacing_max_wait = Duration::ZERO;
    })
    .await;
    let victim = signin("victim@example.org");
    assert_eq!(a.send(&victim).await.status(), 200);

    for replica in [&a, &b, &a] {
        let error = error_of(replica.send(&victim).await, 429, "rate_limit_exceeded").await;
        assert_eq!(error["limit"], "ses_send_rate", "{error}");
    }

    // The second send goes once the pace allows it (bounded), on either replica…
    let mut sent = false;
    for replica in [&b, &a].into_iter().cycle().take(100) {
        let response = replica.send(&victim).await;
        if response.status() == 200 {
            sent = true;
            break;
        }
        let error = error_of(response, 429, "rate_limit_exceeded").await;
        assert_eq!(error["limit"], "ses_send_rate", "{error}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sent, "no turn was given in 10 s");
    // …and the shared limit holds for the sends that reached SES.
    let error = error_of(a.send(&victim).await, 429, "rate_limit_exceeded").await;
    assert_eq!(error["limit"], "recipient", "{error}");
    assert_eq!(arrivals.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn replicas_share_what_became_of_a_send_and_who_is_suppressed() {
    let redis = redis_settings(&redis_url(), false);
    let options = || AppOptions {
        config: None,
        redis: Some(redis.clone()),
        ..AppOptions::default()
    };
    // Two dev-mode instances (the outbox's mailbox simulator reports at once).
    let (a, b) = (spawn_app(options()).await, spawn_app(options()).await);

    let sent = a.send(&signin("bounce@simulator.amazonses.com")).await;
    assert_eq!(sent.status(), 200);
    let id = sent.json::<Value>().await.unwrap()["messageId"]
        .as_str()
        .unwrap()
        .to_owned();

    let record: Value = b
        .get(&format!("/v1/messages/{id}"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(record["status"], "bounced", "{record}");
    let refused = b.send(&signin("bounce@simulator.amazonses.com")).await;
    error_of(refused, 422, "recipient_suppressed").await;
    let lifted = a
        .client
        .delete(a.url("/v1/suppressions/bounce@simulator.amazonses.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(lifted.status(), 200);
    assert_eq!(
        b.send(&signin("bounce@simulator.amazonses.com"))
            .await
            .status(),
        200
    );
}

/// Wait until Redis on `port` no longer answers a PING within 50 ms (a `DEBUG
/// SLEEP` has begun), at most 5 s.
fn wait_until_redis_stalls(port: u16) {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        stream.write_all(b"PING\r\n").unwrap();
        let mut reply = [0u8; 16];
        if stream.read(&mut reply).is_err() {
            return;
        }
    }
    panic!("Redis on {port} kept answering; DEBUG SLEEP did not begin");
}

/// Wait (at most 5 s) until the fake SES has received `count` sends.
async fn wait_for_ses_calls(fake: &FakeSes, count: usize) {
    let waited = tokio::time::timeout(Duration::from_secs(5), async {
        while fake.requests().await.len() < count {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "SES did not receive {count} send(s)");
}

fn keyed_send(app: &TestApp, key: &str, to: &str) -> reqwest::RequestBuilder {
    app.client
        .post(app.url("/v1/messages"))
        .bearer_auth(SEND_TOKEN)
        .header("idempotency-key", key)
        .json(&signin(to))
}

async fn slow_fake_ses() -> FakeSes {
    let fake = FakeSes::start().await;
    fake.answer(
        ResponseTemplate::new(200)
            .set_body_json(json!({"MessageId": "only-once"}))
            .set_delay(Duration::from_millis(800)),
    )
    .await;
    fake
}

#[tokio::test]
async fn a_replica_sends_once_per_key_while_redis_stalls_mid_send() {
    let redis = OwnRedis::start(free_port());
    let fake = slow_fake_ses().await;
    let app = spawn_app(AppOptions {
        ses_endpoint: Some(fake.uri()),
        redis: Some(redis_settings(&redis.url(), false)),
        ..AppOptions::default()
    })
    .await;

    let first = tokio::spawn(keyed_send(&app, "stall-key", "stall@example.org").send());
    wait_for_ses_calls(&fake, 1).await;
    let sleeper = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "DEBUG", "SLEEP", "0.5"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until_redis_stalls(redis.port);
    let duplicate = keyed_send(&app, "stall-key", "stall@example.org")
        .send()
        .await
        .unwrap();

    assert_eq!(duplicate.status(), 200);
    assert_eq!(
        duplicate.headers().get("idempotent-replayed").unwrap(),
        "true"
    );
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), 200);
    let (first, duplicate): (Value, Value) =
        (first.json().await.unwrap(), duplicate.json().await.unwrap());
    assert_eq!(first, duplicate);
    assert_eq!(fake.requests().await.len(), 1, "one SES call for one key");
    let mut sleeper = sleeper;
    let _ = sleeper.wait();
}

#[tokio::test]
async fn a_replica_sends_once_per_key_when_redis_restarts_mid_send() {
    let redis = OwnRedis::start(free_port());
    let fake = slow_fake_ses().await;
    let app = spawn_app(AppOptions {
        ses_endpoint: Some(fake.uri()),
        redis: Some(redis_settings(&redis.url(), false)),
        ..AppOptions::default()
    })
    .await;

    let first = tokio::spawn(keyed_send(&app, "restart-key", "restart@example.org").send());
    wait_for_ses_calls(&fake, 1).await;
    // A Redis without persistence comes back empty: the claim is gone from it.
    let _redis = OwnRedis::start(redis.stop());
    let duplicates: Vec<_> = (0..2)
        .map(|_| tokio::spawn(keyed_send(&app, "restart-key", "restart@example.org").send()))
        .collect();

    let first: Value = first.await.unwrap().unwrap().json().await.unwrap();
    for duplicate in duplicates {
        let duplicate = duplicate.await.unwrap().unwrap();
        assert_eq!(duplicate.status(), 200);
        assert_eq!(duplicate.json::<Value>().await.unwrap(), first);
    }
    assert_eq!(fake.requests().await.len(), 1, "one SES call for one key");
}

#[tokio::test]
async fn a_broken_redis_connection_is_replaced_without_falling_back() {
    let redis = OwnRedis::start(free_port());
    let fake = FakeSes::start().await;
    fake.accepts("id").await;
    let app = spawn_app(AppOptions {
        ses_endpoint: Some(fake.uri()),
        redis: Some(redis_settings(&redis.url(), false)),
        tune: |s| s.rate_limit_recipient = "10/600".parse().unwrap(),
        ..AppOptions::default()
    })
    .await;
    assert_eq!(app.send(&signin("u@example.org")).await.status(), 200);

    // As a Redis failover or an idle-connection reaper would: the link breaks.
    let killed = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &redis.port.to_string(),
            "CLIENT",
            "KILL",
            "TYPE",
            "normal",
        ])
        .output()
        .unwrap();
    assert!(killed.status.success());
    assert_eq!(app.send(&signin("u@example.org")).await.status(), 200);

    assert!(
        !degraded(&app),
        "the call was tried again on a fresh connection"
    );
}
