//! The committed contracts in `schemas/` are what the code generates.
//! To regenerate them: `UPDATE_SCHEMAS=1 cargo nextest run contracts::`.

use crate::harness::*;
use serde_json::Value;
use ses_connector::http::openapi::{config_schema_json, openapi_json, send_schema_json};

fn check(file: &str, generated: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(file);
    if std::env::var_os("UPDATE_SCHEMAS").is_some() {
        std::fs::write(&path, generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "schemas/{file} differs from what the code generates; regenerate with `UPDATE_SCHEMAS=1 cargo nextest run contracts::` and commit it"
    );
}

#[test]
fn the_committed_openapi_document_is_up_to_date() {
    check("openapi.json", &openapi_json());
}

#[test]
fn the_committed_json_schemas_are_up_to_date() {
    check("connector-config.schema.json", &config_schema_json());
    check("send-request.schema.json", &send_schema_json());
}

#[test]
fn the_openapi_document_covers_every_route_with_bearer_security() {
    let doc: Value = serde_json::from_str(&openapi_json()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/messages", "post"),
        ("/v1/test-email", "post"),
        ("/v1/config/validate", "post"),
        ("/v1/preview", "post"),
        ("/v1/config", "get"),
        ("/v1/config/reload", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(
        doc["paths"]["/v1/messages"]["post"]["security"][0]["bearer"],
        serde_json::json!([])
    );
    let error = &doc["components"]["schemas"]["ErrorBody"];
    assert!(error["properties"]["requestId"].is_object(), "{error}");
}

#[tokio::test]
async fn the_service_serves_the_same_document() {
    let app = app_with_fake_ses(&FakeSes::start().await).await;
    let response = app.get("/openapi.json", None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), openapi_json());
}

#[test]
fn the_send_schema_names_the_nine_usage_types() {
    let schema: Value = serde_json::from_str(&send_schema_json()).unwrap();
    let text = schema.to_string();
    for usage in [
        "SignIn",
        "Register",
        "ForgotPassword",
        "OrganizationInvitation",
        "Generic",
        "UserPermissionValidation",
        "BindNewIdentifier",
        "MfaVerification",
        "BindMfa",
    ] {
        assert!(text.contains(usage), "{usage}");
    }
    assert!(schema["required"]
        .as_array()
        .unwrap()
        .contains(&"to".into()));
}

#[test]
fn every_setting_is_documented_in_the_readme() {
    use clap::CommandFactory;
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let table_start = readme
        .find("| variable | default |")
        .expect("the settings table");
    let table: String = readme[table_start..]
        .lines()
        .take_while(|line| line.starts_with('|'))
        .collect();
    let command = ses_connector::app::cli::Cli::command();
    let commands = std::iter::once(&command).chain(command.get_subcommands());
    let variables: std::collections::BTreeSet<String> = commands
        .flat_map(|c| c.get_arguments())
        .filter_map(|a| a.get_env())
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    assert!(variables.contains("SES_CONNECTOR_IDLE_TIMEOUT_SECONDS"));
    let missing: Vec<&String> = variables
        .iter()
        .filter(|v| !table.contains(&format!("`{v}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "settings missing from the README's table: {missing:?}"
    );
}
