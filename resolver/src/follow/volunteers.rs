//! Volunteers as block sources: a follower asks the gateway it follows for its list of live
//! volunteers (`GET <base>/api/v1/volunteers`, the publisher's tracker) every
//! [`FollowConfig::volunteers_every`](super::FollowConfig::volunteers_every) and after each
//! new snapshot, and makes the listed gateways its volunteer sources: new ones are added,
//! ones that left the list are removed, the followed gateway and `--source`s stay. Blocks
//! from volunteers are checked against their CIDs like any other, so the list is taken as
//! it comes, only checked for well-formed entries.
//!
//! A followed gateway that is not a publisher answers 404: it lists no volunteers. When the
//! list cannot be fetched, the volunteers of the last list stay until that list is older
//! than its own TTL.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::sources::VolunteerChange;
use super::{FollowConfig, Follower, base_url};
use crate::tracker::{self, VolunteerList};

/// The longest list read: 10,000 entries of the longest id and URL fit.
const LIST_MAX_BYTES: usize = 32 << 20;

/// Time one list fetch may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(15);

/// The volunteer list as a follower last saw it, for `status`, `/api/v1/follow/status` and
/// metrics.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct VolunteerReport {
    /// Whether volunteers are used at all (`use_volunteers`).
    pub enabled: bool,
    /// Where the list comes from.
    pub list_url: Option<String>,
    /// Valid entries in the last list.
    pub listed: u64,
    /// Volunteer sources in use.
    pub used: u64,
    /// Listed volunteers not used: this gateway itself, already a source, over the cap.
    pub skipped: u64,
    /// When the last list was received (RFC 3339).
    pub last_list: Option<String>,
    /// Why the last fetch failed, if it did.
    pub last_error: Option<String>,
    /// Lists received.
    pub fetches_ok: u64,
    /// Fetches that failed.
    pub fetches_failed: u64,
}

#[derive(Debug, Default)]
struct Last {
    listed: u64,
    used: u64,
    skipped: u64,
    /// When the last list arrived, and how long it stays good (its `ttl_secs`).
    received: Option<(SystemTime, Instant, Duration)>,
    error: Option<String>,
}

/// The follower's side of the volunteer list.
#[derive(Debug, Default)]
pub(crate) struct VolunteerState {
    wake: Notify,
    last: Mutex<Last>,
    ok: AtomicU64,
    failed: AtomicU64,
}

