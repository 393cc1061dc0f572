//! Rendezvous (highest-random-weight) hashing: who keeps which package, and what one
//! volunteer keeps within its budget.
//!
//! Every volunteer computes the same [`score`] for every (volunteer id, CID) pair, so with the
//! same live set each one knows, without asking anyone, the top `replication` volunteers of
//! every package: the package's holders. When a volunteer joins, it takes over only the
//! packages where it outscores a current holder (about `r/n` of them); when one leaves, only
//! its packages move. Nothing is assigned centrally, and a follower gateway can rank its
//! sources for a CID the same way ([`holders`]).

use std::collections::{BTreeSet, HashSet};

use cid::Cid;
use sha2::{Digest, Sha256};

use crate::{Error, Result, volunteers};

/// A volunteer's score for a CID: the first 8 bytes, big-endian, of
/// `SHA-256(id bytes || 0x00 || CID bytes)`, where the CID bytes are its binary form
/// (`Cid::to_bytes`, as named in the snapshot).
///
/// This is a protocol constant: every volunteer and follower must compute it identically, or
/// assignments stop being complementary. The 0x00 separator cannot occur in a valid id, so no
/// two (id, CID) pairs hash the same input.
pub fn score(volunteer_id: &str, cid: &Cid) -> u64 {
    let mut h = Sha256::new();
    h.update(volunteer_id.as_bytes());
    h.update([0u8]);
    h.update(cid.to_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The volunteers that should hold `cid`, best first: the `replication` highest scores
/// (ties, which SHA-256 makes practically impossible, go to the smaller id). Duplicated ids
/// count once. A follower gateway can use the order to ask the likely holders first.
pub fn holders<'a, S: AsRef<str>>(
    volunteers: &'a [S],
    replication: usize,
    cid: &Cid,
) -> Vec<&'a str> {
    let ids: BTreeSet<&str> = volunteers.iter().map(AsRef::as_ref).collect();
    let mut ranked: Vec<(u64, &str)> = ids.into_iter().map(|id| (score(id, cid), id)).collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    ranked
        .into_iter()
        .take(replication)
        .map(|(_, id)| id)
        .collect()
}

/// What an item is for, which decides its priority.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Kind {
    /// A block of the current snapshot's listing (directories, HAMT shards, `index/` entries,
    /// manifest, db archives): every volunteer keeps these first, whatever the hashing says,
    /// since without them nobody can find the packages.
    Listing,
    /// A package file (or its `.sig`): kept by its holders only.
    Package,
}

/// A candidate for pinning: a CID with the bytes it takes on disk.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Item {
    /// The root CID (for a package, its file CID).
    pub cid: Cid,
    /// Bytes it takes when pinned (for a file, the file size; overhead is the caller's margin).
    pub size: u64,
    /// Listing or package.
    pub kind: Kind,
}

/// What one volunteer keeps: the outcome of [`Policy::plan`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Items to keep, in priority order: listing items (in the order given), then the
    /// volunteer's packages by descending score. Fetch in this order.
    pub keep: Vec<Item>,
    /// Items of the assignment (listing included) that did not fit in the budget, in the same
    /// priority order.
    pub skipped_over_budget: Vec<Item>,
    /// Bytes of the whole assignment: listing plus every package this volunteer is a holder
    /// of, whether it fits or not.
    pub assigned_bytes: u64,
    /// Bytes of `keep`: never more than the budget.
    pub planned_bytes: u64,
}

impl Plan {
    /// The fraction of the assignment's bytes the plan keeps (1 for an empty assignment).
    pub fn share(&self) -> f64 {
        if self.assigned_bytes == 0 {
            1.0
        } else {
            self.planned_bytes as f64 / self.assigned_bytes as f64
        }
    }
}

/// What to change to go from what is pinned to a [`Plan`]: the outcome of
/// [`Policy::changes`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Pinned items the plan does not keep, least valuable first: packages this volunteer no
    /// longer holds (lowest score first), then its own packages (lowest score first), then
    /// listing items.
    pub unpin: Vec<Item>,
    /// Items of the plan not pinned yet, in the plan's priority order.
    pub fetch: Vec<Item>,
}

/// One volunteer's view: who it is, the live volunteer set, the replication factor and its
/// budget. Built once per change of any of them; every question about assignment goes
/// through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    me: String,
    volunteers: Vec<String>,
    replication: usize,
    budget: u64,
}

