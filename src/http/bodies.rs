//! The request bodies: each parsed into its one serde type — the type the OpenAPI
//! document and the JSON Schema are generated from — with its field rules written
//! for the `validator` crate. Every bad field is reported at once, with its path.

use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use validator::{Validate, ValidationError};

use crate::address::Recipient;
use crate::connector::{ConnectorConfigDocument, UsageType};
use crate::send::SendRequest;
use crate::validation::{problem, Typed};

/// The body Logto's HTTP Email connector posts.
#[derive(Debug, Serialize, Deserialize, JsonSchema, ToSchema, Validate)]
// `to` and `type` have serde defaults so that their absence is reported with the
// other problems; the schema still says they are required.
#[schemars(title = "SendRequest", extend("required" = ["to", "type"]))]
#[schema(as = SendRequest)]
pub struct SendBody {
    /// One bare address: no display name, no list, ASCII, at most 254 characters.
    #[serde(default, skip_serializing_if = "Typed::is_missing")]
    #[validate(custom(function = "recipient_rule"))]
    #[schemars(with = "String", required, length(min = 3, max = 254), email)]
    #[schema(value_type = String, required = true, min_length = 3, max_length = 254, format = Email, example = "user@example.com")]
    pub to: Typed<String>,
    /// What the code is for.
    #[serde(default, skip_serializing_if = "Typed::is_missing")]
    #[validate(custom(function = "usage_type_rule"))]
    #[schemars(with = "UsageType", required)]
    #[schema(value_type = UsageType, required = true)]
    pub r#type: Typed<String>,
    /// Template variables: `code`, `link`, `locale`, `uiLocales`, `application`, … (absent: `{}`).
    #[serde(default, skip_serializing_if = "Typed::is_missing")]
    #[validate(custom(function = "payload_rule"))]
    #[schemars(with = "Option<Map<String, Value>>")]
    #[schema(value_type = Option<Object>, example = json!({"code": "123456", "locale": "en"}))]
    pub payload: Typed<Map<String, Value>>,
    /// The end user's IP address, for the per-IP rate limit.
    #[serde(default, skip_serializing_if = "Typed::is_missing")]
    #[validate(custom(function = "ip_rule"))]
    #[schemars(with = "Option<String>")]
    #[schema(value_type = Option<String>, example = "203.0.113.7")]
    pub ip: Typed<String>,
}

/// A test send with an unsaved config.
#[derive(Debug, Serialize, Deserialize, ToSchema, Validate)]
#[schema(as = TestEmailRequest)]
pub struct TestEmailBody {
    /// The connector config to test; validated as `POST /v1/config/validate` does.
    #[serde(default, skip_serializing_if = "Typed::is_missing")]
    #[validate(custom(function = "config_rule"))]
    #[schema(value_type = ConnectorConfigDocument, required = true)]
    pub config: Typed<Value>,
    #[serde(default, skip_serializing_if = "Typed::is_missing")]
    #[validate(custom(function = "recipient_rule"))]
    #[schema(value_type = String, required = true, min_length = 3, max_length = 254, format = Email, example = "admin@example.com")]
    pub to: Typed<String>,
    /// Default `Generic`.
    #[serde(default, skip_serializing_if = "Typed::is_missing")]
    #[validate(custom(function = "optional_usage_type_rule"))]
    #[schema(value_type = Option<UsageType>)]
    pub r#type: Typed<String>,
    /// Default `{"code": "000000"}`.
    #[serde(default, skip_serializing_if = "Typed::is_missing")]
    #[validate(custom(function = "payload_rule"))]
    #[schema(value_type = Option<Object>)]
    pub payload: Typed<Map<String, Value>>,
}

/// What to render.
#[derive(Debug, Serialize, Deserialize, ToSchema, Validate)]
#[schema(as = PreviewRequest)]
pub struct PreviewBody {
    #[serde(default, skip_serializing_if = "Typed::is_missing")]
    #[validate(custom(function = "usage_type_rule"))]
    #[schema(value_type = UsageType, required = true)]
    pub r#type: Typed<String>,
    #[serde(default, skip_serializing_if = "Typed::is_missing")]
    #[validate(custom(function = "payload_rule"))]
    #[schema(value_type = Option<Object>)]
    pub payload: Typed<Map<String, Value>>,
    /// A config to render with instead of the active one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<ConnectorConfigDocument>)]
    pub config: Option<Value>,
}

fn recipient_rule(to: &Typed<String>) -> Result<(), ValidationError> {
    let to = to.required("a string", "\"to\" is required: the recipient's address")?;
    Recipient::parse(to)
        .map(drop)
        .map_err(|e| problem("invalid_format", format!("recipient {e}")))
}

fn usage_type_rule(name: &Typed<String>) -> Result<(), ValidationError> {
    if let Typed::Valid(name) = name {
        return known_usage_type(name);
    }
    let name = name.required(
        "a string",
        &format!("\"type\" is required: one of {}", UsageType::names()),
    )?;
    known_usage_type(name)
}

