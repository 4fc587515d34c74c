//! Builds the application from settings, binds, serves, and shuts down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::app::reload::{ConfigLoader, ReloadError, Trigger};
use crate::app::settings::{Settings, Transport};
use crate::feedback::{DeliveryLog, MemoryDeliveryLog};
use crate::http::connections::{self, LimitedListener};
use crate::http::extract::Auth;
use crate::http::{router, AppState, MetricsOn, Stored};
use crate::send::gate::SendGate;
use crate::send::EmailService;
use crate::send::Pacing;
use crate::stores::idempotency::{IdempotencyStore, MemoryIdempotencyStore};
use crate::stores::limits::{MemoryLimits, SendLimiter};
use crate::stores::pacing::{MemoryPacer, SendPacer, SendRate};
use crate::stores::{
    deliveries::RedisDeliveryLog, idempotency::RedisIdempotencyStore, limits::RedisLimits,
    pacing::RedisPacer, redis_link::RedisState,
};
use crate::telemetry::{self, names};
use crate::transport::outbox::Outbox;
use crate::transport::ses::SesMailer;
use crate::transport::Mailer;

/// Bytes of idempotency keys and answers kept at most (a send's answer is about
/// 150 bytes; a test email's report with warnings can be much larger).
const IDEMPOTENCY_MAX_BYTES: u64 = 32 * 1024 * 1024;

/// Open connections at most on the health listener.
const HEALTH_MAX_CONNECTIONS: usize = 64;
/// Probes send one request at once; an idle probe connection gives its slot back soon.
const HEALTH_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Stops a task when dropped: the health listener ends with the main one.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A built, bound application, ready to serve.
pub struct Application {
    listener: TcpListener,
    health_listener: Option<TcpListener>,
    state: AppState,
    settings: Settings,
    /// The SQS client and queue URL of the feedback queue, when one is set.
    feedback: Option<(aws_sdk_sqs::Client, String)>,
    /// The link to Redis, when state is shared.
    redis: Option<Arc<RedisState>>,
}

