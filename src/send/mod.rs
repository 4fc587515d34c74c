//! The use cases: choose a template, render it, hand it to the mailer. No HTTP, no AWS.

pub mod gate;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde_json::{Map, Value};

use crate::address::{mask_addresses, Mailbox, Recipient};
use crate::connector::{ConnectorConfig, UsageType};
use crate::connector::{Issue, IssueCode};
use crate::feedback::{DeliveryLog, MemoryDeliveryLog, MessageRecord, Suppression};
use crate::stores::limits::{Admission, LimitExceeded, Refusal, SendLimiter};
use crate::stores::pacing::{MemoryPacer, PaceExceeded, PaceKey, PaceRefusal, SendPacer, SendRate};
use crate::telemetry::names;
use crate::template::{RenderError, RenderedEmail, TemplateChoice};
use crate::transport::{Account, Mailer, OutgoingEmail, SendError};
use gate::{Overloaded, SendGate};

/// One verification email to send, as parsed from a request.
#[derive(Debug, Clone)]
pub struct SendRequest {
    pub to: Recipient,
    pub usage_type: UsageType,
    pub payload: Map<String, Value>,
    pub ip: Option<std::net::IpAddr>,
    /// The send token it is made for (the auth layer's digest of it), kept in the
    /// delivery record so that only that token (or an admin) reads its status;
    /// `None` for sends no send token made (test emails, the command line).
    pub sender: Option<[u8; 32]>,
}

/// A sent email: the transport's id, the template used, and what the caller should
/// know (a suppressed recipient sent to anyway under the `report` policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub message_id: String,
    pub template: TemplateChoice,
    pub warnings: Vec<Issue>,
}

/// What to do with a recipient whose last event was a permanent bounce or a complaint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SuppressionPolicy {
    /// Refuse the send (422 recipient_suppressed).
    Enforce,
    /// Send anyway and say so in the answer's warnings.
    Report,
    /// Do not look.
    Off,
}

/// Exactly what would be sent, without sending.
#[derive(Debug, Clone)]
pub struct Preview {
    pub email: RenderedEmail,
    pub from: Option<Mailbox>,
    pub reply_to: Option<Mailbox>,
    pub template: TemplateChoice,
}

/// Why a send or preview failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("no template for usage type {usage_type} (locale {locale:?}) and no Generic fallback")]
    TemplateNotFound {
        usage_type: UsageType,
        locale: Option<String>,
    },
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Send(#[from] SendError),
    #[error(transparent)]
    Overloaded(#[from] Overloaded),
    /// A rate limit refused the send; it was not counted.
    #[error("rate limit {} exceeded", .0.limit)]
    Limited(LimitExceeded),
    /// Shared state (Redis) is required and cannot be reached; nothing was sent.
    #[error("the shared state store cannot be reached")]
    StateUnavailable,
    /// Over the SES account's send rate for longer than the pacing wait allows.
    #[error("over the SES account's send rate")]
    Paced(PaceExceeded),
    /// The recipient bounced permanently or complained; nothing was sent.
    #[error("the recipient is suppressed")]
    Suppressed(Suppression),
}

impl From<PaceRefusal> for ServiceError {
    fn from(refusal: PaceRefusal) -> Self {
        match refusal {
            PaceRefusal::Exceeded(exceeded) => ServiceError::Paced(exceeded),
            PaceRefusal::StateUnavailable => ServiceError::StateUnavailable,
        }
    }
}

impl From<Refusal> for ServiceError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Exceeded(exceeded) => ServiceError::Limited(exceeded),
            Refusal::StateUnavailable => ServiceError::StateUnavailable,
        }
    }
}

impl ServiceError {
    /// Whether this answer is definite: the same request would get it again, so an
    /// idempotent repeat is given it instead of trying again. Throttling, overload,
    /// limits, unreachable or unanswered SES and missing state are transient.
    pub fn is_definite(&self) -> bool {
        match self {
            ServiceError::TemplateNotFound { .. }
            | ServiceError::Render(_)
            | ServiceError::Suppressed(_) => true,
            ServiceError::Send(SendError::Rejected { .. }) => true,
            ServiceError::Send(_)
            | ServiceError::Overloaded(_)
            | ServiceError::Limited(_)
            | ServiceError::Paced(_)
            | ServiceError::StateUnavailable => false,
        }
    }
}

