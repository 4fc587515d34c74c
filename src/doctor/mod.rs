//! The online doctor: after the offline validation, ask SES, with the config's
//! credentials, what would make a send fail — credentials, the sandbox, sending
//! paused, the account's enforcement status, From identities not verified, identity
//! ARNs of another account or region, a configuration set that does not exist — and
//! report it in the validation shape, each finding with what to do. AWS itself is
//! behind [`AccountProbe`]; this module knows nothing of it.

use std::time::Duration;

use serde::Serialize;

use crate::connector::{ConnectorConfig, IdentityArn, Issue, IssueCode, ValidationReport};
use crate::transport::{Account, AccountFacts, BoxFuture};

/// Why a probe got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeError {
    /// The credentials are missing, unknown or not allowed; AWS's own text.
    Credentials(String),
    /// The thing asked about does not exist.
    NotFound,
    /// No answer (timeout, network, server error); AWS's own text when there is one.
    Unreachable(String),
}

/// What SES says of one identity (`GetEmailIdentity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityFacts {
    pub verified_for_sending: bool,
    /// `SUCCESS`, `PENDING`, `FAILED`, `TEMPORARY_FAILURE` or `NOT_STARTED`.
    pub dkim_status: Option<String>,
}

/// The account questions the doctor asks; the SES transport answers them.
pub trait AccountProbe: Send + Sync {
    fn account<'a>(
        &'a self,
        account: &'a Account,
    ) -> BoxFuture<'a, Result<AccountFacts, ProbeError>>;
    fn identity<'a>(
        &'a self,
        account: &'a Account,
        identity: &'a str,
    ) -> BoxFuture<'a, Result<IdentityFacts, ProbeError>>;
    fn configuration_set<'a>(
        &'a self,
        account: &'a Account,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), ProbeError>>;
    /// The 12-digit account id the credentials belong to.
    fn caller_account<'a>(
        &'a self,
        account: &'a Account,
    ) -> BoxFuture<'a, Result<String, ProbeError>>;
}

/// The account as the doctor saw it, reported beside the findings.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountSummary {
    pub production_access_enabled: bool,
    pub sending_enabled: bool,
    pub enforcement_status: Option<String>,
    pub max_send_rate: f64,
    pub max_24_hour_send: f64,
    pub sent_last_24_hours: f64,
}

/// The doctor's answer: the validation report with its findings, the account, and
/// whether every check could run.
#[derive(Debug, Clone)]
pub struct Diagnosis {
    pub report: ValidationReport,
    pub account: Option<AccountSummary>,
    /// Some check got no answer (timeout, network, SES error): the report is partial.
    pub incomplete: bool,
}

impl Diagnosis {
    /// `0` all good, `1` something will fail, `2` could not check.
    pub fn exit_code(&self) -> u8 {
        if !self.report.errors.is_empty() {
            1
        } else if self.incomplete {
            2
        } else {
            0
        }
    }
}

struct Findings {
    errors: Vec<Issue>,
    warnings: Vec<Issue>,
    incomplete: bool,
}

impl Findings {
    fn error(&mut self, path: &str, code: IssueCode, message: String) {
        self.errors.push(Issue {
            path: path.to_owned(),
            code,
            message,
        });
    }

    fn warn(&mut self, path: &str, code: IssueCode, message: String) {
        self.warnings.push(Issue {
            path: path.to_owned(),
            code,
            message,
        });
    }

    fn unanswered(&mut self, path: &str, what: &str, detail: &str) {
        self.incomplete = true;
        self.warn(
            path,
            IssueCode::CheckFailed,
            format!("could not check {what}: {detail}"),
        );
    }
}