impl Application {
    /// Load and validate the config, build the transport, bind the port (0 works).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, None).await
    }

    /// As [`Self::build`], with `mailer` in place of the configured transport
    /// (benchmarks use a no-op one).
    pub async fn build_with(
        settings: Settings,
        mailer: Option<Arc<dyn Mailer>>,
    ) -> anyhow::Result<Self> {
        telemetry::metrics_handle();
        let loader = Arc::new(ConfigLoader::new(&settings));
        let config = loader.load().await.map_err(|e| match e {
            ReloadError::Unreadable(message) => anyhow::anyhow!("{message}"),
            ReloadError::Invalid(report) => {
                let lines: Vec<String> = report
                    .errors
                    .iter()
                    .map(|e| {
                        format!(
                            "  {}: {}",
                            if e.path.is_empty() {
                                "(config)"
                            } else {
                                &e.path
                            },
                            e.message
                        )
                    })
                    .collect();
                anyhow::anyhow!("the connector config is invalid:\n{}", lines.join("\n"))
            }
        })?;
        for warning in &config.warnings {
            tracing::warn!(path = %warning.path, "config warning: {}", warning.message);
        }
        let mut ses_mailer = None;
        let (mailer, outbox): (Arc<dyn Mailer>, _) = match (mailer, settings.transport) {
            (Some(mailer), _) => (mailer, None),
            (None, Transport::Outbox) => {
                let outbox = Arc::new(Outbox::new());
                (outbox.clone(), Some(outbox))
            }
            (None, Transport::Ses) => {
                let ses = Arc::new(SesMailer::new(&settings.ses).await);
                ses_mailer = Some(ses.clone());
                (ses, None)
            }
        };
        // The feedback queue is read with the config's account, as SES is.
        let feedback = match (&settings.feedback_queue_url, &ses_mailer) {
            (Some(url), Some(ses)) => Some((
                ses.sqs_client(&crate::transport::Account {
                    region: config.region.clone(),
                    credentials: config.credentials.clone(),
                }),
                url.clone(),
            )),
            (Some(_), None) => {
                tracing::warn!("SES_CONNECTOR_FEEDBACK_QUEUE_URL is ignored: this transport does not send through SES");
                None
            }
            _ => None,
        };
        let gate = SendGate::new(
            settings.max_concurrent_sends,
            settings.max_queued_sends,
            settings.queue_timeout,
        );
        let redis = settings
            .redis
            .as_ref()
            .map(RedisState::connect)
            .transpose()?;
        let limits: Arc<dyn SendLimiter> = match &redis {
            Some(redis) => Arc::new(RedisLimits::new(
                redis.clone(),
                settings.rate_limit_recipient,
                settings.rate_limit_ip,
            )),
            None => Arc::new(MemoryLimits::new(
                settings.rate_limit_recipient,
                settings.rate_limit_ip,
            )),
        };
        let pacer: Arc<dyn SendPacer> = match &redis {
            Some(redis) => Arc::new(RedisPacer::new(redis.clone())),
            None => Arc::new(MemoryPacer::new()),
        };
        let pacing = Pacing {
            pacer,
            rate: Arc::new(SendRate::new(settings.max_send_rate)),
            max_wait: settings.pacing_max_wait,
        };
        let reads_quota = outbox.is_none();
        let memory_log = MemoryDeliveryLog::new(crate::send::DELIVERY_LOG_CAPACITY);
        let deliveries: Arc<dyn DeliveryLog> = match &redis {
            Some(redis) => Arc::new(RedisDeliveryLog::new(redis.clone(), memory_log)),
            None => Arc::new(memory_log),
        };
        let mut service = EmailService::new(config, mailer, gate, limits, pacing)
            .with_deliveries(deliveries, settings.suppression);
        if settings.ses_suppression_check {
            service = service.with_ses_suppression_check();
        }
        let service = Arc::new(service);
        if reads_quota {
            tokio::spawn(read_quota(
                Arc::downgrade(&service),
                settings.quota_interval,
            ));
        }
        let idempotency: Arc<dyn IdempotencyStore<Stored>> = match &redis {
            // A claim outlives the longest request, so only a dead replica's lapses;
            // a duplicate waits as long as a send may take, within its own request.
            Some(redis) => Arc::new(RedisIdempotencyStore::new(
                redis.clone(),
                // The work also waits on Redis (suppression, limits, pace, record),
                // each call within its own bound, outside the request timeout.
                settings.request_timeout()
                    + std::time::Duration::from_secs(5)
                    + 4 * settings
                        .redis
                        .as_ref()
                        .map_or(std::time::Duration::ZERO, |r| r.timeout),
                settings.ses.operation_timeout + settings.queue_timeout + settings.pacing_max_wait,
                IDEMPOTENCY_MAX_BYTES,
            )),
            None => Arc::new(MemoryIdempotencyStore::new(IDEMPOTENCY_MAX_BYTES)),
        };
        let state = AppState {
            service,
            auth: Auth::new(&settings.tokens.send, &settings.tokens.admin, settings.dev),
            outbox,
            dev: settings.dev,
            draining: Arc::new(AtomicBool::new(false)),
            loader,
            idempotency,
        };
        let listener = TcpListener::bind(settings.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.listen))?;
        let health_listener = match settings.health_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
                anyhow::anyhow!("cannot listen on {addr} (SES_CONNECTOR_HEALTH_LISTEN): {e}")
            })?),
            None => None,
        };
        Ok(Self {
            listener,
            health_listener,
            state,
            settings,
            feedback,
            redis,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The router with this application's state, for driving it without a socket.
    pub fn router(&self) -> axum::Router {
        router(
            self.state.clone(),
            self.settings.request_timeout(),
            self.metrics_on(),
        )
    }

    /// `/metrics` moves to the health listener when there is one.
    fn metrics_on(&self) -> MetricsOn {
        if self.settings.health_listen.is_some() {
            MetricsOn::HealthListener
        } else {
            MetricsOn::MainPort
        }
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// The link to Redis, when state is shared: whether this instance is on its
    /// memory fallback now (the degraded gauge says the same for the process).
    pub fn shared_state(&self) -> Option<Arc<RedisState>> {
        self.redis.clone()
    }

    /// The health listener's address, when there is one.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Serve until SIGTERM or SIGINT, then drain.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serve until `stop` completes; then refuse new connections, let in-flight
    /// requests finish within the grace period, and return.
    pub async fn run_until(
        mut self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let addr = self.local_addr();
        spawn_reload_on_sighup(self.state.clone());
        // Probes get a listener and a connection cap of their own, so callers that
        // fill the main cap (idle keep-alive, slow senders) cannot starve them.
        let health = self.health_listener.take().map(|listener| {
            tracing::info!(addr = ?listener.local_addr().ok(), "serving /healthz, /readyz and /metrics");
            let listener = LimitedListener::new(
                listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                }),
                HEALTH_MAX_CONNECTIONS,
            );
            tokio::spawn(connections::serve(
                listener,
                crate::http::health_router(self.state.clone()),
                HEALTH_IDLE_TIMEOUT,
                std::future::pending(),
            ))
        });
        let _health = health.map(AbortOnDrop);
        // The poller stops with the service; a message read but not yet deleted comes
        // back after its visibility timeout, and recording it again changes nothing.
        let _feedback = self.feedback.take().map(|(client, url)| {
            AbortOnDrop(tokio::spawn(crate::sqs::poll(
                client,
                url,
                self.state.service.deliveries().clone(),
            )))
        });
        self.announce(addr);
        let draining = self.state.draining.clone();
        let grace = self.settings.shutdown_grace;
        let delay = self.settings.shutdown_delay;
        let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
        let metrics_on = self.metrics_on();
        let app = router(self.state, self.settings.request_timeout(), metrics_on);
        // Small request/response exchanges: send each answer at once (no Nagle delay).
        let listener = LimitedListener::new(
            self.listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            }),
            self.settings.max_connections,
        );
        let idle_timeout = self.settings.idle_timeout;
        let server = connections::serve(listener, app, idle_timeout, async move {
            stop.await;
            draining.store(true, Ordering::SeqCst);
            if !delay.is_zero() {
                tracing::info!(
                    delay_seconds = delay.as_secs(),
                    "shutting down: /readyz answers 503; still serving"
                );
                tokio::time::sleep(delay).await;
            }
            tracing::info!(
                grace_seconds = grace.as_secs(),
                "shutting down: no new connections; finishing requests in flight"
            );
            let _ = stopped_tx.send(());
        });
        let server = tokio::spawn(server);
        tokio::pin!(server);
        tokio::select! {
            _ = &mut server => return Ok(()),
            _ = stopped_rx => {}
        }
        match tokio::time::timeout(grace, &mut server).await {
            Ok(_) => Ok(()),
            Err(_) => {
                tracing::warn!("grace period over; exiting with requests still in flight");
                Ok(())
            }
        }
    }

    fn announce(&self, addr: SocketAddr) {
        if self.settings.dev {
            let banner = format!(
                "ses-connector dev mode: http://{addr}\n  built-in config and templates, no tokens, emails are NOT sent\n  outbox: http://{addr}/outbox  (JSON: http://{addr}/v1/outbox)\n  try:    curl -X POST http://{addr}/v1/messages -H 'content-type: application/json' -d '{{\"to\":\"me@example.com\",\"type\":\"SignIn\",\"payload\":{{\"code\":\"123456\"}}}}'"
            );
            eprintln!("{banner}");
        }
        tracing::info!(%addr, dev = self.settings.dev, transport = ?self.settings.transport, "listening");
    }
}