/// How long an answer of SES's suppression list is trusted.
pub const SES_SUPPRESSION_TTL: Duration = Duration::from_secs(300);
/// Longest wait for SES's suppression list before sending without its answer.
const SES_SUPPRESSION_LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);

/// Bytes of sends and their events remembered for `GET /v1/messages/{id}` (7 days
/// at most; a send is about 300 bytes, its events at most about 30 KiB).
pub const DELIVERY_LOG_CAPACITY: u64 = 64 * 1024 * 1024;

impl SuppressionPolicy {
    pub fn label(self) -> &'static str {
        match self {
            SuppressionPolicy::Enforce => "enforce",
            SuppressionPolicy::Report => "report",
            SuppressionPolicy::Off => "off",
        }
    }
}

/// How sends are kept under the SES account's rate.
pub struct Pacing {
    pub pacer: Arc<dyn SendPacer>,
    pub rate: Arc<SendRate>,
    /// Longest wait for a turn before a send is refused.
    pub max_wait: Duration,
}

impl Pacing {
    /// No pacing at all.
    pub fn off() -> Self {
        Self {
            pacer: Arc::new(MemoryPacer::new()),
            rate: Arc::new(SendRate::new(Some(0.0))),
            max_wait: Duration::ZERO,
        }
    }
}

/// Holds the active config, the abuse limits, the pace and the transport: every send
/// (the API's, a test email's, the CLI's) takes its path through here.
pub struct EmailService {
    config: ArcSwap<ConnectorConfig>,
    mailer: Arc<dyn Mailer>,
    gate: SendGate,
    limits: Arc<dyn SendLimiter>,
    pacing: Pacing,
    deliveries: Arc<dyn DeliveryLog>,
    suppression: SuppressionPolicy,
    /// Answers of SES's account-level suppression list, listed or not, for a few
    /// minutes; `None` when the list is not asked.
    ses_suppressions: Option<moka::sync::Cache<String, Option<Suppression>>>,
}

impl EmailService {
    /// A service whose sends are admitted by `limits` and whose SES calls pass
    /// through `gate`.
    pub fn new(
        config: ConnectorConfig,
        mailer: Arc<dyn Mailer>,
        gate: SendGate,
        limits: Arc<dyn SendLimiter>,
        pacing: Pacing,
    ) -> Self {
        Self {
            config: ArcSwap::from_pointee(config),
            mailer,
            gate,
            limits,
            pacing,
            deliveries: Arc::new(MemoryDeliveryLog::new(DELIVERY_LOG_CAPACITY)),
            suppression: SuppressionPolicy::Enforce,
            ses_suppressions: None,
        }
    }

    /// Also ask SES's account-level suppression list before a send (answers cached
    /// for [`SES_SUPPRESSION_TTL`]; a failed lookup never blocks a send).
    pub fn with_ses_suppression_check(mut self) -> Self {
        self.ses_suppressions = Some(
            moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(SES_SUPPRESSION_TTL)
                .build(),
        );
        self
    }

    /// Lift a recipient's suppression here and, when the SES list is asked, there;
    /// the SES outcome as a sentence.
    pub async fn lift_suppression(&self, recipient: &Recipient) -> Option<String> {
        self.deliveries.lift(recipient).await;
        let cache = self.ses_suppressions.as_ref()?;
        let list = self.mailer.suppression_list()?;
        let address = recipient.suppression_key();
        cache.invalidate(&address);
        let config = self.config();
        let account = Account {
            region: config.region.clone(),
            credentials: config.credentials.clone(),
        };
        Some(match list.remove(&account, &address).await {
            Ok(true) => "removed from the SES account's suppression list".to_owned(),
            Ok(false) => "not on the SES account's suppression list".to_owned(),
            Err(error) => {
                format!("could not remove it from the SES account's suppression list: {error}")
            }
        })
    }

