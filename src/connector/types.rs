//! Newtypes for the config's values, each built only by `parse`.

use std::fmt;

/// Logto's `TemplateType`: what a verification email is for.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
    utoipa::ToSchema,
)]
pub enum UsageType {
    SignIn,
    Register,
    ForgotPassword,
    OrganizationInvitation,
    Generic,
    UserPermissionValidation,
    BindNewIdentifier,
    MfaVerification,
    BindMfa,
}

impl UsageType {
    pub const ALL: [UsageType; 9] = [
        UsageType::SignIn,
        UsageType::Register,
        UsageType::ForgotPassword,
        UsageType::OrganizationInvitation,
        UsageType::Generic,
        UsageType::UserPermissionValidation,
        UsageType::BindNewIdentifier,
        UsageType::MfaVerification,
        UsageType::BindMfa,
    ];

    /// The types Logto's AWS SES connector requires a template for.
    pub const REQUIRED: [UsageType; 4] = [
        UsageType::Register,
        UsageType::SignIn,
        UsageType::ForgotPassword,
        UsageType::Generic,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UsageType::SignIn => "SignIn",
            UsageType::Register => "Register",
            UsageType::ForgotPassword => "ForgotPassword",
            UsageType::OrganizationInvitation => "OrganizationInvitation",
            UsageType::Generic => "Generic",
            UsageType::UserPermissionValidation => "UserPermissionValidation",
            UsageType::BindNewIdentifier => "BindNewIdentifier",
            UsageType::MfaVerification => "MfaVerification",
            UsageType::BindMfa => "BindMfa",
        }
    }

    /// Exact, case-sensitive match, as Logto matches.
    pub fn parse(input: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == input)
    }

    /// The nine names, comma-separated, for error messages.
    pub fn names() -> String {
        Self::ALL.map(UsageType::as_str).join(", ")
    }
}

impl fmt::Display for UsageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An AWS region name such as `us-east-1` or `us-gov-west-1`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Region(String);

/// Regions where the SES v2 API is offered; another well-formed name is only a warning.
const SES_REGIONS: &[&str] = &[
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "af-south-1",
    "ap-south-1",
    "ap-south-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-5",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "il-central-1",
    "me-south-1",
    "me-central-1",
    "mx-central-1",
    "sa-east-1",
    "us-gov-west-1",
    "us-gov-east-1",
    "cn-north-1",
    "cn-northwest-1",
];

impl Region {
    /// `xx(-word)+-N`, lower case: the shape of every AWS region name.
    pub fn parse(input: &str) -> Result<Self, String> {
        let parts: Vec<&str> = input.split('-').collect();
        let well_formed = parts.len() >= 3
            && parts[0].len() == 2
            && parts[..parts.len() - 1]
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
            && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
            && !parts[parts.len() - 1].is_empty()
            && parts[parts.len() - 1].len() <= 2;
        if well_formed {
            Ok(Self(input.to_owned()))
        } else {
            Err(format!(
                "\"{input}\" is not an AWS region name; expected one such as us-east-1 or eu-central-1"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether SES v2 is known to be offered in this region.
    pub fn offers_ses(&self) -> bool {
        SES_REGIONS.contains(&self.0.as_str())
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `arn:<partition>:ses:<region>:<account>:identity/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityArn {
    text: String,
    region: Region,
    account: String,
}

impl IdentityArn {
    pub fn parse(input: &str) -> Result<Self, String> {
        let expected =
            "expected arn:aws:ses:<region>:<12-digit account>:identity/<email or domain>";
        let fields: Vec<&str> = input.splitn(6, ':').collect();
        let [arn, partition, service, region, account, resource] = fields[..] else {
            return Err(format!("is not an SES identity ARN; {expected}"));
        };
        if arn != "arn" || !matches!(partition, "aws" | "aws-cn" | "aws-us-gov") {
            return Err(format!(
                "must start with arn:aws, arn:aws-cn or arn:aws-us-gov; {expected}"
            ));
        }
        if service != "ses" {
            return Err(format!("names service \"{service}\", not ses; {expected}"));
        }
        let region = Region::parse(region)?;
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "has an account id that is not 12 digits; {expected}"
            ));
        }
        let name = resource.strip_prefix("identity/").unwrap_or_default();
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("has no identity name; {expected}"));
        }
        Ok(Self {
            text: input.to_owned(),
            region,
            account: account.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn region(&self) -> &Region {
        &self.region
    }

    /// The 12-digit account id the identity belongs to.
    pub fn account(&self) -> &str {
        &self.account
    }
}

/// An SES configuration set name: 1–64 of `A-Z a-z 0-9 _ -`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigurationSetName(String);

impl ConfigurationSetName {
    pub fn parse(input: &str) -> Result<Self, String> {
        let ok = (1..=64).contains(&input.len())
            && input
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(input.to_owned()))
        } else {
            Err("must be 1 to 64 characters of letters, digits, '_' and '-'".to_owned())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A BCP 47 language tag such as `en`, `fr-CA` or `zh-Hant-TW`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locale(String);

impl Locale {
    pub fn parse(input: &str) -> Result<Self, String> {
        match language_tags::LanguageTag::parse(input) {
            Ok(_) => Ok(Self(input.to_owned())),
            Err(e) => Err(format!(
                "\"{input}\" is not a BCP 47 language tag such as en, fr-CA or zh-Hant-TW ({e})"
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names_are_recognised_by_shape() {
        let cases: &[(&str, bool)] = &[
            ("us-east-1", true),
            ("eu-central-2", true),
            ("us-gov-west-1", true),
            ("cn-north-1", true),
            ("us east 1", false),
            ("US-EAST-1", false),
            ("useast1", false),
            ("us-east", false),
            ("", false),
            ("us-east-1a", false),
        ];
        for (input, ok) in cases {
            assert_eq!(Region::parse(input).is_ok(), *ok, "{input:?}");
        }
    }

    #[test]
    fn identity_arns_must_name_an_ses_identity() {
        let good = "arn:aws:ses:us-east-1:123456789012:identity/example.com";
        assert_eq!(
            IdentityArn::parse(good).unwrap().region().as_str(),
            "us-east-1"
        );
        for bad in [
            "arn:aws:s3:us-east-1:123456789012:identity/example.com",
            "arn:aws:ses:us-east-1:1234:identity/example.com",
            "arn:aws:ses:us-east-1:123456789012:configuration-set/x",
            "arn:aws:ses:nowhere:123456789012:identity/example.com",
            "arn:other:ses:us-east-1:123456789012:identity/example.com",
            "not an arn",
        ] {
            assert!(IdentityArn::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn configuration_set_names_follow_the_ses_rule() {
        assert!(ConfigurationSetName::parse("my_set-1").is_ok());
        assert!(ConfigurationSetName::parse(&"a".repeat(64)).is_ok());
        assert!(ConfigurationSetName::parse(&"a".repeat(65)).is_err());
        assert!(ConfigurationSetName::parse("has space").is_err());
        assert!(ConfigurationSetName::parse("").is_err());
    }

    #[test]
    fn usage_types_match_exactly() {
        assert_eq!(UsageType::parse("SignIn"), Some(UsageType::SignIn));
        assert_eq!(UsageType::parse("signin"), None);
        assert_eq!(UsageType::ALL.len(), 9);
    }

    #[test]
    fn locales_are_bcp47_tags() {
        for good in ["en", "fr-CA", "zh-Hant-TW", "pt-BR"] {
            assert!(Locale::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "english language", "fr_CA!"] {
            assert!(Locale::parse(bad).is_err(), "{bad}");
        }
    }
}
