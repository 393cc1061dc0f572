//! The pin ledger of the stores that keep blocks elsewhere (Kubo, IPFS Cluster).
//!
//! A Kubo node keeps at most one pin per CID and knows nothing of cidmirror's reasons
//! (`snapshot:42`, `left-upstream`) or their expiry. The ledger keeps every (root, reason,
//! expiry) in a local SQLite database with the embedded store's schema, and says after
//! each change how deep the node's one pin on that root must now be ([`Depth`]): the
//! store then pins, re-pins or unpins on the node so that it always holds exactly what
//! the ledger's pins reach.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use cid::Cid;
use cidmirror_schema::{Db, Schema, UnixTime, covers, pins};

use crate::api::{Pin, PinReason};
use crate::{Error, Result};

/// How deep the node must pin a root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Depth {
    /// Not at all.
    None,
    /// The block only (every reason is direct).
    Direct,
    /// The block and everything it links to.
    Recursive,
}

/// One root whose node pin must change from `before` to `after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Change {
    pub cid: Cid,
    pub before: Depth,
    pub after: Depth,
}

/// Pins by reason, kept beside a store that has no reasons of its own.
pub(crate) struct Ledger {
    db: Db,
}

fn depth_of(reasons: &[String]) -> Depth {
    if reasons.is_empty() {
        Depth::None
    } else if reasons.iter().all(|r| PinReason::is_direct_reason(r)) {
        Depth::Direct
    } else {
        Depth::Recursive
    }
}

pub(crate) fn to_unix(t: SystemTime) -> UnixTime {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    UnixTime(secs)
}

pub(crate) fn from_unix(t: UnixTime) -> SystemTime {
    if t.0 >= 0 {
        UNIX_EPOCH + std::time::Duration::from_secs(t.0 as u64)
    } else {
        UNIX_EPOCH - std::time::Duration::from_secs(t.0.unsigned_abs())
    }
}

/// A node keeps pins recursive or direct; a directories-only pin has no form there.
fn refuse_dirs(reason: &PinReason) -> Result<()> {
    if reason.is_dirs() {
        return Err(Error::UnsupportedPin(reason.as_str().to_string()));
    }
    Ok(())
}

/// A pin as the store API gives it, from its row in the pin table (every store that keeps
/// pins in the schema's table: the embedded store and the ledger).
pub(crate) fn pin_of(p: pins::Pin) -> Result<Pin> {
    Ok(Pin {
        cid: p.cid,
        reason: p.reason.parse()?,
        created_at: from_unix(p.created_at),
        expires_at: p.expires_at.map(from_unix),
    })
}

