//! The SES v2 transport: the only module that speaks AWS.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_sesv2::config::interceptors::InterceptorContext;
use aws_sdk_sesv2::config::retry::{ClassifyRetry, RetryAction};
use aws_sdk_sesv2::config::{Credentials, Region as AwsRegion, SharedHttpClient};
use aws_sdk_sesv2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message, MessageTag};
use aws_sdk_sesv2::Client;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use aws_smithy_runtime_api::client::orchestrator::OrchestratorError;
use aws_smithy_runtime_api::client::retries::classifiers::RetryClassifierPriority;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::address::{mask_addresses, Mailbox};
use crate::doctor::{AccountProbe, IdentityFacts, ProbeError};
use crate::feedback::{Suppression, SuppressionList, SuppressionReason};
use crate::transport::{Account, AccountFacts, BoxFuture, Mailer, OutgoingEmail, SendError};

/// How long and how often to try SES.
#[derive(Debug, Clone)]
pub struct SesOptions {
    pub connect_timeout: Duration,
    pub attempt_timeout: Duration,
    pub operation_timeout: Duration,
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    /// An endpoint that wins over `AWS_ENDPOINT_URL_SESV2`/`AWS_ENDPOINT_URL`.
    pub endpoint: Option<String>,
}

impl Default for SesOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            attempt_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(10),
            max_attempts: 3,
            initial_backoff: Duration::from_millis(200),
            endpoint: None,
        }
    }
}

/// Clients are keyed by what makes them differ; the secret only as a digest.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    region: String,
    access_key_id: Option<String>,
    secret_digest: Option<[u8; 32]>,
}

/// Sends through SES v2, with one pooled client per (region, credentials).
pub struct SesMailer {
    base: SdkConfig,
    /// `Some(..)` when an endpoint variable is set: its non-empty value, else `None`.
    endpoint: Option<Option<String>>,
    clients: moka::sync::Cache<ClientKey, Client>,
}

impl SesMailer {
    /// Load the shared AWS settings once: HTTP client, timeouts, retries, default chain.
    pub async fn new(options: &SesOptions) -> Self {
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        Self::with_http_client(options, http_client).await
    }

