//! `/metrics` in Prometheus text format (the `prometheus-client` crate).
//!
//! Requests by route and status, bytes served by route, store hits and misses (a file served
//! straight from a kept file, or assembled from blocks), the current snapshot's sequence and
//! age, and sync outcomes as recorded by the publisher; the publisher's volunteer tracker
//! (live volunteers, announces by outcome); a follower's sources by origin.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceOutcome {
    source: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OriginLabel {
    origin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WhatLabel {
    what: String,
}

type IGauge = Gauge<i64, std::sync::atomic::AtomicI64>;

/// What `/metrics` says of the AUR.
#[derive(Debug, Clone, Copy, Default)]
pub struct AurCounts {
    /// Package bases in the current snapshot.
    pub bases: u64,
    /// Their cached sources.
    pub sources: u64,
    /// Those sources' bytes.
    pub bytes: u64,
    /// Sources not cached (publisher only).
    pub skipped: Option<u64>,
    /// Bases whose new version failed at the last sync (publisher only).
    pub failed: Option<u64>,
}

/// The server's counters. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    requests: Family<RouteStatus, Counter>,
    bytes: Family<RouteLabel, Counter>,
    store_hits: Counter,
    store_misses: Counter,
    sendfile_bytes: Counter,
    snapshot_seq: Gauge<i64, std::sync::atomic::AtomicI64>,
    snapshot_age: Gauge<i64, std::sync::atomic::AtomicI64>,
    syncs: Family<OutcomeLabel, Gauge<i64, std::sync::atomic::AtomicI64>>,
    sync_held: IGauge,
    aur: Family<WhatLabel, IGauge>,
    connections: Gauge<i64, std::sync::atomic::AtomicI64>,
    follow: Family<WhatLabel, IGauge>,
    integrity: Family<WhatLabel, IGauge>,
    source_blocks: Family<SourceOutcome, IGauge>,
    source_bytes: Family<WhatLabel, IGauge>,
    /// The source URLs of the last follower report: series of sources gone since are
    /// removed (volunteers come and go).
    source_urls: std::sync::Mutex<Vec<String>>,
    follow_sources: Family<OriginLabel, IGauge>,
    volunteers_live: IGauge,
    volunteers_budget: IGauge,
    volunteer_announces: Family<OutcomeLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cidmirror");
        let requests = Family::<RouteStatus, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        let bytes = Family::<RouteLabel, Counter<u64, AtomicU64>>::default();
        registry.register(
            "http_response_bytes",
            "Body bytes sent by route",
            bytes.clone(),
        );
        let store_hits = Counter::default();
        registry.register(
            "store_hits",
            "Files served whole from the store's kept files",
            store_hits.clone(),
        );
        let sendfile_bytes = Counter::default();
        registry.register(
            "sendfile_bytes",
            "Bytes of kept files handed to sendfile (the kernel sends them from the page cache), of all bytes served",
            sendfile_bytes.clone(),
        );
        let store_misses = Counter::default();
        registry.register(
            "store_misses",
            "Files asked for whose blocks the store does not hold",
            store_misses.clone(),
        );
        let snapshot_seq = Gauge::default();
        registry.register(
            "snapshot_sequence",
            "Sequence number of the current snapshot",
            snapshot_seq.clone(),
        );
        let snapshot_age = Gauge::default();
        registry.register(
            "snapshot_age_seconds",
            "Seconds since the current snapshot was published",
            snapshot_age.clone(),
        );
        let syncs = Family::<OutcomeLabel, Gauge<i64, std::sync::atomic::AtomicI64>>::default();
        registry.register(
            "syncs",
            "Publisher syncs recorded, by outcome",
            syncs.clone(),
        );
        let sync_held = IGauge::default();
        registry.register(
            "sync_held",
            "Consecutive syncs the sanity gate has held a shrinking upstream state back (0: none held)",
            sync_held.clone(),
        );
        let aur = Family::<WhatLabel, IGauge>::default();
        registry.register(
            "aur",
            "AUR package bases and their cached sources in the current snapshot: bases, \
             sources, source_bytes; on the publisher also skipped (sources not cached: SKIP, \
             VCS, local) and failed (bases whose new version failed at the last sync)",
            aur.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "http_connections",
            "Open client connections",
            connections.clone(),
        );
        let integrity = Family::<WhatLabel, IGauge>::default();
        registry.register(
            "store_integrity",
            "Embedded store: corrupt files and blocks found, repaired (held again) and \
             quarantined (not yet repaired), ever; files and bytes the scrub has not \
             re-hashed within its period",
            integrity.clone(),
        );
        let follow = Family::<WhatLabel, IGauge>::default();
        registry.register(
            "follow",
            "Follower gateway: latest_seen and lag (snapshots), refreshes by delta/walk/failed, \
             refused announcements, last_refresh_bytes, transfers started/shared/completed/failed, \
             sources_dropped, fallback_bytes, fallback_rejected, cache_used/cache_budget bytes, \
             volunteers_listed and volunteer_list_fetches_ok/failed (the publisher's volunteer list)",
            follow.clone(),
        );
        let source_blocks = Family::<SourceOutcome, IGauge>::default();
        registry.register(
            "follow_source_blocks",
            "Follower gateway: blocks asked of each source, by outcome",
            source_blocks.clone(),
        );
        let source_bytes = Family::<WhatLabel, IGauge>::default();
        registry.register(
            "follow_source_bytes",
            "Follower gateway: verified bytes received from each source (label what = URL)",
            source_bytes.clone(),
        );
        let follow_sources = Family::<OriginLabel, IGauge>::default();
        registry.register(
            "follow_sources",
            "Follower gateway: block sources in use, by origin (followed, configured, volunteer)",
            follow_sources.clone(),
        );
        let volunteers_live = IGauge::default();
        registry.register(
            "volunteers_live",
            "Publisher: volunteers listed by the tracker (heard from within the TTL)",
            volunteers_live.clone(),
        );
        let volunteers_budget = IGauge::default();
        registry.register(
            "volunteers_budget_bytes",
            "Publisher: sum of the budgets the live volunteers announced",
            volunteers_budget.clone(),
        );
        let volunteer_announces = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "volunteer_announces",
            "Publisher: volunteer announces by outcome (new, renewed, invalid, rate_limited, full)",
            volunteer_announces.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                requests,
                bytes,
                store_hits,
                store_misses,
                sendfile_bytes,
                snapshot_seq,
                snapshot_age,
                syncs,
                sync_held,
                aur,
                integrity,
                connections,
                follow,
                source_blocks,
                source_bytes,
                source_urls: std::sync::Mutex::default(),
                follow_sources,
                volunteers_live,
                volunteers_budget,
                volunteer_announces,
            }),
        }
    }

    /// Counts a finished request.
    pub fn request(&self, route: &str, status: u16) {
        self.inner
            .requests
            .get_or_create(&RouteStatus {
                route: route.to_string(),
                status,
            })
            .inc();
    }

    /// Counts body bytes sent.
    pub fn bytes_served(&self, route: &str, n: u64) {
        self.inner
            .bytes
            .get_or_create(&RouteLabel {
                route: route.to_string(),
            })
            .inc_by(n);
    }

    /// Bytes announced to go out by `sendfile` (counted as served too).
    pub fn sendfile_bytes(&self, n: u64) {
        self.inner.sendfile_bytes.inc_by(n);
    }

    /// A file served from a kept file.
    pub fn store_hit(&self) {
        self.inner.store_hits.inc();
    }

    /// A file whose blocks are not all held.
    pub fn store_miss(&self) {
        self.inner.store_misses.inc();
    }

    /// A connection opened (+1) or closed (-1).
    pub fn connection(&self, delta: i64) {
        self.inner.connections.inc_by(delta);
    }

    /// Sets the snapshot gauges.
    pub fn snapshot(&self, seq: u64, age_secs: u64) {
        self.inner
            .snapshot_seq
            .set(i64::try_from(seq).unwrap_or(i64::MAX));
        self.inner
            .snapshot_age
            .set(i64::try_from(age_secs).unwrap_or(i64::MAX));
    }

    /// Sets the store's integrity gauges.
    pub fn integrity(&self, s: &cidmirror_store::IntegrityStats) {
        for (what, v) in [
            ("found", s.found),
            ("repaired", s.repaired),
            ("quarantined", s.quarantined),
            ("unchecked_files", s.unchecked_files),
            ("unchecked_bytes", s.unchecked_bytes),
        ] {
            self.inner
                .integrity
                .get_or_create(&WhatLabel {
                    what: what.to_string(),
                })
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        }
    }

    /// Sets the count of recorded syncs with this outcome.
    pub fn syncs(&self, outcome: &str, count: u64) {
        self.inner
            .syncs
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Sets what the current snapshot holds of the AUR (and, on the publisher, what it
    /// does not cache and what failed at the last sync).
    pub fn aur(&self, c: &AurCounts) {
        let all = [
            ("bases", Some(c.bases)),
            ("sources", Some(c.sources)),
            ("source_bytes", Some(c.bytes)),
            ("skipped", c.skipped),
            ("failed", c.failed),
        ];
        for (what, n) in all {
            if let Some(n) = n {
                self.inner
                    .aur
                    .get_or_create(&WhatLabel {
                        what: what.to_string(),
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
    }

    /// Sets how many consecutive syncs have held a shrink back (0: none is held).
    pub fn sync_held(&self, syncs: u64) {
        self.inner
            .sync_held
            .set(i64::try_from(syncs).unwrap_or(i64::MAX));
    }

    /// Counts a volunteer announce by outcome.
    pub fn volunteer_announce(&self, outcome: &str) {
        self.inner
            .volunteer_announces
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Sets the tracker's gauges: live volunteers and the sum of their budgets.
    pub fn volunteers(&self, (live, budget): (usize, u64)) {
        self.inner
            .volunteers_live
            .set(i64::try_from(live).unwrap_or(i64::MAX));
        self.inner
            .volunteers_budget
            .set(i64::try_from(budget).unwrap_or(i64::MAX));
    }

    /// Sets the follower's gauges from its report.
    pub fn follow(&self, r: &crate::follow::FollowReport) {
        let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let set = |what: &str, v: u64| {
            self.inner
                .follow
                .get_or_create(&WhatLabel {
                    what: what.to_string(),
                })
                .set(i(v));
        };
        set("latest_seen", r.latest_seen.unwrap_or(0));
        set("lag", r.lag);
        set("refreshes_delta", r.refreshes_delta);
        set("refreshes_walk", r.refreshes_walk);
        set("refreshes_failed", r.refreshes_failed);
        set("refused", r.refused);
        set("last_refresh_bytes", r.last_refresh_bytes);
        set("feed_connected", u64::from(r.feed_connected));
        let names = [
            "transfers_started",
            "transfers_shared",
            "transfers_completed",
            "transfers_failed",
            "sources_dropped",
            "fallback_bytes",
            "fallback_rejected",
        ];
        for (n, v) in names.iter().zip(r.transfers) {
            set(n, v);
        }
        set("cache_used", r.cache.used);
        set("cache_budget", r.cache.budget.unwrap_or(0));
        let v = &r.volunteers;
        set("volunteers_listed", v.listed);
        set("volunteer_list_fetches_ok", v.fetches_ok);
        set("volunteer_list_fetches_failed", v.fetches_failed);
        for origin in ["followed", "configured", "volunteer"] {
            let n = r.sources.iter().filter(|s| s.origin == origin).count();
            self.inner
                .follow_sources
                .get_or_create(&OriginLabel {
                    origin: origin.to_string(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let now: Vec<String> = r.sources.iter().map(|s| s.url.clone()).collect();
        let gone: Vec<String> = {
            let mut last = self
                .inner
                .source_urls
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let gone = last.iter().filter(|u| !now.contains(u)).cloned().collect();
            *last = now;
            gone
        };
        for url in gone {
            for outcome in ["ok", "missing", "failed", "corrupt"] {
                self.inner.source_blocks.remove(&SourceOutcome {
                    source: url.clone(),
                    outcome: outcome.to_string(),
                });
            }
            self.inner.source_bytes.remove(&WhatLabel { what: url });
        }
        for s in &r.sources {
            for (outcome, v) in [
                ("ok", s.blocks_ok),
                ("missing", s.blocks_missing),
                ("failed", s.blocks_failed),
                ("corrupt", s.blocks_corrupt),
            ] {
                self.inner
                    .source_blocks
                    .get_or_create(&SourceOutcome {
                        source: s.url.clone(),
                        outcome: outcome.to_string(),
                    })
                    .set(i(v));
            }
            self.inner
                .source_bytes
                .get_or_create(&WhatLabel {
                    what: s.url.clone(),
                })
                .set(i(s.bytes));
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }
}
