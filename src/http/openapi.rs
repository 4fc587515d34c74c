//! The API contract: request and response shapes, and the OpenAPI 3.1 document
//! generated from them and from the handlers' annotations.

use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::bodies::{PreviewBody, SendBody, TestEmailBody};
use super::error::{ApiError, Detail, SesReason};
use crate::connector::{
    ConnectorConfigDocument, ContentTypeName, Issue, IssueCode, TemplateDocument, UsageType,
    ValidationReport,
};
use crate::template::TemplateChoice;
use crate::transport::outbox::OutboxEmail;

/// Every error answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub error: ApiError,
    pub request_id: String,
}

/// Liveness and readiness answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    /// `ok` or `ready`.
    pub status: String,
    /// Templates in the active config (readiness only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub templates: Option<usize>,
}

/// The optional `Idempotency-Key` header of the sending routes.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // documents a header; the handlers read it from the header map
pub struct IdempotencyKey {
    /// Repeat-safe key (1-255 visible ASCII characters): a repeat with the same body gets the same answer without a second send
    #[param(
        rename = "Idempotency-Key",
        min_length = 1,
        max_length = 255,
        pattern = "^[!-~]{1,255}$"
    )]
    idempotency_key: Option<String>,
}

/// The errors every JSON route with a token can answer.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // documentation only: the handlers answer with `ApiError`
pub enum RequestErrors {
    /// Malformed JSON or invalid fields
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// Missing or wrong token
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// A send token on an admin route
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// Body too large
    #[response(status = 413)]
    PayloadTooLarge(ErrorBody),
    /// Not JSON
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
    /// Any other error, in the same shape
    #[response(status = "default")]
    Other(ErrorBody),
}

/// The further errors of a send.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // documentation only: the handlers answer with `ApiError`
pub enum SendErrors {
    /// No template, idempotency key reused, or invalid config
    #[response(status = 422)]
    Unprocessable(ErrorBody),
    /// A rate limit or SES throttling; see Retry-After
    #[response(status = 429)]
    TooManyRequests(ErrorBody),
    /// SES rejected the message or is unreachable
    #[response(status = 502)]
    BadGateway(ErrorBody),
    /// SES quota/paused, too many sends in flight, or shared state (Redis) required and unreachable (`state_unavailable`)
    #[response(status = 503)]
    Unavailable(ErrorBody),
    /// SES did not answer in time
    #[response(status = 504)]
    Timeout(ErrorBody),
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ses-connector",
        description = "Send verification-code emails through Amazon SES v2; a drop-in for Logto's AWS SES connector. Send routes take a send or admin token, admin routes an admin token.",
        license(name = "MIT")
    ),
    paths(
        super::messages::send,
        super::messages::test_email,
        super::deliveries::message,
        super::deliveries::suppression,
        super::deliveries::lift,
        super::admin::validate,
        super::admin::preview,
        super::admin::config,
        super::admin::reload,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics,
        super::ops::openapi,
        super::outbox::list_json,
        super::outbox::page,
        super::outbox::email_page,
    ),
    components(schemas(
        SendBody, TestEmailBody, PreviewBody, ErrorBody, ApiError, Detail, SesReason, Status,
        ConnectorConfigDocument, TemplateDocument, ContentTypeName, UsageType, TemplateChoice,
        ValidationReport, Issue, IssueCode, OutboxEmail,
        super::messages::SendResponse, super::admin::PreviewResponse, super::admin::ReloadResponse,
        super::admin::ValidateResponse, crate::doctor::AccountSummary,
        crate::feedback::MessageRecord, crate::feedback::Event, crate::feedback::Status,
        crate::feedback::Suppression, crate::feedback::SuppressionReason,
        super::deliveries::SuppressionStatus,
    )),
    modifiers(&BearerAuth),
    tags((name = "send", description = "Send codes"), (name = "admin", description = "Configs, previews, test sends"), (name = "operations", description = "Health, readiness, metrics, this document"))
)]
pub struct ApiDoc;

/// The OpenAPI document as served: the committed file, which a test keeps equal to
/// what [`openapi_json`] generates (so the server carries no generator).
pub const DOCUMENT: &str = include_str!("../../schemas/openapi.json");

/// The OpenAPI document the code describes, as committed.
pub fn openapi_json() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.to_pretty_json().unwrap_or_default() + "\n"
}

/// JSON Schema of the connector config.
pub fn config_schema_json() -> String {
    pretty(schemars::schema_for!(ConnectorConfigDocument))
}

/// JSON Schema of the send body.
pub fn send_schema_json() -> String {
    pretty(schemars::schema_for!(SendBody))
}

fn pretty(schema: schemars::Schema) -> String {
    serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n"
}