    /// As [`SesMailer::new`], over another HTTP client (benchmarks measure the SDK's
    /// own cost with one that answers in-process).
    pub async fn with_http_client(options: &SesOptions, http_client: SharedHttpClient) -> Self {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.attempt_timeout)
            .operation_attempt_timeout(options.attempt_timeout)
            .operation_timeout(options.operation_timeout)
            .build();
        let retries = RetryConfig::standard()
            .with_max_attempts(options.max_attempts.max(1))
            .with_initial_backoff(options.initial_backoff)
            .with_max_backoff(options.operation_timeout / 4);
        let base = aws_config::defaults(BehaviorVersion::latest())
            // Every client sets its own region; this avoids a lookup at start.
            .region(AwsRegion::from_static("us-east-1"))
            .http_client(http_client)
            .timeout_config(timeouts)
            .retry_config(retries)
            // The attempt and operation timeouts bound a stalled SES; the per-poll
            // throughput monitor would only add work to every request.
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .load()
            .await;
        Self {
            base,
            endpoint: match &options.endpoint {
                Some(url) => Some(Some(url.clone())),
                None => configured_endpoint(),
            },
            clients: moka::sync::Cache::builder()
                .max_capacity(64)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
        }
    }

    /// An SQS client for the same account (region, credentials, the standard
    /// endpoint variables such as `AWS_ENDPOINT_URL_SQS`), for the feedback queue.
    pub fn sqs_client(&self, account: &Account) -> aws_sdk_sqs::Client {
        let mut builder = aws_sdk_sqs::config::Builder::from(&self.base)
            .region(aws_sdk_sqs::config::Region::new(
                account.region.as_str().to_owned(),
            ))
            // A long poll waits up to 20 s for messages.
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .read_timeout(Duration::from_secs(30))
                    .operation_timeout(Duration::from_secs(35))
                    .build(),
            );
        if let Some(credentials) = static_credentials(account) {
            builder = builder.credentials_provider(credentials);
        }
        aws_sdk_sqs::Client::from_conf(builder.build())
    }

    /// An STS client for the same account, to ask which account id it is.
    fn sts(&self, account: &Account) -> aws_sdk_sts::Client {
        let mut builder = aws_sdk_sts::config::Builder::from(&self.base).region(
            aws_sdk_sts::config::Region::new(account.region.as_str().to_owned()),
        );
        if let Some(credentials) = static_credentials(account) {
            builder = builder.credentials_provider(credentials);
        }
        aws_sdk_sts::Client::from_conf(builder.build())
    }

    fn client(&self, account: &Account) -> Client {
        let key = ClientKey {
            region: account.region.as_str().to_owned(),
            access_key_id: account
                .credentials
                .as_ref()
                .map(|c| c.access_key_id.clone()),
            secret_digest: account
                .credentials
                .as_ref()
                .map(|c| Sha256::digest(c.secret_access_key.expose_secret().as_bytes()).into()),
        };
        self.clients.get_with(key, || {
            let mut builder = aws_sdk_sesv2::config::Builder::from(&self.base)
                .region(AwsRegion::new(account.region.as_str().to_owned()));
            if let Some(credentials) = static_credentials(account) {
                builder = builder.credentials_provider(credentials);
            }
            if let Some(endpoint) = &self.endpoint {
                builder.set_endpoint_url(endpoint.clone());
            }
            builder = builder.retry_classifier(SesRetryTable::<
                aws_sdk_sesv2::operation::send_email::SendEmailError,
            >(std::marker::PhantomData));
            Client::from_conf(builder.build())
        })
    }

    /// The email's parts move into the request: nothing is copied.
    async fn send_email(&self, email: OutgoingEmail) -> Result<String, SendError> {
        let utf8 = |data: String| {
            Content::builder()
                .data(data)
                .charset("UTF-8")
                .build()
                .map_err(|e| SendError::Internal {
                    detail: e.to_string(),
                })
        };
        let body = Body::builder()
            .set_html(email.content.html.map(utf8).transpose()?)
            .text(utf8(email.content.text)?)
            .build();
        let message = Message::builder()
            .subject(utf8(email.content.subject)?)
            .body(body)
            .build();
        let tag = MessageTag::builder()
            .name("usage_type")
            .value(email.usage_type.as_str())
            .build()
            .map_err(|e| SendError::Internal {
                detail: e.to_string(),
            })?;
        let output = self
            .client(&email.account)
            .send_email()
            .destination(
                Destination::builder()
                    .to_addresses(email.to.into_string())
                    .build(),
            )
            .content(EmailContent::builder().simple(message).build())
            .set_from_email_address(email.from.as_ref().map(header_value))
            .set_reply_to_addresses(email.reply_to.as_ref().map(|r| vec![header_value(r)]))
            .set_from_email_address_identity_arn(
                email
                    .from_identity_arn
                    .as_ref()
                    .map(|a| a.as_str().to_owned()),
            )
            .set_feedback_forwarding_email_address(
                email.feedback_forwarding_address.as_ref().map(header_value),
            )
            .set_feedback_forwarding_email_address_identity_arn(
                email
                    .feedback_forwarding_identity_arn
                    .as_ref()
                    .map(|a| a.as_str().to_owned()),
            )
            .set_configuration_set_name(
                email
                    .configuration_set_name
                    .as_ref()
                    .map(|c| c.as_str().to_owned()),
            )
            .email_tags(tag)
            .send()
            .await
            .map_err(classify)?;
        Ok(output.message_id.unwrap_or_default())
    }
}

impl Mailer for SesMailer {
    fn send(&self, email: OutgoingEmail) -> BoxFuture<'_, Result<String, SendError>> {
        Box::pin(self.send_email(email))
    }

    fn probe(&self) -> Option<&dyn AccountProbe> {
        Some(self)
    }

    fn suppression_list(&self) -> Option<&dyn SuppressionList> {
        Some(self)
    }

    fn account_facts<'a>(
        &'a self,
        account: &'a Account,
    ) -> BoxFuture<'a, Result<Option<AccountFacts>, String>> {
        Box::pin(async move {
            match AccountProbe::account(self, account).await {
                Ok(facts) => Ok(Some(facts)),
                Err(ProbeError::NotFound) => Err("SES answered Not Found".to_owned()),
                Err(ProbeError::Credentials(detail) | ProbeError::Unreachable(detail)) => {
                    Err(detail)
                }
            }
        })
    }
}

/// The config's static keys as SDK credentials; `None`: the default chain.
fn static_credentials(account: &Account) -> Option<Credentials> {
    account.credentials.as_ref().map(|credentials| {
        Credentials::new(
            credentials.access_key_id.clone(),
            credentials.secret_access_key.expose_secret().to_owned(),
            None,
            None,
            "ses-connector-config",
        )
    })
}

/// A configured mailbox as SES takes it: non-ASCII display names as encoded-words.
fn header_value(mailbox: &Mailbox) -> String {
    mailbox.header_value().into_owned()
}

