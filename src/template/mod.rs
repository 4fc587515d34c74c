//! Compile and render the email templates of one config; choose one by usage type
//! and locale. Knows nothing of HTTP or AWS.

pub mod bounds;

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use handlebars::{Context, Handlebars};
use serde::Serialize;
use serde_json::Value;

use crate::address::Mailbox;
use crate::connector::{Locale, UsageType};
pub use bounds::Unbounded;
use bounds::{BoundedBuffer, Measure, MAX_NESTING, MAX_RENDER_TIME};

/// The largest buffer reserved ahead of a render from the last one's size; bigger
/// renders grow as they go.
const MAX_SIZE_HINT: usize = 16 * 1024;

/// Shared layouts, usable from any template as `{{#> layout}}…{{/layout}}`.
const HTML_LAYOUT: &str = include_str!("../../templates/layout.html.hbs");
const TEXT_LAYOUT: &str = include_str!("../../templates/layout.txt.hbs");

/// Width at which derived plain-text parts are wrapped.
const TEXT_WIDTH: usize = 78;

/// How a template's `content` is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ContentType {
    #[serde(rename = "text/html")]
    Html,
    #[serde(rename = "text/plain")]
    Plain,
}

/// One template as written in the config, already checked field by field.
#[derive(Debug, Clone)]
pub struct TemplateSource {
    pub usage_type: String,
    pub locale: Option<Locale>,
    pub subject: String,
    pub content: String,
    pub content_type: ContentType,
    pub text: Option<String>,
    pub send_from: Option<Mailbox>,
    pub reply_to: Option<Mailbox>,
}

/// A template string that does not compile: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Index of the template in the config's `templates` array.
    pub index: usize,
    /// `subject`, `content` or `text`.
    pub field: &'static str,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub reason: String,
    /// Set when the template compiles but could recurse or nest without bound.
    pub unbounded: Option<Unbounded>,
}

/// A rendering failure (a missing partial, a helper given the wrong argument).
#[derive(Debug, thiserror::Error)]
#[error("template {usage_type} ({field}) failed to render: {reason}")]
pub struct RenderError {
    pub usage_type: String,
    pub field: &'static str,
    pub reason: String,
}

/// The template chosen for a send, as reported to the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateChoice {
    pub usage_type: String,
    pub locale: Option<String>,
}

/// An email ready for a transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedEmail {
    pub subject: String,
    /// Absent for `text/plain` templates.
    pub html: Option<String>,
    pub text: String,
}

struct Entry {
    source: TemplateSource,
    subject: String,
    content: String,
    text: Option<String>,
    /// The length of each part's (subject, content, text) last render: the next
    /// render's buffer is sized once instead of growing write by write.
    last_len: [AtomicUsize; 3],
}

/// Every template of one config, compiled once when the config is loaded.
pub struct TemplateSet {
    entries: Vec<Entry>,
    html: Handlebars<'static>,
    plain: Handlebars<'static>,
}

impl std::fmt::Debug for TemplateSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplateSet")
            .field("templates", &self.entries.len())
            .finish()
    }
}

/// A template found by [`TemplateSet::select`].
#[derive(Clone, Copy)]
pub struct Selected<'a> {
    set: &'a TemplateSet,
    entry: &'a Entry,
}