    /// The recipient's suppression: this service's own, else (when asked) SES's
    /// account-level list; what a send to it is checked against.
    pub async fn suppression_of(&self, recipient: &Recipient) -> Option<Suppression> {
        if let Some(own) = self.deliveries.suppression(recipient).await {
            return Some(own);
        }
        let cache = self.ses_suppressions.as_ref()?;
        let list = self.mailer.suppression_list()?;
        let address = recipient.suppression_key();
        if let Some(answer) = cache.get(&address) {
            return answer;
        }
        let config = self.config();
        let account = Account {
            region: config.region.clone(),
            credentials: config.credentials.clone(),
        };
        match tokio::time::timeout(
            SES_SUPPRESSION_LOOKUP_TIMEOUT,
            list.lookup(&account, &address),
        )
        .await
        {
            Ok(Ok(answer)) => {
                cache.insert(address, answer.clone());
                answer
            }
            Ok(Err(error)) => {
                metrics::counter!(names::SUPPRESSION_LOOKUP_ERRORS).increment(1);
                tracing::warn!(error = %mask_addresses(&error), "could not ask SES's suppression list; sending");
                None
            }
            Err(_) => {
                metrics::counter!(names::SUPPRESSION_LOOKUP_ERRORS).increment(1);
                tracing::warn!("SES's suppression list did not answer in time; sending");
                None
            }
        }
    }

    /// Keep sends and their feedback in `deliveries`, and treat suppressed
    /// recipients by `policy`.
    pub fn with_deliveries(
        mut self,
        deliveries: Arc<dyn DeliveryLog>,
        policy: SuppressionPolicy,
    ) -> Self {
        self.deliveries = deliveries;
        self.suppression = policy;
        self
    }

    /// What is done with a suppressed recipient.
    pub fn suppression_policy(&self) -> SuppressionPolicy {
        self.suppression
    }

    /// Sends and what SES reported about them.
    pub fn deliveries(&self) -> &Arc<dyn DeliveryLog> {
        &self.deliveries
    }

    /// The transport, for what it can tell about the account.
    pub fn mailer(&self) -> &Arc<dyn Mailer> {
        &self.mailer
    }

    /// The rate sends are paced at, learned from the account.
    pub fn send_rate(&self) -> &Arc<SendRate> {
        &self.pacing.rate
    }

