//! Logging setup: `tracing` to stderr, as text or JSON lines.

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Install the global subscriber; `filter` is a level or `target=level` directives
/// (`warn`, `info,ses_connector=debug`); anything else means `info`.
pub fn init(format: LogFormat, filter: &str) {
    let filter = filter
        .parse::<Targets>()
        .unwrap_or_else(|_| Targets::new().with_default(LevelFilter::INFO));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Text => registry.with(layer).try_init(),
        LogFormat::Json => registry
            .with(
                layer
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
    };
    // Tests may install a subscriber more than once; the first one stays.
    drop(result);
}

/// Metric names: one place, so code, README and dashboards agree.
pub mod names {
    /// Sends by `usage_type` and `outcome` (`sent`, `rejected`, `throttled`, …).
    pub const SENDS: &str = "ses_connector_sends_total";
    /// SES call latency in seconds, by `outcome`.
    pub const SES_DURATION: &str = "ses_connector_ses_request_duration_seconds";
    /// Sends in flight to SES now.
    pub const IN_FLIGHT: &str = "ses_connector_sends_in_flight";
    /// HTTP requests by `route`, `method` and `status`.
    pub const HTTP_REQUESTS: &str = "ses_connector_http_requests_total";
    /// HTTP request latency in seconds, by `route`.
    pub const HTTP_DURATION: &str = "ses_connector_http_request_duration_seconds";
    /// Requests refused by a rate limit, by `limit` (`recipient`, `ip`, `ses`).
    pub const RATE_LIMITED: &str = "ses_connector_rate_limited_total";
    /// Config reloads by `outcome` (`ok`, `invalid`, `unreadable`) and `trigger`.
    pub const RELOADS: &str = "ses_connector_config_reloads_total";
    /// Requests answered from the idempotency store.
    pub const IDEMPOTENT_REPLAYS: &str = "ses_connector_idempotent_replays_total";
    /// Sends refused because too many were in flight.
    pub const OVERLOADED: &str = "ses_connector_overloaded_total";
    /// 1 while shared state (Redis) is unreachable and this replica falls back to
    /// its own memory (or refuses, when Redis is required); 0 otherwise.
    pub const STATE_DEGRADED: &str = "ses_connector_state_degraded";
    /// Failed or timed-out Redis calls, by `operation`.
    pub const STATE_ERRORS: &str = "ses_connector_state_errors_total";
    pub const STATE_RETRIES: &str = "ses_connector_state_retries_total";
    pub const DELIVERY_BACKLOG_DROPPED: &str = "ses_connector_delivery_backlog_dropped_total";
    /// Time sends waited for their turn under the SES send rate, seconds.
    pub const PACING_WAIT: &str = "ses_connector_pacing_wait_seconds";
    /// The SES account's maximum send rate, per second (from GetAccount).
    pub const SES_MAX_SEND_RATE: &str = "ses_connector_ses_max_send_rate";
    /// The SES account's 24-hour sending quota.
    pub const SES_MAX_24_HOUR_SEND: &str = "ses_connector_ses_max_24_hour_send";
    /// Emails the SES account sent in the last 24 hours.
    pub const SES_SENT_LAST_24_HOURS: &str = "ses_connector_ses_sent_last_24_hours";
    /// Sends to suppressed recipients, by `policy` (`enforce`: refused, `report`: sent).
    pub const SUPPRESSED: &str = "ses_connector_suppressed_total";
    /// Lookups of SES's suppression list that failed or timed out (the send went on).
    pub const SUPPRESSION_LOOKUP_ERRORS: &str = "ses_connector_suppression_lookup_errors_total";
    /// Permanent bounces per send over the last 24 hours (SES reviews at 5 %).
    pub const BOUNCE_RATE: &str = "ses_connector_bounce_rate";
    /// Complaints per send over the last 24 hours (SES reviews at 0.1 %).
    pub const COMPLAINT_RATE: &str = "ses_connector_complaint_rate";
    /// SES events read from the feedback queue, by `event` and `usage_type`.
    pub const FEEDBACK_EVENTS: &str = "ses_connector_feedback_events_total";
    /// Feedback queue messages that were not tied to a send, by `outcome`
    /// (`unknown_message`, `other_recipients`, `malformed`, `ignored`, and
    /// `not_recorded`: left on the queue to be read again).
    pub const FEEDBACK_UNUSED: &str = "ses_connector_feedback_unused_total";
    /// Recipients named in feedback that their send was not made to, left alone.
    pub const FEEDBACK_IGNORED_RECIPIENTS: &str = "ses_connector_feedback_ignored_recipients_total";
    /// 1 when SES sending is enabled for the account, 0 when paused.
    pub const SES_SENDING_ENABLED: &str = "ses_connector_ses_sending_enabled";
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> metrics_exporter_prometheus::PrometheusHandle {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            const SECONDS: &[f64] = &[
                0.0, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may exist (tests); the handle still renders ours.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use names::*;
    metrics::describe_counter!(
        SENDS,
        "Emails handed to the transport, by usage type and outcome"
    );
    metrics::describe_histogram!(
        SES_DURATION,
        metrics::Unit::Seconds,
        "SES SendEmail latency, retries included"
    );
    metrics::describe_gauge!(IN_FLIGHT, "Sends in flight to the transport");
    metrics::describe_counter!(HTTP_REQUESTS, "HTTP requests by route, method and status");
    metrics::describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "HTTP request latency by route"
    );
    metrics::describe_counter!(RATE_LIMITED, "Requests refused by a rate limit");
    metrics::describe_counter!(RELOADS, "Config reloads by outcome");
    metrics::describe_counter!(
        IDEMPOTENT_REPLAYS,
        "Requests answered from the idempotency store"
    );
    metrics::describe_counter!(OVERLOADED, "Sends refused because too many were in flight");
    metrics::describe_gauge!(
        STATE_DEGRADED,
        "1 while Redis is unreachable and state falls back to this replica"
    );
    metrics::describe_counter!(STATE_ERRORS, "Failed or timed-out Redis calls");
    metrics::describe_counter!(
        DELIVERY_BACKLOG_DROPPED,
        "Sends made while Redis was unreachable whose record was not written there (backlog full)"
    );
    metrics::describe_counter!(
        STATE_RETRIES,
        "Redis calls tried again on a fresh connection after the first broke"
    );
    metrics::describe_histogram!(
        PACING_WAIT,
        metrics::Unit::Seconds,
        "Time sends waited for their turn under the SES send rate"
    );
    metrics::describe_gauge!(
        SES_MAX_SEND_RATE,
        "The SES account's maximum send rate per second"
    );
    metrics::describe_gauge!(
        SES_MAX_24_HOUR_SEND,
        "The SES account's 24-hour sending quota"
    );
    metrics::describe_gauge!(
        SES_SENT_LAST_24_HOURS,
        "Emails the SES account sent in the last 24 hours"
    );
    metrics::describe_gauge!(
        SES_SENDING_ENABLED,
        "1 when SES sending is enabled for the account"
    );
}