impl VolunteerState {
    /// Asks for the list again now (after a new snapshot: volunteers may have moved on).
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) fn report(&self, cfg: &FollowConfig) -> VolunteerReport {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        VolunteerReport {
            enabled: cfg.use_volunteers,
            list_url: list_url(&cfg.follow).ok().map(|u| u.to_string()),
            listed: last.listed,
            used: last.used,
            skipped: last.skipped,
            last_list: last
                .received
                .map(|(t, _, _)| humantime::format_rfc3339_seconds(t).to_string()),
            last_error: last.error.clone(),
            fetches_ok: self.ok.load(Ordering::Relaxed),
            fetches_failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// `<base>/api/v1/volunteers`.
fn list_url(base: &url::Url) -> Result<url::Url, url::ParseError> {
    base_url(base.clone()).join(tracker::API_PATH.trim_start_matches('/'))
}

/// One fetch of the list; `None` when the gateway has no tracker (404).
async fn fetch_list(
    client: &reqwest::Client,
    url: &url::Url,
) -> Result<Option<VolunteerList>, String> {
    let mut resp = client
        .get(url.clone())
        .timeout(LIST_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(format!("{url}: HTTP {status}"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("{url}: {e}"))? {
        if body.len() + chunk.len() > LIST_MAX_BYTES {
            return Err(format!("{url}: a list longer than {LIST_MAX_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| format!("{url}: not a volunteer list: {e}"))
}

/// The well-formed entries of `list` as (id, base URL), sorted by id, each id once (its
/// latest entry).
fn usable(list: &VolunteerList) -> Vec<(String, url::Url)> {
    let mut best: std::collections::BTreeMap<&str, (i64, url::Url)> = Default::default();
    for v in &list.volunteers {
        let Ok(()) = tracker::validate_id(&v.id) else {
            continue;
        };
        let Ok(url) = tracker::validate_url(&v.url) else {
            continue;
        };
        match best.get(v.id.as_str()) {
            Some((seen, _)) if *seen >= v.last_seen => {}
            _ => {
                best.insert(&v.id, (v.last_seen, base_url(url)));
            }
        }
    }
    best.into_iter()
        .map(|(id, (_, url))| (id.to_string(), url))
        .collect()
}

impl Follower {
    /// Keeps the volunteer sources in step with the followed gateway's list until `cancel`.
    pub(crate) async fn follow_volunteers(&self, cancel: CancellationToken) {
        loop {
            if let Err(e) = self.refresh_volunteers().await {
                tracing::debug!("volunteer list: {e}");
            }
            tokio::select! {
                () = tokio::time::sleep(self.cfg.volunteers_every) => {}
                () = self.volunteers.wake.notified() => {}
                () = cancel.cancelled() => return,
            }
        }
    }

    /// Fetches the volunteer list once and makes its volunteers the volunteer sources.
    /// When the fetch fails, the current ones stay until the last list is older than its
    /// TTL; then they are dropped. An error without fetching when `use_volunteers` is off.
    pub async fn refresh_volunteers(&self) -> Result<VolunteerChange, String> {
        if !self.cfg.use_volunteers {
            return Err("volunteers are not used (use_volunteers = false)".into());
        }
        let state = &self.volunteers;
        let url = list_url(&self.cfg.follow).map_err(|e| e.to_string())?;
        let fetched = fetch_list(&self.client, &url).await;
        let own: Vec<url::Url> = self.cfg.own_urls.iter().cloned().map(base_url).collect();
        let sources = self.transfers.sources();
        let (list, error) = match fetched {
            Ok(Some(list)) => (list, None),
            Ok(None) => (
                VolunteerList::default(),
                Some(format!(
                    "{url}: 404, the followed gateway lists no volunteers"
                )),
            ),
            Err(e) => {
                state.failed.fetch_add(1, Ordering::Relaxed);
                let mut last = state.last.lock().unwrap_or_else(|p| p.into_inner());
                last.error = Some(e.clone());
                let stale = last.received.is_none_or(|(_, at, ttl)| at.elapsed() >= ttl);
                if stale && last.used > 0 {
                    let change = sources.set_volunteers(&[], &own, 0);
                    tracing::info!(
                        "volunteer list unavailable for longer than its TTL: dropping {} \
                         volunteer sources",
                        change.removed.len()
                    );
                    last.used = 0;
                }
                return Err(e);
            }
        };
        state.ok.fetch_add(1, Ordering::Relaxed);
        let wanted = usable(&list);
        let change = sources.set_volunteers(&wanted, &own, self.cfg.max_volunteer_sources);
        for u in &change.added {
            tracing::info!("volunteer {u} is a source now");
        }
        for u in &change.removed {
            tracing::info!("volunteer {u} left the list: no longer a source");
        }
        let mut last = state.last.lock().unwrap_or_else(|p| p.into_inner());
        *last = Last {
            listed: wanted.len() as u64,
            used: change.used as u64,
            skipped: (wanted.len() - change.used) as u64,
            received: Some((
                SystemTime::now(),
                Instant::now(),
                Duration::from_secs(list.ttl_secs),
            )),
            error,
        };
        Ok(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::Volunteer;

    #[test]
    fn usable_entries_are_valid_sorted_and_unique() {
        let v = |id: &str, url: &str, last_seen: i64| Volunteer {
            id: id.into(),
            url: url.into(),
            last_seen,
        };
        let list = VolunteerList {
            volunteers: vec![
                v("b", "http://b.example", 100),
                v("a", "http://a.example/x", 90),
                v("bad id", "http://c.example", 95),
                v("d", "gopher://d.example", 95),
                v("a", "http://a2.example", 99),
            ],
            ttl_secs: 90,
        };
        let got: Vec<(String, String)> = usable(&list)
            .into_iter()
            .map(|(id, u)| (id, u.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                ("a".to_string(), "http://a2.example/".to_string()),
                ("b".to_string(), "http://b.example/".to_string())
            ]
        );
        let base: url::Url = "http://pub.example:7878/mirror".parse().expect("url");
        assert_eq!(
            list_url(&base).expect("joins").as_str(),
            "http://pub.example:7878/mirror/api/v1/volunteers"
        );
    }
}
