//! `POST /v1/messages` (send a code) and `POST /v1/test-email` (send with an unsaved config).

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use serde_json::{Map, Value};

use super::error::{ApiError, Detail};
use super::extract::JsonBody;
use super::AppState;
use crate::address::Recipient;
use crate::connector::{ConnectorConfig, Issue, UsageType};
use crate::service::{SendRequest, Sent};
use crate::template::TemplateChoice;

/// The answer to a send.
#[derive(Debug, Serialize)]
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

pub async fn send(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<SendResponse>, ApiError> {
    let request = parse_send(&body, None)?;
    let sent = state.service.send(&request).await?;
    Ok(Json(sent.into()))
}

pub async fn test_email(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<SendResponse>, ApiError> {
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
    let sent = state.service.send_with(&config, &request).await?;
    Ok(Json(SendResponse {
        warnings: Some(config.warnings.clone()),
        ..sent.into()
    }))
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
                format!("expected an object, got {}", kind(body)),
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
                format!("must be a string, got {}", kind(other)),
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
                format!("must be a string, got {}", kind(other)),
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
                    kind(other)
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
                format!("must be a string, got {}", kind(other)),
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

pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
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