fn optional_usage_type_rule(name: &Typed<String>) -> Result<(), ValidationError> {
    name.optional("a string")?
        .map_or(Ok(()), |n| known_usage_type(n))
}

fn known_usage_type(name: &str) -> Result<(), ValidationError> {
    match UsageType::parse(name) {
        Some(_) => Ok(()),
        None => Err(problem(
            "invalid_format",
            format!(
                "\"{name}\" is not a usage type; expected one of {}",
                UsageType::names()
            ),
        )),
    }
}

fn payload_rule(payload: &Typed<Map<String, Value>>) -> Result<(), ValidationError> {
    payload
        .optional("an object such as {\"code\": \"123456\"}")
        .map(drop)
}

fn config_rule(config: &Typed<Value>) -> Result<(), ValidationError> {
    config
        .required(
            "a connector config",
            "\"config\" is required: the connector config to test",
        )
        .map(drop)
}

fn ip_rule(ip: &Typed<String>) -> Result<(), ValidationError> {
    match ip.optional("a string")? {
        None => Ok(()),
        Some(ip) => parse_ip(ip)
            .map(drop)
            .ok_or_else(|| problem("invalid_format", "must be an IPv4 or IPv6 address")),
    }
}

fn parse_ip(ip: &str) -> Option<IpAddr> {
    ip.trim().parse().ok()
}

/// The usage type of a body that passed its rules.
fn checked_type(name: &Typed<String>) -> Option<UsageType> {
    name.valid().and_then(|t| UsageType::parse(t))
}

impl SendBody {
    /// The send this body asks for; `None` only if it did not pass its rules.
    pub fn into_request(self) -> Option<SendRequest> {
        Some(SendRequest {
            to: Recipient::parse(self.to.valid()?).ok()?,
            usage_type: checked_type(&self.r#type)?,
            payload: self.payload.into_valid().unwrap_or_default(),
            ip: self.ip.valid().and_then(|ip| parse_ip(ip)),
            sender: None,
        })
    }
}

impl TestEmailBody {
    /// The test send: `Generic` with code `000000` unless the body says otherwise;
    /// `None` only if it did not pass its rules.
    pub fn into_request(self) -> Option<(Value, SendRequest)> {
        let default_payload = || {
            let mut payload = Map::new();
            payload.insert("code".into(), Value::String("000000".into()));
            payload
        };
        let request = SendRequest {
            to: Recipient::parse(self.to.valid()?).ok()?,
            usage_type: checked_type(&self.r#type).unwrap_or(UsageType::Generic),
            payload: self.payload.into_valid().unwrap_or_else(default_payload),
            ip: None,
            sender: None,
        };
        Some((self.config.into_valid()?, request))
    }
}

impl PreviewBody {
    /// What to render, and with which config (`None`: the active one).
    pub fn into_parts(self) -> Option<(UsageType, Map<String, Value>, Option<Value>)> {
        Some((
            checked_type(&self.r#type)?,
            self.payload.into_valid().unwrap_or_default(),
            self.config.filter(|c| !c.is_null()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::problems;
    use serde_json::json;

    fn send(body: Value) -> Result<SendRequest, Vec<String>> {
        let parsed: SendBody = serde_json::from_value(body).unwrap();
        match parsed.validate() {
            Ok(()) => Ok(parsed.into_request().unwrap()),
            Err(errors) => Err(problems(&errors).into_iter().map(|p| p.path).collect()),
        }
    }

    #[test]
    fn logtos_http_email_body_is_accepted() {
        let request = send(json!({"to": "user@example.com", "type": "SignIn", "payload": {"code": "123456", "locale": "fr"}, "ip": "203.0.113.7"})).unwrap();
        assert_eq!(request.to.as_str(), "user@example.com");
        assert_eq!(request.usage_type, UsageType::SignIn);
        assert_eq!(request.payload["code"], "123456");
        assert_eq!(request.ip.unwrap().to_string(), "203.0.113.7");
    }

    #[test]
    fn bad_fields_are_all_reported_with_their_paths() {
        let cases: Vec<(Value, &[&str])> = vec![
            (json!({}), &["to", "type"]),
            (json!({"to": null, "type": null}), &["to", "type"]),
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
                &["ip", "payload", "to", "type"],
            ),
            (
                json!({"to": "u@example.com", "type": "SignIn", "payload": "123456"}),
                &["payload"],
            ),
        ];
        for (body, paths) in cases {
            assert_eq!(send(body.clone()).unwrap_err(), paths, "{body}");
        }
    }

    #[test]
    fn test_sends_default_to_generic_with_code_000000() {
        let body: TestEmailBody =
            serde_json::from_value(json!({"to": "u@example.com", "config": {}})).unwrap();
        body.validate().unwrap();
        let (_, request) = body.into_request().unwrap();
        assert_eq!(request.usage_type, UsageType::Generic);
        assert_eq!(request.payload["code"], "000000");
    }
}