impl Ledger {
    /// Opens (creating) the ledger database at `path`.
    pub fn open(path: &Path) -> Result<Ledger> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        Ok(Ledger {
            db: Db::open(path, Schema::Store)?,
        })
    }

    /// Runs `f` over the rows of `cids` in one transaction and reports whose depth moved.
    fn change(
        &self,
        cids: &[Cid],
        f: impl Fn(&cidmirror_schema::WriteTx<'_>, &Cid) -> Result<bool, cidmirror_schema::Error>,
    ) -> Result<(Vec<Change>, u64)> {
        Ok(self.db.write(|tx| -> Result<_, cidmirror_schema::Error> {
            let mut out = Vec::new();
            let mut hits = 0u64;
            let mut seen = std::collections::HashSet::new();
            for c in cids {
                if !seen.insert(*c) {
                    continue;
                }
                let before = depth_of(&pins::reasons_of(tx, c)?);
                if f(tx, c)? {
                    hits += 1;
                }
                let after = depth_of(&pins::reasons_of(tx, c)?);
                if before != after {
                    out.push(Change {
                        cid: *c,
                        before,
                        after,
                    });
                }
            }
            Ok((out, hits))
        })?)
    }

    /// Adds (or renews) pins of `cids` for `reason`.
    pub fn add(
        &self,
        cids: &[Cid],
        reason: &PinReason,
        expires_at: Option<SystemTime>,
    ) -> Result<Vec<Change>> {
        refuse_dirs(reason)?;
        let now = UnixTime::now();
        let exp = expires_at.map(to_unix);
        Ok(self
            .change(cids, |tx, c| {
                pins::add(tx, c, reason.as_str(), now, exp)?;
                Ok(true)
            })?
            .0)
    }

    /// Adds (or renews) each pin in one transaction: (root, reason, expiry).
    pub fn add_each(&self, rows: &[(Cid, &PinReason, Option<SystemTime>)]) -> Result<Vec<Change>> {
        for (_, r, _) in rows {
            refuse_dirs(r)?;
        }
        let now = UnixTime::now();
        Ok(self.db.write(|tx| -> Result<_, cidmirror_schema::Error> {
            let mut out: Vec<Change> = Vec::new();
            let mut before_of: BTreeMap<Cid, Depth> = BTreeMap::new();
            for (c, reason, exp) in rows {
                if !before_of.contains_key(c) {
                    before_of.insert(*c, depth_of(&pins::reasons_of(tx, c)?));
                }
                pins::add(tx, c, reason.as_str(), now, exp.map(to_unix))?;
            }
            for (c, before) in before_of {
                let after = depth_of(&pins::reasons_of(tx, &c)?);
                if before != after {
                    out.push(Change {
                        cid: c,
                        before,
                        after,
                    });
                }
            }
            Ok(out)
        })?)
    }

    /// How deep the node must hold `cid` now.
    pub fn depth(&self, cid: &Cid) -> Result<Depth> {
        Ok(depth_of(&self.db.read(|c| pins::reasons_of(c, cid))?))
    }

    /// Records that `members` are held on the node by `cover`'s recursive pin, and keeps
    /// the cover's block.
    pub fn cover(&self, cover: &Cid, block: &[u8], members: &[Cid]) -> Result<()> {
        Ok(self.db.write(|tx| {
            covers::put_block(tx, cover, block)?;
            covers::add(tx, cover, members)
        })?)
    }

    /// A cover's block, if kept.
    pub fn cover_block(&self, cover: &Cid) -> Result<Option<Vec<u8>>> {
        Ok(self.db.read(|c| covers::block(c, cover))?)
    }

    /// Forgets every member of `cover` (unpinned, or never sent).
    pub fn drop_cover(&self, cover: &Cid) -> Result<()> {
        self.db.write(|tx| covers::drop_cover(tx, cover))?;
        Ok(())
    }

    /// What dissolving the covers of `members` takes, changing nothing: a cover pins
    /// everything it links, so it cannot outlive the first member to leave (its pins
    /// change). The caller pins the other members still pinned recursively on their own,
    /// unpins the covers, then [`Ledger::drop_cover`]s them.
    pub fn dissolution(&self, members: &[Cid]) -> Result<Uncovered> {
        if members.is_empty() {
            return Ok(Uncovered::default());
        }
        Ok(self.db.read(|c| plan_in(c, members))?)
    }

    /// The members that are no longer pinned recursively: a crash between a cover's pin
    /// and its members' rows, or a cover whose unpinning failed after its members left.
    /// Their covers are to be dissolved.
    pub fn stale_members(&self) -> Result<Vec<Cid>> {
        Ok(self.db.read(|c| {
            let mut out = Vec::new();
            for (m, _) in covers::all(c)? {
                if depth_of(&pins::reasons_of(c, &m)?) != Depth::Recursive {
                    out.push(m);
                }
            }
            Ok::<_, cidmirror_schema::Error>(out)
        })?)
    }

    /// Forgets that `members` are covered: each has a pin of its own now.
    pub fn uncover_members(&self, members: &[Cid]) -> Result<()> {
        if members.is_empty() {
            return Ok(());
        }
        Ok(self.db.write(|tx| {
            for m in members {
                covers::remove_member(tx, m)?;
            }
            Ok::<_, cidmirror_schema::Error>(())
        })?)
    }

    /// Every (member, cover).
    pub fn covered(&self) -> Result<Vec<(Cid, Cid)>> {
        Ok(self.db.read(covers::all)?)
    }

    /// Removes one pin; the bool says whether it existed.
    pub fn remove(&self, cid: &Cid, reason: &PinReason) -> Result<(Vec<Change>, bool)> {
        let (changes, hits) = self.change(&[*cid], |tx, c| pins::remove(tx, c, reason.as_str()))?;
        Ok((changes, hits > 0))
    }

    /// Removes every pin for `reason`; returns the changes and how many pins went.
    pub fn remove_reason(&self, reason: &PinReason) -> Result<(Vec<Change>, u64)> {
        let roots = self.db.read(|c| pins::roots_of(c, reason.as_str()))?;
        self.change(&roots, |tx, c| pins::remove(tx, c, reason.as_str()))
    }

    /// Deletes the pins that have expired; returns the changes and how many went.
    pub fn expire(&self) -> Result<(Vec<Change>, u64)> {
        let now = UnixTime::now();
        let gone = self.db.read(|c| pins::expired(c, now))?;
        let mut by_reason: BTreeMap<String, Vec<Cid>> = BTreeMap::new();
        for (cid, reason) in gone {
            by_reason.entry(reason).or_default().push(cid);
        }
        let mut changes = Vec::new();
        let mut n = 0;
        for (reason, cids) in by_reason {
            let (c, hits) = self.change(&cids, |tx, c| pins::remove(tx, c, &reason))?;
            changes.extend(c);
            n += hits;
        }
        Ok((changes, n))
    }

    /// Every pin.
    pub fn all(&self) -> Result<Vec<Pin>> {
        let rows = self.db.read(pins::all)?;
        rows.into_iter().map(pin_of).collect()
    }

    /// How deep each root with a pin must be held (for a full resync with the node).
    pub fn depths(&self) -> Result<Vec<(Cid, Depth)>> {
        let now = UnixTime(i64::MIN);
        let rows = self.db.read(|c| pins::live(c, now))?;
        let mut by_cid: BTreeMap<Cid, Vec<String>> = BTreeMap::new();
        for (cid, reason) in rows {
            by_cid.entry(cid).or_default().push(reason);
        }
        Ok(by_cid.into_iter().map(|(c, r)| (c, depth_of(&r))).collect())
    }
}

