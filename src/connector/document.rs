//! The config's one JSON shape: the serde type a config is parsed into, the type the
//! published JSON Schema and OpenAPI document are generated from, and its field
//! rules for the `validator` crate. Rules that join several fields (both keys or
//! neither, duplicate templates, the required usage types) and the warnings live in
//! `validate.rs`, which reads this type.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use validator::{Validate, ValidationError};

use super::{ConfigurationSetName, IdentityArn, Locale, Region};
use crate::address::Mailbox;
use crate::validation::{problem, Typed};

/// A connector config, as Logto's AWS SES connector takes it (camelCase). Unknown
/// fields are ignored with a warning.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, ToSchema, Validate)]
#[serde(rename_all = "camelCase")]
// `region` and `templates` have serde defaults so that their absence is reported
// with every other problem; the schema still says they are required.
#[schemars(title = "ConnectorConfig", extend("required" = ["region", "templates"]))]
#[schema(as = ConnectorConfig)]
pub struct ConnectorConfigDocument {
    /// AWS access key id. Give both keys or neither (neither: the AWS default
    /// credential chain).
    #[serde(default, skip_serializing_if = "Typed::is_missing")]
    #[validate(custom(function = "access_key"))]
    #[schemars(with = "Option<String>")]
    #[schema(value_type = Option<String>)]
    pub access_key_id: Typed<String>,
    /// AWS secret access key; never shown back.
    #[serde(default, skip_serializing_if = "Typed::is_missing")]
    #[validate(custom(function = "access_key"))]
    #[schemars(with = "Option<String>")]
    #[schema(value_type = Option<String>)]
    pub access_key_secret: Typed<String>,
    /// AWS region name, e.g. `us-east-1`.
    #[serde(default, skip_serializing_if = "Typed::is_missing")]
    #[validate(custom(function = "region"))]
    #[schemars(with = "String", regex(pattern = r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$"))]
    #[schema(value_type = String, required = true, pattern = r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$", example = "us-east-1")]
    pub region: Typed<String>,
    /// From mailbox: `noreply@example.com` or `Name <noreply@example.com>`.
    #[serde(default, skip_serializing_if = "Typed::is_missing")]
    #[validate(custom(function = "mailbox"))]
    #[schemars(with = "Option<String>")]
    #[schema(value_type = Option<String>)]
    pub email_address: Typed<String>,
    /// `arn:aws:ses:<region>:<account>:identity/<name>` of the sending identity.
    #[serde(default, skip_serializing_if = "Typed::is_missing")]
    #[validate(custom(function = "identity_arn"))]
    #[schemars(with = "Option<String>")]
    #[schema(value_type = Option<String>)]
    pub email_address_identity_arn: Typed<String>,
    /// Where bounces and complaints go.
    #[serde(default, skip_serializing_if = "Typed::is_missing")]
    #[validate(custom(function = "mailbox"))]
    #[schemars(with = "Option<String>")]
    #[schema(value_type = Option<String>)]
    pub feedback_forwarding_email_address: Typed<String>,
    /// Identity ARN for the feedback-forwarding address.
    #[serde(default, skip_serializing_if = "Typed::is_missing")]
    #[validate(custom(function = "identity_arn"))]
    #[schemars(with = "Option<String>")]
    #[schema(value_type = Option<String>)]
    pub feedback_forwarding_email_address_identity_arn: Typed<String>,
    /// SES configuration set: 1–64 of letters, digits, `_` and `-` (or empty).
    #[serde(default, skip_serializing_if = "Typed::is_missing")]
    #[validate(custom(function = "configuration_set"))]
    #[schemars(with = "Option<String>", regex(pattern = r"^[A-Za-z0-9_-]{0,64}$"))]
    #[schema(value_type = Option<String>, pattern = r"^[A-Za-z0-9_-]{0,64}$")]
    pub configuration_set_name: Typed<String>,
    /// Reply-To mailbox when a template has none (extension).
    #[serde(default, skip_serializing_if = "Typed::is_missing")]
    #[validate(custom(function = "mailbox"))]
    #[schemars(with = "Option<String>")]
    #[schema(value_type = Option<String>)]
    pub reply_to: Typed<String>,
    /// Must include Register, SignIn, ForgotPassword and Generic.
    #[serde(default, skip_serializing_if = "Typed::is_missing")]
    #[validate(custom(function = "templates"), nested)]
    #[schemars(with = "Vec<TemplateDocument>")]
    #[schema(value_type = Vec<TemplateDocument>, required = true)]
    pub templates: Typed<Vec<Typed<TemplateDocument>>>,
}