impl TemplateSet {
    /// Compile all templates; report every template string that does not compile.
    pub fn compile(sources: Vec<TemplateSource>) -> Result<Self, Vec<SyntaxError>> {
        let mut html = registry(true);
        let mut plain = registry(false);
        let mut errors = Vec::new();
        let mut entries = Vec::with_capacity(sources.len());
        for (index, source) in sources.into_iter().enumerate() {
            let subject = format!("{index}.subject");
            let content = format!("{index}.content");
            let text = source.text.as_ref().map(|_| format!("{index}.text"));
            let content_registry = match source.content_type {
                ContentType::Html => &mut html,
                ContentType::Plain => &mut plain,
            };
            let mut add = |registry: &mut Handlebars<'static>, name: &str, field, body: &str| {
                // handlebars parses and renders by recursion: measure nesting first.
                if bounds::lexical_nesting(body) > MAX_NESTING {
                    errors.push(SyntaxError::unbounded(index, field, Unbounded::TooDeep));
                    return;
                }
                if let Err(e) = registry.register_template_string(name, body) {
                    let position = e.pos();
                    errors.push(SyntaxError {
                        index,
                        field,
                        line: position.map(|p| p.0),
                        column: position.map(|p| p.1),
                        reason: e.reason().to_string(),
                        unbounded: None,
                    });
                }
            };
            add(content_registry, &content, "content", &source.content);
            add(&mut plain, &subject, "subject", &source.subject);
            if let (Some(name), Some(body)) = (&text, &source.text) {
                add(&mut plain, name, "text", body);
            }
            entries.push(Entry {
                source,
                subject,
                content,
                text,
                last_len: Default::default(),
            });
        }
        for registry in [&html, &plain] {
            errors.extend(measure(registry));
        }
        if errors.is_empty() {
            Ok(Self {
                entries,
                html,
                plain,
            })
        } else {
            Err(errors)
        }
    }

    /// Find the template for `usage` in `locale`: the usage type, then `Generic`; for
    /// each, the tag, then its parents, then a template without a locale.
    pub fn select(&self, usage: UsageType, locale: Option<&str>) -> Option<Selected<'_>> {
        let generic = (usage != UsageType::Generic).then_some(UsageType::Generic.as_str());
        let usages = std::iter::once(usage.as_str()).chain(generic);
        let tags: Vec<&str> = locale.map(lookup_chain).unwrap_or_default();
        for wanted in usages {
            let of_usage = || {
                self.entries
                    .iter()
                    .filter(|e| e.source.usage_type == wanted)
            };
            for tag in &tags {
                let found = of_usage().find(|e| {
                    e.source
                        .locale
                        .as_ref()
                        .is_some_and(|l| l.as_str().eq_ignore_ascii_case(tag))
                });
                if let Some(entry) = found {
                    return Some(Selected { set: self, entry });
                }
            }
            if let Some(entry) = of_usage().find(|e| e.source.locale.is_none()) {
                return Some(Selected { set: self, entry });
            }
        }
        None
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The templates as configured, in the config's order.
    pub fn sources(&self) -> impl Iterator<Item = &TemplateSource> {
        self.entries.iter().map(|e| &e.source)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<'a> Selected<'a> {
    pub fn source(&self) -> &'a TemplateSource {
        &self.entry.source
    }

    pub fn choice(&self) -> TemplateChoice {
        TemplateChoice {
            usage_type: self.entry.source.usage_type.clone(),
            locale: self.entry.source.locale.as_ref().map(|l| l.to_string()),
        }
    }

    /// Render subject, HTML and text with `payload` as the variables.
    pub fn render(&self, payload: &Value) -> Result<RenderedEmail, RenderError> {
        self.render_owned(payload.clone())
    }

    /// As [`Self::render`], taking the variables by value (no copy). A render that
    /// would take too long or grow too large fails instead ([`bounds`]).
    pub fn render_owned(&self, mut payload: Value) -> Result<RenderedEmail, RenderError> {
        let deadline = std::time::Instant::now() + MAX_RENDER_TIME;
        let entry = self.entry;
        drop_unsafe_urls(&mut payload);
        if let (Value::Object(variables), Some(locale)) = (&mut payload, &entry.source.locale) {
            // The layout's `<html lang>`: the language the chosen template is in.
            variables
                .entry("templateLocale")
                .or_insert_with(|| Value::String(locale.as_str().to_owned()));
        }
        let context = Context::from(payload);
        let part = |registry: &Handlebars<'static>, name: &str, field: &'static str| {
            let slot = match field {
                "subject" => 0,
                "content" => 1,
                _ => 2,
            };
            let last_len = &entry.last_len[slot];
            // One hostile payload that renders huge must not make every later send
            // reserve that much: the hint is capped.
            let hint = last_len.load(Relaxed).min(MAX_SIZE_HINT);
            let mut buffer = BoundedBuffer::with_capacity(deadline, hint);
            match registry.render_with_context_to_write(name, &context, &mut buffer) {
                Ok(()) => {
                    let rendered = buffer.into_string();
                    last_len.store(rendered.len(), Relaxed);
                    Ok(rendered)
                }
                Err(e) => Err(RenderError {
                    usage_type: entry.source.usage_type.clone(),
                    field,
                    reason: buffer.stopped.take().unwrap_or_else(|| e.to_string()),
                }),
            }
        };
        let subject = clean_subject(part(&self.set.plain, &entry.subject, "subject")?);
        let (html, text) = match entry.source.content_type {
            ContentType::Plain => (None, part(&self.set.plain, &entry.content, "content")?),
            ContentType::Html => {
                let html = part(&self.set.html, &entry.content, "content")?;
                let text = match &entry.text {
                    Some(name) => part(&self.set.plain, name, "text")?,
                    None => html_to_text(&html),
                };
                (Some(html), text)
            }
        };
        Ok(RenderedEmail {
            subject,
            html,
            text,
        })
    }
}

