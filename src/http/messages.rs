//! `POST /v1/messages` (send a code) and `POST /v1/test-email` (send with an unsaved config).

use std::future::Future;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::error::{ApiError, Detail};
use super::extract::{Caller, JsonBody};
use super::openapi::{IdempotencyKey, RequestErrors, SendBody, SendErrors, TestEmailBody};
use super::{AppState, Stored};
use crate::address::Recipient;
use crate::connector::{type_name, ConnectorConfig, Issue, UsageType};
use crate::idempotency::{Completed, MAX_KEY_LEN};
use crate::service::{SendRequest, Sent};
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
            warnings: None,
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
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let request = parse_send(&body, None)?;
    let work = {
        let state = state.clone();
        async move {
            state.limits.admit(&request.to, request.ip)?;
            let sent = state.service.send(&request).await?;
            Ok(json(SendResponse::from(sent)))
        }
    };
    once(&state, &caller, "messages", key, &body, work).await
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
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let defaults = Defaults {
        usage_type: UsageType::Generic,
        payload: serde_json::json!({"code": "000000"}),
    };
    let request = parse_send(&body, Some(&defaults))?;
    let config_value = body.get("config").cloned().unwrap_or(Value::Null);
    if config_value.is_null() {
        return Err(ApiError::bad_request(
            "the body needs the connector config to test",
            vec![Detail::new("config", "\"config\" is required")],
        ));
    }
    let config =
        ConnectorConfig::load(config_value).map_err(|report| ApiError::invalid_config(&report))?;
    let work = {
        let state = state.clone();
        async move {
            let sent = state.service.send_with(&config, &request).await?;
            Ok(json(SendResponse {
                warnings: Some(config.warnings.clone()),
                ..sent.into()
            }))
        }
    };
    once(&state, &caller, "test-email", key, &body, work).await
}

/// Serialised once: the same bytes answer the request and any idempotent repeat.
fn json(response: SendResponse) -> Bytes {
    Bytes::from(serde_json::to_vec(&response).unwrap_or_default())
}

