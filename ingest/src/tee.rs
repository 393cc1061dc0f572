//! One download, two readers: the bytes go into the store and, at the same time, through a
//! blocking reader (the `.files` database's parser), so a large archive is checked without
//! ever being held whole. The reader gets the bytes over a bounded channel: a slow parser
//! slows the download rather than letting buffers pile up. Hand-written because it is a
//! few lines over `tokio::sync::mpsc`; no crate offers a stream tee with a blocking end.

use std::io::{self, Read};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use cidmirror_store::{FileSource, ImportedFile, PutOptions, Store};
use futures::StreamExt;

use crate::upstream::Download;
use crate::{Error, Result};

/// Buffers in flight to the reader.
const QUEUE: usize = 16;

/// Stores `dl` (at most `max` bytes) and runs `read` over the same bytes on a blocking
/// thread. A failed download is that error (the reader saw a short stream); otherwise a
/// reader's error is the result, whatever the store did.
pub(crate) async fn store_and_read<T: Send + 'static>(
    store: &Arc<dyn Store>,
    dl: Download,
    max: u64,
    opts: PutOptions,
    read: impl FnOnce(&mut dyn Read) -> Result<T> + Send + 'static,
) -> Result<(ImportedFile, T)> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(QUEUE);
    let reader = tokio::task::spawn_blocking(move || {
        let mut input = ChannelReader {
            rx,
            current: Bytes::new(),
        };
        let out = read(&mut input);
        // Whatever the reader left unread is not waited for.
        drop(input);
        out
    });
    let url = dl.url.clone();
    let mut seen = 0u64;
    let stream = dl.stream.then(move |item| {
        let tx = tx.clone();
        let item = item.and_then(|b| {
            seen += b.len() as u64;
            if seen > max {
                return Err(io::Error::new(
                    io::ErrorKind::FileTooLarge,
                    format!("more than {max} bytes"),
                ));
            }
            Ok(b)
        });
        async move {
            if let Ok(b) = &item {
                // A reader that stopped (it found a problem) no longer takes bytes.
                let _ = tx.send(b.clone()).await;
            }
            item
        }
    });
    let put = store
        .put_file(FileSource::Chunks(Box::pin(stream)), opts)
        .await;
    let read = reader.await.map_err(|e| Error::Transfer {
        url: url.clone(),
        detail: format!("the reading task failed: {e}"),
    })?;
    let imported = put?;
    Ok((imported, read?))
}

/// The receiving end as a blocking [`Read`]; the end of the channel is the end of input.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.current = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}
