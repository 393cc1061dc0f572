//! Mirror settings: a TOML file (`--config`), command-line flags over it, defaults under both.
//!
//! ```toml
//! upstream = "https://geo.mirror.pkgbuild.com/"
//! repos = ["core", "extra"]
//! arches = ["x86_64"]
//! interval = "5m"
//! concurrency = 4
//! profile = "unixfs-v1-2025"
//! keep_snapshots = 10
//! grace = "14days"
//! stall_timeout = "30s"
//! max_shrink = "25%"
//! shrink_confirm_syncs = 12
//! aur_packages = ["paru", "yay"]        # AUR package bases whose sources are cached
//! aur_packages_file = "/etc/cidmirror/aur-packages"
//! aur_repos = "https://aur.archlinux.org/"
//! aur_allow_addresses = []              # private addresses sources may come from
//! ```

use std::path::Path;
use std::time::Duration;

use cidmirror_store::Profile;
use serde::Deserialize;

use crate::pacman::{Arch, RepoName};
use crate::upstream::FetchOptions;
use crate::{Error, Result};

/// Settings as written (file or flags); every field optional.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// The upstream mirror (http, https, file URL or a directory).
    pub upstream: Option<String>,
    /// Repositories to follow.
    #[serde(default)]
    pub repos: Vec<String>,
    /// Architectures to follow (default x86_64).
    #[serde(default)]
    pub arches: Vec<String>,
    /// Import profile (default unixfs-v1-2025); fixed once a publisher has published.
    pub profile: Option<String>,
    /// Time between syncs in `--interval` mode (e.g. `5m`).
    pub interval: Option<String>,
    /// Downloads at once (default 4).
    pub concurrency: Option<usize>,
    /// Snapshots kept pinned (default 10).
    pub keep_snapshots: Option<u32>,
    /// How long files that left upstream stay pinned (default 14 days).
    pub grace: Option<String>,
    /// A transfer that receives nothing for this long fails (default 30 s).
    pub stall_timeout: Option<String>,
    /// The sanity gate: a new upstream state in which a repository lost more than this
    /// share of its packages (`"25%"`, the default; `"100%"` holds only a repository that
    /// empties) is held instead of published.
    pub max_shrink: Option<String>,
    /// ...until that many consecutive syncs saw a shrink (default 12: an hour at the default
    /// interval); `mirror --accept-shrink` publishes it at once.
    pub shrink_confirm_syncs: Option<u32>,
    /// AUR package bases whose `.SRCINFO` and verified sources every snapshot carries
    /// (`aur/<pkgbase>/`).
    #[serde(default)]
    pub aur_packages: Vec<String>,
    /// A file of more package bases: one per line, `#` starts a comment.
    pub aur_packages_file: Option<String>,
    /// Where the package bases' git repositories are: a URL (`<url>/<pkgbase>.git`, default
    /// `https://aur.archlinux.org/`) or a directory (`<dir>/<pkgbase>`).
    pub aur_repos: Option<String>,
    /// Addresses AUR sources may be fetched from although they are loopback, private,
    /// link-local or otherwise not public (every such address is refused by default).
    #[serde(default)]
    pub aur_allow_addresses: Vec<String>,
}

