//! Expiry: content that left upstream stays pinned for a grace period, then goes.
//!
//! A snapshot keeps counting while it was current at some moment within the last
//! `keep_days`: from its creation until `keep_days` after its successor replaced it. Counting
//! from the snapshot's own creation time instead would let a package that sat in the
//! repository for a year vanish the moment it left upstream, because the last snapshot that
//! held it was created long ago; the grace period is for clients still on that snapshot, so
//! it starts when the snapshot stopped being current. The newest snapshot always counts.

use std::collections::{BTreeMap, BTreeSet};

use cid::Cid;

/// Seconds in a day, for `keep_days`.
pub const DAY_SECS: i64 = 86_400;

/// One snapshot of the history, as far as retention cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotRefs {
    /// The snapshot's sequence number: orders the history.
    pub seq: u64,
    /// When it was published (unix seconds).
    pub created_at: i64,
    /// The CIDs it references that a pinner may hold (its package files, its listing).
    pub cids: BTreeSet<Cid>,
}

/// The outcome of [`retention`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    /// CIDs referenced by a snapshot that still counts: the candidates to keep.
    pub referenced: BTreeSet<Cid>,
    /// Those of `referenced` that the newest snapshot does not reference, with the moment
    /// (unix seconds) they stop being referenced unless a new snapshot brings them back: the
    /// next expiries.
    pub expires_at: BTreeMap<Cid, i64>,
    /// Pinned CIDs that no counting snapshot references: unpin them, then collect garbage.
    pub unpin: BTreeSet<Cid>,
}

/// What the snapshot history still references at `now` with a grace period of `keep_days`,
/// and which of `pinned` to let go.
///
/// The history may come in any order (it is sorted by `seq`). With no snapshot at all,
/// nothing is referenced and nothing is unpinned: a pinner that has not heard from its
/// publisher yet must not throw away what it holds.
pub fn retention<'a>(
    history: &[SnapshotRefs],
    keep_days: u32,
    now: i64,
    pinned: impl IntoIterator<Item = &'a Cid>,
) -> Retention {
    let mut out = Retention::default();
    let keep_secs = i64::from(keep_days) * DAY_SECS;
    let mut order: Vec<&SnapshotRefs> = history.iter().collect();
    order.sort_by_key(|s| s.seq);

    let Some((newest, older)) = order.split_last() else {
        return out;
    };
    out.referenced.extend(newest.cids.iter().copied());
    for (i, snap) in older.iter().enumerate() {
        let successor = order[i + 1];
        // A successor stamped before its predecessor (a clock step back) replaced it no
        // earlier than the predecessor's own creation.
        let superseded_at = successor.created_at.max(snap.created_at);
        let until = superseded_at.saturating_add(keep_secs);
        if now >= until {
            continue;
        }
        for cid in &snap.cids {
            if newest.cids.contains(cid) {
                continue;
            }
            out.referenced.insert(*cid);
            let e = out.expires_at.entry(*cid).or_insert(until);
            *e = (*e).max(until);
        }
    }
    out.unpin = pinned
        .into_iter()
        .filter(|c| !out.referenced.contains(c))
        .copied()
        .collect();
    out
}

/// What a running pinner has seen of the snapshots, compactly: every item any snapshot
/// within the grace period referenced, and when it stopped being referenced.
///
/// The same rule as [`retention`] (an item counts until `keep` after the snapshot that last
/// held it was replaced), kept per item instead of per snapshot, so that a pinner following
/// a repository of 15,000 packages through hourly snapshots keeps 15,000 entries, not one
/// set per snapshot.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(into = "SeenFile", try_from = "SeenFile")]
pub struct Seen {
    items: BTreeMap<Cid, SeenItem>,
}

/// [`Seen`] as saved: JSON object keys must be strings, so CIDs are written as text.
#[derive(serde::Serialize, serde::Deserialize)]
struct SeenFile {
    items: Vec<(String, SeenItem)>,
}

impl From<Seen> for SeenFile {
    fn from(s: Seen) -> SeenFile {
        SeenFile {
            items: s
                .items
                .into_iter()
                .map(|(c, i)| (c.to_string(), i))
                .collect(),
        }
    }
}

impl TryFrom<SeenFile> for Seen {
    type Error = String;

