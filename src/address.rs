//! Email addresses as the service accepts them: a recipient (bare addr-spec) and a
//! mailbox (addr-spec with an optional display name), both parsed once.

use std::borrow::Cow;
use std::fmt;

use email_address::{EmailAddress, Options};
use email_encoding::headers::{rfc2047, writer::EmailWriter};

/// Longest recipient address accepted (RFC 5321 path limit less the brackets).
pub const MAX_ADDRESS_LEN: usize = 254;

/// Why an address was refused; the message says what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AddressError(String);

impl AddressError {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// One recipient: a bare `local@domain`, ASCII, no display name, no lists.
#[derive(Clone, PartialEq, Eq)]
pub struct Recipient(String);

impl Recipient {
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        reject_control_chars(input)?;
        if input.is_empty() {
            return Err(AddressError::new("must not be empty"));
        }
        if input.len() > MAX_ADDRESS_LEN {
            return Err(AddressError::new(format!(
                "must be at most {MAX_ADDRESS_LEN} characters, got {}",
                input.len()
            )));
        }
        if input.contains([',', ';']) {
            return Err(AddressError::new(
                "must be one address, not a list (found ',' or ';')",
            ));
        }
        if input.contains('<') || input.contains('>') {
            return Err(AddressError::new(
                "must be a bare address such as user@example.com, without a display name or <>",
            ));
        }
        parse_addr_spec(input)?;
        Ok(Self(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// The address for logs: first letter of the local part, then `***`.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }

    /// The mailbox this address reaches, for rate limits: the local part unquoted,
    /// without its `+tag` and lower-cased; the domain lower-cased and
    /// IDNA-normalised. `"Victim"@Example.org`, `victim+1@example.org` and
    /// `victim@EXAMPLE.ORG` share one key. The address sent to is never changed.
    pub fn limit_key(&self) -> String {
        let (local, domain) = self.0.rsplit_once('@').unwrap_or(("", &self.0));
        let local = match local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) {
            Some(quoted) => unescape_quoted(quoted),
            None => local.to_owned(),
        };
        let local = match local.split_once('+') {
            Some((mailbox, _tag)) if !mailbox.is_empty() => mailbox,
            _ => &local,
        };
        let domain = idna::domain_to_ascii(domain).unwrap_or_else(|_| domain.to_ascii_lowercase());
        format!("{}@{domain}", local.to_lowercase())
    }

    /// The mailbox this address names, for suppression: see [`suppression_key`].
    pub fn suppression_key(&self) -> String {
        suppression_key(&self.0)
    }
}

/// The key a mailbox is suppressed under, from an address as sent or as SES reported
/// it: the domain lower-cased and IDNA-normalised, the local part case-folded,
/// nothing else removed. Unlike [`Recipient::limit_key`], `victim+promo@corp.example`
/// and `victim@corp.example` stay apart: a server that hard-bounces one tag says
/// nothing of the mailbox without it.
pub fn suppression_key(address: &str) -> String {
    let address = address.trim();
    let Some((local, domain)) = address.rsplit_once('@') else {
        return address.to_lowercase();
    };
    let domain = idna::domain_to_ascii(domain).unwrap_or_else(|_| domain.to_lowercase());
    format!("{}@{domain}", local.to_lowercase())
}

impl fmt::Debug for Recipient {
    // Recipients are personal data: even debug output masks them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recipient({})", self.masked())
    }
}

/// A sender-side mailbox: `a@b.c`, `<a@b.c>`, `Name <a@b.c>` or `"Name, Inc." <a@b.c>`.
/// Kept exactly as written, because SES takes the same string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    text: String,
    address: String,
}

