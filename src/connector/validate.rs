//! Walks a config JSON value and reports every problem at once, with its path.

use secrecy::SecretString;
use serde::Serialize;
use serde_json::{Map, Value};

use super::{
    ConfigurationSetName, ConnectorConfig, IdentityArn, Locale, Region, StaticCredentials,
    UsageType,
};
use crate::address::Mailbox;
use crate::template::{ContentType, TemplateSet, TemplateSource, Unbounded};

/// What kind of problem an [`Issue`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IssueCode {
    Required,
    InvalidType,
    InvalidFormat,
    MissingUsageTypes,
    DuplicateTemplate,
    TemplateSyntax,
    /// A partial includes itself: rendering would never end.
    TemplateRecursion,
    /// Too deeply nested, loops nested or too many, or a partial named by an
    /// expression: bounded work is not assured.
    TemplateTooComplex,
    UnknownField,
    UnknownUsageType,
    UnknownRegion,
    RegionMismatch,
    MissingSender,
    UnusualFormat,
}

/// One problem in a config, with the path of the value at fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Issue {
    pub path: String,
    pub code: IssueCode,
    pub message: String,
}

/// The result of validating a config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ValidationReport {
    pub valid: bool,
    pub errors: Vec<Issue>,
    pub warnings: Vec<Issue>,
}

pub(super) const CONFIG_FIELDS: &[&str] = &[
    "accessKeyId",
    "accessKeySecret",
    "region",
    "emailAddress",
    "emailAddressIdentityArn",
    "feedbackForwardingEmailAddress",
    "feedbackForwardingEmailAddressIdentityArn",
    "configurationSetName",
    "templates",
    "replyTo",
];

pub(super) const TEMPLATE_FIELDS: &[&str] = &[
    "usageType",
    "subject",
    "content",
    "contentType",
    "locale",
    "text",
    "sendFrom",
    "replyTo",
];

/// Validate without keeping the result: the report only.
pub fn validate(value: &Value) -> ValidationReport {
    match load(value.clone()) {
        Ok(config) => ValidationReport {
            valid: true,
            errors: Vec::new(),
            warnings: config.warnings,
        },
        Err(report) => report,
    }
}

pub(super) fn load(value: Value) -> Result<ConnectorConfig, ValidationReport> {
    let mut check = Checker::default();
    let parsed = check.config(&value);
    match parsed {
        Some(parts) if check.errors.is_empty() => {
            let Parts {
                credentials,
                region,
                email_address,
                email_address_identity_arn,
                feedback_forwarding_email_address,
                feedback_forwarding_email_address_identity_arn,
                configuration_set_name,
                reply_to,
                templates,
            } = parts;
            Ok(ConnectorConfig {
                credentials,
                region,
                email_address,
                email_address_identity_arn,
                feedback_forwarding_email_address,
                feedback_forwarding_email_address_identity_arn,
                configuration_set_name,
                reply_to,
                templates,
                warnings: check.warnings,
                raw: super::RawConfig(value),
            })
        }
        _ => Err(ValidationReport {
            valid: false,
            errors: check.errors,
            warnings: check.warnings,
        }),
    }
}

struct Parts {
    credentials: Option<StaticCredentials>,
    region: Region,
    email_address: Option<Mailbox>,
    email_address_identity_arn: Option<IdentityArn>,
    feedback_forwarding_email_address: Option<Mailbox>,
    feedback_forwarding_email_address_identity_arn: Option<IdentityArn>,
    configuration_set_name: Option<ConfigurationSetName>,
    reply_to: Option<Mailbox>,
    templates: TemplateSet,
}

#[derive(Default)]
struct Checker {
    errors: Vec<Issue>,
    warnings: Vec<Issue>,
}

/// "a string", "an array", …: a JSON value's type, for messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

impl Checker {
    fn error(&mut self, path: impl Into<String>, code: IssueCode, message: impl Into<String>) {
        self.errors.push(Issue {
            path: path.into(),
            code,
            message: message.into(),
        });
    }

