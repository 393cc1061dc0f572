//! The tracker's wire types, from the store crate (shared with the publisher's tracker):
//! volunteers announce themselves to the publisher (`POST /api/v1/volunteers`, repeated as a
//! heartbeat) and anyone lists the live ones (`GET /api/v1/volunteers`), as with a
//! BitTorrent tracker. Follower gateways add the listed URLs to their sources; volunteers
//! plan over the listed ids. Here too: a new volunteer's id.

pub use cidmirror_store::volunteers::{
    API_PATH, Announce, FieldError, ID_MAX_LEN, URL_MAX_LEN, Volunteer, VolunteerList, validate_id,
    validate_url,
};

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
            Err(FieldError { field: "id", .. })
        ));
        let bad = Announce {
            id: "v1".into(),
            url: "h".into(),
            budget: None,
        };
        assert!(matches!(
            bad.validate(),
            Err(FieldError { field: "url", .. })
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
