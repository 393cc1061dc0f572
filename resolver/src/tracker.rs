//! The publisher's volunteer tracker, like a BitTorrent tracker: volunteers announce their
//! public gateway (`POST /api/v1/volunteers`, repeated as a heartbeat), anyone lists the live
//! ones (`GET /api/v1/volunteers`), and follower gateways add the listed URLs to their block
//! sources. Every block from a volunteer is still checked against its CID, so the list needs
//! no trust; it only needs to stay small and fresh: entries not renewed within the TTL
//! vanish, the table has a size cap, and both routes are rate-limited per client address.
//!
//! The wire types live in the store crate (`cidmirror_store::volunteers`), shared with the
//! pinner.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::{ApiError, ApiResult};

pub use cidmirror_store::volunteers::{
    API_PATH, Announce, FieldError, ID_MAX_LEN, URL_MAX_LEN, Volunteer, VolunteerList, validate_id,
    validate_url,
};

/// Longest announce body: an id, a URL and a budget fit many times over.
const BODY_MAX: usize = 8 << 10;

/// How long caches may keep a list: a few seconds, so that a crowd of followers behind
/// one cache asks once, and a new volunteer shows within seconds.
const LIST_CACHE_CONTROL: &str = "public, max-age=5";

/// Client addresses (or IPv6 /64 networks) the rate limiters remember at most.
const MAX_CLIENTS: usize = 65_536;

/// The tracker's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerConfig {
    /// How long a volunteer stays listed after its last heartbeat.
    pub ttl: Duration,
    /// Volunteers listed at most; a new one is refused (503) while the table is full of
    /// live entries.
    pub max_volunteers: usize,
    /// Announces per minute from one client address (an IPv6 /64 counts as one), with a
    /// burst of as many; 0: no limit.
    pub announces_per_minute: u32,
    /// Lists per minute from one client address, likewise; 0: no limit.
    pub lists_per_minute: u32,
    /// Reverse proxies in front of this server: for a request from one of them the client
    /// is the rightmost address of `X-Forwarded-For` that is not a trusted proxy. Empty:
    /// the header is ignored (anyone could write it), and every client behind a proxy
    /// shares the proxy's limits.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for TrackerConfig {
    /// A 90 s TTL (volunteers heartbeat every 30 s), 10,000 volunteers, 30 announces and
    /// 60 lists a minute per address (several volunteers or followers may share one).
    fn default() -> Self {
        TrackerConfig {
            ttl: Duration::from_secs(90),
            max_volunteers: 10_000,
            announces_per_minute: 30,
            lists_per_minute: 60,
            trusted_proxies: Vec::new(),
        }
    }
}

/// How an announce ended, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnounceOutcome {
    /// A volunteer not listed before.
    New,
    /// A heartbeat of a listed volunteer.
    Renewed,
    /// A bad body, id or URL.
    Invalid,
    /// Too many announces from its address.
    RateLimited,
    /// The table is full of live volunteers.
    Full,
}

impl AnnounceOutcome {
    /// Its metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            AnnounceOutcome::New => "new",
            AnnounceOutcome::Renewed => "renewed",
            AnnounceOutcome::Invalid => "invalid",
            AnnounceOutcome::RateLimited => "rate_limited",
            AnnounceOutcome::Full => "full",
        }
    }
}

struct Entry {
    url: String,
    /// What it says it pins: for the publisher's statistics, not listed.
    budget: Option<u64>,
    last_seen_unix: i64,
    seen: Instant,
}

/// The volunteer table of a publisher.
pub struct Tracker {
    cfg: TrackerConfig,
    table: Mutex<BTreeMap<String, Entry>>,
    announces: RateLimiter,
    lists: RateLimiter,
}

impl Tracker {
    /// An empty table.
    pub fn new(cfg: TrackerConfig) -> Tracker {
        Tracker {
            announces: RateLimiter::new(cfg.announces_per_minute),
            lists: RateLimiter::new(cfg.lists_per_minute),
            table: Mutex::new(BTreeMap::new()),
            cfg,
        }
    }

    /// Its limits.
    pub fn config(&self) -> &TrackerConfig {
        &self.cfg
    }

    fn ttl_secs(&self) -> u64 {
        let t = self.cfg.ttl;
        (t.as_secs() + u64::from(t.subsec_nanos() > 0)).max(1)
    }