    fn warn(&mut self, path: impl Into<String>, code: IssueCode, message: impl Into<String>) {
        self.warnings.push(Issue {
            path: path.into(),
            code,
            message: message.into(),
        });
    }

    fn unknown_fields(&mut self, object: &Map<String, Value>, known: &[&str], parent: &str) {
        for key in object.keys().filter(|k| !known.contains(&k.as_str())) {
            let hint = known
                .iter()
                .find(|k| resembles(k, key))
                .map(|k| format!("; did you mean \"{k}\"?"))
                .unwrap_or_default();
            self.warn(
                join(parent, key),
                IssueCode::UnknownField,
                format!("unknown field \"{key}\" is ignored{hint}"),
            );
        }
    }

    /// A string field: `None` when absent, null, or of the wrong type (reported).
    fn string<'v>(
        &mut self,
        object: &'v Map<String, Value>,
        key: &str,
        parent: &str,
        required: bool,
    ) -> Option<&'v str> {
        match object.get(key) {
            None | Some(Value::Null) => {
                if required {
                    self.error(
                        join(parent, key),
                        IssueCode::Required,
                        format!("\"{key}\" is required"),
                    );
                }
                None
            }
            Some(Value::String(s)) => Some(s),
            Some(other) => {
                self.error(
                    join(parent, key),
                    IssueCode::InvalidType,
                    format!("must be a string, got {}", type_name(other)),
                );
                None
            }
        }
    }

    /// An optional string where `""` means absent, as Logto's console saves empty fields.
    fn optional<'v>(
        &mut self,
        object: &'v Map<String, Value>,
        key: &str,
        parent: &str,
    ) -> Option<&'v str> {
        self.string(object, key, parent, false)
            .filter(|s| !s.trim().is_empty())
    }

    /// A required string that must not be empty.
    fn non_empty<'v>(
        &mut self,
        object: &'v Map<String, Value>,
        key: &str,
        parent: &str,
    ) -> Option<&'v str> {
        let value = self.string(object, key, parent, true)?;
        if value.trim().is_empty() {
            self.error(
                join(parent, key),
                IssueCode::Required,
                format!("\"{key}\" must not be empty"),
            );
            return None;
        }
        Some(value)
    }

    fn parsed<T>(
        &mut self,
        path: String,
        input: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match parse(input?) {
            Ok(value) => Some(value),
            Err(message) => {
                self.error(path, IssueCode::InvalidFormat, message);
                None
            }
        }
    }

    fn mailbox(&mut self, object: &Map<String, Value>, key: &str, parent: &str) -> Option<Mailbox> {
        let input = self.optional(object, key, parent);
        self.parsed(join(parent, key), input, |s| {
            Mailbox::parse(s).map_err(|e| e.to_string())
        })
    }

    fn config(&mut self, value: &Value) -> Option<Parts> {
        let Some(object) = value.as_object() else {
            self.error(
                "",
                IssueCode::InvalidType,
                format!("the config must be a JSON object, got {}", type_name(value)),
            );
            return None;
        };
        self.unknown_fields(object, CONFIG_FIELDS, "");

        let credentials = self.credentials(object);
        let region = self.non_empty(object, "region", "");
        let region = self.parsed("region".into(), region, Region::parse);
        if let Some(region) = &region {
            if !region.offers_ses() {
                self.warn(
                    "region",
                    IssueCode::UnknownRegion,
                    format!("SES v2 is not known to be offered in {region}; check the region"),
                );
            }
        }

        let email_address = self.mailbox(object, "emailAddress", "");
        let feedback = self.mailbox(object, "feedbackForwardingEmailAddress", "");
        let reply_to = self.mailbox(object, "replyTo", "");
        let identity_arn = self.arn(object, "emailAddressIdentityArn", region.as_ref());
        let feedback_arn = self.arn(
            object,
            "feedbackForwardingEmailAddressIdentityArn",
            region.as_ref(),
        );
        let configuration_set = self.optional(object, "configurationSetName", "");
        let configuration_set_name = self.parsed(
            "configurationSetName".into(),
            configuration_set,
            ConfigurationSetName::parse,
        );

        let templates = self.templates(object, email_address.is_some());

        Some(Parts {
            credentials: credentials?,
            region: region?,
            email_address,
            email_address_identity_arn: identity_arn,
            feedback_forwarding_email_address: feedback,
            feedback_forwarding_email_address_identity_arn: feedback_arn,
            configuration_set_name,
            reply_to,
            templates: templates?,
        })
    }

    /// `Some(None)`: use the default chain; `None`: an error was reported.
    fn credentials(&mut self, object: &Map<String, Value>) -> Option<Option<StaticCredentials>> {
        let id = self.string(object, "accessKeyId", "", false);
        let secret = self.string(object, "accessKeySecret", "", false);
        let id_present = object.get("accessKeyId").is_some_and(|v| !v.is_null());
        let secret_present = object.get("accessKeySecret").is_some_and(|v| !v.is_null());
        match (id_present, secret_present) {
            (false, false) => return Some(None),
            (true, false) => self.error(
                "accessKeySecret",
                IssueCode::Required,
                "\"accessKeySecret\" is required when \"accessKeyId\" is set; remove both to use the AWS default credential chain",
            ),
            (false, true) => self.error(
                "accessKeyId",
                IssueCode::Required,
                "\"accessKeyId\" is required when \"accessKeySecret\" is set; remove both to use the AWS default credential chain",
            ),
            (true, true) => {}
        }
        let mut ok = id_present && secret_present;
        for (key, value) in [("accessKeyId", id), ("accessKeySecret", secret)] {
            let Some(value) = value else {
                ok = false;
                continue;
            };
            if value.is_empty() {
                self.error(
                    key,
                    IssueCode::Required,
                    format!("\"{key}\" must not be empty"),
                );
                ok = false;
            } else if value.chars().any(char::is_whitespace) {
                self.error(
                    key,
                    IssueCode::InvalidFormat,
                    format!("\"{key}\" must not contain whitespace (check for a stray space or line break)"),
                );
                ok = false;
            }
        }
        let (Some(id), Some(secret), true) = (id, secret, ok) else {
            return None;
        };
        let looks_like_key = (16..=128).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if !looks_like_key {
            self.warn(
                "accessKeyId",
                IssueCode::UnusualFormat,
                "does not look like an AWS access key id (16 to 128 upper-case letters and digits, e.g. AKIA…)",
            );
        }
        Some(Some(StaticCredentials {
            access_key_id: id.to_owned(),
            secret_access_key: SecretString::from(secret.to_owned()),
        }))
    }

    fn arn(
        &mut self,
        object: &Map<String, Value>,
        key: &str,
        region: Option<&Region>,
    ) -> Option<IdentityArn> {
        let input = self.optional(object, key, "");
        let arn = self.parsed(key.to_owned(), input, IdentityArn::parse)?;
        if let Some(region) = region {
            if arn.region() != region {
                self.warn(
                    key,
                    IssueCode::RegionMismatch,
                    format!(
                        "names region {}, but \"region\" is {region}; SES needs the identity in the sending region",
                        arn.region()
                    ),
                );
            }
        }
        Some(arn)
    }

    fn templates(&mut self, object: &Map<String, Value>, has_sender: bool) -> Option<TemplateSet> {
        let items = match object.get("templates") {
            None | Some(Value::Null) => {
                self.error(
                    "templates",
                    IssueCode::Required,
                    "\"templates\" is required",
                );
                return None;
            }
            Some(Value::Array(items)) => items,
            Some(other) => {
                self.error(
                    "templates",
                    IssueCode::InvalidType,
                    format!("must be an array of templates, got {}", type_name(other)),
                );
                return None;
            }
        };
        let errors_before = self.errors.len();
        let mut sources = Vec::with_capacity(items.len());
        let mut seen: Vec<(String, Option<String>, usize)> = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let path = format!("templates[{index}]");
            let Some(source) = self.template(item, &path) else {
                continue;
            };
            let key = (
                source.usage_type.clone(),
                source
                    .locale
                    .as_ref()
                    .map(|l| l.as_str().to_ascii_lowercase()),
            );
            if let Some((_, _, first)) = seen.iter().find(|(u, l, _)| (u, l) == (&key.0, &key.1)) {
                let locale = key.1.as_deref().unwrap_or("no locale");
                self.error(
                    path.clone(),
                    IssueCode::DuplicateTemplate,
                    format!(
                        "duplicates templates[{first}]: both are {} for {locale}",
                        key.0
                    ),
                );
            } else {
                seen.push((key.0, key.1, index));
            }
            if !has_sender && source.send_from.is_none() {
                self.warn(
                    format!("{path}.sendFrom"),
                    IssueCode::MissingSender,
                    "no \"emailAddress\" in the config and no \"sendFrom\" here: SES rejects a message without a From address",
                );
            }
            sources.push((index, source));
        }
        let missing: Vec<&str> = UsageType::REQUIRED
            .iter()
            .filter(|t| !seen.iter().any(|(u, _, _)| u == t.as_str()))
            .map(|t| t.as_str())
            .collect();
        if !missing.is_empty() {
            self.error(
                "templates",
                IssueCode::MissingUsageTypes,
                format!(
                    "Template with UsageType ({}) should be provided!",
                    missing.join(", ")
                ),
            );
        }
        if self.errors.len() > errors_before {
            return None;
        }
        let indices: Vec<usize> = sources.iter().map(|(i, _)| *i).collect();
        match TemplateSet::compile(sources.into_iter().map(|(_, s)| s).collect()) {
            Ok(set) => Some(set),
            Err(errors) => {
                for e in errors {
                    let path = format!("templates[{}].{}", indices[e.index], e.field);
                    let code = match &e.unbounded {
                        None => {
                            let at = match (e.line, e.column) {
                                (Some(line), Some(column)) => {
                                    format!(" at line {line}, column {column}")
                                }
                                _ => String::new(),
                            };
                            self.error(
                                path,
                                IssueCode::TemplateSyntax,
                                format!("does not compile{at}: {}", e.reason),
                            );
                            continue;
                        }
                        Some(Unbounded::Recursion { .. }) => IssueCode::TemplateRecursion,
                        Some(_) => IssueCode::TemplateTooComplex,
                    };
                    self.error(path, code, e.reason);
                }
                None
            }
        }
    }

    fn template(&mut self, item: &Value, path: &str) -> Option<TemplateSource> {
        let Some(object) = item.as_object() else {
            self.error(
                path,
                IssueCode::InvalidType,
                format!("must be a template object, got {}", type_name(item)),
            );
            return None;
        };
        let errors_before = self.errors.len();
        self.unknown_fields(object, TEMPLATE_FIELDS, path);
        let usage_type = self.non_empty(object, "usageType", path);
        if let Some(usage) = usage_type {
            if UsageType::parse(usage).is_none() {
                self.warn(
                    join(path, "usageType"),
                    IssueCode::UnknownUsageType,
                    format!(
                        "\"{usage}\" is not one of Logto's usage types ({}); this template is only used if a sender asks for it",
                        UsageType::names()
                    ),
                );
            }
        }
        let subject = self.non_empty(object, "subject", path);
        let content = self.non_empty(object, "content", path);
        let content_type = match self.optional(object, "contentType", path) {
            None | Some("text/html") => Some(ContentType::Html),
            Some("text/plain") => Some(ContentType::Plain),
            Some(other) => {
                self.error(
                    join(path, "contentType"),
                    IssueCode::InvalidFormat,
                    format!("\"{other}\" is not supported; use text/html or text/plain"),
                );
                None
            }
        };
        let locale = self.optional(object, "locale", path);
        let locale = self.parsed(join(path, "locale"), locale, Locale::parse);
        let text = self.optional(object, "text", path);
        let send_from = self.mailbox(object, "sendFrom", path);
        let reply_to = self.mailbox(object, "replyTo", path);
        if self.errors.len() > errors_before {
            return None;
        }
        Some(TemplateSource {
            usage_type: usage_type?.to_owned(),
            locale,
            subject: subject?.to_owned(),
            content: content?.to_owned(),
            content_type: content_type?,
            text: text.map(str::to_owned),
            send_from,
            reply_to,
        })
    }
}

