//! The follower's cache budget.
//!
//! Files fetched for clients are pinned as `cache`; the listing of the current and the
//! previous snapshot (directories, `index/`, manifest, changes, databases) is pinned by
//! snapshot and never counted as evictable. When the store's files exceed the budget, cached
//! files are unpinned, those no kept snapshot references first, then least recently used
//! first, skipping any file being served at that moment, and a garbage collection frees
//! them.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use cid::Cid;
use cidmirror_store::{EmbeddedStore, GcOptions, Store};
use serde::Serialize;

use super::transfer::cache_reason;

/// What the cache holds and may hold.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CacheReport {
    /// The budget in bytes, if any.
    pub budget: Option<u64>,
    /// Bytes of files kept in the store.
    pub used: u64,
    /// Files kept as cache.
    pub cached_files: u64,
    /// Files evicted since start.
    pub evicted_files: u64,
    /// Bytes evicted since start.
    pub evicted_bytes: u64,
}

/// Recency and use of cached files.
pub struct Cache {
    budget: Option<u64>,
    last_used: Mutex<HashMap<Cid, SystemTime>>,
    in_use: Arc<Mutex<HashMap<Cid, usize>>>,
    evicted: Mutex<(u64, u64)>,
}

/// Marks a file as being served while it lives.
pub struct Serving {
    cid: Cid,
    in_use: Arc<Mutex<HashMap<Cid, usize>>>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let mut m = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.cid) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.cid);
            }
        }
    }
}

impl Cache {
    /// A cache with this budget (bytes of kept files).
    pub fn new(budget: Option<u64>) -> Cache {
        Cache {
            budget,
            last_used: Mutex::new(HashMap::new()),
            in_use: Arc::default(),
            evicted: Mutex::new((0, 0)),
        }
    }

    /// Notes a use of `cid` and marks it as being served until the guard drops.
    pub fn serving(&self, cid: Cid) -> Serving {
        self.last_used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cid, SystemTime::now());
        *self
            .in_use
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(cid)
            .or_default() += 1;
        Serving {
            cid,
            in_use: self.in_use.clone(),
        }
    }

    /// What it holds.
    pub async fn report(&self, store: &EmbeddedStore) -> CacheReport {
        let used = store.stats().map(|s| s.file_bytes).unwrap_or(0);
        let cached = store.pins_with(&cache_reason()).unwrap_or(0);
        let (evicted_files, evicted_bytes) =
            *self.evicted.lock().unwrap_or_else(|e| e.into_inner());
        CacheReport {
            budget: self.budget,
            used,
            cached_files: cached,
            evicted_files,
            evicted_bytes,
        }
    }

    /// Evicts cached files until the store's files fit the budget (see the module doc).
    /// `kept` gives the files the current and previous snapshots reference (asked only
    /// when the store is over the budget).
    pub async fn enforce(
        &self,
        store: &EmbeddedStore,
        kept: impl FnOnce() -> BTreeSet<Cid>,
    ) -> cidmirror_store::Result<u64> {
        let Some(budget) = self.budget else {
            return Ok(0);
        };
        let used = store.stats()?.file_bytes;
        if used <= budget {
            return Ok(0);
        }
        let kept = kept();
        let cache = cache_reason();
        let pins = store.pins().await?;
        let in_use = self
            .in_use
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let last = self
            .last_used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut candidates: Vec<(bool, SystemTime, Cid)> = pins
            .iter()
            .filter(|p| p.reason == cache && !in_use.contains_key(&p.cid))
            .map(|p| {
                let used_at = last.get(&p.cid).copied().unwrap_or(p.created_at);
                (kept.contains(&p.cid), used_at, p.cid)
            })
            .collect();
        candidates.sort();
        let mut over = used - budget;
        let mut unpinned = 0u64;
        for (_, _, cid) in candidates {
            if over == 0 {
                break;
            }
            let size = match store.whole_file(&cid)? {
                Some((_, s)) => s,
                None => 0,
            };
            store.unpin(&cid, &cache).await?;
            unpinned += 1;
            over = over.saturating_sub(size);
        }
        if unpinned == 0 {
            return Ok(0);
        }
        let report = store
            .gc(GcOptions {
                grace: Duration::ZERO,
            })
            .await?;
        let mut ev = self.evicted.lock().unwrap_or_else(|e| e.into_inner());
        ev.0 += report.files_removed;
        ev.1 += report.bytes_freed;
        tracing::info!(
            "cache over its budget of {budget} bytes: unpinned {unpinned} files, freed {} bytes",
            report.bytes_freed
        );
        Ok(report.bytes_freed)
    }
}

/// Parses a size like `20G`, `512M`, `1.5GiB` or a plain number of bytes (K, M, G, T are
/// powers of 1024, as disk budgets usually are).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: not a size (use e.g. 20G, 512M or bytes)"))?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        other => return Err(format!("{s:?}: unknown unit {other:?} (use K, M, G or T)")),
    };
    let v = n * mult as f64;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(format!("{s:?}: out of range"));
    }
    Ok(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cidmirror_store::{FileSource, Profile, PutOptions};

    async fn cached(store: &EmbeddedStore, seed: u8, len: usize) -> Cid {
        let data: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(seed) ^ seed)
            .collect();
        store
            .put_file(
                FileSource::Reader(Box::new(std::io::Cursor::new(data))),
                PutOptions {
                    params: Profile::UnixfsV1_2025.params(),
                    pin: Some(cache_reason()),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .cid
    }

    #[tokio::test]
    async fn evicts_unreferenced_then_least_recently_used_never_what_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let mb = 1 << 20;
        // Oldest first: a, b, c, d; each 1 MiB.
        let (a, b, c, d) = (
            cached(&store, 3, mb).await,
            cached(&store, 5, mb).await,
            cached(&store, 7, mb).await,
            cached(&store, 11, mb).await,
        );
        let cache = Cache::new(Some(2 * mb as u64 + 1000));
        for x in [a, b, c, d] {
            drop(cache.serving(x));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // `a` is being served; `d` is not referenced by any kept snapshot.
        let serving = cache.serving(a);
        let kept: BTreeSet<Cid> = [a, b, c].into_iter().collect();
        let freed = cache.enforce(&store, || kept.clone()).await.unwrap();
        assert_eq!(freed, 2 * mb as u64, "two files over the budget");
        let held = |x: Cid| store.whole_file(&x).unwrap().is_some();
        assert!(held(a), "being served");
        assert!(!held(d), "referenced by no kept snapshot: first to go");
        assert!(!held(b), "then the least recently used");
        assert!(held(c));
        let r = cache.report(&store).await;
        assert_eq!((r.evicted_files, r.cached_files), (2, 2));
        assert!(r.used <= r.budget.unwrap());
        drop(serving);
        // Within budget now: nothing more goes.
        assert_eq!(cache.enforce(&store, || kept.clone()).await.unwrap(), 0);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("20G").unwrap(), 20 << 30);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5X").unwrap_err().contains("unit"));
    }
}