impl MirrorConfig {
    /// Reads a TOML file.
    pub fn load(path: &Path) -> Result<MirrorConfig> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Settings from an already parsed TOML table (the file's top level, without other
    /// sections such as `[serve]`).
    pub fn from_table(table: toml::Table) -> Result<MirrorConfig> {
        toml::Value::Table(table)
            .try_into()
            .map_err(|e| Error::Config(e.to_string()))
    }

    /// These settings with every value `over` sets replacing this one's.
    pub fn overridden_by(self, over: MirrorConfig) -> MirrorConfig {
        MirrorConfig {
            upstream: over.upstream.or(self.upstream),
            repos: if over.repos.is_empty() {
                self.repos
            } else {
                over.repos
            },
            arches: if over.arches.is_empty() {
                self.arches
            } else {
                over.arches
            },
            profile: over.profile.or(self.profile),
            interval: over.interval.or(self.interval),
            concurrency: over.concurrency.or(self.concurrency),
            keep_snapshots: over.keep_snapshots.or(self.keep_snapshots),
            grace: over.grace.or(self.grace),
            stall_timeout: over.stall_timeout.or(self.stall_timeout),
            max_shrink: over.max_shrink.or(self.max_shrink),
            shrink_confirm_syncs: over.shrink_confirm_syncs.or(self.shrink_confirm_syncs),
            aur_packages: if over.aur_packages.is_empty() {
                self.aur_packages
            } else {
                over.aur_packages
            },
            aur_packages_file: over.aur_packages_file.or(self.aur_packages_file),
            aur_repos: over.aur_repos.or(self.aur_repos),
            aur_allow_addresses: if over.aur_allow_addresses.is_empty() {
                self.aur_allow_addresses
            } else {
                over.aur_allow_addresses
            },
        }
    }
}

/// Names a repository cannot have: the snapshot listing's own top-level entries.
const RESERVED: &[&str] = cidmirror_listing::layout::RESERVED;

/// Validated settings with defaults applied.
#[derive(Debug, Clone)]
pub struct MirrorOptions {
    /// The upstream as given.
    pub upstream: String,
    /// Repositories.
    pub repos: Vec<RepoName>,
    /// Architectures.
    pub arches: Vec<Arch>,
    /// Import profile.
    pub profile: Profile,
    /// Time between syncs.
    pub interval: Duration,
    /// Downloads at once.
    pub concurrency: usize,
    /// Snapshots kept pinned.
    pub keep_snapshots: u32,
    /// Grace period of files that left upstream.
    pub grace: Duration,
    /// Transfer behaviour.
    pub fetch: FetchOptions,
    /// The sanity gate; see [`ShrinkGate`].
    pub gate: ShrinkGate,
    /// AUR package bases followed, if any.
    pub aur: Option<AurOptions>,
}

/// The AUR package bases a publisher follows.
#[derive(Debug, Clone)]
pub struct AurOptions {
    /// Package bases, sorted, each once.
    pub packages: Vec<String>,
    /// Where their repositories are.
    pub repos: crate::aur::git::RepoBase,
    /// Which addresses sources are fetched from.
    pub policy: crate::aur::HostPolicy,
}

impl AurOptions {
    fn from_config(c: &MirrorConfig) -> Result<Option<AurOptions>> {
        let mut packages = c.aur_packages.clone();
        if let Some(file) = &c.aur_packages_file {
            let text = std::fs::read_to_string(file).map_err(|source| Error::Io {
                path: file.into(),
                source,
            })?;
            packages.extend(
                text.lines()
                    .map(|l| l.split('#').next().unwrap_or_default().trim())
                    .filter(|l| !l.is_empty())
                    .map(str::to_string),
            );
        }
        if packages.is_empty() {
            return Ok(None);
        }
        for p in &packages {
            if !crate::aur::git::valid_pkgbase(p) {
                return Err(Error::Config(format!(
                    "AUR package base {:?} is not a valid package name",
                    cidmirror_schema::text::printable(p)
                )));
            }
        }
        packages.sort();
        packages.dedup();
        let repos = match &c.aur_repos {
            None => crate::aur::git::RepoBase::aur(),
            Some(r) => crate::aur::git::RepoBase::new(r)
                .map_err(|e| Error::Config(format!("aur_repos: {e}")))?,
        };
        let allow = c
            .aur_allow_addresses
            .iter()
            .map(|a| {
                a.parse()
                    .map_err(|e| Error::Config(format!("aur_allow_addresses: {a:?}: {e}")))
            })
            .collect::<Result<Vec<std::net::IpAddr>>>()?;
        Ok(Some(AurOptions {
            packages,
            repos,
            policy: crate::aur::HostPolicy { allow },
        }))
    }
}

/// The sanity gate: how much of a repository may disappear in one step before the new
/// upstream state is held back rather than published.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShrinkGate {
    /// The largest share (0 to 1) of a repository's packages that may leave in one
    /// snapshot. A repository that empties is always held.
    pub max_shrink: f64,
    /// A held shrink is published once this many consecutive syncs have seen one.
    pub confirm_syncs: u32,
    /// Publish a held shrink now (`mirror --accept-shrink`): the operator confirmed it.
    pub accept: bool,
}

