//! Logging set-up: `tracing` with an `EnvFilter` (`RUST_LOG`, default `info`), readable or JSON.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber once; later calls do nothing. Events of the `silenced`
/// targets are not printed unless `RUST_LOG` names them ([`saga_core::Service::SILENCED_LOGS`]).
pub fn init_logging(format: LogFormat, silenced: &[&str]) {
    // rskafka reports every reconnect attempt itself; the runtime logs one clear line instead.
    let asked = std::env::var("RUST_LOG").unwrap_or_default();
    let mut filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,rskafka=off,sled=warn"));
    for target in silenced.iter().filter(|t| !asked.contains(**t)) {
        if let Ok(directive) = format!("{target}=off").parse() {
            filter = filter.add_directive(directive);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(use_colour());
    let _ = match format {
        LogFormat::Pretty => builder.compact().try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
}

/// Colour when writing to a terminal (or when `CLICOLOR_FORCE` asks), never with `NO_COLOR`.
fn use_colour() -> bool {
    use std::io::IsTerminal;
    let set = |name| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    !set("NO_COLOR") && (set("CLICOLOR_FORCE") || std::io::stdout().is_terminal())
}
