//! Whole spans of kept files sent with `sendfile(2)`: the kernel copies from the page cache
//! to the socket, no read into user space, no buffer per piece.
//!
//! hyper has no way to send a body from a file (hyperium/hyper#3026), so the bytes travel
//! as a stand-in. A download's body yields [`marker`] chunks: slices of one static buffer
//! that nothing ever writes or reads (zeroes in `.bss`: no memory of their own), each
//! announced first on its connection's [`SendQueue`] as the file span it stands for. hyper
//! counts them against `Content-Length` as real bytes and queues them without copying
//! (its vectored write strategy, forced in `serve`); [`SendfileIo`], the socket hyper
//! writes to, recognises a slice of the marker by its address and sends the span it stands
//! for from the file instead. Everything else (the head, other bodies, HTTP/2) passes
//! through as written.
//!
//! Safety of the trick: a marker reaches the socket only through [`SendfileIo`], which
//! checks that each one is exactly the span at the front of the queue (else the connection
//! fails: never zeroes in place of a file); the queue exists only on HTTP/1 connections that
//! `serve` accepted (a handler called without one, or an HTTP/2 stream, whose service runs
//! on a task of its own, finds none and reads the file with `pread`).
//!
//! What the tail check means here: `sendfile` hands the socket references to page-cache
//! pages, so the bytes still unsent (up to `UNSENT_MAX`, plus what is in flight) are read
//! from the file when they go out, after the body's last check that the file is unchanged.
//! Kept files are never written after they are kept (read-only, named by their hash, and
//! replaced by rename, which leaves an open file as it was); an edit in place by someone
//! with write access to the store during those last bytes would go unnoticed by that
//! download (the next open or the scrub finds it). The `pread` path copied the bytes first.
//!
//! This relies on hyper queueing body chunks as they are: `writev(true)` and no
//! `pipeline_flush` (which makes hyper copy everything into one buffer), and no layer that
//! copies bodies (TLS, compression) between hyper and [`SendfileIo`]. Were a marker ever
//! copied, its bytes would not reach the socket as a marker: the queue would not drain, and
//! the download would stall and be cut rather than sent as zeroes.
//!
//! Written by hand because no crate does this for hyper; the system call is rustix's.
//! Where `sendfile` is refused (a filesystem without splice), the connection sends spans
//! with `pread` and `write` instead.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// The largest span one marker stands for.
pub(crate) const MARKER_MAX: usize = 1 << 20;

/// The stand-in bytes. Never written, never read by anyone: only their addresses matter.
static MARKER: [u8; MARKER_MAX] = [0; MARKER_MAX];

/// A marker of `len` bytes (at most [`MARKER_MAX`]).
pub(crate) fn marker(len: usize) -> bytes::Bytes {
    bytes::Bytes::from_static(&MARKER[..len.min(MARKER_MAX)])
}

/// Whether `slice` lies inside the marker buffer.
pub(crate) fn is_marker(slice: &[u8]) -> bool {
    let start = MARKER.as_ptr() as usize;
    let p = slice.as_ptr() as usize;
    !slice.is_empty() && p >= start && p + slice.len() <= start + MARKER_MAX
}

/// A span of a file that a marker stands for.
struct Span {
    file: Arc<cidmirror_store::TrustedFile>,
    offset: u64,
    left: usize,
}

/// The spans a connection's markers stand for, in the order their markers were yielded
/// (hyper writes a connection's bytes in that order).
#[derive(Default)]
pub(crate) struct SendQueue {
    inner: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    spans: VecDeque<Span>,
    /// Woken when the queue empties (a body waiting to send its checked tail).
    drained: Option<std::task::Waker>,
}

