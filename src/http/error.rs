//! The one error shape every route answers with.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::connector::{Issue, ValidationReport};
use crate::send::ServiceError;
use crate::stores::idempotency::{IdempotencyError, Weigh};
use crate::stores::limits::LimitExceeded;
use crate::transport::SendError;

/// One field-level problem.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Detail {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub message: String,
}

impl Detail {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            code: None,
            message: message.into(),
        }
    }
}

impl From<&Issue> for Detail {
    fn from(issue: &Issue) -> Self {
        let code = serde_json::to_value(issue.code)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned));
        Self {
            path: issue.path.clone(),
            code,
            message: issue.message.clone(),
        }
    }
}

impl From<crate::validation::Problem> for Detail {
    fn from(problem: crate::validation::Problem) -> Self {
        Self {
            path: problem.path,
            code: Some(problem.code),
            message: problem.message,
        }
    }
}

/// SES's own reason for refusing, returned because the caller needs it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SesReason {
    pub code: String,
    pub message: String,
}

/// An API error. Handlers return it with `?`; the request middleware renders it with
/// the request id and logs it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    /// Machine-readable code, e.g. `invalid_request_parameters`.
    #[schema(value_type = String, example = "invalid_request_parameters")]
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<Detail>,
    /// Which limit was hit, for 429s.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "recipient")]
    pub limit: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<SesReason>)]
    pub ses: Option<Box<SesReason>>,
    /// For `recipient_suppressed`: why, and since when.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::feedback::Suppression>)]
    pub suppression: Option<Box<crate::feedback::Suppression>>,
    #[serde(skip)]
    pub retry_after: Option<u32>,
    /// Logged, never returned.
    #[serde(skip)]
    pub internal: Option<Box<String>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            limit: None,
            ses: None,
            suppression: None,
            retry_after: None,
            internal: None,
        }
    }

    pub fn bad_request(message: impl Into<String>, details: Vec<Detail>) -> Self {
        Self {
            details,
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_parameters",
                message,
            )
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn invalid_config(report: &ValidationReport) -> Self {
        let count = report.errors.len();
        Self {
            details: report.errors.iter().map(Detail::from).collect(),
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_config",
                format!(
                    "the connector config is invalid ({count} error{}); see details",
                    if count == 1 { "" } else { "s" }
                ),
            )
        }
    }

    /// 431: too many headers, or too many bytes of them.
    pub fn header_fields_too_large(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request_header_fields_too_large",
            message,
        )
    }

    /// A 500 whose cause is logged and not shown.
    pub fn internal(cause: impl Into<String>) -> Self {
        Self {
            internal: Some(Box::new(cause.into())),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "general",
                "internal error; see the service log for this request id",
            )
        }
    }

    /// The error for a bare status produced outside the handlers.
    pub fn from_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::not_found("no such route"),
            StatusCode::METHOD_NOT_ALLOWED => Self::new(
                status,
                "method_not_allowed",
                "this route does not accept that method",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => {
                Self::new(status, "payload_too_large", "the request body is too large")
            }
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
                Self::header_fields_too_large("the request's headers are too large")
            }
            StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "general",
                "the request took too long",
            ),
            StatusCode::SERVICE_UNAVAILABLE => Self::new(
                status,
                "service_unavailable",
                "the service is unavailable; try again shortly",
            ),
            s if s.is_client_error() => {
                Self::bad_request(s.canonical_reason().unwrap_or("bad request"), Vec::new())
            }
            _ => Self::internal(format!("unexpected status {status}")),
        }
    }

    /// The JSON body, with the request id.
    pub fn body(&self, request_id: &str) -> serde_json::Value {
        serde_json::json!({ "error": self, "requestId": request_id })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response.extensions_mut().insert(self);
        response
    }
}

