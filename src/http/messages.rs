//! `POST /v1/messages` (send a code) and `POST /v1/test-email` (send with an unsaved config).

use std::future::Future;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::bodies::{SendBody, TestEmailBody};
use super::error::{ApiError, Detail};
use super::extract::{Caller, ValidatedJson, IDEMPOTENCY_KEY};
use super::openapi::{IdempotencyKey, RequestErrors, SendErrors};
use super::{AppState, Stored};
use crate::connector::{ConnectorConfig, Issue};
use crate::send::{Sent, ServiceError};
use crate::stores::idempotency::{Completed, MAX_KEY_LEN};
use crate::template::TemplateChoice;

/// The answer to a send.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendResponse {
    pub message_id: String,
    pub template: TemplateChoice,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<Issue>>,
}

impl From<Sent> for SendResponse {
    fn from(sent: Sent) -> Self {
        Self {
            message_id: sent.message_id,
            template: sent.template,
            warnings: (!sent.warnings.is_empty()).then_some(sent.warnings),
        }
    }
}

/// Send a verification email (the body Logto's HTTP Email connector posts).
#[utoipa::path(post, path = "/v1/messages", tag = "send", request_body = SendBody, params(IdempotencyKey),
    responses(
        (status = 200, description = "Sent", body = SendResponse),
        SendErrors,
        RequestErrors,
    ),
    security(("bearer" = [])))]
pub async fn send(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    ValidatedJson { body, json }: ValidatedJson<SendBody>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let mut request = body.into_request().ok_or_else(unchecked)?;
    // The delivery record keeps which token sent, for `GET /v1/messages/{id}`.
    request.sender = caller.token_id;
    let work = {
        let state = state.clone();
        async move {
            let sent = state.service.send(request).await?;
            Ok(json_bytes(SendResponse::from(sent)))
        }
    };
    once(&state, &caller, "messages", keyed(key, json)?, work).await
}

/// Send a test email with an unsaved config (Generic, code 000000 by default).
#[utoipa::path(post, path = "/v1/test-email", tag = "admin", request_body = TestEmailBody, params(IdempotencyKey),
    responses(
        (status = 200, description = "Sent; with the config's warnings", body = SendResponse),
        SendErrors,
        RequestErrors,
    ),
    security(("bearer" = [])))]
pub async fn test_email(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    ValidatedJson { body, json }: ValidatedJson<TestEmailBody>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let (config, request) = body.into_request().ok_or_else(unchecked)?;
    let config =
        ConnectorConfig::load(config).map_err(|report| ApiError::invalid_config(&report))?;
    let work = {
        let state = state.clone();
        async move {
            // The doctor's warnings for this config (sandbox, account under review, a
            // check that got no answer) come back with the test send.
            // Run beside the send, so the doctor adds no time to the request.
            let doctor = async {
                match state.service.mailer().probe() {
                    Some(probe) => {
                        crate::doctor::diagnose(&config, probe, TEST_DOCTOR_TIMEOUT)
                            .await
                            .report
                            .warnings
                    }
                    None => config.warnings.clone(),
                }
            };
            let (warnings, sent) = tokio::join!(doctor, state.service.send_with(&config, request));
            let sent = sent?;
            Ok(json_bytes(SendResponse {
                warnings: Some(warnings),
                ..sent.into()
            }))
        }
    };
    once(&state, &caller, "test-email", keyed(key, json)?, work).await
}

/// How long the doctor may take before a test send.
const TEST_DOCTOR_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A body that passed its rules always converts; this is the error if it did not.
pub(super) fn unchecked() -> ApiError {
    ApiError::internal("a request body passed its rules but could not be converted")
}

/// Serialised once: the same bytes answer the request and any idempotent repeat.
fn json_bytes(response: SendResponse) -> Bytes {
    // Room for the usual answer (id, template, no warnings) without growing.
    let mut body = Vec::with_capacity(192);
    match serde_json::to_writer(&mut body, &response) {
        Ok(()) => Bytes::from(body),
        Err(_) => Bytes::new(),
    }
}

fn respond(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The `Idempotency-Key` header, if any: at most 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let invalid = |message: String| {
        ApiError::bad_request(
            "the Idempotency-Key header is invalid",
            vec![Detail::new("Idempotency-Key", message)],
        )
    };
    let key = value
        .to_str()
        .map_err(|_| invalid("must be visible ASCII characters".into()))?;
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(invalid(format!(
            "must be 1 to {MAX_KEY_LEN} characters, got {}",
            key.len()
        )));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "must be visible ASCII characters without spaces".into(),
        ));
    }
    Ok(Some(key.to_owned()))
}

/// The idempotency key with the body it fingerprints; the extractor keeps the JSON
/// whenever the header is there.
fn keyed(key: Option<String>, json: Option<Value>) -> Result<Option<(String, Value)>, ApiError> {
    match (key, json) {
        (Some(key), Some(json)) => Ok(Some((key, json))),
        (Some(_), None) => Err(unchecked()),
        (None, _) => Ok(None),
    }
}

/// Run `work`, once per idempotency key when there is one. Which answers a record
/// keeps is the service's decision ([`ServiceError::is_definite`]).
async fn once(
    state: &AppState,
    caller: &Caller,
    route: &str,
    keyed: Option<(String, Value)>,
    work: impl Future<Output = Result<Bytes, ServiceError>> + Send + 'static,
) -> Result<Response, ApiError> {
    let Some((key, body)) = keyed else {
        return work.await.map(respond).map_err(ApiError::from);
    };
    let owner = caller
        .token_id
        .map(hex::encode)
        .unwrap_or_else(|| "open".to_owned());
    let scoped = format!("{owner}:{route}:{key}");
    // serde_json keeps object keys sorted, so equal JSON bodies hash alike.
    let fingerprint: [u8; 32] =
        Sha256::digest(serde_json::to_vec(&body).unwrap_or_default()).into();
    let work = Box::pin(async move {
        let value = work.await;
        let keep = match &value {
            Ok(_) => true,
            Err(error) => error.is_definite(),
        };
        Completed {
            value: Stored(value.map_err(ApiError::from)),
            keep,
        }
    });
    let answer = state.idempotency.execute(scoped, fingerprint, work).await?;
    let mut response = match answer.value.0 {
        Ok(body) => respond(body),
        Err(error) => error.into_response(),
    };
    if answer.replayed {
        metrics::counter!(crate::telemetry::names::IDEMPOTENT_REPLAYS).increment(1);
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}
