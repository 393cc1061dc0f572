//! The `[serve]` section of cidmirror's TOML settings.
//!
//! ```toml
//! [serve]
//! listen = "127.0.0.1:7878"
//! max_connections = 4096
//! header_timeout = "10s"
//! shutdown_grace = "30s"
//!
//! # a publisher's volunteer tracker (/api/v1/volunteers)
//! volunteer_ttl = "90s"
//! volunteer_max = 10000
//! volunteer_announces_per_minute = 30
//! volunteer_lists_per_minute = 60
//! trusted_proxies = ["127.0.0.1", "10.0.0.0/8"]   # X-Forwarded-For is believed from these
//!
//! # a follower gateway (`serve --follow`)
//! follow = "http://publisher.example:7878/"
//! publisher_key = "64 hex digits"
//! sources = ["http://peer.lan:7878/"]
//! fallback_mirrors = ["https://geo.mirror.pkgbuild.com/"]
//! cache_budget = "20G"
//! use_volunteers = true
//! public_url = "http://me.example:7878/"
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
    /// Publisher: how long a volunteer stays listed after its last heartbeat.
    pub volunteer_ttl: Option<String>,
    /// Publisher: volunteers listed at most.
    pub volunteer_max: Option<usize>,
    /// Publisher: announces a minute from one client address (0: no limit).
    pub volunteer_announces_per_minute: Option<u32>,
    /// Publisher: volunteer lists a minute for one client address (0: no limit).
    pub volunteer_lists_per_minute: Option<u32>,
    /// Publisher: reverse proxies whose `X-Forwarded-For` names the client the tracker's
    /// limits apply to (addresses or networks: `127.0.0.1`, `10.0.0.0/8`, `::1`).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Follower: whether the publisher's volunteers become sources (default true).
    pub use_volunteers: Option<bool>,
    /// Follower: this gateway's public URL, if it announces itself as a volunteer: never
    /// used as a source.
    pub public_url: Option<String>,
    /// Bytes per second the scrub re-hashes kept files at (`16M`; `0` turns it off).
    pub scrub_rate: Option<String>,
    /// Every kept file is re-hashed at least this often (`7d`).
    pub scrub_every: Option<String>,
    /// IPFS Cluster follower configurations to host, `NAME=FILE` each, served at
    /// `/cluster/NAME/service.json` (see [`crate::cluster`]).
    #[serde(default)]
    pub cluster_configs: Vec<String>,
}