impl From<LimitExceeded> for ApiError {
    fn from(exceeded: LimitExceeded) -> Self {
        // Round up: retrying after this many seconds is accepted.
        let seconds =
            exceeded.retry_after.as_secs() + u64::from(exceeded.retry_after.subsec_nanos() > 0);
        let seconds = u32::try_from(seconds.max(1)).unwrap_or(u32::MAX);
        let message = match exceeded.limit {
            "recipient" => {
                format!("too many codes sent to this recipient; retry after {seconds} s")
            }
            "ip" => format!("too many codes sent to this client IP; retry after {seconds} s"),
            "ses_send_rate" => format!(
                "sends are over the SES account's maximum send rate; retry after {seconds} s"
            ),
            other => format!("the {other} limit is exceeded; retry after {seconds} s"),
        };
        Self {
            limit: Some(exceeded.limit),
            retry_after: Some(seconds),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                message,
            )
        }
    }
}

impl From<IdempotencyError> for ApiError {
    fn from(error: IdempotencyError) -> Self {
        match error {
            IdempotencyError::KeyReused => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                format!("{error}; use a new key for a new request"),
            ),
            IdempotencyError::Lost => Self::internal(error.to_string()),
            IdempotencyError::InFlight => Self {
                retry_after: Some(1),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "service_unavailable",
                    format!("{error}; retry with the same key shortly"),
                )
            },
            IdempotencyError::StateUnavailable => ServiceError::StateUnavailable.into(),
        }
    }
}

/// Every error code the API answers with (the README's table).
pub const ERROR_CODES: &[&str] = &[
    "invalid_request_parameters",
    "unauthorized",
    "forbidden",
    "not_found",
    "method_not_allowed",
    "payload_too_large",
    "request_header_fields_too_large",
    "unsupported_media_type",
    "invalid_config",
    "template_not_found",
    "idempotency_key_reused",
    "rate_limit_exceeded",
    "usage_limit_exceeded",
    "invalid_response",
    "general",
    "service_unavailable",
    "credentials_unavailable",
    "state_unavailable",
    "recipient_suppressed",
];

/// The limits a 429 can name.
const LIMITS: &[&str] = &["recipient", "ip", "ses", "ses_send_rate"];

/// A stored answer as it is kept in a shared store (Redis).
#[derive(Serialize, serde::Deserialize)]
struct StoredRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<ErrorRecord>,
}

#[derive(Serialize, serde::Deserialize)]
struct ErrorRecord {
    status: u16,
    code: String,
    message: String,
    details: Vec<Detail>,
    limit: Option<String>,
    ses: Option<SesReason>,
    #[serde(default)]
    suppression: Option<crate::feedback::Suppression>,
    retry_after: Option<u32>,
}