/// One email template.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, ToSchema, Validate)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "Template", extend("required" = ["usageType", "subject", "content"]))]
#[schema(as = Template)]
pub struct TemplateDocument {
    /// One of Logto's nine usage types; another string is accepted with a warning.
    #[serde(default, skip_serializing_if = "Typed::is_missing")]
    #[validate(custom(function = "usage_type"))]
    #[schemars(with = "String")]
    #[schema(value_type = String, required = true, example = "SignIn")]
    pub usage_type: Typed<String>,
    /// Handlebars template for the subject; never HTML-escaped.
    #[serde(default, skip_serializing_if = "Typed::is_missing")]
    #[validate(custom(function = "subject"))]
    #[schemars(with = "String", length(min = 1))]
    #[schema(value_type = String, required = true, min_length = 1, example = "{{code}} is your verification code")]
    pub subject: Typed<String>,
    /// Handlebars template for the body; HTML unless `contentType` is `text/plain`.
    #[serde(default, skip_serializing_if = "Typed::is_missing")]
    #[validate(custom(function = "content"))]
    #[schemars(with = "String", length(min = 1))]
    #[schema(value_type = String, required = true, min_length = 1)]
    pub content: Typed<String>,
    /// `text/html` (default) or `text/plain` (extension).
    #[serde(default, skip_serializing_if = "Typed::is_missing")]
    #[validate(custom(function = "content_type"))]
    #[schemars(with = "Option<ContentTypeName>")]
    #[schema(value_type = Option<ContentTypeName>)]
    pub content_type: Typed<String>,
    /// BCP 47 language tag; absent means any locale (extension).
    #[serde(default, skip_serializing_if = "Typed::is_missing")]
    #[validate(custom(function = "locale"))]
    #[schemars(with = "Option<String>")]
    #[schema(value_type = Option<String>)]
    pub locale: Typed<String>,
    /// Plain-text part for HTML content; derived from the HTML when absent (extension).
    #[serde(default, skip_serializing_if = "Typed::is_missing")]
    #[validate(custom(function = "optional_text"))]
    #[schemars(with = "Option<String>")]
    #[schema(value_type = Option<String>)]
    pub text: Typed<String>,
    /// From mailbox for this template (extension).
    #[serde(default, skip_serializing_if = "Typed::is_missing")]
    #[validate(custom(function = "mailbox"))]
    #[schemars(with = "Option<String>")]
    #[schema(value_type = Option<String>)]
    pub send_from: Typed<String>,
    /// Reply-To mailbox for this template (extension).
    #[serde(default, skip_serializing_if = "Typed::is_missing")]
    #[validate(custom(function = "mailbox"))]
    #[schemars(with = "Option<String>")]
    #[schema(value_type = Option<String>)]
    pub reply_to: Typed<String>,
}

/// How `content` is read.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, ToSchema)]
pub enum ContentTypeName {
    #[serde(rename = "text/html")]
    Html,
    #[serde(rename = "text/plain")]
    Plain,
}

/// An optional string where `""` (and whitespace) means absent, as Logto's console
/// saves empty fields; `Err` for a wrong type.
pub(super) fn present(value: &Typed<String>) -> Result<Option<&str>, ValidationError> {
    Ok(value
        .optional("a string")?
        .map(String::as_str)
        .filter(|s| !s.trim().is_empty()))
}