impl SyntaxError {
    fn unbounded(index: usize, field: &'static str, why: Unbounded) -> Self {
        Self {
            index,
            field,
            line: None,
            column: None,
            reason: why.to_string(),
            unbounded: Some(why),
        }
    }
}

/// Measure every template registered from the config (`<index>.<field>`) in one
/// registry, with the partials it may include.
fn measure(registry: &Handlebars<'static>) -> Vec<SyntaxError> {
    let templates = registry.get_templates();
    let mut measure = Measure::new(templates.iter().map(|(n, t)| (n.as_str(), t)));
    let mut errors = Vec::new();
    let mut names: Vec<&String> = templates.keys().collect();
    names.sort();
    for name in names {
        let Some((index, field)) = name.split_once('.') else {
            continue;
        };
        let (Ok(index), Some(field)) = (
            index.parse::<usize>(),
            ["subject", "content", "text"]
                .into_iter()
                .find(|f| *f == field),
        ) else {
            continue;
        };
        if let Err(why) = measure.check(name) {
            errors.push(SyntaxError::unbounded(index, field, why));
        }
    }
    errors
}

fn registry(html: bool) -> Handlebars<'static> {
    let mut registry = Handlebars::new();
    // A variable the caller did not send renders as an empty string.
    registry.set_strict_mode(false);
    let layout = if html {
        HTML_LAYOUT
    } else {
        registry.register_escape_fn(handlebars::no_escape);
        TEXT_LAYOUT
    };
    registry
        .register_partial("layout", layout)
        .expect("built-in layout compiles");
    registry
}