/// The endpoint from `AWS_ENDPOINT_URL_SESV2` or `AWS_ENDPOINT_URL`. An empty value
/// counts as unset (the SDK would panic on it).
fn configured_endpoint() -> Option<Option<String>> {
    let vars = ["AWS_ENDPOINT_URL_SESV2", "AWS_ENDPOINT_URL"];
    let values: Vec<Option<String>> = vars.iter().map(|v| std::env::var(v).ok()).collect();
    if values.iter().all(Option::is_none) {
        return None;
    }
    Some(
        values
            .into_iter()
            .flatten()
            .map(|v| v.trim().to_owned())
            .find(|v| !v.is_empty()),
    )
}

fn classify(
    err: SdkError<
        aws_sdk_sesv2::operation::send_email::SendEmailError,
        aws_sdk_sesv2::config::http::HttpResponse,
    >,
) -> SendError {
    if let Some(no_credentials) = credentials_failure(&err) {
        return no_credentials;
    }
    match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let status = service.raw().status();
            match e.code() {
                // A server error without a known code (e.g. a proxy's 503) is an outage.
                Some("Unknown") | None if status.is_server_error() => SendError::Unreachable {
                    detail: format!("SES answered HTTP {}", status.as_u16()),
                },
                code => classify_code(code.unwrap_or("Unknown"), e.message().unwrap_or_default()),
            }
        }
        SdkError::TimeoutError(_) => SendError::Timeout,
        SdkError::DispatchFailure(failure) if failure.is_timeout() => SendError::Timeout,
        SdkError::DispatchFailure(failure) if failure.is_user() => SendError::Internal {
            // Logged, not returned: no address in clear.
            detail: mask_addresses(&DisplayErrorContext(&err).to_string()).into_owned(),
        },
        // Refused, reset or dropped connections, and anything else on the wire.
        SdkError::DispatchFailure(_) => SendError::Unreachable {
            detail: mask_addresses(&DisplayErrorContext(&err).to_string()).into_owned(),
        },
        SdkError::ResponseError(_) => SendError::Unreachable {
            detail: "SES sent an answer that could not be read".to_owned(),
        },
        _ => SendError::Internal {
            detail: mask_addresses(&DisplayErrorContext(&err).to_string()).into_owned(),
        },
    }
}

/// SES error codes that are throttling: retried with backoff.
const THROTTLED: &[&str] = &[
    "TooManyRequestsException",
    "Throttling",
    "ThrottlingException",
];
/// SES error codes the same request would get again: never retried. The SDK's own
/// classifier counts `LimitExceededException` as throttling; a daily quota does not
/// come back within a send's 10 s.
const NEVER_RETRIED: &[&str] = &[
    "MessageRejected",
    "MailFromDomainNotVerifiedException",
    "NotFoundException",
    "BadRequestException",
    "LimitExceededException",
    "SendingPausedException",
    "AccountSuspendedException",
];

/// The retry table of the README, applied after the SDK's own classifiers so that
/// it has the last word on SES's error codes; everything else (5xx answers, dropped
/// connections, timeouts) keeps the SDK's transient-error handling.
#[derive(Debug)]
struct SesRetryTable<E>(std::marker::PhantomData<E>);

impl<E> ClassifyRetry for SesRetryTable<E>
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        let Some(Err(error)) = ctx.output_or_error() else {
            return RetryAction::NoActionIndicated;
        };
        let code = OrchestratorError::as_operation_error(error)
            .and_then(|e| e.downcast_ref::<E>())
            .and_then(|e| e.code());
        match code {
            Some(code) if THROTTLED.contains(&code) => RetryAction::throttling_error(),
            Some(code) if NEVER_RETRIED.contains(&code) => RetryAction::RetryForbidden,
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "ses-connector retry table"
    }

    fn priority(&self) -> RetryClassifierPriority {
        RetryClassifierPriority::run_after(RetryClassifierPriority::transient_error_classifier())
    }
}

/// Where the default chain looks, for the message when it finds nothing.
const CREDENTIALS_HELP: &str = "no AWS credentials were found for SES. Give accessKeyId and accessKeySecret in the connector config, or set SES_CONNECTOR_ACCESS_KEY_ID and SES_CONNECTOR_ACCESS_KEY_SECRET, or provide them to the AWS default chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile (AWS_PROFILE, ~/.aws/credentials), web identity (IRSA), the ECS task role or the EC2 instance profile";