impl Default for ShrinkGate {
    fn default() -> ShrinkGate {
        ShrinkGate {
            max_shrink: 0.25,
            confirm_syncs: 12,
            accept: false,
        }
    }
}

/// A share written as a percentage (`"25%"`) or a fraction (`"0.25"`), from 0 to 1.
fn share(field: &str, v: &str) -> Result<f64> {
    let bad = |why: &str| Error::Config(format!("{field} = {v:?}: {why}"));
    let t = v.trim();
    let x = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| bad("expected a percentage such as \"25%\" or a fraction such as 0.25"))?;
    if !(0.0..=1.0).contains(&x) {
        return Err(bad("must be between 0% and 100%"));
    }
    Ok(x)
}

fn duration(field: &str, v: Option<&str>, default: Duration) -> Result<Duration> {
    match v {
        None => Ok(default),
        Some(s) => {
            humantime::parse_duration(s).map_err(|e| Error::Config(format!("{field} = {s:?}: {e}")))
        }
    }
}

impl MirrorOptions {
    /// Checks the settings and fills in defaults.
    pub fn from_config(c: MirrorConfig) -> Result<MirrorOptions> {
        let aur = AurOptions::from_config(&c)?;
        let upstream = c
            .upstream
            .ok_or_else(|| Error::Config("no upstream: give --upstream or `upstream =`".into()))?;
        if c.repos.is_empty() {
            return Err(Error::Config(
                "no repository: give --repo (e.g. --repo core --repo extra) or `repos = [...]`"
                    .into(),
            ));
        }
        let mut repos = c
            .repos
            .iter()
            .map(|r| {
                if RESERVED.contains(&r.as_str()) {
                    return Err(Error::Config(format!(
                        "repository {r:?}: the name of a snapshot's own {r}/"
                    )));
                }
                r.parse::<RepoName>()
                    .map_err(|e| Error::Config(format!("repository {r:?}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        // The order flags are given in must not change the snapshot (its manifest lists them).
        repos.sort();
        repos.dedup();
        let arch_names = if c.arches.is_empty() {
            vec!["x86_64".to_string()]
        } else {
            c.arches
        };
        let mut arches = arch_names
            .iter()
            .map(|a| {
                a.parse::<Arch>()
                    .map_err(|e| Error::Config(format!("architecture {a:?}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        arches.sort();
        arches.dedup();
        let profile = match &c.profile {
            None => Profile::default(),
            Some(p) => p
                .parse::<Profile>()
                .map_err(|e| Error::Config(e.to_string()))?,
        };
        let concurrency = c.concurrency.unwrap_or(4);
        if !(1..=256).contains(&concurrency) {
            return Err(Error::Config(format!(
                "concurrency {concurrency} must be between 1 and 256"
            )));
        }
        let keep_snapshots = c.keep_snapshots.unwrap_or(10);
        if keep_snapshots == 0 {
            return Err(Error::Config("keep_snapshots must be at least 1".into()));
        }
        let fetch = FetchOptions {
            stall_timeout: duration(
                "stall_timeout",
                c.stall_timeout.as_deref(),
                Duration::from_secs(30),
            )?,
            ..FetchOptions::default()
        };
        let defaults = ShrinkGate::default();
        let gate = ShrinkGate {
            max_shrink: match &c.max_shrink {
                None => defaults.max_shrink,
                Some(v) => share("max_shrink", v)?,
            },
            confirm_syncs: c.shrink_confirm_syncs.unwrap_or(defaults.confirm_syncs),
            accept: false,
        };
        if gate.confirm_syncs == 0 {
            return Err(Error::Config(
                "shrink_confirm_syncs must be at least 1 (use --accept-shrink to publish a \
                 held shrink at once)"
                    .into(),
            ));
        }
        Ok(MirrorOptions {
            aur,
            upstream,
            repos,
            arches,
            profile,
            interval: duration("interval", c.interval.as_deref(), Duration::from_secs(300))?,
            concurrency,
            keep_snapshots,
            grace: duration(
                "grace",
                c.grace.as_deref(),
                Duration::from_secs(14 * 24 * 3600),
            )?,
            fetch,
            gate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags_then_defaults() {
        let file: MirrorConfig = toml::from_str(
            r#"
            upstream = "http://a/"
            repos = ["core", "extra"]
            interval = "10m"
            grace = "7days"
            "#,
        )
        .unwrap();
        let flags = MirrorConfig {
            upstream: Some("http://b/".into()),
            concurrency: Some(8),
            ..Default::default()
        };
        let o = MirrorOptions::from_config(file.overridden_by(flags)).unwrap();
        assert_eq!(o.upstream, "http://b/");
        assert_eq!(
            o.repos.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            ["core", "extra"]
        );
        assert_eq!(o.arches[0].as_str(), "x86_64");
        assert_eq!(o.interval, Duration::from_secs(600));
        assert_eq!(o.grace, Duration::from_secs(7 * 86400));
        assert_eq!(o.concurrency, 8);
        assert_eq!(o.keep_snapshots, 10);
        assert_eq!(o.gate, ShrinkGate::default());
    }

    #[test]
    fn shares_are_percentages_or_fractions() {
        for (v, want) in [("25%", 0.25), ("0.5", 0.5), (" 100 % ", 1.0), ("0%", 0.0)] {
            assert_eq!(share("max_shrink", v).unwrap(), want, "{v}");
        }
        for v in ["", "-1%", "101%", "1.5", "lots", "NaN", "inf%"] {
            let e = share("max_shrink", v).unwrap_err().to_string();
            assert!(e.contains("max_shrink"), "{v}: {e}");
        }
    }

    #[test]
    fn bad_settings_are_named() {
        for (toml, needle) in [
            ("repos = [\"core\"]", "no upstream"),
            ("upstream = \"x\"", "no repository"),
            (
                "upstream = \"x\"\nrepos = [\"../etc\"]",
                "repository \"../etc\"",
            ),
            (
                "upstream = \"x\"\nrepos = [\"core\"]\ninterval = \"soon\"",
                "interval",
            ),
            (
                "upstream = \"x\"\nrepos = [\"core\"]\nprofile = \"v9\"",
                "unknown profile",
            ),
            (
                "upstream = \"x\"\nrepos = [\"core\"]\nconcurrency = 0",
                "concurrency",
            ),
            (
                "upstream = \"x\"\nrepos = [\"index\"]",
                "snapshot's own index/",
            ),
            (
                "upstream = \"x\"\nrepos = [\"core\"]\nmax_shrink = \"30 percent\"",
                "max_shrink",
            ),
            (
                "upstream = \"x\"\nrepos = [\"core\"]\nshrink_confirm_syncs = 0",
                "shrink_confirm_syncs",
            ),
        ] {
            let c: MirrorConfig = toml::from_str(toml).unwrap();
            let err = MirrorOptions::from_config(c).unwrap_err().to_string();
            assert!(err.contains(needle), "{toml}: {err}");
        }
        assert!(toml::from_str::<MirrorConfig>("upstrem = \"x\"").is_err());
    }
}
