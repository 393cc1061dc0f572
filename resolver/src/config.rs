//! The `[serve]` section of cidmirror's TOML settings.
//!
//! ```toml
//! [serve]
//! listen = "127.0.0.1:7878"
//! max_connections = 4096
//! header_timeout = "10s"
//! shutdown_grace = "30s"
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::Limits;

/// Where the server listens by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";

/// Server settings as written; every field optional.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Address and port to listen on.
    pub listen: Option<String>,
    /// Connections open at once.
    pub max_connections: Option<usize>,
    /// Time a client has to send its request headers.
    pub header_timeout: Option<String>,
    /// How long running downloads may finish on shutdown.
    pub shutdown_grace: Option<String>,
}

fn duration(field: &str, v: Option<&str>, default: Duration) -> Result<Duration, String> {
    match v {
        None => Ok(default),
        Some(s) => humantime::parse_duration(s).map_err(|e| format!("{field} = {s:?}: {e}")),
    }
}

impl ServeConfig {
    /// These settings with every value `over` sets replacing this one's.
    pub fn overridden_by(self, over: ServeConfig) -> ServeConfig {
        ServeConfig {
            listen: over.listen.or(self.listen),
            max_connections: over.max_connections.or(self.max_connections),
            header_timeout: over.header_timeout.or(self.header_timeout),
            shutdown_grace: over.shutdown_grace.or(self.shutdown_grace),
        }
    }

    /// The listening address.
    pub fn listen(&self) -> Result<SocketAddr, String> {
        let s = self.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        s.parse()
            .map_err(|e| format!("listen = {s:?}: {e} (use ADDRESS:PORT, e.g. 127.0.0.1:7878)"))
    }

    /// The server's limits.
    pub fn limits(&self) -> Result<Limits, String> {
        let d = Limits::default();
        let max_connections = self.max_connections.unwrap_or(d.max_connections);
        if max_connections == 0 {
            return Err("max_connections must be at least 1".into());
        }
        Ok(Limits {
            max_connections,
            header_timeout: duration(
                "header_timeout",
                self.header_timeout.as_deref(),
                d.header_timeout,
            )?,
            shutdown_grace: duration(
                "shutdown_grace",
                self.shutdown_grace.as_deref(),
                d.shutdown_grace,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        let c = ServeConfig::default();
        assert_eq!(c.listen().unwrap().to_string(), DEFAULT_LISTEN);
        assert_eq!(c.limits().unwrap().max_connections, 4096);
        let bad = ServeConfig {
            listen: Some("localhost".into()),
            ..Default::default()
        };
        assert!(bad.listen().unwrap_err().contains("ADDRESS:PORT"));
        let bad = ServeConfig {
            header_timeout: Some("soon".into()),
            ..Default::default()
        };
        assert!(bad.limits().unwrap_err().contains("header_timeout"));
    }
}
