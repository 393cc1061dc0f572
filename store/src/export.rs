//! Exporting a DAG as a CAR: depth-first in link order, each block once.

use std::collections::HashSet;

use cid::Cid;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::api::Store;
use crate::car::{encode_header, encode_section};
use crate::unixfs::{links_of, need_block};
use crate::{Error, Result};

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Blocks written.
    pub blocks: u64,
    /// Bytes written (the whole CAR).
    pub bytes: u64,
}

/// Writes the DAG under `root` as CAR v1 to `w`, streaming: memory holds one block and the
/// set of CIDs already written. A block that is not held stops the export with an error
/// naming it (what was written so far is a valid, truncated CAR).
pub async fn export_car<S: Store + ?Sized, W: AsyncWrite + Unpin>(
    store: &S,
    root: &Cid,
    w: &mut W,
) -> Result<ExportReport> {
    let io = |source| Error::Stream {
        what: "writing CAR",
        source,
    };
    let header = encode_header(&[*root]);
    w.write_all(&header).await.map_err(io)?;
    let mut rep = ExportReport {
        blocks: 0,
        bytes: header.len() as u64,
    };
    let mut seen = HashSet::new();
    let mut stack = vec![*root];
    while let Some(cid) = stack.pop() {
        if !seen.insert(cid) {
            continue;
        }
        let block = need_block(store, &cid).await?;
        let section = encode_section(&cid, &block);
        w.write_all(&section).await.map_err(io)?;
        rep.blocks += 1;
        rep.bytes += section.len() as u64;
        let links = links_of(&cid, &block)?;
        stack.extend(links.into_iter().rev());
    }
    w.flush().await.map_err(io)?;
    Ok(rep)
}
