//! Validates a config and reports every problem at once, with its path: the field
//! rules of the document's type (the `validator` crate), then the rules that join
//! fields, the template compilation and the warnings.

use secrecy::SecretString;
use serde::Serialize;
use serde_json::{Map, Value};
use validator::Validate;

use super::document::{self, field_names, present};
use super::{
    ConfigurationSetName, ConnectorConfig, ConnectorConfigDocument, IdentityArn, Locale, Region,
    StaticCredentials, TemplateDocument, UsageType,
};
use crate::address::Mailbox;
use crate::template::{ContentType, TemplateSet, TemplateSource, Unbounded};
pub use crate::validation::type_name;
use crate::validation::{compare_paths, join, problems, Typed};

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
    /// The config could not be read, or is not JSON.
    Unreadable,
    /// Online: SES refused the credentials.
    CredentialsInvalid,
    /// Online: the account is in the SES sandbox.
    Sandbox,
    /// Online: sending is paused or shut down for the account.
    SendingPaused,
    /// Online: the account is under review (probation).
    AccountUnderReview,
    /// Online: a From or feedback address is not verified for sending.
    IdentityNotVerified,
    /// Online: a sending identity's DKIM signing is not working.
    DkimNotVerified,
    /// Online: the configuration set does not exist.
    ConfigurationSetNotFound,
    /// Online: an identity ARN names another account than the credentials'.
    CrossAccountIdentity,
    /// Online: a check got no answer; the report is partial.
    CheckFailed,
    /// A send went to a recipient whose last event was a permanent bounce or a
    /// complaint (suppression policy `report`).
    RecipientSuppressed,
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

/// The report of a config already loaded (valid, with its warnings).
pub fn validate_loaded(config: &ConnectorConfig) -> ValidationReport {
    ValidationReport {
        valid: true,
        errors: Vec::new(),
        warnings: config.warnings.clone(),
    }
}