/// Run every online check for `config` within `timeout`; the offline warnings come
/// first in the report.
pub async fn diagnose(
    config: &ConnectorConfig,
    probe: &dyn AccountProbe,
    timeout: Duration,
) -> Diagnosis {
    let mut findings = Findings {
        errors: Vec::new(),
        warnings: config.warnings.clone(),
        incomplete: false,
    };
    let checks = async {
        let account = Account {
            region: config.region.clone(),
            credentials: config.credentials.clone(),
        };
        let summary = check_account(&mut findings, probe, &account).await;
        if findings
            .errors
            .iter()
            .any(|e| e.code == IssueCode::CredentialsInvalid)
        {
            return summary;
        }
        check_identities(&mut findings, probe, &account, config).await;
        check_arns(&mut findings, probe, &account, config).await;
        if let Some(name) = &config.configuration_set_name {
            match probe.configuration_set(&account, name.as_str()).await {
                Ok(()) => {}
                Err(ProbeError::NotFound) => findings.error(
                    "configurationSetName",
                    IssueCode::ConfigurationSetNotFound,
                    format!(
                        "configuration set \"{}\" does not exist in {}; SES refuses every send that names it. Create it in SES or remove \"configurationSetName\"",
                        name.as_str(),
                        config.region
                    ),
                ),
                Err(ProbeError::Credentials(detail) | ProbeError::Unreachable(detail)) => {
                    findings.unanswered("configurationSetName", "the configuration set", &detail)
                }
            }
        }
        summary
    };
    let account = match tokio::time::timeout(timeout, checks).await {
        Ok(summary) => summary,
        Err(_) => {
            findings.unanswered(
                "",
                "the SES account",
                &format!("no answer within {} s", timeout.as_secs()),
            );
            None
        }
    };
    Diagnosis {
        report: ValidationReport {
            valid: findings.errors.is_empty(),
            errors: findings.errors,
            warnings: findings.warnings,
        },
        account,
        incomplete: findings.incomplete,
    }
}

async fn check_account(
    findings: &mut Findings,
    probe: &dyn AccountProbe,
    account: &Account,
) -> Option<AccountSummary> {
    let facts = match probe.account(account).await {
        Ok(facts) => facts,
        Err(ProbeError::Credentials(detail)) => {
            let path = if account.credentials.is_some() {
                "accessKeyId"
            } else {
                ""
            };
            findings.error(
                path,
                IssueCode::CredentialsInvalid,
                format!("SES refused the credentials: {detail}. Check accessKeyId and accessKeySecret (or the default credential chain) and that they allow ses:GetAccount and ses:SendEmail"),
            );
            return None;
        }
        Err(ProbeError::NotFound) => {
            findings.unanswered("", "the SES account (GetAccount)", "not found");
            return None;
        }
        Err(ProbeError::Unreachable(detail)) => {
            findings.unanswered("", "the SES account (GetAccount)", &detail);
            return None;
        }
    };
    if !facts.production_access_enabled {
        findings.warn(
            "",
            IssueCode::Sandbox,
            format!(
                "the account is in the SES sandbox in {}: it can send only to verified addresses (codes to any other user are rejected) and at most {} a day. Request production access in the SES console",
                account.region, facts.max_24_hour_send
            ),
        );
    }
    if !facts.sending_enabled {
        findings.error(
            "",
            IssueCode::SendingPaused,
            format!("sending is paused for the account in {}: SES refuses every send. Resume sending in the SES console (or find out why it was paused)", account.region),
        );
    }
    match facts.enforcement_status.as_deref() {
        Some("PROBATION") => findings.warn(
            "",
            IssueCode::AccountUnderReview,
            "the account is under review (PROBATION) for its bounce or complaint rate; SES may pause sending if it does not improve".to_owned(),
        ),
        Some("SHUTDOWN") => findings.error(
            "",
            IssueCode::SendingPaused,
            "the account's sending was shut down by SES (SHUTDOWN); contact AWS support".to_owned(),
        ),
        _ => {}
    }
    Some(AccountSummary {
        production_access_enabled: facts.production_access_enabled,
        sending_enabled: facts.sending_enabled,
        enforcement_status: facts.enforcement_status,
        max_send_rate: facts.max_send_rate,
        max_24_hour_send: facts.max_24_hour_send,
        sent_last_24_hours: facts.sent_last_24_hours,
    })
}