    /// Registers or renews `a` at `now`: `Err(retry_after)` when it is new and the table is
    /// full of live entries.
    fn announce_at(&self, a: Announce, now: Instant) -> Result<AnnounceOutcome, Duration> {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let ttl = self.cfg.ttl;
        let unix = unix_now();
        if let Some(e) = table.get_mut(&a.id)
            && now.saturating_duration_since(e.seen) < ttl
        {
            e.url = a.url;
            e.budget = a.budget;
            e.seen = now;
            e.last_seen_unix = unix;
            return Ok(AnnounceOutcome::Renewed);
        }
        table.retain(|_, e| now.saturating_duration_since(e.seen) < ttl);
        if table.len() >= self.cfg.max_volunteers {
            let next_expiry = table
                .values()
                .map(|e| (e.seen + ttl).saturating_duration_since(now))
                .min()
                .unwrap_or(ttl);
            return Err(next_expiry.max(Duration::from_secs(1)));
        }
        table.insert(
            a.id,
            Entry {
                url: a.url,
                budget: a.budget,
                last_seen_unix: unix,
                seen: now,
            },
        );
        Ok(AnnounceOutcome::New)
    }

    /// The live volunteers at `now`, sorted by id; expired entries are dropped.
    fn list_at(&self, now: Instant) -> VolunteerList {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let ttl = self.cfg.ttl;
        table.retain(|_, e| now.saturating_duration_since(e.seen) < ttl);
        VolunteerList {
            volunteers: table
                .iter()
                .map(|(id, e)| Volunteer {
                    id: id.clone(),
                    url: e.url.clone(),
                    last_seen: e.last_seen_unix,
                })
                .collect(),
            ttl_secs: self.ttl_secs(),
        }
    }

    /// The live volunteers, sorted by id.
    pub fn list(&self) -> VolunteerList {
        self.list_at(Instant::now())
    }

    /// How many volunteers are live, and the sum of the budgets they announced (expired
    /// entries are dropped).
    pub fn live(&self) -> (usize, u64) {
        let now = Instant::now();
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.retain(|_, e| now.saturating_duration_since(e.seen) < self.cfg.ttl);
        let budget = table
            .values()
            .filter_map(|e| e.budget)
            .fold(0u64, u64::saturating_add);
        (table.len(), budget)
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A token bucket per client: `per_minute` tokens a minute, up to `per_minute` saved.
struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<Buckets>,
}

#[derive(Default)]
struct Buckets {
    map: HashMap<IpAddr, (f64, Instant)>,
    last_prune: Option<Instant>,
}

impl RateLimiter {
    fn new(per_minute: u32) -> RateLimiter {
        RateLimiter {
            per_minute,
            buckets: Mutex::default(),
        }
    }