fn respond(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The `Idempotency-Key` header, if any: at most 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
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

/// Run `work`, once per idempotency key when there is one.
async fn once(
    state: &AppState,
    caller: &Caller,
    route: &str,
    key: Option<String>,
    body: &Value,
    work: impl Future<Output = Stored> + Send + 'static,
) -> Result<Response, ApiError> {
    let Some(key) = key else {
        return work.await.map(respond);
    };
    let owner = caller
        .token_id
        .map(hex)
        .unwrap_or_else(|| "open".to_owned());
    let scoped = format!("{owner}:{route}:{key}");
    // serde_json keeps object keys sorted, so equal JSON bodies hash alike.
    let fingerprint: [u8; 32] = Sha256::digest(serde_json::to_vec(body).unwrap_or_default()).into();
    let work = Box::pin(async move {
        let value = work.await;
        let keep = match &value {
            Ok(_) => true,
            // A definite answer is kept; a transient one (throttled, overloaded,
            // unreachable, timed out) is not, so a retry with the key tries again.
            Err(e) => {
                e.status.is_client_error() && e.status.as_u16() != 429
                    || e.code == "invalid_response"
            }
        };
        Completed { value, keep }
    });
    let answer = state.idempotency.execute(scoped, fingerprint, work).await?;
    let mut response = match answer.value {
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

fn hex(bytes: [u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a test send uses when the body leaves a field out.
pub struct Defaults {
    pub usage_type: UsageType,
    pub payload: Value,
}

/// Read `{to, type, payload, ip}`, reporting every bad field at once.
pub fn parse_send(body: &Value, defaults: Option<&Defaults>) -> Result<SendRequest, ApiError> {
    let Some(object) = body.as_object() else {
        return Err(ApiError::bad_request(
            "the body must be a JSON object",
            vec![Detail::new(
                "",
                format!("expected an object, got {}", type_name(body)),
            )],
        ));
    };
    let mut details = Vec::new();
    let to = match object.get("to") {
        Some(Value::String(to)) => match Recipient::parse(to) {
            Ok(to) => Some(to),
            Err(e) => {
                details.push(Detail::new("to", format!("recipient {e}")));
                None
            }
        },
        None | Some(Value::Null) => {
            details.push(Detail::new(
                "to",
                "\"to\" is required: the recipient's address",
            ));
            None
        }
        Some(other) => {
            details.push(Detail::new(
                "to",
                format!("must be a string, got {}", type_name(other)),
            ));
            None
        }
    };
    let usage_type = match (object.get("type"), defaults) {
        (None | Some(Value::Null), Some(d)) => Some(d.usage_type),
        (Some(Value::String(t)), _) => match UsageType::parse(t) {
            Some(t) => Some(t),
            None => {
                details.push(Detail::new(
                    "type",
                    format!(
                        "\"{t}\" is not a usage type; expected one of {}",
                        UsageType::names()
                    ),
                ));
                None
            }
        },
        (None | Some(Value::Null), None) => {
            details.push(Detail::new(
                "type",
                format!("\"type\" is required: one of {}", UsageType::names()),
            ));
            None
        }
        (Some(other), _) => {
            details.push(Detail::new(
                "type",
                format!("must be a string, got {}", type_name(other)),
            ));
            None
        }
    };
    let payload = match (object.get("payload"), defaults) {
        (None | Some(Value::Null), Some(d)) => d.payload.as_object().cloned(),
        (None | Some(Value::Null), None) => Some(Map::new()),
        (Some(Value::Object(payload)), _) => Some(payload.clone()),
        (Some(other), _) => {
            details.push(Detail::new(
                "payload",
                format!(
                    "must be an object such as {{\"code\": \"123456\"}}, got {}",
                    type_name(other)
                ),
            ));
            None
        }
    };
    let ip = match object.get("ip") {
        None | Some(Value::Null) => None,
        Some(Value::String(ip)) => match ip.trim().parse::<std::net::IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                details.push(Detail::new("ip", "must be an IPv4 or IPv6 address"));
                None
            }
        },
        Some(other) => {
            details.push(Detail::new(
                "ip",
                format!("must be a string, got {}", type_name(other)),
            ));
            None
        }
    };
    match (to, usage_type, payload) {
        (Some(to), Some(usage_type), Some(payload)) if details.is_empty() => Ok(SendRequest {
            to,
            usage_type,
            payload,
            ip,
        }),
        _ => Err(ApiError::bad_request(
            "the request has invalid fields; see details",
            details,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn logtos_http_email_body_is_accepted() {
        let body = json!({"to": "user@example.com", "type": "SignIn", "payload": {"code": "123456", "locale": "fr"}, "ip": "203.0.113.7"});
        let request = parse_send(&body, None).unwrap();
        assert_eq!(request.to.as_str(), "user@example.com");
        assert_eq!(request.usage_type, UsageType::SignIn);
        assert_eq!(request.payload["code"], "123456");
        assert_eq!(request.ip.unwrap().to_string(), "203.0.113.7");
    }

    #[test]
    fn bad_fields_are_all_reported_with_their_paths() {
        let cases: Vec<(Value, &[&str])> = vec![
            (json!({}), &["to", "type"]),
            (
                json!({"to": "User <u@example.com>", "type": "SignIn"}),
                &["to"],
            ),
            (
                json!({"to": "a@example.com,b@example.com", "type": "SignIn"}),
                &["to"],
            ),
            (json!({"to": "u@example.com", "type": "Login"}), &["type"]),
            (
                json!({"to": 5, "type": 5, "payload": [], "ip": "nope"}),
                &["to", "type", "payload", "ip"],
            ),
            (
                json!({"to": "u@example.com", "type": "SignIn", "payload": "123456"}),
                &["payload"],
            ),
        ];
        for (body, paths) in cases {
            let err = parse_send(&body, None).unwrap_err();
            assert_eq!(err.status, 400);
            let got: Vec<&str> = err.details.iter().map(|d| d.path.as_str()).collect();
            assert_eq!(got, paths, "{body}");
        }
    }

    #[test]
    fn test_sends_default_to_generic_with_code_000000() {
        let defaults = Defaults {
            usage_type: UsageType::Generic,
            payload: json!({"code": "000000"}),
        };
        let request = parse_send(&json!({"to": "u@example.com"}), Some(&defaults)).unwrap();
        assert_eq!(request.usage_type, UsageType::Generic);
        assert_eq!(request.payload["code"], "000000");
    }
}
