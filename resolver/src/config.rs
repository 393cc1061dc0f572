//! The `[serve]` section of cidmirror's TOML settings.
//!
//! ```toml
//! [serve]
//! listen = "127.0.0.1:7878"
//! max_connections = 4096
//! header_timeout = "10s"
//! shutdown_grace = "30s"
//!
//! # a follower gateway (`serve --follow`)
//! follow = "http://publisher.example:7878/"
//! publisher_key = "64 hex digits"
//! sources = ["http://peer.lan:7878/"]
//! fallback_mirrors = ["https://geo.mirror.pkgbuild.com/"]
//! cache_budget = "20G"
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
    /// A gateway to follow (makes this a follower gateway).
    pub follow: Option<String>,
    /// The publisher's public key (hex), required with `follow`.
    pub publisher_key: Option<String>,
    /// More trustless gateways to fetch blocks from.
    #[serde(default)]
    pub sources: Vec<String>,
    /// HTTP mirrors in pacman's layout, the last resort for package files.
    #[serde(default)]
    pub fallback_mirrors: Vec<String>,
    /// Bytes of files kept (`20G`, `512M`); `none` for no limit.
    pub cache_budget: Option<String>,
    /// `delta` (default) or `walk`.
    pub refresh: Option<String>,
    /// How often to poll the followed gateway while its feed is down.
    pub poll_every: Option<String>,
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
            follow: over.follow.or(self.follow),
            publisher_key: over.publisher_key.or(self.publisher_key),
            sources: if over.sources.is_empty() {
                self.sources
            } else {
                over.sources
            },
            fallback_mirrors: if over.fallback_mirrors.is_empty() {
                self.fallback_mirrors
            } else {
                over.fallback_mirrors
            },
            cache_budget: over.cache_budget.or(self.cache_budget),
            refresh: over.refresh.or(self.refresh),
            poll_every: over.poll_every.or(self.poll_every),
        }
    }

    /// The follower's settings, if `follow` is set; `dir` holds its state.
    pub fn follow(
        &self,
        dir: std::path::PathBuf,
    ) -> Result<Option<crate::follow::FollowConfig>, String> {
        let Some(follow) = &self.follow else {
            if self.publisher_key.is_some()
                || !self.sources.is_empty()
                || !self.fallback_mirrors.is_empty()
            {
                return Err(
                    "publisher_key, sources and fallback_mirrors only make sense with follow"
                        .into(),
                );
            }
            return Ok(None);
        };
        let url = |field: &str, s: &str| -> Result<url::Url, String> {
            let u = url::Url::parse(s).map_err(|e| format!("{field} = {s:?}: {e}"))?;
            if !matches!(u.scheme(), "http" | "https") {
                return Err(format!("{field} = {s:?}: not an http(s) URL"));
            }
            Ok(u)
        };
        let Some(key) = &self.publisher_key else {
            return Err(format!(
                "following {follow} needs the publisher's key (--publisher-key; \
                 `cidmirror key show` on the publisher prints it)"
            ));
        };
        let mut cfg = crate::follow::FollowConfig::new(url("follow", follow)?, key, dir)
            .map_err(|e| format!("publisher_key: {e}"))?;
        for s in &self.sources {
            cfg.sources.push(url("sources", s)?);
        }
        for s in &self.fallback_mirrors {
            cfg.fallback_mirrors.push(url("fallback_mirrors", s)?);
        }
        match self.cache_budget.as_deref() {
            None => {}
            Some("none" | "unlimited") => cfg.cache_budget = None,
            Some(b) => {
                cfg.cache_budget = Some(
                    crate::follow::cache::parse_size(b)
                        .map_err(|e| format!("cache_budget = {e}"))?,
                );
            }
        }
        cfg.refresh = match self.refresh.as_deref() {
            None | Some("delta") => crate::follow::RefreshMode::Delta,
            Some("walk") => crate::follow::RefreshMode::Walk,
            Some(o) => return Err(format!("refresh = {o:?}: use delta or walk")),
        };
        cfg.poll_every = duration("poll_every", self.poll_every.as_deref(), cfg.poll_every)?;
        Ok(Some(cfg))
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

    #[test]
    fn follower_settings_from_toml() {
        let key = hex::encode(
            ed25519_dalek::SigningKey::from_bytes(&[7; 32])
                .verifying_key()
                .as_bytes(),
        );
        let c: ServeConfig = toml::from_str(&format!(
            "follow = \"http://127.0.0.1:7000\"\npublisher_key = \"{key}\"\n\
             sources = [\"http://127.0.0.1:7001/\"]\ncache_budget = \"512M\"\nrefresh = \"walk\"\n"
        ))
        .unwrap();
        let f = c.follow("/var/empty".into()).unwrap().unwrap();
        assert_eq!(f.follow.as_str(), "http://127.0.0.1:7000/");
        assert_eq!(f.sources.len(), 1);
        assert_eq!(f.cache_budget, Some(512 << 20));
        assert_eq!(f.refresh, crate::follow::RefreshMode::Walk);
        assert_eq!(
            ServeConfig::default()
                .follow("/x".into())
                .unwrap()
                .map(|_| ()),
            None
        );
        let no_key = ServeConfig {
            follow: Some("http://127.0.0.1:7000/".into()),
            ..Default::default()
        };
        assert!(
            no_key
                .follow("/x".into())
                .unwrap_err()
                .contains("--publisher-key")
        );
        let bad_key = ServeConfig {
            publisher_key: Some("zz".into()),
            ..no_key.clone()
        };
        assert!(
            bad_key
                .follow("/x".into())
                .unwrap_err()
                .contains("publisher_key")
        );
        let stray = ServeConfig {
            sources: vec!["http://127.0.0.1:1/".into()],
            ..Default::default()
        };
        assert!(stray.follow("/x".into()).is_err(), "sources without follow");
    }
}