pub(super) fn load(value: Value) -> Result<ConnectorConfig, ValidationReport> {
    let mut check = Checker::default();
    let parts = match document::parse(&value) {
        Some(doc) => check.config(&doc, &value),
        None => {
            check.error(
                "",
                IssueCode::InvalidType,
                format!(
                    "the config must be a JSON object, got {}",
                    type_name(&value)
                ),
            );
            None
        }
    };
    check.errors.sort_by(|a, b| compare_paths(&a.path, &b.path));
    check
        .warnings
        .sort_by(|a, b| compare_paths(&a.path, &b.path));
    match parts {
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

/// A field's value once its rule has passed: `""` counts as absent.
fn checked<T>(value: &Typed<String>, parse: impl FnOnce(&str) -> Result<T, String>) -> Option<T> {
    present(value).ok().flatten().and_then(|s| parse(s).ok())
}

fn mailbox(value: &Typed<String>) -> Option<Mailbox> {
    checked(value, |s| Mailbox::parse(s).map_err(|e| e.to_string()))
}

impl IssueCode {
    /// The code of a field rule's failure.
    fn of_rule(code: &str) -> Self {
        match code {
            "required" => IssueCode::Required,
            "invalid_type" => IssueCode::InvalidType,
            _ => IssueCode::InvalidFormat,
        }
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

    fn has_errors_under(&self, path: &str) -> bool {
        self.errors.iter().any(|e| {
            e.path == path
                || e.path
                    .strip_prefix(path)
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        })
    }

    fn unknown_fields(&mut self, object: &Map<String, Value>, known: &[String], parent: &str) {
        for key in object.keys().filter(|k| !known.contains(k)) {
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

    fn config(&mut self, doc: &ConnectorConfigDocument, value: &Value) -> Option<Parts> {
        if let Err(errors) = doc.validate() {
            for problem in problems(&errors) {
                self.error(
                    problem.path,
                    IssueCode::of_rule(&problem.code),
                    problem.message,
                );
            }
        }
        if let Some(object) = value.as_object() {
            self.unknown_fields(object, &field_names::<ConnectorConfigDocument>(), "");
        }

        let credentials = self.credentials(doc);
        let region = checked(&doc.region, Region::parse);
        if let Some(region) = region.as_ref().filter(|r| !r.offers_ses()) {
            self.warn(
                "region",
                IssueCode::UnknownRegion,
                format!("SES v2 is not known to be offered in {region}; check the region"),
            );
        }
        let email_address = mailbox(&doc.email_address);
        let identity_arn = self.arn(
            &doc.email_address_identity_arn,
            "emailAddressIdentityArn",
            region.as_ref(),
        );
        let feedback_arn = self.arn(
            &doc.feedback_forwarding_email_address_identity_arn,
            "feedbackForwardingEmailAddressIdentityArn",
            region.as_ref(),
        );
        let templates = self.templates(doc, value, email_address.is_some());

        Some(Parts {
            credentials: credentials?,
            region: region?,
            email_address,
            email_address_identity_arn: identity_arn,
            feedback_forwarding_email_address: mailbox(&doc.feedback_forwarding_email_address),
            feedback_forwarding_email_address_identity_arn: feedback_arn,
            configuration_set_name: checked(
                &doc.configuration_set_name,
                ConfigurationSetName::parse,
            ),
            reply_to: mailbox(&doc.reply_to),
            templates: templates?,
        })
    }

    /// Both keys or neither. `Some(None)`: use the default chain; `None`: an error
    /// was reported.
    fn credentials(&mut self, doc: &ConnectorConfigDocument) -> Option<Option<StaticCredentials>> {
        let id_present = !doc.access_key_id.is_missing();
        let secret_present = !doc.access_key_secret.is_missing();
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
        if self.has_errors_under("accessKeyId") || self.has_errors_under("accessKeySecret") {
            return None;
        }
        let (Some(id), Some(secret)) = (doc.access_key_id.valid(), doc.access_key_secret.valid())
        else {
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
        value: &Typed<String>,
        key: &str,
        region: Option<&Region>,
    ) -> Option<IdentityArn> {
        let arn = checked(value, IdentityArn::parse)?;
        if let Some(region) = region.filter(|r| arn.region() != *r) {
            self.warn(
                key,
                IssueCode::RegionMismatch,
                format!(
                    "names region {}, but \"region\" is {region}; SES needs the identity in the sending region",
                    arn.region()
                ),
            );
        }
        Some(arn)
    }

    fn templates(
        &mut self,
        doc: &ConnectorConfigDocument,
        value: &Value,
        has_sender: bool,
    ) -> Option<TemplateSet> {
        let items = doc.templates.valid()?;
        let raw = value.get("templates").and_then(Value::as_array);
        let known = field_names::<TemplateDocument>();
        let mut sources = Vec::with_capacity(items.len());
        let mut seen: Vec<(String, Option<String>, usize)> = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let path = format!("templates[{index}]");
            if let Some(object) = raw.and_then(|r| r.get(index)).and_then(Value::as_object) {
                self.unknown_fields(object, &known, &path);
            }
            let Some(item) = item.valid() else { continue };
            if let Some(usage) = item.usage_type.valid().filter(|u| !u.trim().is_empty()) {
                if UsageType::parse(usage).is_none() {
                    self.warn(
                        join(&path, "usageType"),
                        IssueCode::UnknownUsageType,
                        format!(
                            "\"{usage}\" is not one of Logto's usage types ({}); this template is only used if a sender asks for it",
                            UsageType::names()
                        ),
                    );
                }
            }
            if self.has_errors_under(&path) {
                continue;
            }
            let Some(source) = template_source(item) else {
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
            .filter(|t| {
                !items.iter().any(|item| {
                    item.valid()
                        .and_then(|i| i.usage_type.valid())
                        .is_some_and(|u| u == t.as_str())
                })
            })
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
        if self.has_errors_under("templates") {
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
}

/// A template whose field rules passed, in the form the template module compiles.
fn template_source(item: &TemplateDocument) -> Option<TemplateSource> {
    let content_type = match present(&item.content_type).ok()? {
        None | Some("text/html") => ContentType::Html,
        Some(_) => ContentType::Plain,
    };
    Some(TemplateSource {
        usage_type: item.usage_type.valid()?.clone(),
        locale: checked(&item.locale, Locale::parse),
        subject: item.subject.valid()?.clone(),
        content: item.content.valid()?.clone(),
        content_type,
        text: present(&item.text).ok()?.map(str::to_owned),
        send_from: mailbox(&item.send_from),
        reply_to: mailbox(&item.reply_to),
    })
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

    /// `config` is invalid with an error `code` at `path`.
    fn assert_invalid_at(config: &Value, why: &str, path: &str, code: IssueCode) {
        let report = validate(config);
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
            assert_invalid_at(&config, why, path, code);
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
            assert_invalid_at(&config, why, "templates[3].content", code);
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