/// An address (`10.1.2.3`, `::1`: that host) or a network (`10.0.0.0/8`).
fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    if s.contains('/') {
        let net: ipnet::IpNet = s
            .parse()
            .map_err(|_| "not a network like 10.0.0.0/8 or fd00::/8".to_string())?;
        Ok(net.trunc())
    } else {
        s.parse::<std::net::IpAddr>()
            .map(ipnet::IpNet::from)
            .map_err(|_| "not an IP address or a network like 10.0.0.0/8".to_string())
    }
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
            volunteer_ttl: over.volunteer_ttl.or(self.volunteer_ttl),
            volunteer_max: over.volunteer_max.or(self.volunteer_max),
            volunteer_announces_per_minute: over
                .volunteer_announces_per_minute
                .or(self.volunteer_announces_per_minute),
            volunteer_lists_per_minute: over
                .volunteer_lists_per_minute
                .or(self.volunteer_lists_per_minute),
            trusted_proxies: if over.trusted_proxies.is_empty() {
                self.trusted_proxies
            } else {
                over.trusted_proxies
            },
            use_volunteers: over.use_volunteers.or(self.use_volunteers),
            public_url: over.public_url.or(self.public_url),
            scrub_rate: over.scrub_rate.or(self.scrub_rate),
            scrub_every: over.scrub_every.or(self.scrub_every),
            cluster_configs: if over.cluster_configs.is_empty() {
                self.cluster_configs
            } else {
                over.cluster_configs
            },
        }
    }

    /// How the store's scrub runs (see `cidmirror_store::scrub`).
    pub fn scrub(&self) -> Result<cidmirror_store::scrub::ScrubConfig, String> {
        let d = cidmirror_store::scrub::ScrubConfig::default();
        let rate = match self.scrub_rate.as_deref() {
            None => d.rate,
            Some("0" | "off" | "none") => 0,
            Some(r) => crate::follow::cache::parse_size(r.trim_end_matches("/s"))
                .map_err(|e| format!("scrub_rate = {e}"))?,
        };
        let every = duration("scrub_every", self.scrub_every.as_deref(), d.every)?;
        if every < Duration::from_secs(60) {
            return Err(format!(
                "scrub_every = {:?}: at least a minute",
                self.scrub_every.as_deref().unwrap_or_default()
            ));
        }
        Ok(cidmirror_store::scrub::ScrubConfig { rate, every })
    }

    /// The volunteer tracker's limits (a publisher's).
    pub fn tracker(&self) -> Result<crate::tracker::TrackerConfig, String> {
        let d = crate::tracker::TrackerConfig::default();
        let ttl = duration("volunteer_ttl", self.volunteer_ttl.as_deref(), d.ttl)?;
        if ttl < std::time::Duration::from_secs(1) {
            return Err("volunteer_ttl must be at least 1s".into());
        }
        let max_volunteers = self.volunteer_max.unwrap_or(d.max_volunteers);
        if max_volunteers == 0 {
            return Err("volunteer_max must be at least 1".into());
        }
        Ok(crate::tracker::TrackerConfig {
            ttl,
            max_volunteers,
            announces_per_minute: self
                .volunteer_announces_per_minute
                .unwrap_or(d.announces_per_minute),
            lists_per_minute: self
                .volunteer_lists_per_minute
                .unwrap_or(d.lists_per_minute),
            trusted_proxies: self
                .trusted_proxies
                .iter()
                .map(|p| parse_net(p).map_err(|e| format!("trusted_proxies: {p:?}: {e}")))
                .collect::<Result<_, _>>()?,
        })
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
                || self.use_volunteers.is_some()
                || self.public_url.is_some()
            {
                return Err(
                    "publisher_key, sources, fallback_mirrors, use_volunteers and public_url \
                     only make sense with follow"
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
        cfg.use_volunteers = self.use_volunteers.unwrap_or(cfg.use_volunteers);
        if let Some(u) = &self.public_url {
            cfg.own_urls.push(url("public_url", u)?);
        }
        cfg.own_urls.extend(self.listen_urls()?);
        Ok(Some(cfg))
    }

    /// The listening address.
    pub fn listen(&self) -> Result<SocketAddr, String> {
        let s = self.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        s.parse()
            .map_err(|e| format!("listen = {s:?}: {e} (use ADDRESS:PORT, e.g. 127.0.0.1:7878)"))
    }

    /// The URLs this server answers at on this machine, from `listen`: the address itself,
    /// or the loopback ones when it listens on every address.
    fn listen_urls(&self) -> Result<Vec<url::Url>, String> {
        let addr = self.listen()?;
        let port = addr.port();
        let hosts: Vec<String> = if addr.ip().is_unspecified() {
            vec!["127.0.0.1".into(), "[::1]".into(), "localhost".into()]
        } else if addr.ip().is_loopback() {
            vec![addr.ip().to_string(), "localhost".into()]
                .into_iter()
                .map(|h| if h.contains(':') { format!("[{h}]") } else { h })
                .collect()
        } else {
            vec![match addr.ip() {
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                ip => ip.to_string(),
            }]
        };
        Ok(hosts
            .into_iter()
            .filter_map(|h| url::Url::parse(&format!("http://{h}:{port}/")).ok())
            .collect())
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
        assert!(f.use_volunteers, "volunteers are used by default");
        assert!(
            f.own_urls
                .iter()
                .any(|u| u.as_str() == "http://127.0.0.1:7878/")
        );
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
        let off: ServeConfig = toml::from_str(&format!(
            "follow = \"http://127.0.0.1:7000\"\npublisher_key = \"{key}\"\n\
             use_volunteers = false\npublic_url = \"https://me.example/gw\"\n\
             listen = \"0.0.0.0:8080\"\n"
        ))
        .unwrap();
        let f = off.follow("/x".into()).unwrap().unwrap();
        assert!(!f.use_volunteers);
        let own: Vec<&str> = f.own_urls.iter().map(|u| u.as_str()).collect();
        assert!(own.contains(&"https://me.example/gw"), "{own:?}");
        assert!(own.contains(&"http://127.0.0.1:8080/"), "{own:?}");
        assert!(own.contains(&"http://[::1]:8080/"), "{own:?}");
    }

    #[test]
    fn tracker_settings() {
        let d = ServeConfig::default().tracker().unwrap();
        assert_eq!(d, crate::tracker::TrackerConfig::default());
        assert_eq!(d.ttl, Duration::from_secs(90));
        let c: ServeConfig = toml::from_str(
            "volunteer_ttl = \"2m\"\nvolunteer_max = 5\nvolunteer_announces_per_minute = 0\n",
        )
        .unwrap();
        let t = c.tracker().unwrap();
        assert_eq!(
            (
                t.ttl,
                t.max_volunteers,
                t.announces_per_minute,
                t.lists_per_minute
            ),
            (Duration::from_secs(120), 5, 0, 60)
        );
        let bad = ServeConfig {
            volunteer_ttl: Some("soon".into()),
            ..Default::default()
        };
        assert!(bad.tracker().unwrap_err().contains("volunteer_ttl"));
        let over = ServeConfig::default().overridden_by(ServeConfig {
            volunteer_ttl: Some("30s".into()),
            ..Default::default()
        });
        assert_eq!(over.tracker().unwrap().ttl, Duration::from_secs(30));
    }

    #[test]
    fn trusted_proxies_are_addresses_or_networks() {
        let c: ServeConfig =
            toml::from_str("trusted_proxies = [\"127.0.0.1\", \"10.1.2.3/8\", \"::1\"]\n").unwrap();
        let nets: Vec<String> = c
            .tracker()
            .unwrap()
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]);
        for bad in ["proxy.lan", "10.0.0.0/33", ""] {
            let c = ServeConfig {
                trusted_proxies: vec![bad.into()],
                ..Default::default()
            };
            let e = c.tracker().unwrap_err();
            assert!(
                e.contains("trusted_proxies") && e.contains(&format!("{bad:?}")),
                "{e}"
            );
        }
    }
}