/// Read the SES account's quota at start and every `interval` (failures are logged,
/// never fatal): gauges in `/metrics`, a warning at 80 % of the 24-hour quota, and
/// the max send rate that paces sends.
async fn read_quota(service: std::sync::Weak<EmailService>, interval: std::time::Duration) {
    let mut warned = false;
    loop {
        let Some(service) = service.upgrade() else {
            return;
        };
        let config = service.config();
        let account = crate::transport::Account {
            region: config.region.clone(),
            credentials: config.credentials.clone(),
        };
        match service.mailer().account_facts(&account).await {
            Ok(Some(facts)) => {
                metrics::gauge!(names::SES_MAX_SEND_RATE).set(facts.max_send_rate);
                metrics::gauge!(names::SES_MAX_24_HOUR_SEND).set(facts.max_24_hour_send);
                metrics::gauge!(names::SES_SENT_LAST_24_HOURS).set(facts.sent_last_24_hours);
                metrics::gauge!(names::SES_SENDING_ENABLED).set(if facts.sending_enabled {
                    1.0
                } else {
                    0.0
                });
                service.send_rate().learn(facts.max_send_rate);
                let used = facts.sent_last_24_hours / facts.max_24_hour_send.max(1.0);
                if used >= 0.8 && !warned {
                    tracing::warn!(
                        sent = facts.sent_last_24_hours,
                        quota = facts.max_24_hour_send,
                        "{:.0} % of the SES 24-hour sending quota is used",
                        used * 100.0
                    );
                }
                warned = used >= 0.8;
            }
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "could not read the SES account's quota (GetAccount); will try again")
            }
        }
        drop(service);
        tokio::time::sleep(interval).await;
    }
}

#[cfg(unix)]
fn spawn_reload_on_sighup(state: AppState) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        return;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            // Logged and counted by the loader; a failure keeps the old config.
            let _ = state.loader.reload(&state.service, Trigger::Sighup).await;
        }
    });
}

#[cfg(not(unix))]
fn spawn_reload_on_sighup(_state: AppState) {}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