impl Mailbox {
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        reject_control_chars(input)?;
        let text = input.trim();
        if text.is_empty() {
            return Err(AddressError::new("must not be empty"));
        }
        let address = match text.rfind('<') {
            None => text,
            Some(open) => {
                let Some(inner) = text[open + 1..].strip_suffix('>') else {
                    return Err(AddressError::new(
                        "has a '<' without a closing '>' at the end; expected `Name <user@example.com>`",
                    ));
                };
                check_display_name(text[..open].trim())?;
                inner
            }
        };
        if address.contains([',', ';', '<', '>']) {
            return Err(AddressError::new(
                "must be one mailbox such as `Name <user@example.com>`",
            ));
        }
        parse_addr_spec(address)?;
        Ok(Self {
            text: text.to_owned(),
            address: address.to_owned(),
        })
    }

    /// The mailbox as configured, display name included.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The bare `local@domain` part.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The mailbox as a header value for SES. SES takes only 7-bit ASCII here, so a
    /// display name with other characters becomes an RFC 2047 encoded-word
    /// (`Société <a@example.com>` → `=?utf-8?b?U29jacOpdMOp?= <a@example.com>`);
    /// an ASCII mailbox is sent exactly as written.
    pub fn header_value(&self) -> Cow<'_, str> {
        if self.text.is_ascii() {
            return Cow::Borrowed(&self.text);
        }
        let name = self.text[..self.text.rfind('<').unwrap_or(0)].trim();
        let name = match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
            Some(quoted) => unescape_quoted(quoted),
            None => name.to_owned(),
        };
        let mut encoded = String::new();
        {
            let mut writer = EmailWriter::new(&mut encoded, 0, 0, false);
            // Writing to a String cannot fail.
            let _ = rfc2047::encode(&name, &mut writer);
        }
        // The encoder folds long names over several lines; one header value is one
        // line, and an unfolded fold is the space between two encoded-words.
        Cow::Owned(format!(
            "{} <{}>",
            encoded.replace("\r\n", ""),
            self.address
        ))
    }
}

/// The text of a quoted string: `\x` stands for `x`.
fn unescape_quoted(quoted: &str) -> String {
    let mut text = String::with_capacity(quoted.len());
    let mut escaped = false;
    for c in quoted.chars() {
        if !escaped && c == '\\' {
            escaped = true;
        } else {
            text.push(c);
            escaped = false;
        }
    }
    text
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn reject_control_chars(input: &str) -> Result<(), AddressError> {
    if input.contains(['\r', '\n']) {
        return Err(AddressError::new(
            "must not contain a line break (CR or LF)",
        ));
    }
    if input.chars().any(char::is_control) {
        return Err(AddressError::new("must not contain control characters"));
    }
    Ok(())
}

fn parse_addr_spec(address: &str) -> Result<(), AddressError> {
    if !address.is_ascii() {
        return Err(AddressError::new(
            "must be ASCII; write an internationalised domain in punycode (xn--…)",
        ));
    }
    let options = Options {
        allow_display_text: false,
        allow_domain_literal: false,
        ..Options::default()
    };
    EmailAddress::parse_with_options(address, options)
        .map(drop)
        .map_err(|e| {
            AddressError::new(format!(
                "is not a valid email address such as user@example.com ({e})"
            ))
        })
}

/// A display name is a quoted string or a run of words without RFC 5322 specials.
fn check_display_name(name: &str) -> Result<(), AddressError> {
    if name.is_empty() {
        return Ok(());
    }
    if let Some(rest) = name.strip_prefix('"') {
        let Some(inner) = rest.strip_suffix('"') else {
            return Err(AddressError::new("display name has an unclosed '\"'"));
        };
        let mut escaped = false;
        for c in inner.chars() {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => {
                    return Err(AddressError::new(
                        "display name has an unescaped '\"' inside quotes",
                    ))
                }
                _ => {}
            }
        }
        return Ok(());
    }
    if let Some(c) = name.chars().find(|c| {
        matches!(
            c,
            ',' | ';' | ':' | '@' | '<' | '>' | '[' | ']' | '\\' | '"'
        )
    }) {
        return Err(AddressError::new(format!(
            "display name contains '{c}'; put it in double quotes, e.g. `\"{name}\" <user@example.com>`"
        )));
    }
    Ok(())
}

/// `user@example.com` → `u***@example.com`.
pub fn mask(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let first = local.chars().next().unwrap_or('*');
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

/// `text` with every address in it masked as [`mask`] does (`u***@example.com`):
/// SES's diagnostic codes and error messages often name the recipient in full.
pub fn mask_addresses(text: &str) -> Cow<'_, str> {
    if !text.contains('@') {
        return Cow::Borrowed(text);
    }
    let is_local = |c: char| c.is_alphanumeric() || "._%+-!#$&'*/=?^`{|}~".contains(c);
    let is_domain = |c: char| c.is_alphanumeric() || c == '.' || c == '-';
    let mut masked = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('@') {
        let (before, after) = (&rest[..at], &rest[at + 1..]);
        let local_start = match quoted_start(before) {
            // A quoted local part (`"john.doe"@…`) is one whole, spaces and all.
            Some(start) => start,
            None => before
                .char_indices()
                .rev()
                .take_while(|(_, c)| is_local(*c))
                .last()
                .map_or(before.len(), |(i, _)| i),
        };
        let domain_len = after
            .char_indices()
            .take_while(|(_, c)| is_domain(*c))
            .last()
            .map_or(0, |(i, c)| i + c.len_utf8());
        // A sentence may end right after the address.
        let domain = after[..domain_len].trim_end_matches(['.', '-']);
        let local = &before[local_start..];
        if local.is_empty() || domain.is_empty() {
            masked.push_str(&rest[..=at]);
            rest = after;
            continue;
        }
        masked.push_str(&before[..local_start]);
        masked.push_str(&mask(&format!("{local}@{domain}")));
        rest = &after[domain.len()..];
    }
    masked.push_str(rest);
    Cow::Owned(masked)
}