impl Policy {
    /// A policy for volunteer `me` among `volunteers` (the live set from the tracker; `me` is
    /// added if the tracker does not list it yet, duplicates count once), keeping each
    /// package on `replication` volunteers, with `budget` bytes of disk.
    ///
    /// Fails if `me` is not a valid volunteer id or `replication` is 0. The other ids are
    /// taken as listed: every volunteer must plan over the same set.
    pub fn new<I, S>(me: &str, volunteers: I, replication: usize, budget: u64) -> Result<Policy>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        volunteers::validate_id(me)?;
        if replication == 0 {
            return Err(Error::Replication);
        }
        let mut set: BTreeSet<String> = volunteers
            .into_iter()
            .map(|v| v.as_ref().to_string())
            .collect();
        set.insert(me.to_string());
        Ok(Policy {
            me: me.to_string(),
            volunteers: set.into_iter().collect(),
            replication,
            budget,
        })
    }

    /// This volunteer's id.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The live set, sorted, this volunteer included.
    pub fn volunteers(&self) -> &[String] {
        &self.volunteers
    }

    /// How many volunteers hold each package.
    pub fn replication(&self) -> usize {
        self.replication
    }

    /// Bytes this volunteer may use.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Whether this volunteer is among the holders of `cid`.
    pub fn is_holder(&self, cid: &Cid) -> bool {
        self.holder_score(cid).is_some()
    }

    /// This volunteer's score for `cid` if it is among the holders.
    fn holder_score(&self, cid: &Cid) -> Option<u64> {
        let mine = score(&self.me, cid);
        let mut better = 0usize;
        for other in &self.volunteers {
            if *other == self.me {
                continue;
            }
            let s = score(other, cid);
            if s > mine || (s == mine && other.as_str() < self.me.as_str()) {
                better += 1;
                if better >= self.replication {
                    return None;
                }
            }
        }
        Some(mine)
    }

    /// What to keep out of `items` (the current snapshot's listing and the packages still
    /// referenced; duplicated CIDs count once, a listing entry wins over a package entry).
    ///
    /// Listing items come first, in the order given; then the packages this volunteer holds,
    /// by descending score. Items are added while the total stays within the budget; an item
    /// that does not fit is skipped and the next, smaller ones are still tried, so a full
    /// budget is used as far as it goes and the highest scores are kept. Skipping rather than
    /// stopping costs some stability (a new high-scored package can push out several
    /// lower-scored small ones) but stopping at the first misfit would leave a large part of
    /// the budget unused behind one big package, and coverage is the point. The order stays deterministic: the
    /// same inputs give the same plan on every machine.
    pub fn plan(&self, items: &[Item]) -> Plan {
        let mut seen = HashSet::new();
        let listing = items
            .iter()
            .filter(|i| i.kind == Kind::Listing)
            .filter(|i| seen.insert(i.cid))
            .collect::<Vec<_>>();
        let mut packages = items
            .iter()
            .filter(|i| i.kind == Kind::Package)
            .filter(|i| seen.insert(i.cid))
            .filter_map(|i| self.holder_score(&i.cid).map(|s| (s, i)))
            .collect::<Vec<_>>();
        packages.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cid.cmp(&b.1.cid)));

        let mut plan = Plan::default();
        for item in listing
            .into_iter()
            .chain(packages.into_iter().map(|(_, i)| i))
        {
            plan.assigned_bytes = plan.assigned_bytes.saturating_add(item.size);
            if item.size <= self.budget - plan.planned_bytes {
                plan.planned_bytes += item.size;
                plan.keep.push(item.clone());
            } else {
                plan.skipped_over_budget.push(item.clone());
            }
        }
        plan
    }

    /// The order in which pinned items lose their place, least valuable first.
    fn drop_key(&self, item: &Item) -> (u8, u64, Cid) {
        let tier = match item.kind {
            Kind::Listing => 2,
            Kind::Package if self.is_holder(&item.cid) => 1,
            Kind::Package => 0,
        };
        (tier, score(&self.me, &item.cid), item.cid)
    }

    /// Sorts items least valuable first, each CID once.
    fn by_drop_order<'a>(&self, items: impl IntoIterator<Item = &'a Item>) -> Vec<Item> {
        let mut seen = HashSet::new();
        let mut keyed = items
            .into_iter()
            .filter(|i| seen.insert(i.cid))
            .map(|i| (self.drop_key(i), i))
            .collect::<Vec<_>>();
        keyed.sort_by_key(|k| k.0);
        keyed.into_iter().map(|(_, i)| i.clone()).collect()
    }

    /// What of `pinned` must go, in order, so that the rest fits the budget: after the budget
    /// shrank or the volunteer set changed, before anything new is fetched. Drops packages
    /// this volunteer no longer holds first, then its own packages, lowest score first each,
    /// then listing items; and no more than needed: the rest plus the last item dropped would
    /// exceed the budget. Empty when `pinned` already fits.
    pub fn unpin_order(&self, pinned: &[Item]) -> Vec<Item> {
        let order = self.by_drop_order(pinned);
        let mut used = order.iter().fold(0u64, |sum, i| sum.saturating_add(i.size));
        let mut drop = Vec::new();
        for item in order {
            if used <= self.budget {
                break;
            }
            used -= item.size;
            drop.push(item);
        }
        drop
    }

    /// What to unpin and what to fetch to go from `pinned` to `plan` (a plan of this policy).
    ///
    /// Unpinning all of `unpin` before fetching keeps the disk within the budget at every
    /// moment; so does unpinning from the front of `unpin` only as far as each next fetch
    /// needs (keeping extra copies around while they cost nothing), since the plan itself
    /// fits.
    pub fn changes(&self, plan: &Plan, pinned: &[Item]) -> Changes {
        let keep: HashSet<Cid> = plan.keep.iter().map(|i| i.cid).collect();
        let have: HashSet<Cid> = pinned.iter().map(|i| i.cid).collect();
        Changes {
            unpin: self.by_drop_order(pinned.iter().filter(|i| !keep.contains(&i.cid))),
            fetch: plan
                .keep
                .iter()
                .filter(|i| !have.contains(&i.cid))
                .cloned()
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Reverse;

    use super::*;

    /// Sorts `(score, item)` pairs by descending score, as the plan orders packages.
    fn by_score_desc(pairs: &mut [(u64, &Item)]) {
        pairs.sort_by_key(|(s, i)| (Reverse(*s), i.cid));
    }

    /// A small deterministic generator (xorshift64*), so the random tests repeat exactly.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// A raw-leaf CIDv1 over sha2-256 of `n`'s bytes: a distinct, realistic CID per `n`.
    fn cid(n: u64) -> Cid {
        let digest = Sha256::digest(n.to_be_bytes());
        let mh =
            cid::multihash::Multihash::<64>::wrap(0x12, &digest[..]).expect("32-byte digest fits");
        Cid::new_v1(0x55, mh)
    }

    fn pkg(n: u64, size: u64) -> Item {
        Item {
            cid: cid(n),
            size,
            kind: Kind::Package,
        }
    }

    fn listing(n: u64, size: u64) -> Item {
        Item {
            cid: cid(n),
            size,
            kind: Kind::Listing,
        }
    }

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("volunteer-{i}")).collect()
    }

    /// `n` packages with sizes log-uniform between 10 kB and 5 MB, like a repository's.
    fn repository(rng: &mut Rng, n: u64) -> Vec<Item> {
        let (lo, hi) = (10_000f64.ln(), 5_000_000f64.ln());
        (0..n)
            .map(|i| pkg(1_000 + i, (lo + rng.unit() * (hi - lo)).exp() as u64))
            .collect()
    }

    fn total(items: &[Item]) -> u64 {
        items.iter().map(|i| i.size).sum()
    }

    #[test]
    fn score_is_the_documented_hash() {
        let c = cid(1);
        let mut input = b"volunteer-0".to_vec();
        input.push(0);
        input.extend(c.to_bytes());
        let digest = Sha256::digest(&input);
        let expected = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
        assert_eq!(score("volunteer-0", &c), expected);
        assert_ne!(score("volunteer-0", &c), score("volunteer-1", &c));
        assert_ne!(score("volunteer-0", &c), score("volunteer-0", &cid(2)));
    }

    #[test]
    fn score_is_stable_across_releases() {
        // A change here reshuffles every volunteer's assignment: treat it as a protocol change.
        let c: Cid = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
            .parse()
            .expect("valid CID");
        assert_eq!(score("a1b2c3d4e5f60718", &c), SCORE_VECTOR);
    }
    /// Computed independently: `sha256(b"a1b2c3d4e5f60718\x00" + bytes.fromhex("01551220e3b0...b855"))[:8]`
    /// in Python, read big-endian.
    const SCORE_VECTOR: u64 = 18_172_554_223_600_725_548;

    #[test]
    fn holders_are_the_top_scores_and_every_package_gets_exactly_r() {
        let vols = ids(5);
        for n in 0..200 {
            let c = cid(n);
            for r in 1..=6 {
                let h = holders(&vols, r, &c);
                assert_eq!(h.len(), r.min(5));
                let scores: Vec<u64> = h.iter().map(|v| score(v, &c)).collect();
                assert!(scores.windows(2).all(|w| w[0] >= w[1]));
                for v in &vols {
                    let p = Policy::new(v, &vols, r, u64::MAX).expect("valid");
                    assert_eq!(p.is_holder(&c), h.contains(&v.as_str()), "{v} r={r}");
                }
            }
        }
    }

    #[test]
    fn policy_adds_me_and_rejects_bad_input() {
        let p = Policy::new("me", ["b", "a", "b"], 2, 10).expect("valid");
        assert_eq!(p.volunteers(), ["a", "b", "me"]);
        assert_eq!(Policy::new("me", ["a"], 0, 10), Err(Error::Replication));
        assert!(matches!(
            Policy::new("no/slash", ["a"], 1, 10),
            Err(Error::Field { field: "id", .. })
        ));
    }

    #[test]
    fn listing_first_then_packages_by_descending_score() {
        let mut items = vec![
            pkg(1, 10),
            listing(100, 5),
            pkg(2, 10),
            listing(101, 5),
            pkg(3, 10),
        ];
        items.extend((4..50).map(|n| pkg(n, 10)));
        let p = Policy::new("solo", Vec::<String>::new(), 1, u64::MAX).expect("valid");
        let plan = p.plan(&items);
        assert_eq!(plan.keep[0], listing(100, 5));
        assert_eq!(plan.keep[1], listing(101, 5));
        let scores: Vec<u64> = plan.keep[2..]
            .iter()
            .map(|i| score("solo", &i.cid))
            .collect();
        assert!(scores.windows(2).all(|w| w[0] > w[1]));
        assert_eq!(plan.keep.len(), 51);
        assert_eq!(plan.planned_bytes, total(&items));
        assert_eq!(plan.assigned_bytes, plan.planned_bytes);
        assert!(plan.skipped_over_budget.is_empty());
        assert_eq!(plan.share(), 1.0);
    }

    #[test]
    fn duplicates_count_once_and_listing_wins() {
        let items = vec![pkg(1, 10), pkg(1, 10), listing(1, 10), pkg(2, 7)];
        let p = Policy::new("solo", ["solo"], 1, 100).expect("valid");
        let plan = p.plan(&items);
        assert_eq!(plan.keep, vec![listing(1, 10), pkg(2, 7)]);
        assert_eq!(plan.assigned_bytes, 17);
    }

    #[test]
    fn a_package_that_does_not_fit_is_skipped_and_smaller_ones_still_kept() {
        let p = Policy::new("solo", ["solo"], 1, 100).expect("valid");
        let mut pairs_items: Vec<Item> = (0..10).map(|n| pkg(n, 30)).collect();
        let mut pairs: Vec<(u64, &Item)> = pairs_items
            .iter()
            .map(|i| (score("solo", &i.cid), i))
            .collect();
        by_score_desc(&mut pairs);
        let order: Vec<Cid> = pairs.iter().map(|(_, i)| i.cid).collect();
        // Make the second-best package big: the plan skips it and takes the next three.
        let big = order[1];
        for i in &mut pairs_items {
            if i.cid == big {
                i.size = 90;
            }
        }
        let plan = p.plan(&pairs_items);
        let kept: Vec<Cid> = plan.keep.iter().map(|i| i.cid).collect();
        assert_eq!(kept, vec![order[0], order[2], order[3]]);
        assert_eq!(plan.planned_bytes, 90);
        assert_eq!(plan.skipped_over_budget[0].cid, big);
        assert_eq!(plan.skipped_over_budget.len(), 7);
        assert_eq!(plan.assigned_bytes, 9 * 30 + 90);
    }

    #[test]
    fn listing_that_does_not_fit_is_skipped_too() {
        let p = Policy::new("solo", ["solo"], 1, 10).expect("valid");
        let plan = p.plan(&[listing(1, 11), listing(2, 4), pkg(3, 6), pkg(4, 1)]);
        assert!(plan.planned_bytes <= 10);
        assert_eq!(plan.keep[0], listing(2, 4));
        assert_eq!(plan.skipped_over_budget[0], listing(1, 11));
    }

    /// Random volunteer sets, replication factors, budgets and items: the plan never exceeds
    /// the budget, keeps listing first, covers exactly the assignment (kept or skipped), and
    /// only skips what could not fit.
    #[test]
    fn budget_is_never_exceeded() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for case in 0..400 {
            let vols = ids(1 + rng.below(8) as usize);
            let me = vols[rng.below(vols.len() as u64) as usize].clone();
            let r = 1 + rng.below(4) as usize;
            let n = rng.below(120);
            // One size per CID, as in reality; ids repeat, so some items are duplicates.
            let sizes: Vec<u64> = (0..=n)
                .map(|_| match rng.below(10) {
                    0 => 0,
                    1 => rng.below(50_000_000),
                    _ => rng.below(2_000_000),
                })
                .collect();
            let items: Vec<Item> = (0..n)
                .map(|_| {
                    let id = rng.below(n + 1);
                    let size = sizes[id as usize];
                    if rng.below(8) == 0 {
                        listing(id, size)
                    } else {
                        pkg(id, size)
                    }
                })
                .collect();
            let budget = match rng.below(4) {
                0 => 0,
                1 => u64::MAX,
                _ => rng.below(total(&items) + 1),
            };
            let p = Policy::new(&me, &vols, r, budget).expect("valid");
            let plan = p.plan(&items);
            assert!(plan.planned_bytes <= budget, "case {case}");
            assert_eq!(plan.planned_bytes, total(&plan.keep), "case {case}");
            assert!(plan.planned_bytes <= plan.assigned_bytes);
            assert_eq!(
                plan.assigned_bytes,
                total(&plan.keep) + total(&plan.skipped_over_budget)
            );
            for s in &plan.skipped_over_budget {
                assert!(
                    plan.planned_bytes + s.size > budget,
                    "case {case}: skipped one that fits"
                );
            }
            let first_pkg = plan
                .keep
                .iter()
                .position(|i| i.kind == Kind::Package)
                .unwrap_or(plan.keep.len());
            assert!(
                plan.keep[first_pkg..]
                    .iter()
                    .all(|i| i.kind == Kind::Package)
            );
            let planned: BTreeSet<Cid> = plan
                .keep
                .iter()
                .chain(&plan.skipped_over_budget)
                .map(|i| i.cid)
                .collect();
            let expected: BTreeSet<Cid> = items
                .iter()
                .filter(|i| {
                    i.kind == Kind::Listing || holders(&vols, r, &i.cid).contains(&me.as_str())
                })
                .map(|i| i.cid)
                .collect();
            assert_eq!(planned, expected, "case {case}");
            assert_eq!(p.plan(&items), plan, "deterministic");

            // From any pinned state, unpinning what `changes` says, then fetching, stays
            // within the budget at every step, and so does the minimal `unpin_order`.
            let pinned: Vec<Item> = items
                .iter()
                .filter(|_| rng.below(2) == 0)
                .cloned()
                .collect();
            let pinned: Vec<Item> = p.by_drop_order(&pinned); // each CID once, as a store pins
            let drop = p.unpin_order(&pinned);
            let rest = total(&pinned) - total(&drop);
            assert!(rest <= budget, "case {case}");
            if let Some(last) = drop.last() {
                assert!(
                    rest + last.size > budget,
                    "case {case}: dropped more than needed"
                );
            }
            let ch = p.changes(&plan, &pinned);
            let mut used = total(&pinned) - total(&ch.unpin);
            for f in &ch.fetch {
                used += f.size;
                assert!(used <= budget, "case {case}");
            }
            assert_eq!(used, plan.planned_bytes, "case {case}");
        }
    }

    /// Two volunteers, budgets of 40% of the repository each, replication 1: together they
    /// keep at least 75% of the packages (the acceptance, at the policy level).
    #[test]
    fn two_volunteers_at_forty_percent_cover_three_quarters() {
        for seed in 1..=20u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let repo = repository(&mut rng, 300);
            let budget = total(&repo) * 40 / 100;
            let vols = [
                "a1b2c3d4e5f60718".to_string(),
                "0f1e2d3c4b5a6978".to_string(),
            ];
            let mut covered = BTreeSet::new();
            for me in &vols {
                let plan = Policy::new(me, &vols, 1, budget)
                    .expect("valid")
                    .plan(&repo);
                assert!(plan.planned_bytes <= budget);
                covered.extend(plan.keep.iter().map(|i| i.cid));
            }
            let share = covered.len() as f64 / repo.len() as f64;
            println!("seed {seed}: together {share:.3} of packages");
            assert!(
                share >= 0.75,
                "seed {seed}: together {share:.3} of packages"
            );
        }
    }

    /// A third volunteer joins: packages move only to it (never between the first two), it
    /// takes a part, not all, and everyone's plan stays within budget.
    #[test]
    fn a_third_volunteer_takes_over_only_a_part() {
        let mut rng = Rng(7);
        let repo = repository(&mut rng, 300);
        let budget = total(&repo) * 40 / 100;
        let two = ids(2);
        let three = ids(3);
        let owner = |vols: &[String], c: &Cid| holders(vols, 1, c)[0].to_string();
        let mut moved = 0;
        for item in &repo {
            let before = owner(&two, &item.cid);
            let after = owner(&three, &item.cid);
            if before != after {
                assert_eq!(after, three[2], "a package moved between the first two");
                moved += 1;
            }
        }
        let moved = moved as f64 / repo.len() as f64;
        println!("moved to the newcomer: {moved:.3}");
        assert!((0.2..0.5).contains(&moved), "moved {moved:.3}");

        let mut covered = BTreeSet::new();
        for me in &three {
            let p = Policy::new(me, &three, 1, budget).expect("valid");
            let plan = p.plan(&repo);
            assert!(plan.planned_bytes <= budget);
            covered.extend(plan.keep.iter().map(|i| i.cid));
            // Moving from the two-volunteer plan to this one never exceeds the budget.
            if me != &three[2] {
                let old = Policy::new(me, &two, 1, budget).expect("valid").plan(&repo);
                let ch = p.changes(&plan, &old.keep);
                let mut used = old.planned_bytes - total(&ch.unpin);
                for f in &ch.fetch {
                    used += f.size;
                    assert!(used <= budget);
                }
                assert!(
                    ch.unpin.len() < old.keep.len() / 2,
                    "{me} dropped {} of {}",
                    ch.unpin.len(),
                    old.keep.len()
                );
            }
        }
        // Three budgets of 40% hold everything.
        assert_eq!(covered.len(), repo.len());
    }

    #[test]
    fn replication_two_keeps_every_package_twice_with_room() {
        let mut rng = Rng(11);
        let repo = repository(&mut rng, 200);
        let vols = ids(5);
        let mut copies = std::collections::HashMap::<Cid, usize>::new();
        for me in &vols {
            let plan = Policy::new(me, &vols, 2, u64::MAX)
                .expect("valid")
                .plan(&repo);
            for i in &plan.keep {
                *copies.entry(i.cid).or_default() += 1;
            }
        }
        assert_eq!(copies.len(), repo.len());
        assert!(copies.values().all(|&c| c == 2));
    }

    #[test]
    fn shrinking_budget_drops_foreign_packages_first_then_lowest_scores() {
        let vols = ids(2);
        let me = &vols[0];
        let p = Policy::new(me, &vols, 1, u64::MAX).expect("valid");
        let items: Vec<Item> = (0..40)
            .map(|n| pkg(n, 10))
            .chain([listing(99, 10)])
            .collect();
        let (mine, foreign): (Vec<&Item>, Vec<&Item>) = items
            .iter()
            .filter(|i| i.kind == Kind::Package)
            .partition(|i| p.is_holder(&i.cid));
        assert!(!mine.is_empty() && !foreign.is_empty());

        assert!(p.unpin_order(&items).is_empty(), "fits: nothing to drop");

        let keep_bytes = 10 * (mine.len() as u64 - 1);
        let small = Policy::new(me, &vols, 1, keep_bytes).expect("valid");
        let drop = small.unpin_order(&items);
        // All foreign packages, then my two lowest-scored ones (the listing stays).
        assert_eq!(drop.len(), foreign.len() + 2);
        assert!(drop[..foreign.len()].iter().all(|i| !p.is_holder(&i.cid)));
        let foreign_scores: Vec<u64> = drop[..foreign.len()]
            .iter()
            .map(|i| score(me, &i.cid))
            .collect();
        assert!(foreign_scores.windows(2).all(|w| w[0] <= w[1]));
        let mut my_scores: Vec<u64> = mine.iter().map(|i| score(me, &i.cid)).collect();
        my_scores.sort();
        assert_eq!(score(me, &drop[foreign.len()].cid), my_scores[0]);
        assert_eq!(score(me, &drop[foreign.len() + 1].cid), my_scores[1]);
        assert!(drop.iter().all(|i| i.kind == Kind::Package));
    }
}