/// Whether `typo` is probably a misspelling of `known` (edit distance ≤ 2, case-insensitive).
fn resembles(known: &str, typo: &str) -> bool {
    strsim::damerau_levenshtein(&known.to_lowercase(), &typo.to_lowercase()) <= 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(usage: &str) -> Value {
        json!({"usageType": usage, "subject": "Code {{code}}", "content": "<p>{{code}}</p>"})
    }

    /// The shape of a config saved by Logto's AWS SES connector form.
    fn logto_config() -> Value {
        json!({
            "accessKeyId": "AKIAIOSFODNN7EXAMPLE",
            "accessKeySecret": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "region": "us-east-1",
            "emailAddress": "noreply@example.com",
            "emailAddressIdentityArn": "",
            "feedbackForwardingEmailAddress": "",
            "feedbackForwardingEmailAddressIdentityArn": "",
            "configurationSetName": "",
            "templates": [template("SignIn"), template("Register"), template("ForgotPassword"), template("Generic")]
        })
    }

    fn with(mut base: Value, path: &[&str], value: Value) -> Value {
        let mut target = &mut base;
        for key in &path[..path.len() - 1] {
            target = match key.parse::<usize>() {
                Ok(i) => &mut target[i],
                Err(_) => &mut target[*key],
            };
        }
        let last = path[path.len() - 1];
        match (last.parse::<usize>(), value) {
            (_, Value::Null) if target.is_object() => {
                target.as_object_mut().unwrap().remove(last);
            }
            (Ok(i), v) => target[i] = v,
            (Err(_), v) => target[last] = v,
        }
        base
    }

    #[test]
    fn a_config_logto_accepts_is_valid_unchanged() {
        let report = validate(&logto_config());
        assert!(report.valid, "{report:#?}");
        assert!(report.errors.is_empty());
        assert!(report.warnings.is_empty(), "{:#?}", report.warnings);
    }

    #[test]
    fn both_keys_absent_means_the_default_credential_chain() {
        let config = with(logto_config(), &["accessKeyId"], Value::Null);
        let config = with(config, &["accessKeySecret"], Value::Null);
        let loaded = ConnectorConfig::load(config).unwrap();
        assert!(loaded.credentials.is_none());
    }

    #[test]
    fn invalid_configs_report_the_path_and_code() {
        let cases: Vec<(&str, Value, &str, IssueCode)> = vec![
            (
                "key id without secret",
                with(logto_config(), &["accessKeySecret"], Value::Null),
                "accessKeySecret",
                IssueCode::Required,
            ),
            (
                "secret without key id",
                with(logto_config(), &["accessKeyId"], Value::Null),
                "accessKeyId",
                IssueCode::Required,
            ),
            (
                "empty key id",
                with(logto_config(), &["accessKeyId"], json!("")),
                "accessKeyId",
                IssueCode::Required,
            ),
            (
                "whitespace in secret",
                with(logto_config(), &["accessKeySecret"], json!("abc def")),
                "accessKeySecret",
                IssueCode::InvalidFormat,
            ),
            (
                "missing region",
                with(logto_config(), &["region"], Value::Null),
                "region",
                IssueCode::Required,
            ),
            (
                "bad region",
                with(logto_config(), &["region"], json!("us east 1")),
                "region",
                IssueCode::InvalidFormat,
            ),
            (
                "region of wrong type",
                with(logto_config(), &["region"], json!(1)),
                "region",
                IssueCode::InvalidType,
            ),
            (
                "CRLF in emailAddress",
                with(
                    logto_config(),
                    &["emailAddress"],
                    json!("a@example.com\r\nBcc: b@example.com"),
                ),
                "emailAddress",
                IssueCode::InvalidFormat,
            ),
            (
                "LF in display name",
                with(
                    logto_config(),
                    &["emailAddress"],
                    json!("Lo\ngto <a@example.com>"),
                ),
                "emailAddress",
                IssueCode::InvalidFormat,
            ),
            (
                "bad mailbox syntax",
                with(logto_config(), &["emailAddress"], json!("Logto <noreply>")),
                "emailAddress",
                IssueCode::InvalidFormat,
            ),
            (
                "CRLF in feedback address",
                with(
                    logto_config(),
                    &["feedbackForwardingEmailAddress"],
                    json!("a@example.com\n"),
                ),
                "feedbackForwardingEmailAddress",
                IssueCode::InvalidFormat,
            ),
            (
                "CRLF in replyTo",
                with(logto_config(), &["replyTo"], json!("a@example.com\r")),
                "replyTo",
                IssueCode::InvalidFormat,
            ),
            (
                "bad ARN",
                with(
                    logto_config(),
                    &["emailAddressIdentityArn"],
                    json!("arn:aws:s3:::bucket"),
                ),
                "emailAddressIdentityArn",
                IssueCode::InvalidFormat,
            ),
            (
                "bad feedback ARN",
                with(
                    logto_config(),
                    &["feedbackForwardingEmailAddressIdentityArn"],
                    json!("nope"),
                ),
                "feedbackForwardingEmailAddressIdentityArn",
                IssueCode::InvalidFormat,
            ),
            (
                "bad configuration set",
                with(
                    logto_config(),
                    &["configurationSetName"],
                    json!("has spaces"),
                ),
                "configurationSetName",
                IssueCode::InvalidFormat,
            ),
            (
                "templates not an array",
                with(logto_config(), &["templates"], json!({})),
                "templates",
                IssueCode::InvalidType,
            ),
            (
                "template not an object",
                with(logto_config(), &["templates", "1"], json!("SignIn")),
                "templates[1]",
                IssueCode::InvalidType,
            ),
            (
                "empty subject",
                with(logto_config(), &["templates", "0", "subject"], json!("")),
                "templates[0].subject",
                IssueCode::Required,
            ),
            (
                "content of wrong type",
                with(logto_config(), &["templates", "2", "content"], json!(["x"])),
                "templates[2].content",
                IssueCode::InvalidType,
            ),
            (
                "unclosed block",
                with(
                    logto_config(),
                    &["templates", "3", "content"],
                    json!("<p>\n{{#if code}}x"),
                ),
                "templates[3].content",
                IssueCode::TemplateSyntax,
            ),
            (
                "bad subject syntax",
                with(
                    logto_config(),
                    &["templates", "0", "subject"],
                    json!("{{code"),
                ),
                "templates[0].subject",
                IssueCode::TemplateSyntax,
            ),
            (
                "bad content type",
                with(
                    logto_config(),
                    &["templates", "0", "contentType"],
                    json!("text/markdown"),
                ),
                "templates[0].contentType",
                IssueCode::InvalidFormat,
            ),
            (
                "bad locale",
                with(
                    logto_config(),
                    &["templates", "0", "locale"],
                    json!("not a tag!"),
                ),
                "templates[0].locale",
                IssueCode::InvalidFormat,
            ),
            (
                "CRLF in sendFrom",
                with(
                    logto_config(),
                    &["templates", "0", "sendFrom"],
                    json!("a@example.com\r\nX: y"),
                ),
                "templates[0].sendFrom",
                IssueCode::InvalidFormat,
            ),
            (
                "duplicate usage type",
                with(
                    logto_config(),
                    &["templates", "1", "usageType"],
                    json!("SignIn"),
                ),
                "templates[1]",
                IssueCode::DuplicateTemplate,
            ),
            (
                "config not an object",
                json!([1, 2]),
                "",
                IssueCode::InvalidType,
            ),
        ];
        for (why, config, path, code) in cases {
            let report = validate(&config);
            assert!(!report.valid, "{why}: expected invalid");
            assert!(
                report
                    .errors
                    .iter()
                    .any(|e| e.path == path && e.code == code),
                "{why}: expected {code:?} at {path:?}, got {:#?}",
                report.errors
            );
        }
    }

    #[test]
    fn templates_that_could_recurse_or_run_without_bound_are_refused() {
        let deep = format!("{}x{}", "{{#if a}}".repeat(5000), "{{/if}}".repeat(5000));
        let deep_partials = (0..40)
            .map(|i| {
                format!(
                    "{{{{#*inline \"p{i}\"}}}}{{{{> p{}}}}}{{{{/inline}}}}",
                    i + 1
                )
            })
            .collect::<String>()
            + "{{> p0}}";
        let cases: Vec<(&str, String, IssueCode)> = vec![
            (
                "a recursive inline partial",
                r#"{{#*inline "p"}}{{> p}}{{/inline}}{{> p}}"#.into(),
                IssueCode::TemplateRecursion,
            ),
            (
                "partials that include each other",
                r#"{{#*inline "a"}}{{> b}}{{/inline}}{{#*inline "b"}}<i>{{> a}}</i>{{/inline}}{{> a}}"#.into(),
                IssueCode::TemplateRecursion,
            ),
            (
                "a template that includes itself by its registered name",
                "{{> 3.content}}".into(),
                IssueCode::TemplateRecursion,
            ),
            ("thousands of nested blocks", deep, IssueCode::TemplateTooComplex),
            (
                "33 nested blocks",
                format!("{}x{}", "{{#if a}}".repeat(33), "{{/if}}".repeat(33)),
                IssueCode::TemplateTooComplex,
            ),
            ("a chain of 40 partials", deep_partials, IssueCode::TemplateTooComplex),
            (
                "a loop inside a loop",
                "{{#each a}}{{#each ../a}}{{/each}}{{/each}}".into(),
                IssueCode::TemplateTooComplex,
            ),
            (
                "a loop inside a loop through a partial",
                r#"{{#*inline "p"}}{{#each a}}{{/each}}{{/inline}}{{#each a}}{{> p}}{{/each}}"#.into(),
                IssueCode::TemplateTooComplex,
            ),
            (
                "a loop repeated through a partial",
                format!(
                    r#"{{{{#*inline "p"}}}}{{{{#each a}}}}x{{{{/each}}}}{{{{/inline}}}}{}"#,
                    "{{> p}}".repeat(33)
                ),
                IssueCode::TemplateTooComplex,
            ),
        ];
        for (why, content, code) in cases {
            let config = with(
                logto_config(),
                &["templates", "3", "content"],
                json!(content),
            );
            let report = validate(&config);
            assert!(!report.valid, "{why}: expected invalid");
            assert!(
                report
                    .errors
                    .iter()
                    .any(|e| e.path == "templates[3].content" && e.code == code),
                "{why}: expected {code:?}, got {:#?}",
                report.errors
            );
        }
    }

    #[test]
    fn bounded_partials_loops_and_nesting_are_accepted() {
        let content = r#"{{#*inline "row"}}<li>{{name}}</li>{{/inline}}{{#> layout}}<ul>{{#each items}}{{> row}}{{/each}}</ul>{{#if a}}{{#with b}}{{#unless c}}{{> 0.subject}}{{/unless}}{{/with}}{{/if}}{{/layout}}"#;
        let config = with(
            logto_config(),
            &["templates", "3", "content"],
            json!(content),
        );
        let report = validate(&config);
        assert!(report.valid, "{report:#?}");
    }

    #[test]
    fn missing_usage_types_are_listed_in_logtos_words() {
        let config = with(
            logto_config(),
            &["templates"],
            json!([template("Register"), template("ForgotPassword")]),
        );
        let report = validate(&config);
        let issue = report
            .errors
            .iter()
            .find(|e| e.code == IssueCode::MissingUsageTypes)
            .unwrap();
        assert_eq!(
            issue.message,
            "Template with UsageType (SignIn, Generic) should be provided!"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let config = json!({
            "accessKeyId": "AKIAIOSFODNN7EXAMPLE",
            "region": "nowhere",
            "emailAddress": "bad",
            "templates": [{"usageType": "SignIn", "subject": 3}]
        });
        let report = validate(&config);
        let paths: Vec<&str> = report.errors.iter().map(|e| e.path.as_str()).collect();
        for expected in [
            "accessKeySecret",
            "region",
            "emailAddress",
            "templates[0].subject",
            "templates[0].content",
            "templates",
        ] {
            assert!(paths.contains(&expected), "missing {expected} in {paths:?}");
        }
    }

    #[test]
    fn syntax_errors_report_line_and_column() {
        let config = with(
            logto_config(),
            &["templates", "3", "content"],
            json!("line one\nline {{#if x}} two"),
        );
        let report = validate(&config);
        let issue = &report.errors[0];
        assert_eq!(issue.code, IssueCode::TemplateSyntax);
        assert!(issue.message.contains("line "), "{}", issue.message);
        assert!(issue.message.contains("column "), "{}", issue.message);
    }

    #[test]
    fn duplicates_are_per_usage_type_and_locale() {
        let mut fr = template("SignIn");
        fr["locale"] = json!("fr");
        let mut fr_upper = template("SignIn");
        fr_upper["locale"] = json!("FR");
        let config = logto_config();
        let mut ok = config.clone();
        ok["templates"].as_array_mut().unwrap().push(fr.clone());
        assert!(validate(&ok).valid);
        let mut dup = ok.clone();
        dup["templates"].as_array_mut().unwrap().push(fr_upper);
        let report = validate(&dup);
        assert_eq!(report.errors[0].code, IssueCode::DuplicateTemplate);
        assert_eq!(report.errors[0].path, "templates[5]");
    }

    #[test]
    fn warnings_do_not_make_a_config_invalid() {
        let mut config = with(logto_config(), &["region"], json!("xx-nowhere-9"));
        config["emailAdress"] = json!("typo@example.com");
        config["templates"][0]["subjekt"] = json!("x");
        config["templates"]
            .as_array_mut()
            .unwrap()
            .push(template("Custom"));
        config["accessKeyId"] = json!("lowercase-key");
        config["emailAddressIdentityArn"] =
            json!("arn:aws:ses:eu-west-1:123456789012:identity/example.com");
        let report = validate(&config);
        assert!(report.valid, "{report:#?}");
        let found = |path: &str, code| {
            report
                .warnings
                .iter()
                .any(|w| w.path == path && w.code == code)
        };
        assert!(found("region", IssueCode::UnknownRegion), "{report:#?}");
        assert!(found("emailAdress", IssueCode::UnknownField));
        assert!(report
            .warnings
            .iter()
            .any(|w| w.message.contains("did you mean \"emailAddress\"")));
        assert!(found("templates[0].subjekt", IssueCode::UnknownField));
        assert!(found("templates[4].usageType", IssueCode::UnknownUsageType));
        assert!(found("accessKeyId", IssueCode::UnusualFormat));
        assert!(found("emailAddressIdentityArn", IssueCode::RegionMismatch));
    }

    #[test]
    fn a_config_without_any_sender_warns() {
        let config = with(logto_config(), &["emailAddress"], Value::Null);
        let report = validate(&config);
        assert!(report.valid);
        assert!(report
            .warnings
            .iter()
            .any(|w| w.code == IssueCode::MissingSender));
    }

    #[test]
    fn the_redacted_config_hides_the_secret() {
        let loaded = ConnectorConfig::load(logto_config()).unwrap();
        let shown = loaded.redacted().to_string();
        assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
        assert!(shown.contains("********"));
        assert!(!format!("{loaded:?}").contains("wJalrXUtnFEMI"));
    }
}
