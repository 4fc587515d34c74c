//! Logging setup: `tracing` to stderr, as text or JSON lines.

use tracing_subscriber::EnvFilter;

use crate::settings::LogFormat;

/// Install the global subscriber; `filter` is a level or `tracing` directives.
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    // Tests may install a subscriber more than once; the first one stays.
    drop(result);
}