/// Every From address (the config's and the templates' `sendFrom`) and the
/// feedback-forwarding address must be verified for sending, as an address or
/// through its domain.
async fn check_identities(
    findings: &mut Findings,
    probe: &dyn AccountProbe,
    account: &Account,
    config: &ConnectorConfig,
) {
    let mut addresses: Vec<(String, &str)> = Vec::new();
    if let Some(from) = &config.email_address {
        addresses.push(("emailAddress".to_owned(), from.address()));
    }
    for (index, source) in config.templates.sources().enumerate() {
        if let Some(from) = &source.send_from {
            addresses.push((format!("templates[{index}].sendFrom"), from.address()));
        }
    }
    if let Some(feedback) = &config.feedback_forwarding_email_address {
        addresses.push((
            "feedbackForwardingEmailAddress".to_owned(),
            feedback.address(),
        ));
    }
    let mut checked: Vec<(String, Result<Verdict, String>)> = Vec::new();
    for (path, address) in addresses {
        let verdict = match checked.iter().find(|(a, _)| a == address) {
            Some((_, verdict)) => verdict.clone(),
            None => {
                let verdict = verified(probe, account, address).await;
                checked.push((address.to_owned(), verdict.clone()));
                verdict
            }
        };
        match verdict {
            Ok(Verdict::Verified { dkim: None }) => {}
            Ok(Verdict::Verified {
                dkim: Some((identity, status)),
            }) => findings.warn(
                &path,
                IssueCode::DkimNotVerified,
                format!(
                    "DKIM signing for {identity} is {status}, not SUCCESS: mail from {address} is more likely to land in spam. Publish the DKIM records SES gives for {identity}"
                ),
            ),
            Ok(Verdict::NotVerified(message)) => {
                findings.error(&path, IssueCode::IdentityNotVerified, message)
            }
            Err(detail) => findings.unanswered(&path, &format!("the identity of {address}"), &detail),
        }
    }
}

/// Whether an address may be sent from.
#[derive(Debug, Clone)]
enum Verdict {
    /// Verified; `dkim` names the identity and its DKIM status when it is not SUCCESS.
    Verified {
        dkim: Option<(String, String)>,
    },
    NotVerified(String),
}

/// `Err`: could not tell.
async fn verified(
    probe: &dyn AccountProbe,
    account: &Account,
    address: &str,
) -> Result<Verdict, String> {
    let domain = address.rsplit_once('@').map_or(address, |(_, d)| d);
    for identity in [address, domain] {
        match probe.identity(account, identity).await {
            Ok(facts) if facts.verified_for_sending => {
                let dkim = facts
                    .dkim_status
                    .filter(|status| status != "SUCCESS")
                    .map(|status| (identity.to_owned(), status));
                return Ok(Verdict::Verified { dkim });
            }
            Ok(_) | Err(ProbeError::NotFound) => continue,
            Err(ProbeError::Credentials(detail) | ProbeError::Unreachable(detail)) => {
                return Err(detail)
            }
        }
    }
    Ok(Verdict::NotVerified(format!(
        "{address} is not verified for sending in {} (neither the address nor {domain}): SES rejects sends from it. Verify the address or the domain in SES",
        account.region
    )))
}

/// Identity ARNs must name the credentials' account and the config's region.
async fn check_arns(
    findings: &mut Findings,
    probe: &dyn AccountProbe,
    account: &Account,
    config: &ConnectorConfig,
) {
    let arns: Vec<(&str, &IdentityArn)> = [
        (
            "emailAddressIdentityArn",
            config.email_address_identity_arn.as_ref(),
        ),
        (
            "feedbackForwardingEmailAddressIdentityArn",
            config
                .feedback_forwarding_email_address_identity_arn
                .as_ref(),
        ),
    ]
    .into_iter()
    .filter_map(|(path, arn)| arn.map(|arn| (path, arn)))
    .collect();
    if arns.is_empty() {
        return;
    }
    let caller = match probe.caller_account(account).await {
        Ok(caller) => Some(caller),
        Err(ProbeError::Credentials(detail) | ProbeError::Unreachable(detail)) => {
            findings.unanswered(
                arns[0].0,
                "which account the credentials belong to (sts:GetCallerIdentity)",
                &detail,
            );
            None
        }
        Err(ProbeError::NotFound) => None,
    };
    for (path, arn) in arns {
        if arn.region() != &account.region {
            findings.error(
                path,
                IssueCode::RegionMismatch,
                format!(
                    "names region {}, but the config sends from {}; SES needs the identity in the sending region",
                    arn.region(),
                    account.region
                ),
            );
        }
        if let Some(caller) = caller.as_deref().filter(|c| *c != arn.account()) {
            findings.warn(
                path,
                IssueCode::CrossAccountIdentity,
                format!(
                    "names account {}, but the credentials belong to account {caller}: sending needs a sending authorization policy on that identity allowing this account",
                    arn.account()
                ),
            );
        }
    }
}