impl SendQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Announces the span the next marker (of `len` bytes) stands for.
    pub(crate) fn push(&self, file: Arc<cidmirror_store::TrustedFile>, offset: u64, len: usize) {
        self.lock().spans.push_back(Span {
            file,
            offset,
            left: len,
        });
    }

    /// Ready once every announced span has been sent.
    pub(crate) fn poll_drained(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut q = self.lock();
        if q.spans.is_empty() {
            Poll::Ready(())
        } else {
            q.drained = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    /// Forgets what is announced (a body that ended early: its markers will not come).
    pub(crate) fn clear(&self) {
        let mut q = self.lock();
        q.spans.clear();
        if let Some(w) = q.drained.take() {
            w.wake();
        }
    }
}

tokio::task_local! {
    /// The queue of the HTTP/1 connection whose task is running, if it has one.
    static QUEUE: Arc<SendQueue>;
}

/// The queue of the connection this request arrived on, if markers can be used there.
pub(crate) fn current_queue() -> Option<Arc<SendQueue>> {
    QUEUE.try_with(Arc::clone).ok()
}

/// Runs a connection's future with its queue in reach of the handlers it calls.
pub(crate) async fn with_queue<F: std::future::Future>(queue: Arc<SendQueue>, f: F) -> F::Output {
    QUEUE.scope(queue, f).await
}

/// The socket hyper writes to: markers become `sendfile` calls, everything else is written
/// as given.
pub(crate) struct SendfileIo {
    stream: TcpStream,
    queue: Arc<SendQueue>,
    /// `sendfile` was refused once (a filesystem without it): spans are copied instead.
    no_sendfile: bool,
}

impl SendfileIo {
    pub(crate) fn new(stream: TcpStream, queue: Arc<SendQueue>) -> SendfileIo {
        SendfileIo {
            stream,
            queue,
            no_sendfile: false,
        }
    }

    /// Sends (part of) the span the marker `slice` stands for.
    fn poll_send_span(&mut self, cx: &mut Context<'_>, slice: &[u8]) -> Poll<io::Result<usize>> {
        let (file, offset, left) = {
            let q = self.queue.lock();
            match q.spans.front() {
                Some(s) if s.left == slice.len() => (Arc::clone(&s.file), s.offset, s.left),
                Some(s) => {
                    return Poll::Ready(Err(io::Error::other(format!(
                        "sendfile: a marker of {} bytes stands for a span of {}",
                        slice.len(),
                        s.left
                    ))));
                }
                None => {
                    return Poll::Ready(Err(io::Error::other(
                        "sendfile: a marker with no span announced",
                    )));
                }
            }
        };
        if self.no_sendfile {
            return self.poll_copy_span(cx, &file.file, offset, left);
        }
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            let mut at = offset;
            match self.stream.try_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(&self.stream, file.file.as_fd(), Some(&mut at), left)
                    .map_err(io::Error::from)
            }) {
                Ok(n) => return Poll::Ready(self.sent(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if unsupported(&e) => {
                    // A filesystem that cannot splice: read and write, for good.
                    tracing::debug!("sendfile refused ({e}): reading kept files instead");
                    self.no_sendfile = true;
                    return self.poll_copy_span(cx, &file.file, offset, left);
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// The span sent by `pread` and `write`, up to 64 KiB at a time (where `sendfile` is
    /// refused); bytes read but not taken by the socket are read again next time.
    fn poll_copy_span(
        &mut self,
        cx: &mut Context<'_>,
        file: &File,
        offset: u64,
        left: usize,
    ) -> Poll<io::Result<usize>> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0; left.min(64 << 10)];
        loop {
            // Read once the socket takes bytes, so a full socket costs no read.
            ready!(self.stream.poll_write_ready(cx))?;
            let got = file.read_at(&mut buf, offset)?;
            match self.stream.try_write(&buf[..got]) {
                Ok(n) => return Poll::Ready(self.sent(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// `n` bytes of the front span went out (none: the file ended before its span did).
    fn sent(&self, n: usize) -> io::Result<usize> {
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "sendfile: the file ended before its span did",
            ));
        }
        let mut q = self.queue.lock();
        if let Some(front) = q.spans.front_mut() {
            front.offset += n as u64;
            front.left -= n.min(front.left);
            if front.left == 0 {
                q.spans.pop_front();
                if q.spans.is_empty()
                    && let Some(w) = q.drained.take()
                {
                    w.wake();
                }
            }
        }
        Ok(n)
    }
}

/// Errors that mean "no sendfile from this file", not "the connection failed".
fn unsupported(e: &io::Error) -> bool {
    use rustix::io::Errno;
    [Errno::INVAL, Errno::NOSYS, Errno::OPNOTSUPP]
        .iter()
        .any(|errno| e.raw_os_error() == Some(errno.raw_os_error()))
}

impl AsyncRead for SendfileIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendfileIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(first) = bufs.iter().position(|b| !b.is_empty()) else {
            return Poll::Ready(Ok(0));
        };
        if is_marker(&bufs[first]) {
            return this.poll_send_span(cx, &bufs[first]);
        }
        // What comes before the first marker, written as it is.
        let plain = bufs[first..]
            .iter()
            .position(|b| is_marker(b))
            .map_or(bufs.len(), |k| first + k);
        Pin::new(&mut this.stream).poll_write_vectored(cx, &bufs[first..plain])
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_recognised_by_address_only() {
        let m = marker(4096);
        assert!(is_marker(&m));
        assert!(is_marker(&m[100..200]));
        assert!(!is_marker(&m[..0]));
        let zeros = vec![0u8; 4096];
        assert!(!is_marker(&zeros), "equal bytes elsewhere are not a marker");
        assert_eq!(marker(MARKER_MAX + 5).len(), MARKER_MAX);
    }
}
