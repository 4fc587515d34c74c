//! The built-in templates and the starter config made from them.

use serde_json::{json, Value};

const EN: &str = include_str!("../templates/en.json");
const FR: &str = include_str!("../templates/fr.json");

/// The languages of the built-in templates; English has no `locale` (the default).
pub const LANGUAGES: [&str; 2] = ["en", "fr"];

/// Every built-in template, English first.
pub fn templates() -> Vec<Value> {
    [EN, FR]
        .iter()
        .flat_map(|source| {
            serde_json::from_str::<Vec<Value>>(source).expect("built-in templates are valid JSON")
        })
        .collect()
}

/// A complete, valid config using the built-in templates. Dev mode runs on it and
/// `init` writes it out as a starting point.
pub fn starter_config() -> Value {
    json!({
        "region": "us-east-1",
        "emailAddress": "ses-connector <noreply@example.com>",
        "templates": templates(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::{validate, ConnectorConfig, UsageType};
    use serde_json::json;

    #[test]
    fn the_starter_config_is_valid_without_warnings() {
        let report = validate(&starter_config());
        assert!(report.valid, "{report:#?}");
        assert!(report.warnings.is_empty(), "{:#?}", report.warnings);
    }

    #[test]
    fn every_usage_type_has_html_and_text_in_every_language() {
        let templates = templates();
        for usage in UsageType::ALL {
            for language in LANGUAGES {
                let found = templates.iter().any(|t| {
                    t["usageType"] == usage.as_str()
                        && t.get("locale").and_then(Value::as_str).unwrap_or("en") == language
                        && t["content"]
                            .as_str()
                            .is_some_and(|c| c.contains("{{#> layout}}"))
                        && t["text"].is_string()
                });
                assert!(found, "no {usage} template in {language}");
            }
        }
    }

    #[test]
    fn built_in_templates_render_branding_and_escape_names() {
        let config = ConnectorConfig::load(starter_config()).unwrap();
        let payload = json!({
            "code": "123456",
            "application": {"name": "Acme <Shop>", "branding": {"logoUrl": "https://cdn.example.com/logo.png"}},
            "organization": {"name": "Team & Co"}
        });
        let selected = config.templates.select(UsageType::SignIn, None).unwrap();
        let email = selected.render(&payload).unwrap();
        let html = email.html.unwrap();
        assert_eq!(email.subject, "123456 is your Acme <Shop> sign-in code");
        assert!(html.contains("Acme &lt;Shop&gt;"), "{html}");
        assert!(html.contains("https://cdn.example.com/logo.png"));
        assert!(html.contains("Team &amp; Co"));
        assert!(html.contains("123456"));
        assert!(email.text.contains("Acme <Shop>"), "{}", email.text);
        assert!(email.text.contains("123456"));
        assert!(!email.text.contains('<') || !email.text.contains("<p"));

        let french = config
            .templates
            .select(UsageType::SignIn, Some("fr-CA"))
            .unwrap();
        assert_eq!(french.choice().locale.as_deref(), Some("fr"));
        let email = french.render(&payload).unwrap();
        assert!(
            email.subject.contains("code de connexion"),
            "{}",
            email.subject
        );
    }
}
