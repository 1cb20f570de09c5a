//! The global tracing subscriber.

use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Install the subscriber: `filter` (from `--log`), else `HASTACK_LOG`, else `default`.
pub fn init(filter: Option<&str>, format: Format, default: &str) {
    let filter = filter
        .map(str::to_string)
        .or_else(|| std::env::var("HASTACK_LOG").ok())
        .unwrap_or_else(|| default.to_string());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        Format::Text => builder.with_target(true).init(),
        Format::Json => builder.json().with_current_span(false).init(),
    }
}
