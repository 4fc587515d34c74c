//! The config's JSON shape, for the published JSON Schema and OpenAPI document.
//! Validation walks the JSON itself (to report every problem with its path); a test
//! keeps these field lists and the validator's in step.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A connector config, as Logto's AWS SES connector takes it (camelCase). Unknown
/// fields are ignored with a warning.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "ConnectorConfig")]
#[schema(as = ConnectorConfig)]
pub struct ConnectorConfigDocument {
    /// AWS access key id. Give both keys or neither (neither: the AWS default
    /// credential chain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// AWS secret access key; never shown back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_secret: Option<String>,
    /// AWS region name, e.g. `us-east-1`.
    #[schemars(regex(pattern = r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$"))]
    #[schema(pattern = r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$", example = "us-east-1")]
    pub region: String,
    /// From mailbox: `noreply@example.com` or `Name <noreply@example.com>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_address: Option<String>,
    /// `arn:aws:ses:<region>:<account>:identity/<name>` of the sending identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_address_identity_arn: Option<String>,
    /// Where bounces and complaints go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback_forwarding_email_address: Option<String>,
    /// Identity ARN for the feedback-forwarding address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback_forwarding_email_address_identity_arn: Option<String>,
    /// SES configuration set: 1–64 of letters, digits, `_` and `-` (or empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{0,64}$"))]
    #[schema(pattern = r"^[A-Za-z0-9_-]{0,64}$")]
    pub configuration_set_name: Option<String>,
    /// Reply-To mailbox when a template has none (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Must include Register, SignIn, ForgotPassword and Generic.
    pub templates: Vec<TemplateDocument>,
}

/// One email template.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "Template")]
#[schema(as = Template)]
pub struct TemplateDocument {
    /// One of Logto's nine usage types; another string is accepted with a warning.
    #[schema(example = "SignIn")]
    pub usage_type: String,
    /// Handlebars template for the subject; never HTML-escaped.
    #[schemars(length(min = 1))]
    #[schema(min_length = 1, example = "{{code}} is your verification code")]
    pub subject: String,
    /// Handlebars template for the body; HTML unless `contentType` is `text/plain`.
    #[schemars(length(min = 1))]
    #[schema(min_length = 1)]
    pub content: String,
    /// `text/html` (default) or `text/plain` (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<ContentTypeName>,
    /// BCP 47 language tag; absent means any locale (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// Plain-text part for HTML content; derived from the HTML when absent (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// From mailbox for this template (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_from: Option<String>,
    /// Reply-To mailbox for this template (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
}

/// How `content` is read.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, ToSchema)]
pub enum ContentTypeName {
    #[serde(rename = "text/html")]
    Html,
    #[serde(rename = "text/plain")]
    Plain,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn properties<T: JsonSchema>() -> Vec<String> {
        let schema = serde_json::to_value(schemars::schema_for!(T)).unwrap();
        let mut names: Vec<String> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_documented_fields_are_the_validated_fields() {
        let mut config: Vec<String> = super::super::validate::CONFIG_FIELDS
            .iter()
            .map(|s| s.to_string())
            .collect();
        config.sort();
        assert_eq!(properties::<ConnectorConfigDocument>(), config);
        let mut template: Vec<String> = super::super::validate::TEMPLATE_FIELDS
            .iter()
            .map(|s| s.to_string())
            .collect();
        template.sort();
        assert_eq!(properties::<TemplateDocument>(), template);
    }

    #[test]
    fn the_starter_config_fits_the_document() {
        let starter = crate::builtin::starter_config();
        let parsed: ConnectorConfigDocument = serde_json::from_value(starter).unwrap();
        assert_eq!(parsed.templates.len(), 18);
    }
}
