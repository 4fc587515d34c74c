//! Admin routes: validate a config, preview an email, show and reload the active config.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::Json;
use serde::Serialize;
use serde_json::Value;

use super::bodies::PreviewBody;
use super::error::{ApiError, Detail};
use super::extract::{JsonBody, ValidatedJson};
use super::openapi::{ErrorBody, RequestErrors};
use super::AppState;
use crate::app::reload::{ReloadError, Trigger};
use crate::connector::ConnectorConfigDocument;
use crate::connector::{self, ConnectorConfig, Issue, ValidationReport};
use crate::doctor::AccountSummary;
use crate::send::EmailService;
use crate::template::TemplateChoice;

/// `POST /v1/config/validate` options.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ValidateQuery {
    /// Also check the config against the SES account with its credentials (the doctor).
    #[serde(default)]
    pub online: bool,
}

/// The validation report, with the account as the online doctor saw it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ValidateResponse {
    #[serde(flatten)]
    pub report: ValidationReport,
    /// With `online=true`: the SES account's state and quota, when it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountSummary>,
}

/// How long the online checks may take in all.
const ONLINE_TIMEOUT: Duration = Duration::from_secs(10);

/// Validate a config: every problem at once, valid or not; with `online=true` also
/// what SES says of the account (credentials, sandbox, sending paused, identities,
/// configuration set).
#[utoipa::path(post, path = "/v1/config/validate", tag = "admin", params(ValidateQuery),
    request_body(content = Object, description = "A connector config (see the ConnectorConfig schema); any JSON is reported on"),
    responses(
        (status = 200, description = "The validation report", body = ValidateResponse),
        RequestErrors,
    ),
    security(("bearer" = [])))]
pub async fn validate(
    State(state): State<AppState>,
    Query(query): Query<ValidateQuery>,
    JsonBody(body): JsonBody,
) -> Json<ValidateResponse> {
    let offline = |report| {
        Json(ValidateResponse {
            report,
            account: None,
        })
    };
    if !query.online {
        return offline(connector::validate(&body));
    }
    let config = match ConnectorConfig::load(body) {
        Ok(config) => config,
        Err(report) => return offline(report),
    };
    let Some(probe) = state.service.mailer().probe() else {
        let mut report = connector::validate_loaded(&config);
        report.warnings.push(Issue {
            path: String::new(),
            code: connector::IssueCode::CheckFailed,
            message:
                "this service sends to its outbox, not to SES: nothing could be checked online"
                    .into(),
        });
        return offline(report);
    };
    let diagnosis = crate::doctor::diagnose(&config, probe, ONLINE_TIMEOUT).await;
    Json(ValidateResponse {
        report: diagnosis.report,
        account: diagnosis.account,
    })
}

/// What `POST /v1/preview` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreviewResponse {
    pub subject: String,
    pub html: Option<String>,
    pub text: String,
    pub from: Option<String>,
    pub reply_to: Option<String>,
    pub template: TemplateChoice,
}

/// Render what a send would send, without sending.
#[utoipa::path(post, path = "/v1/preview", tag = "admin", request_body = PreviewBody,
    responses(
        (status = 200, description = "The rendered email", body = PreviewResponse),
        (status = 422, description = "Invalid config or no template", body = ErrorBody),
        RequestErrors,
    ),
    security(("bearer" = [])))]
pub async fn preview(
    State(state): State<AppState>,
    ValidatedJson { body, .. }: ValidatedJson<PreviewBody>,
) -> Result<Json<PreviewResponse>, ApiError> {
    let (usage_type, payload, config) = body.into_parts().ok_or_else(super::messages::unchecked)?;
    let config = match config {
        None => state.service.config(),
        Some(value) => std::sync::Arc::new(
            ConnectorConfig::load(value).map_err(|r| ApiError::invalid_config(&r))?,
        ),
    };
    let preview = EmailService::preview(&config, usage_type, &payload)?;
    Ok(Json(PreviewResponse {
        subject: preview.email.subject,
        html: preview.email.html,
        text: preview.email.text,
        from: preview.from.map(|m| m.as_str().to_owned()),
        reply_to: preview.reply_to.map(|m| m.as_str().to_owned()),
        template: preview.template,
    }))
}

/// The active config, secrets masked.
#[utoipa::path(get, path = "/v1/config", tag = "admin",
    responses(
        (status = 200, description = "The active config with accessKeySecret as \"********\"", body = ConnectorConfigDocument),
        RequestErrors,
    ),
    security(("bearer" = [])))]
pub async fn config(State(state): State<AppState>) -> Json<Value> {
    Json(state.service.config().redacted())
}

/// What a successful reload answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReloadResponse {
    pub reloaded: bool,
    pub templates: usize,
    pub warnings: Vec<Issue>,
    /// What takes effect only after a restart (the feedback poller's credentials
    /// and region).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_needed: Option<String>,
}

/// Re-read the config source; an invalid one is refused and the old one keeps serving.
#[utoipa::path(post, path = "/v1/config/reload", tag = "admin",
    responses(
        (status = 200, description = "Reloaded", body = ReloadResponse),
        (status = 422, description = "The new config is invalid or unreadable", body = ErrorBody),
        RequestErrors,
    ),
    security(("bearer" = [])))]
pub async fn reload(State(state): State<AppState>) -> Result<Json<ReloadResponse>, ApiError> {
    let reloaded = state
        .loader
        .reload(&state.service, Trigger::Api)
        .await
        .map_err(|e| match e {
            ReloadError::Invalid(report) => ApiError::invalid_config(&report),
            ReloadError::Unreadable(message) => ApiError {
                details: vec![Detail::new("", message)],
                ..ApiError::new(
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_config",
                    "the config source cannot be read; the active config is unchanged",
                )
            },
        })?;
    Ok(Json(ReloadResponse {
        reloaded: true,
        templates: reloaded.config.templates.len(),
        warnings: reloaded.config.warnings.clone(),
        restart_needed: reloaded.restart_needed,
    }))
}