/// The credentials failure somewhere in an SDK error's causes, if that is what it is.
fn credentials_failure(error: &(dyn std::error::Error + 'static)) -> Option<SendError> {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if let Some(failure) = current.downcast_ref::<CredentialsError>() {
            let detail = match failure {
                CredentialsError::CredentialsNotLoaded(_) => CREDENTIALS_HELP.to_owned(),
                other => format!(
                    "the AWS credentials could not be loaded ({}); {CREDENTIALS_HELP}",
                    DisplayErrorContext(other)
                ),
            };
            return Some(SendError::NoCredentials { detail });
        }
        cause = current.source();
    }
    None
}

/// Error codes that mean the credentials are wrong or not allowed.
const CREDENTIAL_CODES: &[&str] = &[
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "InvalidSignatureException",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "ExpiredToken",
    "ExpiredTokenException",
    "AccessDenied",
    "AccessDeniedException",
];

/// What an account question's failure means for the doctor; AWS's own text kept.
fn probe_error<E>(err: SdkError<E, aws_sdk_sesv2::config::http::HttpResponse>) -> ProbeError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    if let Some(SendError::NoCredentials { detail }) = credentials_failure(&err) {
        return ProbeError::Credentials(detail);
    }
    match &err {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("");
            let message = service.err().message().unwrap_or("").to_owned();
            let status = service.raw().status().as_u16();
            if code == "NotFoundException" {
                ProbeError::NotFound
            } else if CREDENTIAL_CODES.contains(&code) || status == 403 {
                ProbeError::Credentials(format!("{code}: {message}"))
            } else if code.is_empty() {
                ProbeError::Unreachable(format!("SES answered HTTP {status}"))
            } else {
                ProbeError::Unreachable(format!("{code}: {message}"))
            }
        }
        _ => ProbeError::Unreachable(format!("{}", DisplayErrorContext(&err))),
    }
}

/// An answer, `None` for SES's NotFoundException, or AWS's words for any other error.
fn found<T, E>(
    answer: Result<T, SdkError<E, aws_sdk_sesv2::config::http::HttpResponse>>,
) -> Result<Option<T>, String>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match answer {
        Ok(output) => Ok(Some(output)),
        Err(error) => match probe_error(error) {
            ProbeError::NotFound => Ok(None),
            ProbeError::Credentials(detail) | ProbeError::Unreachable(detail) => Err(detail),
        },
    }
}

impl SuppressionList for SesMailer {
    fn lookup<'a>(
        &'a self,
        account: &'a Account,
        address: &'a str,
    ) -> BoxFuture<'a, Result<Option<Suppression>, String>> {
        Box::pin(async move {
            let answer = self
                .client(account)
                .get_suppressed_destination()
                .email_address(address)
                .send()
                .await;
            match found(answer)? {
                Some(output) => Ok(output.suppressed_destination().map(|d| Suppression {
                    reason: match d.reason().as_str() {
                        "COMPLAINT" => SuppressionReason::Complaint,
                        _ => SuppressionReason::Bounce,
                    },
                    since: d
                        .last_update_time()
                        .fmt(aws_sdk_sesv2::primitives::DateTimeFormat::DateTime)
                        .unwrap_or_default(),
                })),
                None => Ok(None),
            }
        })
    }

    fn remove<'a>(
        &'a self,
        account: &'a Account,
        address: &'a str,
    ) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            let answer = self
                .client(account)
                .delete_suppressed_destination()
                .email_address(address)
                .send()
                .await;
            Ok(found(answer)?.is_some())
        })
    }
}

impl AccountProbe for SesMailer {
    fn account<'a>(
        &'a self,
        account: &'a Account,
    ) -> BoxFuture<'a, Result<AccountFacts, ProbeError>> {
        Box::pin(async move {
            let output = self
                .client(account)
                .get_account()
                .send()
                .await
                .map_err(probe_error)?;
            let quota = output.send_quota();
            Ok(AccountFacts {
                max_send_rate: quota.map_or(0.0, |q| q.max_send_rate()),
                max_24_hour_send: quota.map_or(0.0, |q| q.max24_hour_send()),
                sent_last_24_hours: quota.map_or(0.0, |q| q.sent_last24_hours()),
                sending_enabled: output.sending_enabled(),
                production_access_enabled: output.production_access_enabled(),
                enforcement_status: output.enforcement_status().map(str::to_owned),
            })
        })
    }

    fn identity<'a>(
        &'a self,
        account: &'a Account,
        identity: &'a str,
    ) -> BoxFuture<'a, Result<IdentityFacts, ProbeError>> {
        Box::pin(async move {
            let output = self
                .client(account)
                .get_email_identity()
                .email_identity(identity)
                .send()
                .await
                .map_err(probe_error)?;
            Ok(IdentityFacts {
                // `VerificationStatus` is the newer field; either says it is verified.
                verified_for_sending: output.verified_for_sending_status()
                    || output
                        .verification_status()
                        .is_some_and(|s| s.as_str() == "SUCCESS"),
                dkim_status: output
                    .dkim_attributes()
                    .and_then(|d| d.status())
                    .map(|s| s.as_str().to_owned()),
            })
        })
    }

    fn configuration_set<'a>(
        &'a self,
        account: &'a Account,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), ProbeError>> {
        Box::pin(async move {
            self.client(account)
                .get_configuration_set()
                .configuration_set_name(name)
                .send()
                .await
                .map(drop)
                .map_err(probe_error)
        })
    }

    fn caller_account<'a>(
        &'a self,
        account: &'a Account,
    ) -> BoxFuture<'a, Result<String, ProbeError>> {
        Box::pin(async move {
            let output = self
                .sts(account)
                .get_caller_identity()
                .send()
                .await
                .map_err(|e| ProbeError::Unreachable(format!("{}", DisplayErrorContext(&e))))?;
            output
                .account()
                .map(str::to_owned)
                .ok_or_else(|| ProbeError::Unreachable("STS named no account".to_owned()))
        })
    }
}

