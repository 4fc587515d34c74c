//! Config parsing and template compilation, then rendering every usage type, must
//! never panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use ses_connector::connector::{validate, ConnectorConfig, UsageType};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let report = validate(&value);
    let Ok(config) = ConnectorConfig::load(value.clone()) else {
        assert!(!report.valid);
        return;
    };
    assert!(report.valid);
    // The same bytes double as a payload, to reach the renderer with odd values.
    let payload = match value.get("payload") {
        Some(Value::Object(map)) => map.clone(),
        _ => json!({"code": "123456", "locale": "zh-Hant-TW"}).as_object().cloned().unwrap_or_default(),
    };
    for usage in UsageType::ALL {
        let locale = payload.get("locale").and_then(Value::as_str);
        if let Some(selected) = config.templates.select(usage, locale) {
            let _ = selected.render(&Value::Object(payload.clone()));
        }
    }
});
