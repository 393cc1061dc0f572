//! Which snapshot is current, for every request.
//!
//! The publisher records each snapshot in its database; the server follows it by polling
//! (a cheap indexed read every half second, or at once when told: `mirror --serve`
//! refreshes right after publishing). Handlers take one `Arc<Current>` at the start of a
//! request and use only it, so a request never mixes two snapshots, and a switch in the
//! middle of a download changes nothing for that download (the files it reads are
//! immutable).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cid::Cid;
use cidmirror_schema::Db;
use cidmirror_schema::publisher::{Snapshot, snapshots};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The current snapshot as requests see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    /// Sequence number.
    pub seq: u64,
    /// Root of the listing.
    pub root: Cid,
    /// The previous snapshot's root.
    pub previous: Option<Cid>,
    /// When it became current.
    pub published_at: SystemTime,
    /// The publisher's ed25519 signature over (seq, root, previous).
    pub signature: Vec<u8>,
    /// On a follower: its view of the listing (lookups, locally rebuilt databases).
    pub follow: Option<Arc<crate::follow::view::View>>,
}

impl From<&Snapshot> for Current {
    fn from(s: &Snapshot) -> Self {
        Current {
            seq: s.seq,
            root: s.root,
            previous: s.previous,
            published_at: UNIX_EPOCH + Duration::from_secs(s.published_at.0.max(0).unsigned_abs()),
            signature: s.signature.clone(),
            follow: None,
        }
    }
}

/// The current snapshot, shared by every request, and where it comes from.
#[derive(Clone)]
pub struct Snapshots {
    tx: Arc<watch::Sender<Option<Arc<Current>>>>,
    db: Option<Arc<Db>>,
}

impl Snapshots {
    /// Snapshots recorded in a publisher's database.
    pub fn from_db(db: Arc<Db>) -> Self {
        let (tx, _) = watch::channel(None);
        Snapshots {
            tx: Arc::new(tx),
            db: Some(db),
        }
    }

    /// Snapshots set by the caller (a follower sets what it verified).
    pub fn manual() -> Self {
        let (tx, _) = watch::channel(None);
        Snapshots {
            tx: Arc::new(tx),
            db: None,
        }
    }

    /// The publisher's database, if this follows one.
    pub fn db(&self) -> Option<&Arc<Db>> {
        self.db.as_ref()
    }

    /// The current snapshot, if any.
    pub fn current(&self) -> Option<Arc<Current>> {
        self.tx.borrow().clone()
    }

    /// Changes as they happen.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Current>>> {
        self.tx.subscribe()
    }

    /// Makes `c` current (if it is newer than what is current).
    pub fn set(&self, c: Current) {
        self.tx.send_if_modified(|cur| match cur {
            Some(old) if old.seq >= c.seq => false,
            _ => {
                *cur = Some(Arc::new(c));
                true
            }
        });
    }

    /// Reads the current snapshot from the database now.
    pub async fn refresh(&self) -> Result<(), cidmirror_schema::Error> {
        let Some(db) = self.db.clone() else {
            return Ok(());
        };
        let snap = tokio::task::spawn_blocking(move || db.read(snapshots::current))
            .await
            .map_err(|e| cidmirror_schema::Error::Invalid {
                what: "snapshot refresh",
                detail: e.to_string(),
            })??;
        if let Some(s) = snap {
            self.set(Current::from(&s));
        }
        Ok(())
    }

    /// Polls the database every `every` until `cancel`.
    pub fn spawn_poller(&self, every: Duration, cancel: CancellationToken) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = me.refresh().await {
                    tracing::warn!("reading the current snapshot: {e}");
                }
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = cancel.cancelled() => return,
                }
            }
        });
    }
}
