//! The access-log output the waypoint (a line per request) and the node daemon (a line
//! per connection) share: the `--access-log-format` flag and the JSON writer. `text`
//! lines go through each binary's log (`tracing`, key=value) with its own fields.

use std::io::Write as _;

pub use crate::rfc3339;

/// `--access-log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AccessLogFormat {
    /// key=value through the binary's log, target `<binary>::access`.
    #[default]
    Text,
    /// One JSON object per line on stdout (Envoy's usual field names).
    Json,
    /// No access log.
    Off,
}

impl AccessLogFormat {
    pub fn is_on(self) -> bool {
        self != AccessLogFormat::Off
    }
}

/// One JSON object on one stdout line. A failed write (closed pipe) is dropped: the
/// log must never fail the request or connection it describes.
pub fn write_json(line: &serde_json::Value) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_is_the_only_silent_format() {
        assert!(!AccessLogFormat::Off.is_on());
        assert!(AccessLogFormat::default().is_on());
    }
}