/// Remove `link` and `…Url` values that are not http(s) URLs, at any depth, so that
/// a `javascript:` or `data:` URL from a caller never becomes a link or an image in
/// an email; `{{#if link}}` then sees no link.
fn drop_unsafe_urls(value: &mut Value) {
    match value {
        Value::Object(object) => {
            object.retain(|key, value| {
                let is_url = key == "link" || key.ends_with("Url") || key.ends_with("url");
                !(is_url && value.as_str().is_some_and(|url| !is_web_url(url)))
            });
            object.values_mut().for_each(drop_unsafe_urls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_unsafe_urls),
        _ => {}
    }
}

/// `http://…` or `https://…`, case-insensitively; nothing else.
fn is_web_url(url: &str) -> bool {
    let url = url.trim_start();
    ["http://", "https://"].iter().any(|scheme| {
        url.get(..scheme.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
    })
}

/// `zh-Hant-TW` → `["zh-Hant-TW", "zh-Hant", "zh"]` (RFC 4647 lookup order).
fn lookup_chain(tag: &str) -> Vec<&str> {
    let mut chain = Vec::new();
    let mut current = tag.trim();
    while !current.is_empty() {
        chain.push(current);
        let Some(cut) = current.rfind('-') else { break };
        current = &current[..cut];
        // A singleton (`x`, `u`) never stands alone at the end of a tag.
        if current.rsplit('-').next().is_some_and(|s| s.len() == 1) {
            current = current.rfind('-').map_or("", |cut| &current[..cut]);
        }
    }
    chain
}

/// Subjects go into a mail header: control characters become spaces.
fn clean_subject(subject: String) -> String {
    if !subject.chars().any(char::is_control) {
        return subject;
    }
    subject
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Readable text from rendered HTML, links kept as URLs in footnotes.
pub fn html_to_text(html: &str) -> String {
    html2text::config::plain()
        .link_footnotes(true)
        .string_from_read(html.as_bytes(), TEXT_WIDTH)
        .unwrap_or_else(|_| html.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn source(usage: &str, locale: Option<&str>, subject: &str, content: &str) -> TemplateSource {
        TemplateSource {
            usage_type: usage.to_owned(),
            locale: locale.map(|l| Locale::parse(l).unwrap()),
            subject: subject.to_owned(),
            content: content.to_owned(),
            content_type: ContentType::Html,
            text: None,
            send_from: None,
            reply_to: None,
        }
    }

    fn render(source: TemplateSource, payload: Value) -> RenderedEmail {
        let usage = UsageType::parse(&source.usage_type).unwrap();
        let set = TemplateSet::compile(vec![source]).unwrap();
        set.select(usage, None).unwrap().render(&payload).unwrap()
    }

    #[test]
    fn html_content_is_escaped_but_subject_and_text_are_not() {
        let mut template = source(
            "SignIn",
            None,
            "{{application.name}} code",
            "<p>{{application.name}}</p><p>{{{trusted}}}</p>",
        );
        template.text = Some("Hi from {{application.name}}".to_owned());
        let email = render(
            template,
            json!({"application": {"name": "Tom & <b>Jerry</b>"}, "trusted": "<i>ok</i>"}),
        );
        assert_eq!(email.subject, "Tom & <b>Jerry</b> code");
        assert_eq!(
            email.html.as_deref(),
            Some("<p>Tom &amp; &lt;b&gt;Jerry&lt;/b&gt;</p><p><i>ok</i></p>")
        );
        assert_eq!(email.text, "Hi from Tom & <b>Jerry</b>");
    }

    #[test]
    fn logto_placeholders_with_spaces_and_nesting_render() {
        let email = render(
            source(
                "SignIn",
                None,
                "{{ code }}",
                "{{code}} {{ application.name }} {{#if link}}<a href=\"{{link}}\">go</a>{{/if}}",
            ),
            json!({"code": "123456", "application": {"name": "App"}}),
        );
        assert_eq!(email.subject, "123456");
        assert_eq!(email.html.as_deref(), Some("123456 App "));
    }

    #[test]
    fn missing_variables_render_as_empty_strings() {
        let email = render(
            source("SignIn", None, "[{{code}}]", "[{{user.name}}]"),
            json!({}),
        );
        assert_eq!(email.subject, "[]");
        assert_eq!(email.html.as_deref(), Some("[]"));
    }

    #[test]
    fn control_characters_in_a_rendered_subject_become_spaces() {
        let email = render(
            source("SignIn", None, "Code {{code}}", "x"),
            json!({"code": "1\r\nBcc: evil@example.com\t2"}),
        );
        assert_eq!(email.subject, "Code 1  Bcc: evil@example.com 2");
    }

    #[test]
    fn plain_text_content_is_sent_as_text_only_and_never_escaped() {
        let mut template = source("SignIn", None, "s", "Code: {{code}} & more");
        template.content_type = ContentType::Plain;
        let email = render(template, json!({"code": "<1>"}));
        assert_eq!(email.html, None);
        assert_eq!(email.text, "Code: <1> & more");
    }

    #[test]
    fn the_text_part_is_derived_from_html_keeping_links() {
        let email = render(
            source(
                "SignIn",
                None,
                "s",
                "<h1>Hello</h1><p>Your code is <b>{{code}}</b>.</p><p><a href=\"https://example.com/verify\">Verify</a></p>",
            ),
            json!({"code": "123456"}),
        );
        assert!(email.text.contains("Your code is"), "{}", email.text);
        assert!(email.text.contains("123456"), "{}", email.text);
        assert!(
            email.text.contains("https://example.com/verify"),
            "{}",
            email.text
        );
        assert!(!email.text.contains("<p>"), "{}", email.text);
    }

    #[test]
    fn syntax_errors_carry_the_field_and_position() {
        let errors = TemplateSet::compile(vec![
            source("SignIn", None, "ok", "ok"),
            source("Register", None, "ok", "line one\n{{#if code}}unclosed"),
        ])
        .unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].index, 1);
        assert_eq!(errors[0].field, "content");
        assert!(errors[0].line.is_some(), "{errors:?}");
    }

    #[test]
    fn a_render_larger_than_the_bound_fails_instead_of_growing() {
        let set = TemplateSet::compile(vec![source(
            "SignIn",
            None,
            "s",
            "{{#each items}}<p>{{../big}}</p>{{/each}}",
        )])
        .unwrap();
        let selected = set.select(UsageType::SignIn, None).unwrap();
        let items: Vec<u8> = vec![0; 100];
        let error = selected
            .render(&json!({"big": "x".repeat(10_000), "items": items}))
            .unwrap_err();
        assert_eq!(error.field, "content");
        assert!(error.reason.contains("larger than 256 KiB"), "{error}");
        let fine = selected
            .render(&json!({"big": "x".repeat(1_000), "items": items}))
            .unwrap();
        assert!(fine.html.unwrap().len() > 100_000);
    }

    #[test]
    fn links_and_logos_that_are_not_web_urls_are_not_rendered() {
        let set = TemplateSet::compile(vec![source(
            "SignIn",
            None,
            "s",
            r#"{{#> layout}}{{#if link}}<a href="{{link}}">go</a>{{else}}no link{{/if}}{{/layout}}"#,
        )])
        .unwrap();
        let selected = set.select(UsageType::SignIn, None).unwrap();
        for bad in [
            "javascript:alert(1)",
            " JavaScript:alert(1)",
            "data:text/html,x",
            "vbscript:x",
            "//evil",
        ] {
            let html = selected
                .render(&json!({"link": bad, "application": {"name": "A", "branding": {"logoUrl": bad}}}))
                .unwrap()
                .html
                .unwrap();
            assert!(html.contains("no link"), "{bad}: {html}");
            assert!(!html.contains("<img"), "{bad}: {html}");
        }
        let html = selected
            .render(&json!({"link": "HTTPS://example.com/x", "application": {"branding": {"logoUrl": "https://example.com/l.png"}}}))
            .unwrap()
            .html
            .unwrap();
        assert!(
            html.contains(r#"<a href="HTTPS://example.com/x">"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<img src="https://example.com/l.png""#),
            "{html}"
        );
    }

    #[test]
    fn the_html_lang_is_the_chosen_templates_locale() {
        let set = TemplateSet::compile(vec![
            source("SignIn", Some("fr"), "s", "{{#> layout}}x{{/layout}}"),
            source("Generic", None, "s", "{{#> layout}}x{{/layout}}"),
        ])
        .unwrap();
        let french = set.select(UsageType::SignIn, Some("fr-CA")).unwrap();
        let html = french
            .render(&json!({"locale": "fr-CA"}))
            .unwrap()
            .html
            .unwrap();
        assert!(html.contains(r#"<html lang="fr">"#), "{html}");
        let generic = set.select(UsageType::Register, Some("ja")).unwrap();
        let html = generic
            .render(&json!({"locale": "ja"}))
            .unwrap()
            .html
            .unwrap();
        assert!(html.contains(r#"<html lang="en">"#), "{html}");
    }

    #[test]
    fn lookup_chain_drops_subtags_one_by_one() {
        assert_eq!(lookup_chain("zh-Hant-TW"), ["zh-Hant-TW", "zh-Hant", "zh"]);
        assert_eq!(lookup_chain("en"), ["en"]);
        assert_eq!(lookup_chain("de-x-foo"), ["de-x-foo", "de"]);
    }

    fn locale_set() -> TemplateSet {
        TemplateSet::compile(vec![
            source("SignIn", None, "signin-default", "x"),
            source("SignIn", Some("zh-Hant"), "signin-zh-hant", "x"),
            source("SignIn", Some("fr"), "signin-fr", "x"),
            source("Generic", Some("de"), "generic-de", "x"),
            source("Generic", None, "generic-default", "x"),
        ])
        .unwrap()
    }

    #[test]
    fn locale_lookup_follows_the_specified_order() {
        let set = locale_set();
        let cases: &[(UsageType, Option<&str>, &str, &str)] = &[
            (UsageType::SignIn, Some("fr"), "signin-fr", "exact tag"),
            (
                UsageType::SignIn,
                Some("FR-ca"),
                "signin-fr",
                "parent, case-insensitive",
            ),
            (
                UsageType::SignIn,
                Some("zh-Hant-TW"),
                "signin-zh-hant",
                "parent of a 3-part tag",
            ),
            (
                UsageType::SignIn,
                Some("de"),
                "signin-default",
                "type without locale before Generic",
            ),
            (
                UsageType::SignIn,
                None,
                "signin-default",
                "no locale requested",
            ),
            (
                UsageType::Register,
                Some("de-AT"),
                "generic-de",
                "Generic in the parent locale",
            ),
            (
                UsageType::Register,
                Some("es"),
                "generic-default",
                "Generic without locale",
            ),
        ];
        for (usage, locale, subject, why) in cases {
            let chosen = set.select(*usage, *locale).unwrap();
            assert_eq!(chosen.source().subject, *subject, "{why}");
        }
    }

    #[test]
    fn no_template_is_found_when_neither_type_nor_generic_matches() {
        let set = TemplateSet::compile(vec![source("SignIn", Some("fr"), "s", "x")]).unwrap();
        assert!(set.select(UsageType::Register, None).is_none());
        assert!(set.select(UsageType::SignIn, Some("de")).is_none());
    }
}
