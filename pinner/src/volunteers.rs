//! The tracker's wire types: volunteers announce themselves to the publisher
//! (`POST /api/v1/volunteers`, repeated as a heartbeat) and anyone lists the live ones
//! (`GET /api/v1/volunteers`), as with a BitTorrent tracker. Follower gateways add the listed
//! URLs to their sources; volunteers plan over the listed ids.
//!
//! The types deserialize whatever is well-formed JSON (unknown fields are ignored, for newer
//! peers); [`Announce::validate`] and [`VolunteerList::valid`] then decide what is acceptable.

use serde::{Deserialize, Serialize};
use url::Url;

use crate::{Error, Result};

/// Where the tracker lives on a publisher: `POST` announces, `GET` lists.
pub const API_PATH: &str = "/api/v1/volunteers";

/// Longest volunteer id.
pub const ID_MAX_LEN: usize = 64;

/// Longest gateway URL.
pub const URL_MAX_LEN: usize = 2048;

/// A volunteer's heartbeat: `POST /api/v1/volunteers` with this as JSON body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announce {
    /// The volunteer's id: its name in the rendezvous hashing, stable across restarts
    /// (see [`validate_id`], [`generate_id`]).
    pub id: String,
    /// The public URL of its gateway (`cidmirror serve`), where others fetch what it pins.
    pub url: String,
    /// Bytes it pins, if it cares to say (for the publisher's statistics only: the
    /// assignment does not depend on it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<u64>,
}

impl Announce {
    /// Checks the id and the URL; the error names the field at fault.
    pub fn validate(&self) -> Result<()> {
        validate_id(&self.id)?;
        validate_url(&self.url)?;
        Ok(())
    }
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

/// The body of `GET /api/v1/volunteers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolunteerList {
    /// The volunteers heard from within `ttl_secs`.
    pub volunteers: Vec<Volunteer>,
    /// How long a volunteer stays listed without a heartbeat: announce at least this often
    /// (in practice every third of it), and a list is stale after it.
    pub ttl_secs: u64,
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

/// Checks a volunteer id: 1 to 64 characters of `A-Z a-z 0-9 . _ -`, and not `.` or `..`
/// (ids end up in file names, logs and metric labels).
pub fn validate_id(id: &str) -> Result<()> {
    let bad = |reason: String| Error::Field {
        field: "id",
        reason,
    };
    if id.is_empty() {
        return Err(bad("empty".to_string()));
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
pub fn validate_url(url: &str) -> Result<Url> {
    let bad = |reason: String| Error::Field {
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

/// A fresh random volunteer id: 16 lowercase hex characters (64 bits: collisions among
/// volunteers are not a concern). Generate it once and keep it: a new id reshuffles this
/// volunteer's assignment.
pub fn generate_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        let ok = ["a", "A-b_c.9", "a1b2c3d4e5f60718", "...", &"x".repeat(64)];
        for id in ok {
            assert_eq!(validate_id(id), Ok(()), "{id:?}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "invalid id: empty"),
            (&"x".repeat(65), "invalid id: 65 characters, at most 64"),
            ("a/b", "invalid id: \"a/b\": character '/' not allowed"),
            ("a b", "character ' ' not allowed"),
            ("é", "character 'é' not allowed"),
            ("a\0", "character '\\0' not allowed"),
            (".", "invalid id: \".\" is not a name"),
            ("..", "is not a name"),
        ];
        for (id, want) in bad {
            let msg = validate_id(id).expect_err(id).to_string();
            assert!(msg.contains(want), "{id:?}: {msg}");
        }
    }

    #[test]
    fn urls() {
        let ok = [
            "http://127.0.0.1:8080",
            "https://mirror.example.org/",
            "https://[::1]:8443/cidmirror",
            "http://volunteer.example:80/path?x=1",
        ];
        for url in ok {
            assert!(validate_url(url).is_ok(), "{url:?}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "invalid url: \"\": relative URL without a base"),
            ("example.org", "relative URL"),
            (
                "ftp://example.org",
                "invalid url: \"ftp://example.org\": scheme \"ftp\", expected http or https",
            ),
            ("file:///srv", "scheme \"file\""),
            ("http://", "empty host"),
            ("http://user:pw@example.org", "contains credentials"),
            ("http://user@example.org", "contains credentials"),
        ];
        for (url, want) in bad {
            let msg = validate_url(url).expect_err(url).to_string();
            assert!(msg.contains(want), "{url:?}: {msg}");
        }
        let long = format!("http://example.org/{}", "a".repeat(URL_MAX_LEN));
        assert!(
            validate_url(&long)
                .expect_err("too long")
                .to_string()
                .contains("longer than")
        );
    }

    #[test]
    fn announce_on_the_wire() {
        let a: Announce =
            serde_json::from_str(r#"{"id":"v1","url":"http://127.0.0.1:1"}"#).expect("parses");
        assert_eq!(a.budget, None);
        assert_eq!(a.validate(), Ok(()));
        assert_eq!(
            serde_json::to_string(&a).expect("serializes"),
            r#"{"id":"v1","url":"http://127.0.0.1:1"}"#
        );
        let a: Announce = serde_json::from_str(
            r#"{"id":"v1","url":"http://h","budget":53687091200,"future":true}"#,
        )
        .expect("parses");
        assert_eq!(a.budget, Some(50 << 30));
        let bad = Announce {
            id: "v 1".into(),
            url: "http://h".into(),
            budget: None,
        };
        assert!(matches!(
            bad.validate(),
            Err(Error::Field { field: "id", .. })
        ));
        let bad = Announce {
            id: "v1".into(),
            url: "h".into(),
            budget: None,
        };
        assert!(matches!(
            bad.validate(),
            Err(Error::Field { field: "url", .. })
        ));
    }

    #[test]
    fn list_on_the_wire() {
        let json = r#"{"volunteers":[
            {"id":"b","url":"http://b.example","last_seen":100},
            {"id":"a","url":"http://a.example","last_seen":90},
            {"id":"bad id","url":"http://c.example","last_seen":95},
            {"id":"d","url":"gopher://d.example","last_seen":95},
            {"id":"a","url":"http://a2.example","last_seen":99}
        ],"ttl_secs":300}"#;
        let list: VolunteerList = serde_json::from_str(json).expect("parses");
        assert_eq!(list.ttl_secs, 300);
        assert_eq!(list.ids(), ["a", "b"]);
        let valid = list.valid();
        assert_eq!(
            valid[0].url, "http://a2.example",
            "the latest entry of an id wins"
        );
        let back: VolunteerList =
            serde_json::from_str(&serde_json::to_string(&list).expect("serializes"))
                .expect("parses");
        assert_eq!(back, list);
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = generate_id();
        let b = generate_id();
        assert_eq!(a.len(), 16);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(validate_id(&a), Ok(()));
        assert_ne!(a, b);
    }
}
