//! The volunteer tracker's wire types and checks, shared by the publisher's tracker
//! (resolver) and the volunteers (pinner), which do not depend on each other: volunteers
//! announce themselves (`POST /api/v1/volunteers`, repeated as a heartbeat) and anyone lists
//! the live ones (`GET /api/v1/volunteers`), like a BitTorrent tracker.
//!
//! The types deserialize whatever is well-formed JSON (unknown fields are ignored, for
//! newer peers); [`Announce::validate`] and [`VolunteerList::valid`] decide what is
//! acceptable.

use serde::{Deserialize, Serialize};
use url::Url;

/// Where the tracker lives on a publisher: `POST` announces, `GET` lists.
pub const API_PATH: &str = "/api/v1/volunteers";

/// Longest volunteer id.
pub const ID_MAX_LEN: usize = 64;

/// Longest gateway URL.
pub const URL_MAX_LEN: usize = 2048;

/// A volunteer's heartbeat: `POST /api/v1/volunteers` with this as JSON body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announce {
    /// The volunteer's id (see [`validate_id`]).
    pub id: String,
    /// The public URL of its gateway, where others fetch what it pins.
    pub url: String,
    /// Bytes it pins, if it cares to say (statistics only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<u64>,
}

/// A live volunteer, as the tracker lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volunteer {
    /// Its id.
    pub id: String,
    /// Its public gateway URL.
    pub url: String,
    /// Its last heartbeat (unix seconds).
    pub last_seen: i64,
}

/// The body of `GET /api/v1/volunteers` (and of the answer to an announce).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolunteerList {
    /// The volunteers heard from within `ttl_secs`, sorted by id.
    pub volunteers: Vec<Volunteer>,
    /// How long a volunteer stays listed without a heartbeat.
    pub ttl_secs: u64,
}

/// A field of an announce that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct FieldError {
    /// `id` or `url`.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

/// Checks a volunteer id: 1 to 64 characters of `A-Z a-z 0-9 . _ -`, and not `.` or `..`
/// (ids end up in file names, logs and metric labels). The pinner checks the same way.
pub fn validate_id(id: &str) -> Result<(), FieldError> {
    let bad = |reason: String| FieldError {
        field: "id",
        reason,
    };
    if id.is_empty() {
        return Err(bad("empty".into()));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(bad(format!(
            "{id:?}: character {c:?} not allowed (use A-Z, a-z, 0-9, '.', '_', '-')"
        )));
    }
    if id.len() > ID_MAX_LEN {
        return Err(bad(format!(
            "{} characters, at most {ID_MAX_LEN}",
            id.len()
        )));
    }
    if id == "." || id == ".." {
        return Err(bad(format!("{id:?} is not a name")));
    }
    Ok(())
}

/// Checks a gateway URL: `http` or `https`, with a host, without credentials (the list is
/// public), at most 2048 characters. Returns it parsed.
pub fn validate_url(url: &str) -> Result<Url, FieldError> {
    let bad = |reason: String| FieldError {
        field: "url",
        reason,
    };
    if url.len() > URL_MAX_LEN {
        return Err(bad(format!("longer than {URL_MAX_LEN} characters")));
    }
    let parsed = Url::parse(url).map_err(|e| bad(format!("{url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad(format!(
            "{url:?}: scheme {:?}, expected http or https",
            parsed.scheme()
        )));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad(format!("{url:?}: no host")));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad(format!(
            "{url:?}: contains credentials, which the public list would show"
        )));
    }
    Ok(parsed)
}

impl Announce {
    /// Checks the id and the URL; the error names the field at fault.
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_id(&self.id)?;
        validate_url(&self.url)?;
        Ok(())
    }
}

impl VolunteerList {
    /// The entries with a valid id and URL; each id once (its most recent entry). Every
    /// volunteer filters the same way, so they all plan over the same set.
    pub fn valid(&self) -> Vec<&Volunteer> {
        let mut best: std::collections::BTreeMap<&str, &Volunteer> = Default::default();
        for v in &self.volunteers {
            if validate_id(&v.id).is_err() || validate_url(&v.url).is_err() {
                continue;
            }
            let e = best.entry(v.id.as_str()).or_insert(v);
            if v.last_seen > e.last_seen {
                *e = v;
            }
        }
        best.into_values().collect()
    }

    /// The ids of the valid entries, sorted: the live set to plan over.
    pub fn ids(&self) -> Vec<String> {
        self.valid().into_iter().map(|v| v.id.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for id in ["a", "A-b_c.9", "...", &"x".repeat(64)] {
            assert_eq!(validate_id(id), Ok(()), "{id:?}");
        }
        for (id, want) in [
            ("", "invalid id: empty"),
            (&"x".repeat(65) as &str, "invalid id: 65 characters"),
            ("a/b", "\"a/b\": character '/'"),
            ("é", "character 'é'"),
            (".", "invalid id: \".\" is not a name"),
            ("..", "is not a name"),
        ] {
            let msg = validate_id(id).expect_err(id).to_string();
            assert!(msg.contains(want), "{id:?}: {msg}");
        }
    }

    #[test]
    fn urls() {
        for url in [
            "http://127.0.0.1:8080",
            "https://[::1]:8443/cidmirror",
            "http://v.example/p?x=1",
        ] {
            assert!(validate_url(url).is_ok(), "{url:?}");
        }
        for (url, want) in [
            ("", "relative URL"),
            ("ftp://example.org", "scheme \"ftp\""),
            ("http://", "empty host"),
            ("http://u:p@example.org", "contains credentials"),
            ("http://u@example.org", "contains credentials"),
        ] {
            let msg = validate_url(url).expect_err(url).to_string();
            assert!(msg.contains(want), "{url:?}: {msg}");
        }
        let long = format!("http://example.org/{}", "a".repeat(URL_MAX_LEN));
        assert!(validate_url(&long).is_err());
    }
}