    /// Wait for this send's turn under its account's send rate, if one is known.
    async fn pace(&self, account: &Account) -> Result<(), ServiceError> {
        let Some(rate) = self.pacing.rate.current() else {
            return Ok(());
        };
        let wait = self
            .pacing
            .pacer
            .reserve(&PaceKey::of(account), rate, self.pacing.max_wait)
            .await?;
        metrics::histogram!(names::PACING_WAIT).record(wait.as_secs_f64());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// Sends in flight now.
    pub fn in_flight(&self) -> usize {
        self.gate.in_flight()
    }

    /// The config in force now; a request keeps the one it started with.
    pub fn config(&self) -> Arc<ConnectorConfig> {
        self.config.load_full()
    }

    /// Swap in a new config atomically.
    pub fn replace_config(&self, config: Arc<ConnectorConfig>) {
        self.config.store(config);
    }

    /// Send a code with the active config: not to a suppressed recipient (by the
    /// policy), once the rate limits admit it.
    pub async fn send(&self, request: SendRequest) -> Result<Sent, ServiceError> {
        let mut warnings = Vec::new();
        if self.suppression != SuppressionPolicy::Off {
            if let Some(suppression) = self.suppression_of(&request.to).await {
                metrics::counter!(names::SUPPRESSED, "policy" => self.suppression.label())
                    .increment(1);
                if self.suppression == SuppressionPolicy::Enforce {
                    return Err(ServiceError::Suppressed(suppression));
                }
                warnings.push(Issue {
                    path: "to".into(),
                    code: IssueCode::RecipientSuppressed,
                    message: format!(
                        "the recipient's last event was a {} ({}); sent anyway because SES_CONNECTOR_SUPPRESSION is report",
                        suppression.reason.as_str(),
                        suppression.since
                    ),
                });
            }
        }
        let mut unspent = Unspent {
            limits: self.limits.clone(),
            admission: Some(self.limits.admit(&request.to, request.ip).await?),
        };
        let config = self.config();
        match self.deliver(&config, request, Some(&mut unspent)).await {
            Ok(mut sent) => {
                sent.warnings.extend(warnings);
                Ok(sent)
            }
            Err(error) => {
                // Refused before SES (render, pacing, gate): it does not count.
                unspent.give_back().await;
                Err(error)
            }
        }
    }

    /// Send with a given config (test sends use an unsaved one); test sends are an
    /// admin's and are not rate limited.
    pub async fn send_with(
        &self,
        config: &ConnectorConfig,
        request: SendRequest,
    ) -> Result<Sent, ServiceError> {
        self.deliver(config, request, None).await
    }

    /// Render, pace, pass the gate and hand the email to the transport; `unspent`
    /// (the send's admission by the limits) is spent at that hand-over.
    async fn deliver(
        &self,
        config: &ConnectorConfig,
        request: SendRequest,
        unspent: Option<&mut Unspent>,
    ) -> Result<Sent, ServiceError> {
        let usage_type = request.usage_type;
        let sender = request.sender;
        let (email, template) = compose(config, request)?;
        self.pace(&email.account).await?;
        let _slot = self.gate.enter().await.inspect_err(|_| {
            metrics::counter!(names::OVERLOADED).increment(1);
        })?;
        // From here the email may leave, so the send counts whatever SES answers.
        if let Some(unspent) = unspent {
            unspent.spend();
        }
        let in_flight = InFlight::enter();
        // The email moves into the transport; its recipient is kept for the log
        // line and the delivery log.
        let to = email.to.clone();
        let started = Instant::now();
        let result = self.mailer.send(email).await;
        let elapsed = started.elapsed();
        drop(in_flight);
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        let label = match &result {
            Ok(_) => "sent",
            Err(e) => outcome(e),
        };
        metrics::counter!(names::SENDS, "usage_type" => usage_type.as_str(), "outcome" => label)
            .increment(1);
        metrics::histogram!(names::SES_DURATION, "outcome" => label).record(elapsed.as_secs_f64());
        let locale = template.locale.as_deref().unwrap_or("");
        match &result {
            Ok(message_id) => tracing::info!(
                usage_type = %usage_type,
                template_locale = locale,
                recipient = %to.masked(),
                message_id,
                outcome = "sent",
                ses_latency_ms = latency_ms,
                "email sent"
            ),
            Err(error) => tracing::warn!(
                usage_type = %usage_type,
                template_locale = locale,
                recipient = %to.masked(),
                outcome = outcome(error),
                ses_latency_ms = latency_ms,
                error = %mask_addresses(&error.to_string()),
                "email not sent"
            ),
        }
        let message_id = result?;
        self.remember(&message_id, &to, usage_type, sender).await;
        Ok(Sent {
            message_id,
            template,
            warnings: Vec::new(),
        })
    }

    /// Keep the send for `GET /v1/messages/{id}`, with what the transport already
    /// knows of its fate (the outbox's mailbox simulator).
    async fn remember(
        &self,
        message_id: &str,
        to: &Recipient,
        usage_type: UsageType,
        sender: Option<[u8; 32]>,
    ) {
        let record = MessageRecord {
            message_id: message_id.to_owned(),
            usage_type,
            recipient: to.masked(),
            sent_at: crate::feedback::now(),
            status: crate::feedback::Status::Sent,
            events: Vec::new(),
        };
        self.deliveries.sent(record, to, sender).await;
        if let Some(notification) = self.mailer.simulated_feedback(message_id, to) {
            self.deliveries.record(notification).await;
        }
    }

    /// Render what a send of `usage_type` with `payload` would send, without sending.
    pub fn preview(
        config: &ConnectorConfig,
        usage_type: UsageType,
        payload: &Map<String, Value>,
    ) -> Result<Preview, ServiceError> {
        prepare(config, usage_type, payload.clone())
    }
}

/// A send's admission by the limits until the send reaches the transport: given
/// back when the send is refused before it, or cancelled (the caller hung up while
/// waiting for its turn or for the gate). Only a send handed to SES counts.
struct Unspent {
    limits: Arc<dyn SendLimiter>,
    admission: Option<Admission>,
}

impl Unspent {
    /// The send is handed to the transport: it counts from now on.
    fn spend(&mut self) {
        self.admission = None;
    }