/// What dissolving covers takes ([`Ledger::dissolution`]).
#[derive(Debug, Default)]
pub(crate) struct Uncovered {
    /// The roots asked about that were held by a cover (they have no pin of their own).
    pub covered: std::collections::HashSet<Cid>,
    /// Covers to unpin, then forget.
    pub covers: Vec<Cid>,
    /// Other members of those covers, to pin recursively on their own first.
    pub own: Vec<Cid>,
}

/// What dissolving the covers of `members` takes (nothing changed yet): the covers, and
/// their other members still pinned recursively.
fn plan_in(
    conn: &cidmirror_schema::Connection,
    members: &[Cid],
) -> Result<Uncovered, cidmirror_schema::Error> {
    let mut out = Uncovered::default();
    let mut touched = std::collections::BTreeSet::new();
    for m in members {
        if let Some(c) = covers::cover_of(conn, m)? {
            out.covered.insert(*m);
            touched.insert(c);
        }
    }
    for c in touched {
        for m in covers::members(conn, &c)? {
            if !out.covered.contains(&m)
                && depth_of(&pins::reasons_of(conn, &m)?) == Depth::Recursive
            {
                out.own.push(m);
            }
        }
        out.covers.push(c);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(n: u8) -> Cid {
        crate::hash::raw_cid(crate::hash::HashAlg::Sha2_256, &[n])
    }

    #[test]
    fn depth_follows_the_deepest_reason() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(&dir.path().join("pins.sqlite")).unwrap();
        let a = cid(1);
        let direct = PinReason::direct("follow:1");
        let deep: PinReason = "snapshot:1".parse().unwrap();
        let c = l.add(&[a, a], &direct, None).unwrap();
        assert_eq!(
            c,
            vec![Change {
                cid: a,
                before: Depth::None,
                after: Depth::Direct
            }]
        );
        let c = l.add(&[a], &deep, None).unwrap();
        assert_eq!((c[0].before, c[0].after), (Depth::Direct, Depth::Recursive));
        assert!(l.add(&[a], &deep, None).unwrap().is_empty(), "renewal");
        let (c, existed) = l.remove(&a, &deep).unwrap();
        assert!(existed);
        assert_eq!((c[0].before, c[0].after), (Depth::Recursive, Depth::Direct));
        let (c, n) = l.remove_reason(&direct).unwrap();
        assert_eq!(n, 1);
        assert_eq!((c[0].before, c[0].after), (Depth::Direct, Depth::None));
        assert!(!l.remove(&a, &deep).unwrap().1);
    }

    #[test]
    fn a_cover_is_dissolved_by_its_first_member_to_leave() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(&dir.path().join("pins.sqlite")).unwrap();
        let session: PinReason = "sync-in-progress".parse().unwrap();
        let (a, b, c, cover) = (cid(1), cid(2), cid(3), cid(9));
        l.add(&[a, b, c], &session, None).unwrap();
        l.cover(&cover, b"block", &[a, b, c]).unwrap();
        assert!(
            l.dissolution(&[cid(4)]).unwrap().covered.is_empty(),
            "not a member"
        );
        // a leaves: the cover goes, b and c (still pinned) need pins of their own.
        l.remove(&a, &session).unwrap();
        let u = l.dissolution(&[a]).unwrap();
        assert_eq!(u.covered.into_iter().collect::<Vec<_>>(), vec![a]);
        assert_eq!(u.covers, vec![cover]);
        let mut own = u.own;
        own.sort();
        let mut want = vec![b, c];
        want.sort();
        assert_eq!(own, want);
        assert_eq!(l.covered().unwrap().len(), 3, "nothing changed yet");
        l.drop_cover(&cover).unwrap();
        assert!(l.covered().unwrap().is_empty());
        assert!(
            l.dissolution(&[b, c]).unwrap().covers.is_empty(),
            "nothing left"
        );

        // Members no longer pinned recursively (a crash before their rows) are stale.
        l.cover(&cover, b"block", &[b, cid(5)]).unwrap();
        assert_eq!(
            l.cover_block(&cover).unwrap().as_deref(),
            Some(&b"block"[..])
        );
        assert_eq!(l.stale_members().unwrap(), vec![cid(5)]);
        let u = l.dissolution(&[cid(5)]).unwrap();
        assert_eq!(u.covers, vec![cover]);
        assert_eq!(u.own, vec![b]);
        l.uncover_members(&u.own).unwrap();
        assert_eq!(
            l.covered().unwrap(),
            vec![(cid(5), cover)],
            "b has its own pin"
        );
    }

    #[test]
    fn expiry_removes_only_lapsed_pins() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(&dir.path().join("pins.sqlite")).unwrap();
        let r: PinReason = "grace".parse().unwrap();
        let past = SystemTime::now() - std::time::Duration::from_secs(5);
        let future = SystemTime::now() + std::time::Duration::from_secs(3600);
        l.add(&[cid(1)], &r, Some(past)).unwrap();
        l.add(&[cid(2)], &r, Some(future)).unwrap();
        let (c, n) = l.expire().unwrap();
        assert_eq!(n, 1);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].cid, cid(1));
        assert_eq!(l.all().unwrap().len(), 1);
        assert_eq!(l.depths().unwrap(), vec![(cid(2), Depth::Recursive)]);
    }
}