/// A required string that must not be empty.
fn non_empty<'a>(value: &'a Typed<String>, name: &str) -> Result<&'a str, ValidationError> {
    let text = value.required("a string", &format!("\"{name}\" is required"))?;
    if text.trim().is_empty() {
        return Err(problem("required", format!("\"{name}\" must not be empty")));
    }
    Ok(text)
}

fn access_key(value: &Typed<String>) -> Result<(), ValidationError> {
    match value.optional("a string")? {
        Some(key) if key.is_empty() => Err(problem("required", "must not be empty")),
        Some(key) if key.chars().any(char::is_whitespace) => Err(problem(
            "invalid_format",
            "must not contain whitespace (check for a stray space or line break)",
        )),
        _ => Ok(()),
    }
}

fn region(value: &Typed<String>) -> Result<(), ValidationError> {
    Region::parse(non_empty(value, "region")?)
        .map(drop)
        .map_err(|e| problem("invalid_format", e))
}

fn mailbox(value: &Typed<String>) -> Result<(), ValidationError> {
    match present(value)? {
        Some(text) => Mailbox::parse(text)
            .map(drop)
            .map_err(|e| problem("invalid_format", e.to_string())),
        None => Ok(()),
    }
}

fn identity_arn(value: &Typed<String>) -> Result<(), ValidationError> {
    match present(value)? {
        Some(text) => IdentityArn::parse(text)
            .map(drop)
            .map_err(|e| problem("invalid_format", e)),
        None => Ok(()),
    }
}

fn configuration_set(value: &Typed<String>) -> Result<(), ValidationError> {
    match present(value)? {
        Some(text) => ConfigurationSetName::parse(text)
            .map(drop)
            .map_err(|e| problem("invalid_format", e)),
        None => Ok(()),
    }
}

fn templates(value: &Typed<Vec<Typed<TemplateDocument>>>) -> Result<(), ValidationError> {
    value
        .required("an array of templates", "\"templates\" is required")
        .map(drop)
}

fn usage_type(value: &Typed<String>) -> Result<(), ValidationError> {
    non_empty(value, "usageType").map(drop)
}

fn subject(value: &Typed<String>) -> Result<(), ValidationError> {
    non_empty(value, "subject").map(drop)
}

fn content(value: &Typed<String>) -> Result<(), ValidationError> {
    non_empty(value, "content").map(drop)
}

fn content_type(value: &Typed<String>) -> Result<(), ValidationError> {
    match present(value)? {
        None | Some("text/html" | "text/plain") => Ok(()),
        Some(other) => Err(problem(
            "invalid_format",
            format!("\"{other}\" is not supported; use text/html or text/plain"),
        )),
    }
}

fn locale(value: &Typed<String>) -> Result<(), ValidationError> {
    match present(value)? {
        Some(text) => Locale::parse(text)
            .map(drop)
            .map_err(|e| problem("invalid_format", e)),
        None => Ok(()),
    }
}

fn optional_text(value: &Typed<String>) -> Result<(), ValidationError> {
    value.optional("a string").map(drop)
}

/// The JSON names of a document type's fields, from its schema: the one list the
/// unknown-field warnings compare against.
pub(super) fn field_names<T: JsonSchema>() -> Vec<String> {
    let schema = serde_json::to_value(schemars::schema_for!(T)).unwrap_or_default();
    schema["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// Parse a config value into the document; only fails when it is not an object.
pub(super) fn parse(value: &Value) -> Option<ConnectorConfigDocument> {
    value
        .is_object()
        .then(|| ConnectorConfigDocument::deserialize(value).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_field_lists_come_from_the_document() {
        let config = field_names::<ConnectorConfigDocument>();
        assert!(config.contains(&"accessKeySecret".to_owned()), "{config:?}");
        assert_eq!(config.len(), 10);
        assert_eq!(field_names::<TemplateDocument>().len(), 8);
    }

    #[test]
    fn the_starter_config_fits_the_document() {
        let starter = crate::builtin::starter_config();
        let parsed = parse(&starter).unwrap();
        assert_eq!(parsed.templates.valid().unwrap().len(), 18);
        assert!(parsed.validate().is_ok());
    }
}