    /// Takes a token for `client` at `now`; `Err(retry_after)` if it has none left.
    fn check_at(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let burst = f64::from(self.per_minute);
        let rate = burst / 60.0;
        let refilled = |(tokens, at): (f64, Instant)| {
            (tokens + now.duration_since(at).as_secs_f64() * rate).min(burst)
        };
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let key = client_key(client);
        if !b.map.contains_key(&key) && b.map.len() >= MAX_CLIENTS {
            // Forget the clients whose buckets are full again: they are as good as new.
            if b.last_prune
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
            {
                b.map.retain(|_, v| refilled(*v) < burst);
                b.last_prune = Some(now);
            }
            if b.map.len() >= MAX_CLIENTS {
                return Err(Duration::from_secs(60));
            }
        }
        let slot = b.map.entry(key).or_insert((burst, now));
        let tokens = refilled(*slot);
        if tokens >= 1.0 {
            *slot = (tokens - 1.0, now);
            Ok(())
        } else {
            *slot = (tokens, now);
            Err(Duration::from_secs_f64((1.0 - tokens) / rate))
        }
    }
}

/// The address a client is limited by: IPv4 as is, IPv6 by its /64 (one host usually has
/// the whole /64), IPv4-mapped IPv6 as IPv4.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The client's address: the peer of the connection ([`crate::serve`] records it), or the
/// unspecified address when the router is called without one (tests); behind a trusted
/// proxy, the address it forwarded for.
fn client_of(req: &Request, trusted: &[ipnet::IpNet]) -> IpAddr {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    forwarded_client(peer, req.headers(), trusted)
}

/// The client behind a chain of trusted proxies: walking `X-Forwarded-For` from the right
/// (the entry the nearest proxy added), the first address that is not a trusted proxy. An
/// entry that is not an address ends the walk at the proxy that passed it on; a chain of
/// trusted proxies only gives its leftmost entry.
fn forwarded_client(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| {
        let ip = ip.to_canonical();
        trusted.iter().any(|n| n.contains(&ip))
    };
    if !is_trusted(peer) {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for entry in entries.iter().rev() {
        let Some(ip) = parse_forwarded(entry) else {
            break;
        };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, with or without a port (`[v6]:port` too).
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

fn tracker_of(state: &AppState) -> ApiResult<&Tracker> {
    state.tracker().ok_or_else(|| {
        ApiError::NotFound(
            "this gateway is no publisher: only a publisher tracks volunteers".into(),
        )
    })
}

fn list_response(list: &VolunteerList, cache_control: &'static str) -> Response {
    let mut resp = axum::Json(list).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    resp
}

/// `POST /api/v1/volunteers`: registers or renews a volunteer; answers with the list.
pub(crate) async fn announce(State(state): State<AppState>, req: Request) -> ApiResult<Response> {
    let tracker = tracker_of(&state)?;
    let metrics = state.metrics();
    let outcome = |o: AnnounceOutcome| metrics.volunteer_announce(o.as_str());
    if let Err(retry_after) = tracker.announces.check_at(
        client_of(&req, &tracker.cfg.trusted_proxies),
        Instant::now(),
    ) {
        outcome(AnnounceOutcome::RateLimited);
        return Err(ApiError::TooManyRequests { retry_after });
    }
    let invalid = |m: String| {
        outcome(AnnounceOutcome::Invalid);
        ApiError::BadRequest(m)
    };
    let body = axum::body::to_bytes(req.into_body(), BODY_MAX)
        .await
        .map_err(|_| invalid(format!("body: not read, or longer than {BODY_MAX} bytes")))?;
    let a: Announce = serde_json::from_slice(&body).map_err(|e| invalid(format!("body: {e}")))?;
    validate_id(&a.id).map_err(|e| invalid(e.to_string()))?;
    validate_url(&a.url).map_err(|e| invalid(e.to_string()))?;
    let id = a.id.clone();
    match tracker.announce_at(a, Instant::now()) {
        Ok(o) => {
            outcome(o);
            if o == AnnounceOutcome::New {
                tracing::info!("volunteer {id} announced itself");
            }
        }
        Err(retry_after) => {
            outcome(AnnounceOutcome::Full);
            return Err(ApiError::Unavailable {
                what: format!(
                    "the volunteer table is full ({} live)",
                    tracker.cfg.max_volunteers
                ),
                retry_after,
            });
        }
    }
    metrics.volunteers(tracker.live());
    Ok(list_response(&tracker.list(), "no-store"))
}

/// `GET /api/v1/volunteers`: the live volunteers, sorted by id.
pub(crate) async fn list(State(state): State<AppState>, req: Request) -> ApiResult<Response> {
    let tracker = tracker_of(&state)?;
    if let Err(retry_after) = tracker.lists.check_at(
        client_of(&req, &tracker.cfg.trusted_proxies),
        Instant::now(),
    ) {
        return Err(ApiError::TooManyRequests { retry_after });
    }
    state.metrics().volunteers(tracker.live());
    Ok(list_response(&tracker.list(), LIST_CACHE_CONTROL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_behind_trusted_proxies() {
        let nets: Vec<ipnet::IpNet> = ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let with = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
            }
            h
        };
        let cases: &[(&str, &[&str], &str)] = &[
            // Not from a proxy: the header is anyone's words.
            ("192.0.2.9", &["203.0.113.5"], "192.0.2.9"),
            // One proxy.
            ("127.0.0.1", &["203.0.113.5"], "203.0.113.5"),
            ("::ffff:127.0.0.1", &["203.0.113.5"], "203.0.113.5"),
            ("::1", &["2001:db8::7"], "2001:db8::7"),
            // A client that writes its own header gains nothing: the rightmost untrusted.
            ("127.0.0.1", &["1.1.1.1, 203.0.113.5"], "203.0.113.5"),
            // Two proxies, one header each or one list.
            ("127.0.0.1", &["203.0.113.5, 10.0.0.2"], "203.0.113.5"),
            ("127.0.0.1", &["203.0.113.5", "10.0.0.2"], "203.0.113.5"),
            // Ports, brackets.
            ("127.0.0.1", &["203.0.113.5:4711"], "203.0.113.5"),
            ("127.0.0.1", &["[2001:db8::7]:4711"], "2001:db8::7"),
            // Garbage ends the walk at the proxy that passed it on.
            ("127.0.0.1", &["unknown"], "127.0.0.1"),
            ("127.0.0.1", &["203.0.113.5, junk, 10.0.0.2"], "10.0.0.2"),
            // No header, or only proxies.
            ("127.0.0.1", &[], "127.0.0.1"),
            ("127.0.0.1", &["10.0.0.3, 10.0.0.2"], "10.0.0.3"),
        ];
        for (peer, values, want) in cases {
            assert_eq!(
                forwarded_client(ip(peer), &with(values), &nets),
                ip(want),
                "{peer} {values:?}"
            );
        }
        // No trusted proxies: always the peer.
        assert_eq!(
            forwarded_client(ip("127.0.0.1"), &with(&["203.0.113.5"]), &[]),
            ip("127.0.0.1")
        );
    }

    fn announce(id: &str, url: &str) -> Announce {
        Announce {
            id: id.into(),
            url: url.into(),
            budget: None,
        }
    }

    #[test]
    fn wire_shapes() {
        let a: Announce =
            serde_json::from_str(r#"{"id":"v1","url":"http://h","budget":5,"new":1}"#)
                .expect("parses");
        assert_eq!(a.budget, Some(5));
        assert_eq!(
            serde_json::to_string(&announce("v1", "http://h")).expect("serializes"),
            r#"{"id":"v1","url":"http://h"}"#
        );
        let l = VolunteerList {
            volunteers: vec![Volunteer {
                id: "a".into(),
                url: "http://a".into(),
                last_seen: 1_700_000_000,
            }],
            ttl_secs: 90,
        };
        assert_eq!(
            serde_json::to_string(&l).expect("serializes"),
            r#"{"volunteers":[{"id":"a","url":"http://a","last_seen":1700000000}],"ttl_secs":90}"#
        );
    }

    #[test]
    fn entries_expire_after_the_ttl_and_renewals_keep_them() {
        let t = Tracker::new(TrackerConfig {
            ttl: Duration::from_secs(90),
            max_volunteers: 2,
            ..Default::default()
        });
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(
            t.announce_at(announce("b", "http://b"), t0),
            Ok(AnnounceOutcome::New)
        );
        assert_eq!(
            t.announce_at(announce("a", "http://a"), t0),
            Ok(AnnounceOutcome::New)
        );
        let ids = |l: VolunteerList| l.volunteers.into_iter().map(|v| v.id).collect::<Vec<_>>();
        assert_eq!(ids(t.list_at(t0)), ["a", "b"]);
        assert_eq!(t.list_at(t0).ttl_secs, 90);
        // Full: a third is refused until the first entry would expire.
        assert_eq!(
            t.announce_at(announce("c", "http://c"), t0 + s(30)),
            Err(s(60))
        );
        assert_eq!(
            t.announce_at(announce("a", "http://a2"), t0 + s(60)),
            Ok(AnnounceOutcome::Renewed)
        );
        assert_eq!(ids(t.list_at(t0 + s(89))), ["a", "b"]);
        assert_eq!(ids(t.list_at(t0 + s(90))), ["a"]);
        assert_eq!(t.list_at(t0 + s(90)).volunteers[0].url, "http://a2");
        assert_eq!(
            t.announce_at(announce("c", "http://c"), t0 + s(91)),
            Ok(AnnounceOutcome::New)
        );
        assert_eq!(ids(t.list_at(t0 + s(150))), ["c"]);
        // An expired id coming back is new again.
        assert_eq!(
            t.announce_at(announce("a", "http://a"), t0 + s(151)),
            Ok(AnnounceOutcome::New)
        );
    }

    #[test]
    fn the_rate_limit_refills_per_client() {
        let r = RateLimiter::new(6); // one token every 10 s, a burst of 6
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        for _ in 0..6 {
            assert_eq!(r.check_at(a, t0), Ok(()));
        }
        let wait = r.check_at(a, t0).expect_err("limited");
        assert!(
            wait > Duration::from_secs(9) && wait <= Duration::from_secs(10),
            "{wait:?}"
        );
        assert_eq!(
            r.check_at(b, t0),
            Ok(()),
            "another client has its own bucket"
        );
        assert_eq!(r.check_at(a, t0 + Duration::from_secs(10)), Ok(()));
        assert!(r.check_at(a, t0 + Duration::from_secs(10)).is_err());
        // One IPv6 /64 is one client.
        let v6 = |s: &str| -> IpAddr { s.parse().expect("ip") };
        assert_eq!(
            client_key(v6("2001:db8:1:2::1")),
            client_key(v6("2001:db8:1:2::ffff"))
        );
        assert_ne!(
            client_key(v6("2001:db8:1:2::1")),
            client_key(v6("2001:db8:1:3::1"))
        );
        assert_eq!(client_key(v6("::ffff:192.0.2.1")), a);
        assert_eq!(RateLimiter::new(0).check_at(a, t0), Ok(()), "0: no limit");
    }
}