/// Map an SES error code to what the caller is told.
fn classify_code(code: &str, message: &str) -> SendError {
    let code_owned = code.to_owned();
    let message = message.to_owned();
    match code {
        "TooManyRequestsException" | "Throttling" | "ThrottlingException" => {
            SendError::Throttled { message }
        }
        "LimitExceededException" | "SendingPausedException" | "AccountSuspendedException" => {
            SendError::QuotaExhausted {
                code: code_owned,
                message,
            }
        }
        "InternalFailure"
        | "InternalServerError"
        | "ServiceUnavailable"
        | "ServiceUnavailableException" => SendError::Unreachable {
            detail: format!("SES answered {code}"),
        },
        _ => SendError::Rejected {
            code: code_owned,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ses_error_codes_map_to_what_the_caller_is_told() {
        type Expectation = fn(&SendError) -> bool;
        let cases: &[(&str, Expectation)] = &[
            ("TooManyRequestsException", |e| {
                matches!(e, SendError::Throttled { .. })
            }),
            ("LimitExceededException", |e| {
                matches!(e, SendError::QuotaExhausted { .. })
            }),
            ("SendingPausedException", |e| {
                matches!(e, SendError::QuotaExhausted { .. })
            }),
            ("AccountSuspendedException", |e| {
                matches!(e, SendError::QuotaExhausted { .. })
            }),
            ("MessageRejected", |e| {
                matches!(e, SendError::Rejected { .. })
            }),
            ("MailFromDomainNotVerifiedException", |e| {
                matches!(e, SendError::Rejected { .. })
            }),
            ("NotFoundException", |e| {
                matches!(e, SendError::Rejected { .. })
            }),
            ("BadRequestException", |e| {
                matches!(e, SendError::Rejected { .. })
            }),
            ("InternalFailure", |e| {
                matches!(e, SendError::Unreachable { .. })
            }),
        ];
        for (code, expected) in cases {
            let mapped = classify_code(code, "reason");
            assert!(expected(&mapped), "{code} → {mapped:?}");
        }
    }

    #[tokio::test]
    async fn one_client_is_built_per_region_and_credentials_and_then_reused() {
        use crate::connector::{Region, StaticCredentials};
        let mailer = SesMailer::new(&SesOptions::default()).await;
        let account = |region: &str, secret: Option<&str>| Account {
            region: Region::parse(region).unwrap(),
            credentials: secret.map(|s| StaticCredentials {
                access_key_id: "AKIAIOSFODNN7EXAMPLE".to_owned(),
                secret_access_key: s.to_owned().into(),
            }),
        };
        mailer.client(&account("us-east-1", Some("a")));
        mailer.client(&account("us-east-1", Some("a")));
        mailer.clients.run_pending_tasks();
        assert_eq!(mailer.clients.entry_count(), 1, "same account, same client");
        mailer.client(&account("eu-west-1", Some("a")));
        mailer.client(&account("us-east-1", Some("b")));
        mailer.client(&account("us-east-1", None));
        mailer.clients.run_pending_tasks();
        assert_eq!(mailer.clients.entry_count(), 4);
    }

    #[test]
    fn a_rejection_keeps_the_ses_code_and_message() {
        let mapped = classify_code("MessageRejected", "Email address is not verified.");
        assert_eq!(
            mapped,
            SendError::Rejected {
                code: "MessageRejected".to_owned(),
                message: "Email address is not verified.".to_owned()
            }
        );
    }
}
