//! Bytes Redis holds per send: runs sends through the router with state in Redis
//! (both rate limits on, half of the sends with an `Idempotency-Key`, a transport
//! that gives each send a message id of its own as SES does), then asks
//! Redis for the `MEMORY USAGE` of every key the service wrote, by kind, and for its
//! `used_memory` before and after. The numbers behind the README's "Sizing Redis".
//!
//!   REDIS_URL=redis://127.0.0.1:6379/ cargo bench --bench redis_memory
//!
//! Without `REDIS_URL` it starts Debian's `redis-server` on a free loopback port.

mod support;

use std::collections::BTreeMap;

use serde_json::json;
use std::sync::{Arc, Mutex};

use ses_connector::feedback::{DeliveryLog, Event, MemoryDeliveryLog, Notification, Status};
use ses_connector::stores::redis_link::RedisSettings;
use ses_connector::stores::{deliveries::RedisDeliveryLog, redis_link::RedisState};
use ses_connector::transport::{BoxFuture, Mailer, OutgoingEmail, SendError};
use tower::ServiceExt;

const SENDS: usize = 2_000;
const SECRET: &str = "redis-memory-bench-secret-0123456789";
/// Distinct client IPs the sends come from.
const IPS: usize = 50;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (url, mut server) = match std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()) {
        Some(url) => (url, None),
        None => {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server runs (apt-get install redis-server)");
            (format!("redis://127.0.0.1:{port}/"), Some(child))
        }
    };
    runtime.block_on(measure(&url));
    if let Some(server) = server.as_mut() {
        let _ = server.kill();
        let _ = server.wait();
    }
}

async fn measure(url: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut redis = connect(&client).await;
    let prefix = format!("sizing-{}:", uuid::Uuid::new_v4().simple());
    let before = used_memory(&mut redis).await;
    let mailer = Arc::new(Numbered::default());
    let app = support::application_for(
        mailer.clone(),
        &[
            "--redis-url",
            url,
            "--redis-prefix",
            &prefix,
            "--state-secret",
            SECRET,
            "--rate-limit-recipient",
            "10/600",
            "--rate-limit-ip",
            "100/600",
        ],
    )
    .await;
    let router = app.router();
    for i in 0..SENDS {
        let body = json!({
            "to": format!("user{i}@example.com"),
            "type": "SignIn",
            "payload": support::payload(),
            "ip": format!("203.0.113.{}", i % IPS),
        })
        .to_string();
        let mut request = support::send_request(&body);
        if i % 2 == 0 {
            request
                .headers_mut()
                .insert("idempotency-key", format!("key-{i}").parse().unwrap());
        }
        let response = router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200, "send {i}");
    }
    // Replays add nothing: one of them shows it.
    let mut replay = support::send_request(
        &json!({"to": "user0@example.com", "type": "SignIn", "payload": support::payload(), "ip": "203.0.113.0"})
            .to_string(),
    );
    replay
        .headers_mut()
        .insert("idempotency-key", "key-0".parse().unwrap());
    let response = router.clone().oneshot(replay).await.unwrap();
    assert_eq!(response.headers()["idempotent-replayed"], "true");
    let sent = mailer.0.lock().unwrap().clone();
    feedback(url, &prefix, SECRET, &sent).await;

    let mut kinds: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut redis)
        .await
        .unwrap();
    for key in &keys {
        let usage: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut redis)
            .await
            .unwrap();
        let ttl: i64 = redis::cmd("TTL")
            .arg(key)
            .query_async(&mut redis)
            .await
            .unwrap();
        let rest = &key[prefix.len()..];
        let kind = match rest.rsplit_once(':') {
            Some((kind, _)) => kind.to_owned(),
            None => rest.to_owned(),
        };
        let entry = kinds.entry(kind).or_default();
        entry.0 += 1;
        entry.1 += usage.unwrap_or(0);
        entry.2 = entry.2.max(ttl.max(0) as u64);
    }
    let after = used_memory(&mut redis).await;
    println!(
        "{SENDS} sends ({} with an Idempotency-Key), {IPS} client IPs, limits 10/600 and 100/600",
        SENDS / 2
    );
    println!(
        "{:<18} {:>7} {:>12} {:>10} {:>11}",
        "key", "keys", "bytes/key", "per send", "longest TTL"
    );
    let mut total = 0;
    for (kind, (count, bytes, ttl)) in &kinds {
        total += bytes;
        println!(
            "{kind:<18} {count:>7} {:>12} {:>10} {:>10}s",
            bytes / count.max(&1),
            bytes / SENDS as u64,
            ttl
        );
    }
    println!(
        "MEMORY USAGE in all: {total} B, {} B per send",
        total / SENDS as u64
    );
    println!(
        "used_memory grew by {} B, {} B per send",
        after.saturating_sub(before),
        after.saturating_sub(before) / SENDS as u64
    );
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut redis)
        .await
        .unwrap_or(());
}

/// Accepts every email at once with a message id of its own, as SES does, so every
/// send leaves its own delivery record; keeps (id, recipient) for the feedback.
#[derive(Default)]
struct Numbered(Mutex<Vec<(String, String)>>);

impl Mailer for Numbered {
    fn send(&self, email: OutgoingEmail) -> BoxFuture<'_, Result<String, SendError>> {
        // The shape of an SES message id.
        let id = format!(
            "010001{:010x}-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}-000000",
            fastrand::u64(..) & 0xff_ffff_ffff,
            fastrand::u32(..),
            fastrand::u16(..),
            fastrand::u16(..),
            fastrand::u16(..),
            fastrand::u64(..) & 0xffff_ffff_ffff
        );
        let mut sent = self.0.lock().unwrap();
        sent.push((id.clone(), email.to.as_str().to_owned()));
        Box::pin(async move { Ok(id) })
    }
}

/// SES's feedback for every send: a delivery, and for one in ten a permanent bounce
/// (which suppresses its recipient for a year), through a delivery log on the
/// same keys as the service's.
async fn feedback(url: &str, prefix: &str, secret: &str, sent: &[(String, String)]) {
    let settings = RedisSettings {
        url: url.to_owned().into(),
        secret: secret.to_owned().into(),
        prefix: prefix.to_owned(),
        required: true,
        timeout: std::time::Duration::from_secs(2),
    };
    let log = RedisDeliveryLog::new(
        RedisState::connect(&settings).unwrap(),
        MemoryDeliveryLog::new(1 << 20),
    );
    for (i, (id, to)) in sent.iter().enumerate() {
        let bounced = i % 10 == 0;
        let event = Event {
            kind: if bounced { Status::Bounced } else { Status::Delivered },
            at: "2026-12-02T12:00:00.000Z".to_owned(),
            bounce_type: bounced.then(|| "Permanent".to_owned()),
            bounce_sub_type: bounced.then(|| "General".to_owned()),
            diagnostic_code: bounced
                .then(|| "smtp; 550 5.1.1 <u***@example.com>: Recipient address rejected: User unknown in virtual mailbox table".to_owned()),
            feedback_type: None,
            reason: None,
        };
        let notification = Notification {
            message_id: id.clone(),
            recipients: vec![to.clone()],
            event,
        };
        log.record(notification).await;
    }
}

async fn connect(client: &redis::Client) -> redis::aio::MultiplexedConnection {
    for _ in 0..200 {
        if let Ok(connection) = client.get_multiplexed_async_connection().await {
            return connection;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("Redis did not answer");
}

async fn used_memory(redis: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(redis)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
