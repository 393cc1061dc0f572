//! The volunteer's policy for cidmirror: which content a volunteer keeps pinned and when it
//! lets go. Pure functions and plain data, no I/O: `cidmirror pin` feeds them the snapshots,
//! the live volunteer set and the budget, and carries out what they return.
//!
//! - [`Policy`] and [`Plan`] ([`plan`]): rendezvous hashing of (volunteer id, CID) over the
//!   live volunteer set assigns every package to the top `replication` volunteers without
//!   central coordination; a plan keeps the current listing first, then the volunteer's
//!   assignment by descending score, and never exceeds the budget. [`Policy::changes`] and
//!   [`Policy::unpin_order`] say what to fetch and what to drop, and in which order;
//! - [`parse_size`] / [`format_size`] ([`budget`]): `50G`, `512M`, `1.5GiB`, bytes;
//! - [`retention()`]: which CIDs the last `--keep-days` of snapshots still reference, when
//!   the others expire, and which pinned CIDs to unpin;
//! - [`PinStatus`] ([`status`]): what `cidmirror pin status` prints (text or JSON);
//! - [`volunteers`]: the tracker's wire types (`/api/v1/volunteers`) and their validation.
//!
//! How the pinner uses them, on every new snapshot, volunteer set or budget: [`retention()`]
//! over the snapshot history gives the packages still referenced (the candidates) and the
//! CIDs to unpin; [`Policy::plan`] over the current listing plus those candidates gives the
//! target; [`Policy::changes`] against what is pinned gives what to unpin and what to fetch.
//! Unpinning from the front of `unpin` until the next fetch fits keeps the disk within the
//! budget at every moment.
//!
//! ```
//! use cidmirror_pinner::{Cid, Item, Kind, Policy, parse_size};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let budget = parse_size("50G")?;
//! let live = ["a1b2c3d4e5f60718", "volunteer-2", "volunteer-3"];
//! let policy = Policy::new("volunteer-2", live, 2, budget)?;
//! let cid: Cid = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku".parse()?;
//! let items = [Item { cid, size: 4 << 20, kind: Kind::Package }];
//! let plan = policy.plan(&items);
//! assert!(plan.planned_bytes <= budget);
//! println!("keep {} items, {} bytes", plan.keep.len(), plan.planned_bytes);
//! # Ok(()) }
//! ```

pub mod budget;
pub mod plan;
pub mod retention;
pub mod status;
pub mod volunteers;

pub use budget::{format_size, parse_size};
pub use cid::Cid;
pub use plan::{Changes, Item, Kind, Plan, Policy, holders, score};
pub use retention::{Retention, Seen, SnapshotRefs, retention};
pub use status::{Expiry, PinStatus};
pub use volunteers::{Announce, Volunteer, VolunteerList};

/// Errors of the pinner's policy: input that a volunteer or a peer got wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A size (a `--budget`) that does not parse or does not fit in 64 bits.
    #[error("{input:?}: {reason}")]
    Size {
        /// The text as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A field of a tracker message (or of the pinner's own identity) that is not acceptable.
    #[error("invalid {field}: {reason}")]
    Field {
        /// The field's name on the wire (`id`, `url`).
        field: &'static str,
        /// What is wrong with it, quoting the value.
        reason: String,
    },
    /// A replication factor of 0 would assign every package to nobody.
    #[error("replication must be at least 1")]
    Replication,
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<volunteers::FieldError> for Error {
    fn from(e: volunteers::FieldError) -> Error {
        Error::Field {
            field: e.field,
            reason: e.reason,
        }
    }
}
