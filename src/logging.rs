//! Logging: a tracing subscriber on stderr (text or JSON) whose filter can be changed while
//! the server runs (reload, the admin API).

use std::sync::Arc;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, reload};

/// Changes the running log filter; Err names what is wrong with the filter.
pub type SetFilter = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// A log filter with caps on other crates, whatever the operator asks for: stun-types logs
/// malformed wire input at warn (attackers must not write our logs), and the HTTP/WebSocket
/// stack logs whole messages and headers at trace (SDP with `a=ice-pwd`, bearer tokens).
pub fn filter_for(filter: &str) -> Result<EnvFilter, String> {
    let mut f = filter.to_owned();
    for (quiet, level) in [
        ("stun_types", "error"),
        ("turn_types", "error"),
        ("stun_proto", "error"),
        ("tungstenite", "info"),
        ("tokio_tungstenite", "info"),
        ("hyper", "info"),
        ("hyper_util", "info"),
        ("h2", "info"),
        ("rustls", "info"),
    ] {
        if !f.contains(quiet) {
            f.push_str(&format!(",{quiet}={level}"));
        }
    }
    EnvFilter::try_new(&f).map_err(|e| format!("`{filter}`: {e}"))
}

/// Install the global subscriber (once per process) and return the way to change its filter.
pub fn init(filter: &str, json: bool) -> SetFilter {
    let env = filter_for(filter).unwrap_or_else(|_| EnvFilter::new(crate::config::defaults::LOG));
    let (layer, handle) = reload::Layer::new(env);
    use std::io::IsTerminal;
    // journald and log shippers get no ANSI colours.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("JOURNAL_STREAM").is_none();
    let registry = tracing_subscriber::registry().with(layer);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    if json {
        registry.with(fmt.json()).init();
    } else {
        registry.with(fmt.with_ansi(ansi)).init();
    }
    Arc::new(move |f: &str| {
        let filter = filter_for(f)?;
        handle.reload(filter).map_err(|e| e.to_string())
    })
}