impl Serialize for super::Stored {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let record = match &self.0 {
            Ok(body) => StoredRecord {
                body: Some(String::from_utf8_lossy(body).into_owned()),
                error: None,
            },
            Err(e) => StoredRecord {
                body: None,
                error: Some(ErrorRecord {
                    status: e.status.as_u16(),
                    code: e.code.to_owned(),
                    message: e.message.clone(),
                    details: e.details.clone(),
                    limit: e.limit.map(str::to_owned),
                    ses: e.ses.as_deref().cloned(),
                    suppression: e.suppression.as_deref().cloned(),
                    retry_after: e.retry_after,
                }),
            },
        };
        record.serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for super::Stored {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let record = StoredRecord::deserialize(deserializer)?;
        let known = |list: &[&'static str], s: &str| list.iter().copied().find(|c| *c == s);
        Ok(super::Stored(match (record.body, record.error) {
            (Some(body), _) => Ok(axum::body::Bytes::from(body)),
            (None, Some(e)) => Err(ApiError {
                details: e.details,
                limit: e.limit.as_deref().and_then(|l| known(LIMITS, l)),
                ses: e.ses.map(Box::new),
                suppression: e.suppression.map(Box::new),
                retry_after: e.retry_after,
                ..ApiError::new(
                    StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    known(ERROR_CODES, &e.code).unwrap_or("general"),
                    e.message,
                )
            }),
            (None, None) => Err(ApiError::internal("an empty idempotency record")),
        }))
    }
}

/// A stored answer's bytes: its body, or the error's text.
impl Weigh for super::Stored {
    fn weight(&self) -> usize {
        match &self.0 {
            Ok(body) => body.len(),
            Err(error) => {
                std::mem::size_of::<ApiError>()
                    + error.message.len()
                    + error
                        .details
                        .iter()
                        .map(|d| d.path.len() + d.message.len() + 48)
                        .sum::<usize>()
                    + error
                        .ses
                        .as_ref()
                        .map_or(0, |s| s.code.len() + s.message.len())
            }
        }
    }
}

impl From<SendError> for ApiError {
    fn from(error: SendError) -> Self {
        match error {
            SendError::Throttled { message } => Self {
                limit: Some("ses"),
                retry_after: Some(1),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_exceeded",
                    format!("SES is throttling sends; retry shortly ({message})"),
                )
            },
            SendError::QuotaExhausted { code, message } => Self {
                ses: Some(Box::new(SesReason {
                    code: code.clone(),
                    message: message.clone(),
                })),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "usage_limit_exceeded",
                    format!("SES refused to send ({code}): {message}"),
                )
            },
            SendError::Rejected { code, message } => Self {
                ses: Some(Box::new(SesReason {
                    code: code.clone(),
                    message: message.clone(),
                })),
                ..Self::new(
                    StatusCode::BAD_GATEWAY,
                    "invalid_response",
                    format!("SES rejected the message ({code}): {message}"),
                )
            },
            SendError::Timeout => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "general",
                "SES did not answer in time; the email may or may not have been sent",
            ),
            SendError::Unreachable { detail } => Self {
                internal: Some(Box::new(detail)),
                ..Self::new(
                    StatusCode::BAD_GATEWAY,
                    "general",
                    "SES could not be reached",
                )
            },
            SendError::NoCredentials { detail } => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "credentials_unavailable",
                detail,
            ),
            SendError::Internal { detail } => Self::internal(detail),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::TemplateNotFound { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "template_not_found",
                error.to_string(),
            ),
            ServiceError::Render(render) => Self {
                details: vec![Detail::new(
                    format!("template {}.{}", render.usage_type, render.field),
                    render.reason.clone(),
                )],
                ..Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_config",
                    render.to_string(),
                )
            },
            ServiceError::Send(send) => send.into(),
            ServiceError::Suppressed(suppression) => Self {
                details: vec![Detail {
                    path: "to".into(),
                    code: Some(
                        match suppression.reason {
                            crate::feedback::SuppressionReason::Bounce => "bounce",
                            crate::feedback::SuppressionReason::Complaint => "complaint",
                        }
                        .into(),
                    ),
                    message: format!(
                        "the recipient's last event was a {} ({})",
                        suppression.reason.as_str(),
                        suppression.since
                    ),
                }],
                suppression: Some(Box::new(suppression)),
                ..Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "recipient_suppressed",
                    "the recipient bounced permanently or complained, so SES would not deliver (or would hurt the account's reputation); nothing was sent. An admin can lift it with DELETE /v1/suppressions/{address}",
                )
            },
            ServiceError::Limited(exceeded) => exceeded.into(),
            ServiceError::Paced(paced) => LimitExceeded {
                limit: "ses_send_rate",
                retry_after: paced.retry_after,
            }
            .into(),
            ServiceError::StateUnavailable => Self {
                retry_after: Some(1),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "state_unavailable",
                    "the shared state store (Redis) cannot be reached and is required; nothing was sent; retry shortly",
                )
            },
            ServiceError::Overloaded(_) => Self {
                retry_after: Some(1),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "service_unavailable",
                    "too many sends in flight; retry shortly",
                )
            },
        }
    }
}