    /// Give the admission back, unless it was spent.
    async fn give_back(mut self) {
        if let Some(admission) = self.admission.take() {
            self.limits.give_back(admission).await;
        }
    }
}

impl Drop for Unspent {
    fn drop(&mut self) {
        // Cancelled before the transport; the giving back must outlive the request.
        let Some(admission) = self.admission.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let limits = self.limits.clone();
            runtime.spawn(async move { limits.give_back(admission).await });
        }
    }
}

/// One send counted in the in-flight gauge until it is dropped, also when the
/// request is cancelled mid-send.
struct InFlight(metrics::Gauge);

impl InFlight {
    fn enter() -> Self {
        let gauge = metrics::gauge!(names::IN_FLIGHT);
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// The outcome label of a failed send, for logs and metrics.
pub fn outcome(error: &SendError) -> &'static str {
    match error {
        SendError::Throttled { .. } => "throttled",
        SendError::QuotaExhausted { .. } => "quota_exhausted",
        SendError::Rejected { .. } => "rejected",
        SendError::Timeout => "timeout",
        SendError::Unreachable { .. } => "unreachable",
        SendError::NoCredentials { .. } => "no_credentials",
        SendError::Internal { .. } => "error",
    }
}

/// The locale asked for: `payload.locale`, else the first of `payload.uiLocales`.
pub fn requested_locale(payload: &Map<String, Value>) -> Option<&str> {
    let non_empty = |s: &&str| !s.is_empty();
    payload
        .get("locale")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(non_empty)
        .or_else(|| {
            payload
                .get("uiLocales")
                .and_then(Value::as_str)
                .and_then(|s| s.split_whitespace().next())
        })
}

/// Choose and render the template; the payload becomes the render's variables
/// without a copy.
fn prepare(
    config: &ConnectorConfig,
    usage_type: UsageType,
    payload: Map<String, Value>,
) -> Result<Preview, ServiceError> {
    let locale = requested_locale(&payload);
    let selected = config.templates.select(usage_type, locale).ok_or_else(|| {
        ServiceError::TemplateNotFound {
            usage_type,
            locale: locale.map(str::to_owned),
        }
    })?;
    let email = selected.render_owned(Value::Object(payload))?;
    let source = selected.source();
    let from = source
        .send_from
        .as_ref()
        .or(config.email_address.as_ref())
        .cloned();
    let reply_to = source
        .reply_to
        .as_ref()
        .or(config.reply_to.as_ref())
        .cloned();
    Ok(Preview {
        email,
        from,
        reply_to,
        template: selected.choice(),
    })
}

fn compose(
    config: &ConnectorConfig,
    request: SendRequest,
) -> Result<(OutgoingEmail, TemplateChoice), ServiceError> {
    let preview = prepare(config, request.usage_type, request.payload)?;
    let email = OutgoingEmail {
        account: Account {
            region: config.region.clone(),
            credentials: config.credentials.clone(),
        },
        to: request.to,
        from: preview.from,
        reply_to: preview.reply_to,
        from_identity_arn: config.email_address_identity_arn.clone(),
        feedback_forwarding_address: config.feedback_forwarding_email_address.clone(),
        feedback_forwarding_identity_arn: config
            .feedback_forwarding_email_address_identity_arn
            .clone(),
        configuration_set_name: config.configuration_set_name.clone(),
        usage_type: request.usage_type,
        content: preview.email,
    };
    Ok((email, preview.template))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_requested_locale_comes_from_locale_then_ui_locales() {
        let payload = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(
            requested_locale(&payload(json!({"locale": "fr"}))),
            Some("fr")
        );
        assert_eq!(
            requested_locale(&payload(json!({"uiLocales": "de-AT en"}))),
            Some("de-AT")
        );
        assert_eq!(
            requested_locale(&payload(json!({"locale": "", "uiLocales": "ja"}))),
            Some("ja")
        );
        assert_eq!(requested_locale(&payload(json!({"locale": 3}))), None);
        assert_eq!(requested_locale(&payload(json!({}))), None);
    }
}