/// Where a quoted string that ends `text` begins (its opening quote), if `text`
/// ends with one; a quote escaped with a backslash does not end it.
fn quoted_start(text: &str) -> Option<usize> {
    let inner = text.strip_suffix('"')?;
    let bytes = inner.as_bytes();
    let mut i = bytes.len();
    while i > 0 {
        i -= 1;
        if bytes[i] == b'"' {
            let backslashes = bytes[..i].iter().rev().take_while(|b| **b == b'\\').count();
            if backslashes % 2 == 0 {
                return Some(i);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes what `header_value` writes (B-encoded UTF-8 words), for the tests.
    fn decode_words(value: &str) -> String {
        use base64::Engine;
        value
            .split(' ')
            .map(|word| {
                let payload = word
                    .strip_prefix("=?utf-8?b?")
                    .and_then(|w| w.strip_suffix("?="))
                    .unwrap_or_else(|| panic!("not an encoded-word: {word}"));
                base64::engine::general_purpose::STANDARD
                    .decode(payload)
                    .unwrap()
            })
            .map(|bytes| String::from_utf8(bytes).unwrap())
            .collect()
    }

    #[test]
    fn non_ascii_display_names_become_encoded_words_and_ascii_ones_stay_as_written() {
        let ascii = Mailbox::parse("\"Acme, Inc.\" <noreply@example.com>").unwrap();
        assert_eq!(ascii.header_value(), "\"Acme, Inc.\" <noreply@example.com>");

        let cases: &[(&str, &str)] = &[
            ("Société Générale <noreply@example.com>", "Société Générale"),
            ("\"Dupont, Société\" <noreply@example.com>", "Dupont, Société"),
            ("\"Ann \\\"Zoë\\\" Lee\" <noreply@example.com>", "Ann \"Zoë\" Lee"),
            ("株式会社サンプル <noreply@example.com>", "株式会社サンプル"),
            (
                "Une très très longue raison sociale qui dépasse une ligne d'en-tête <noreply@example.com>",
                "Une très très longue raison sociale qui dépasse une ligne d'en-tête",
            ),
        ];
        for (input, name) in cases {
            let value = Mailbox::parse(input).unwrap().header_value().into_owned();
            assert!(value.is_ascii(), "{input} → {value}");
            assert!(!value.contains(['\r', '\n']), "{input} → {value}");
            let (words, address) = value.rsplit_once(' ').unwrap();
            assert_eq!(address, "<noreply@example.com>", "{input}");
            assert_eq!(decode_words(words), *name, "{input} → {value}");
        }
    }

    #[test]
    fn recipients_are_bare_single_ascii_addresses() {
        let cases: &[(&str, bool, &str)] = &[
            ("user@example.com", true, "plain address"),
            (
                "first.last+tag@sub.example.co.uk",
                true,
                "dots, plus and subdomains",
            ),
            ("", false, "empty"),
            ("user", false, "no @"),
            ("user@", false, "no domain"),
            ("@example.com", false, "no local part"),
            ("User <user@example.com>", false, "display name"),
            ("<user@example.com>", false, "angle brackets"),
            ("a@example.com,b@example.com", false, "comma list"),
            ("a@example.com;b@example.com", false, "semicolon list"),
            (
                "user@example.com\r\nBcc: x@evil.com",
                false,
                "CRLF injection",
            ),
            ("user@example.com\n", false, "trailing LF"),
            ("us er@example.com", false, "space"),
            ("user@[127.0.0.1]", false, "domain literal"),
            ("usér@example.com", false, "non-ASCII"),
        ];
        for (input, ok, why) in cases {
            assert_eq!(Recipient::parse(input).is_ok(), *ok, "{why}: {input:?}");
        }
    }

    #[test]
    fn a_recipient_longer_than_254_characters_is_refused() {
        let long = format!("{}@{}.com", "a".repeat(64), "b".repeat(190));
        assert!(long.len() > MAX_ADDRESS_LEN);
        let err = Recipient::parse(&long).unwrap_err();
        assert!(err.to_string().contains("254"), "{err}");
    }

    #[test]
    fn mailboxes_accept_the_forms_logto_accepts() {
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("noreply@example.com", Some("noreply@example.com"), "bare"),
            (
                "<noreply@example.com>",
                Some("noreply@example.com"),
                "brackets only",
            ),
            (
                "Logto <noreply@example.com>",
                Some("noreply@example.com"),
                "display name",
            ),
            (
                "\"Acme, Inc.\" <noreply@example.com>",
                Some("noreply@example.com"),
                "quoted name",
            ),
            (
                "\"Say \\\"hi\\\"\" <a@example.com>",
                Some("a@example.com"),
                "escaped quotes",
            ),
            ("Acme, Inc. <noreply@example.com>", None, "unquoted comma"),
            ("Logto <noreply@example.com", None, "unclosed bracket"),
            ("Logto\r\n <noreply@example.com>", None, "CRLF in name"),
            ("Logto <noreply@example.com>\nBcc: x@y.z", None, "LF after"),
            ("\"Unclosed <a@example.com>", None, "unclosed quote"),
            ("Logto <not-an-address>", None, "bad address"),
            ("", None, "empty"),
        ];
        for (input, address, why) in cases {
            let parsed = Mailbox::parse(input);
            assert_eq!(
                parsed.as_ref().ok().map(Mailbox::address),
                *address,
                "{why}: {input:?} → {parsed:?}"
            );
        }
    }

    #[test]
    fn a_mailbox_keeps_the_text_as_configured() {
        let mailbox = Mailbox::parse("  Logto <noreply@example.com> ").unwrap();
        assert_eq!(mailbox.as_str(), "Logto <noreply@example.com>");
    }

    #[test]
    fn masking_keeps_only_the_first_letter_and_the_domain() {
        assert_eq!(mask("user@example.com"), "u***@example.com");
        let recipient = Recipient::parse("alice@example.org").unwrap();
        assert_eq!(format!("{recipient:?}"), "Recipient(a***@example.org)");
    }

    #[test]
    fn suppression_keeps_tags_apart_and_folds_only_case() {
        let key = |a: &str| Recipient::parse(a).unwrap().suppression_key();
        assert_eq!(
            key("victim+promo@corp.example"),
            "victim+promo@corp.example"
        );
        assert_eq!(
            key("VICTIM+promo@CORP.example"),
            "victim+promo@corp.example"
        );
        assert_ne!(key("victim+promo@corp.example"), key("victim@corp.example"));
        assert_eq!(key("\"Victim\"@corp.example"), "\"victim\"@corp.example");
        assert_eq!(
            suppression_key("a@B\u{fc}cher.example"),
            "a@xn--bcher-kva.example"
        );
        // Rate limits still fold tags.
        assert_eq!(
            Recipient::parse("victim+promo@corp.example")
                .unwrap()
                .limit_key(),
            "victim@corp.example"
        );
    }

    #[test]
    fn addresses_inside_free_text_are_masked() {
        let cases: &[(&str, &str)] = &[
            (
                "Email address is not verified. The following identities failed the check in region US-EAST-1: user@example.com",
                "Email address is not verified. The following identities failed the check in region US-EAST-1: u***@example.com",
            ),
            (
                "smtp; 550 5.1.1 <victim+promo@corp.example>: Recipient address rejected.",
                "smtp; 550 5.1.1 <v***@corp.example>: Recipient address rejected.",
            ),
            (
                "sent to a@x.org. And b.c@y.example",
                "sent to a***@x.org. And b***@y.example",
            ),
            (
                r#"smtp; 550 <"john.doe"@example.com> unknown"#,
                r#"smtp; 550 <"***@example.com> unknown"#,
            ),
            (r#"to "a b"@x.org, "c\"d"@y.org"#, r#"to "***@x.org, "***@y.org"#),
            ("no address here @ all", "no address here @ all"),
            ("", ""),
        ];
        for (text, masked) in cases {
            assert_eq!(mask_addresses(text), *masked, "{text}");
        }
    }
}