    fn try_from(f: SeenFile) -> Result<Seen, String> {
        let mut items = BTreeMap::new();
        for (c, i) in f.items {
            let cid = Cid::try_from(c.as_str()).map_err(|e| format!("CID {c:?}: {e}"))?;
            items.insert(cid, i);
        }
        Ok(Seen { items })
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct SeenItem {
    size: u64,
    kind: crate::plan::Kind,
    /// When a snapshot without it replaced the last one with it (unix seconds); `None`
    /// while the current snapshot has it.
    left_at: Option<i64>,
}

impl Seen {
    /// Records the current snapshot's items at `now`: they are current, every other item
    /// has left (at `now`, unless it left earlier).
    pub fn observe(&mut self, current: &[crate::plan::Item], now: i64) {
        let here: BTreeSet<Cid> = current.iter().map(|i| i.cid).collect();
        for (cid, it) in self.items.iter_mut() {
            if !here.contains(cid) && it.left_at.is_none() {
                it.left_at = Some(now);
            }
        }
        for i in current {
            let e = self.items.entry(i.cid).or_insert(SeenItem {
                size: i.size,
                kind: i.kind,
                left_at: None,
            });
            e.left_at = None;
            e.size = i.size;
            // An item is listing if any snapshot needs it as such.
            e.kind = e.kind.min(i.kind);
        }
    }

    /// The items still referenced at `now` with a grace period of `keep_secs`: current
    /// ones and those that left less than `keep_secs` ago.
    pub fn retained(&self, now: i64, keep_secs: i64) -> Vec<crate::plan::Item> {
        self.items
            .iter()
            .filter(|(_, it)| it.left_at.is_none_or(|t| t.saturating_add(keep_secs) > now))
            .map(|(cid, it)| crate::plan::Item {
                cid: *cid,
                size: it.size,
                kind: it.kind,
            })
            .collect()
    }

    /// Items that left and will stop counting, with the moment, soonest first.
    pub fn expiries(&self, keep_secs: i64) -> Vec<(Cid, i64)> {
        let mut out: Vec<(Cid, i64)> = self
            .items
            .iter()
            .filter_map(|(c, it)| it.left_at.map(|t| (*c, t.saturating_add(keep_secs))))
            .collect();
        out.sort_by_key(|(_, t)| *t);
        out
    }

    /// Size and kind of an item seen, if any.
    pub fn get(&self, cid: &Cid) -> Option<crate::plan::Item> {
        self.items.get(cid).map(|it| crate::plan::Item {
            cid: *cid,
            size: it.size,
            kind: it.kind,
        })
    }

    /// Drops items whose grace ended before `now`: nothing refers to them any more.
    pub fn forget_expired(&mut self, now: i64, keep_secs: i64) {
        self.items
            .retain(|_, it| it.left_at.is_none_or(|t| t.saturating_add(keep_secs) > now));
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    fn cid(n: u64) -> Cid {
        let digest = Sha256::digest(n.to_be_bytes());
        let mh = cid::multihash::Multihash::<64>::wrap(0x12, &digest[..]).expect("fits");
        Cid::new_v1(0x55, mh)
    }

    fn snap(seq: u64, created_day: i64, cids: &[u64]) -> SnapshotRefs {
        SnapshotRefs {
            seq,
            created_at: created_day * DAY_SECS,
            cids: cids.iter().map(|&n| cid(n)).collect(),
        }
    }

    fn set(ns: &[u64]) -> BTreeSet<Cid> {
        ns.iter().map(|&n| cid(n)).collect()
    }

    /// Package 1 lives in every snapshot; 2 left at day 100 (snapshot 3); 3 was only in
    /// snapshot 2, replaced at day 100 too; 4 left at day 50; 5 is new in snapshot 3.
    fn history() -> Vec<SnapshotRefs> {
        vec![
            snap(1, 0, &[1, 2, 4]),
            snap(2, 50, &[1, 2, 3]),
            snap(3, 100, &[1, 5]),
        ]
    }

    #[test]
    fn grace_starts_when_a_snapshot_is_replaced() {
        let day = |d: i64| d * DAY_SECS;
        /// (what, keep_days, now, referenced, expiries as (package, unix time))
        type Case<'a> = (&'a str, u32, i64, &'a [u64], &'a [(u64, i64)]);
        let table: &[Case] = &[
            (
                "right after the removal, all but the long-gone one",
                14,
                day(100),
                &[1, 2, 3, 5],
                &[(2, day(114)), (3, day(114))],
            ),
            (
                "a second before expiry",
                14,
                day(114) - 1,
                &[1, 2, 3, 5],
                &[(2, day(114)), (3, day(114))],
            ),
            ("at expiry", 14, day(114), &[1, 5], &[]),
            ("long after", 14, day(1000), &[1, 5], &[]),
            ("keep 0 days: only the newest", 0, day(100), &[1, 5], &[]),
            (
                "a long grace reaches the first snapshot",
                60,
                day(100),
                &[1, 2, 3, 4, 5],
                &[(2, day(160)), (3, day(160)), (4, day(110))],
            ),
            (
                "grace ends for the first snapshot first",
                60,
                day(110),
                &[1, 2, 3, 5],
                &[(2, day(160)), (3, day(160))],
            ),
        ];
        for (name, keep, now, referenced, expiries) in table {
            let r = retention(&history(), *keep, *now, &set(&[1, 2, 3, 4, 5, 6]));
            assert_eq!(r.referenced, set(referenced), "{name}");
            let want: BTreeMap<Cid, i64> = expiries.iter().map(|&(n, t)| (cid(n), t)).collect();
            assert_eq!(r.expires_at, want, "{name}");
            let unpin: BTreeSet<Cid> = set(&[1, 2, 3, 4, 5, 6])
                .difference(&r.referenced)
                .copied()
                .collect();
            assert_eq!(r.unpin, unpin, "{name}");
            assert!(r.unpin.contains(&cid(6)), "{name}: never referenced");
        }
    }

    #[test]
    fn newest_always_counts_and_order_does_not_matter() {
        let mut h = history();
        h.reverse();
        let r = retention(&h, 0, i64::MAX, &set(&[1, 5]));
        assert_eq!(r.referenced, set(&[1, 5]));
        assert!(r.unpin.is_empty());
        assert!(r.expires_at.is_empty());
    }

    #[test]
    fn a_package_that_comes_back_is_not_expiring() {
        let h = vec![snap(1, 0, &[1, 2]), snap(2, 10, &[1]), snap(3, 20, &[1, 2])];
        let r = retention(&h, 14, 20 * DAY_SECS, &set(&[2]));
        assert_eq!(r.referenced, set(&[1, 2]));
        assert!(r.expires_at.is_empty());
        assert!(r.unpin.is_empty());
    }

    #[test]
    fn the_latest_expiry_wins() {
        // 2 is in snapshots 1 and 2; snapshot 2 is replaced later, so that is what counts.
        let h = vec![snap(1, 0, &[1, 2]), snap(2, 5, &[1, 2]), snap(3, 10, &[1])];
        let r = retention(&h, 14, 10 * DAY_SECS, &set(&[]));
        assert_eq!(r.expires_at, BTreeMap::from([(cid(2), 24 * DAY_SECS)]));
    }

    #[test]
    fn a_clock_step_back_does_not_shorten_the_grace() {
        let h = vec![snap(1, 10, &[1, 2]), snap(2, 5, &[1])];
        let r = retention(&h, 14, 20 * DAY_SECS, &set(&[2]));
        assert_eq!(r.expires_at, BTreeMap::from([(cid(2), 24 * DAY_SECS)]));
        assert!(r.unpin.is_empty());
    }

    #[test]
    fn no_history_unpins_nothing() {
        let r = retention(&[], 14, 0, &set(&[1, 2]));
        assert_eq!(r, Retention::default());
    }

    #[test]
    fn seen_keeps_an_item_for_the_grace_period_after_it_left() {
        use crate::plan::{Item, Kind};
        let c = |n: u8| {
            let mh = cid::multihash::Multihash::<64>::wrap(0x12, &[n; 32]).unwrap();
            Cid::new_v1(0x55, mh)
        };
        let item = |n: u8| Item {
            cid: c(n),
            size: u64::from(n) * 100,
            kind: Kind::Package,
        };
        let mut seen = Seen::default();
        seen.observe(&[item(1), item(2)], 1_000);
        seen.observe(&[item(1), item(3)], 2_000);
        let at = |seen: &Seen, now| {
            seen.retained(now, 500)
                .into_iter()
                .map(|i| i.cid)
                .collect::<BTreeSet<_>>()
        };
        assert_eq!(at(&seen, 2_499), BTreeSet::from([c(1), c(2), c(3)]));
        assert_eq!(at(&seen, 2_500), BTreeSet::from([c(1), c(3)]));
        assert_eq!(seen.expiries(500), vec![(c(2), 2_500)]);
        // Back upstream: current again, no expiry.
        seen.observe(&[item(1), item(2), item(3)], 2_100);
        assert!(seen.expiries(500).is_empty());
        assert_eq!(seen.get(&c(2)).map(|i| i.size), Some(200));
        let json = serde_json::to_string(&seen).unwrap();
        let back: Seen = serde_json::from_str(&json).unwrap();
        assert_eq!(back.retained(2_200, 500), seen.retained(2_200, 500));
        seen.observe(&[item(1)], 3_000);
        seen.forget_expired(3_600, 500);
        assert_eq!(at(&seen, 3_600), BTreeSet::from([c(1)]));
        assert!(seen.get(&c(2)).is_none());
    }
}
