//! Reading files from the upstream mirror: `http://`, `https://` (rustls) or a local directory.
//!
//! Paths are relative to the mirror root (`lastupdate`, `core/os/x86_64/core.db`) and are
//! checked before use: a name taken from a repository database can never leave the mirror.
//! Small files (lastupdate, databases, signatures) are read whole with [`Upstream::get`];
//! packages are streamed with [`Upstream::download`] straight into the store
//! (`FileSource::Chunks`), resuming interrupted transfers on the way. A local directory's
//! package is opened and checked by [`Upstream::open_local`] and then read by the store
//! itself (`FileSource::Open`): no stream and no thread hand-off per buffer.
//!
//! Timeouts are per phase, never per transfer: connecting plus receiving the response
//! headers, and then every single body chunk, must each make progress within
//! [`FetchOptions::stall_timeout`]; a 1 GB package on a slow but live link is fine.
//!
//! ```no_run
//! # async fn demo() -> cidmirror_ingest::Result<()> {
//! use cidmirror_ingest::upstream::{FetchOptions, Upstream};
//!
//! let up = Upstream::parse("https://mirror.example.org/archlinux/", FetchOptions::default())?;
//! let lastupdate = up.get("lastupdate", 64).await?;
//! if let Some(dl) = up.download("core/os/x86_64/core.db", None).await? {
//!     // hand `cidmirror_store::FileSource::Chunks(dl.stream)` to the store
//! #   drop(dl);
//! }
//! # drop(lastupdate);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cidmirror_store::ChunkStream;
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::{Method, StatusCode};
use tokio::io::AsyncReadExt;
use url::Url;

use crate::{Error, Result};

/// Local files are read in buffers of this size.
const LOCAL_CHUNK: usize = 1 << 20;
/// Local files up to this long are read whole when opened, on the same blocking thread.
const LOCAL_WHOLE: u64 = 256 << 10;

/// The longest wait between two attempts, however many failed before.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How patient to be with the upstream.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// A transfer that receives nothing at all for this long fails (connecting plus the
    /// response headers count as one phase, then each body chunk). Not a total timeout.
    pub stall_timeout: Duration,
    /// Extra attempts after a retryable failure (network error, stall, HTTP 5xx or 429).
    /// A download that makes progress between two interruptions gets a fresh budget.
    pub retries: u32,
    /// The wait before the first retry; it doubles with each further retry, up to 60 s.
    pub backoff: Duration,
    /// Sent as `User-Agent`, so that mirror operators can tell who is fetching.
    pub user_agent: String,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            stall_timeout: Duration::from_secs(30),
            retries: 4,
            backoff: Duration::from_secs(1),
            user_agent: format!("cidmirror/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

impl FetchOptions {
    /// The wait before retry number `retry` (1 for the first).
    fn backoff_before(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        self.backoff.saturating_mul(factor).min(MAX_BACKOFF)
    }
}

/// The mirror being followed. Cheap to clone (clones share one HTTP connection pool).
#[derive(Debug, Clone)]
pub struct Upstream {
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    Http(Http),
    Local(Local),
}

impl Upstream {
    /// Reads an upstream address: `http://` or `https://` URL, `file://` URL or a directory
    /// path; a trailing slash is optional. A local directory must exist (this checks it,
    /// with blocking calls: do it at startup).
    pub fn parse(s: &str, opts: FetchOptions) -> Result<Upstream> {
        if opts.stall_timeout.is_zero() {
            return Err(Error::Config(
                "the stall timeout must be longer than zero".into(),
            ));
        }
        let bad = || Error::BadUpstream(s.to_string());
        let scheme = s
            .split_once("://")
            .map(|(scheme, _)| scheme)
            .filter(|scheme| {
                !scheme.is_empty()
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            });
        let source = match scheme {
            None if s.is_empty() => return Err(bad()),
            None => Source::Local(Local::open(Path::new(s), &opts)?),
            Some(_) => {
                let url = Url::parse(s).map_err(|_| bad())?;
                match url.scheme() {
                    "http" | "https" => Source::Http(Http::new(url, s, opts)?),
                    "file" => {
                        if url.query().is_some() || url.fragment().is_some() {
                            return Err(bad());
                        }
                        let path = url.to_file_path().map_err(|()| bad())?;
                        Source::Local(Local::open(&path, &opts)?)
                    }
                    _ => return Err(bad()),
                }
            }
        };
        Ok(Upstream { source })
    }

    /// The canonical address, as written into manifests: an HTTP(S) URL ending in `/`
    /// (credentials removed) or `file:///absolute/path/`.
    pub fn url(&self) -> String {
        match &self.source {
            Source::Http(http) => {
                let mut url = http.base.clone();
                // Both only fail for URLs without a host, which `parse` refused.
                let _ = url.set_username("");
                let _ = url.set_password(None);
                url.into()
            }
            Source::Local(local) => Url::from_directory_path(&local.root)
                .map(String::from)
                .unwrap_or_else(|()| format!("file://{}/", local.root.display())),
        }
    }

    /// Whether the upstream is a local directory.
    pub fn is_local(&self) -> bool {
        matches!(self.source, Source::Local(_))
    }

    /// A small file read whole (lastupdate, databases, signatures). `None` when it does not
    /// exist; [`Error::TooLarge`] when it has more than `max` bytes (checked against the
    /// announced length and again while reading). Retries as [`FetchOptions`] says.
    pub async fn get(&self, rel: &str, max: u64) -> Result<Option<Bytes>> {
        self.check(rel)?;
        match &self.source {
            Source::Http(http) => http.get(rel, max).await,
            Source::Local(local) => local.get(rel, max).await,
        }
    }

    /// Whether a file exists (HTTP: a `HEAD` request, following redirects; 404 and 410
    /// mean no). A local directory is not a file.
    pub async fn exists(&self, rel: &str) -> Result<bool> {
        self.check(rel)?;
        match &self.source {
            Source::Http(http) => http.exists(rel).await,
            Source::Local(local) => local.exists(rel).await,
        }
    }

    /// Starts streaming a file; `None` when it does not exist.
    ///
    /// The stream yields the file's bytes in order. Over HTTP it resumes an interrupted
    /// transfer with `Range: bytes=N-` (or, when the server ignores ranges, with a fresh
    /// request whose first N bytes are skipped), with the retries and backoff of
    /// [`FetchOptions`]. When it gives up it ends with an `io::Error` whose message names the
    /// URL and what happened (stalled, connection reset, HTTP status, short body).
    ///
    /// With `expected_len`, an announced length that differs fails here, and the stream fails
    /// as soon as more bytes arrive (without reading the rest) or when it ends short.
    pub async fn download(&self, rel: &str, expected_len: Option<u64>) -> Result<Option<Download>> {
        self.check(rel)?;
        match &self.source {
            Source::Http(http) => http.download(rel, expected_len).await,
            Source::Local(local) => local.download(rel, expected_len).await,
        }
    }

    /// For a local directory: the file opened for reading, after the checks of
    /// [`Upstream::download`] (a regular file inside the directory, of `expected_len` bytes
    /// when given), so that the store can read it directly. Over HTTP: an error (use
    /// [`Upstream::download`]).
    pub async fn open_local(
        &self,
        rel: &str,
        expected_len: Option<u64>,
    ) -> Result<Option<LocalFile>> {
        self.check(rel)?;
        match &self.source {
            Source::Http(_) => Err(Error::Transfer {
                url: self.url(),
                detail: format!("{rel}: not a local directory"),
            }),
            Source::Local(local) => local.open_local(rel, expected_len).await,
        }
    }

    /// For a local directory: the target's name when `rel` is a symbolic link to another
    /// file of the same directory (repo-add makes `core.db -> core.db.tar.gz`). `None` for
    /// HTTP, for files that are not links and for links that point anywhere else.
    pub async fn symlink_target(&self, rel: &str) -> Result<Option<String>> {
        self.check(rel)?;
        match &self.source {
            Source::Http(_) => Ok(None),
            Source::Local(local) => local.symlink_target(rel).await,
        }
    }

    /// Refuses a path that could leave the mirror or mean different files on different
    /// systems.
    fn check(&self, rel: &str) -> Result<()> {
        unsafe_path(rel).map_or(Ok(()), |why| {
            Err(Error::Transfer {
                url: self.url(),
                detail: format!("refusing unsafe path {rel:?}: {why}"),
            })
        })
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url())
    }
}

/// What is wrong with a relative path, if anything.
fn unsafe_path(rel: &str) -> Option<&'static str> {
    if rel.is_empty() {
        Some("empty")
    } else if rel.starts_with('/') {
        Some("absolute")
    } else if rel.contains('\\') {
        Some("backslash")
    } else if rel.chars().any(char::is_control) {
        Some("control character")
    } else {
        rel.split('/').find_map(|segment| match segment {
            "" => Some("empty segment"),
            "." => Some("'.' segment"),
            ".." => Some("'..' segment"),
            _ => None,
        })
    }
}

/// A file of a local upstream, open for reading ([`Upstream::open_local`]).
#[derive(Debug)]
pub struct LocalFile {
    /// Its name for messages.
    pub name: String,
    /// Its path (inside the upstream directory).
    pub path: PathBuf,
    /// The open file, at its start.
    pub file: std::fs::File,
    /// Its length when it was opened.
    pub len: u64,
    /// How long a read may wait for bytes: whoever reads the file enforces it.
    pub stall_timeout: Duration,
}

/// A file being streamed from the upstream.
pub struct Download {
    /// Where it comes from (URL or local path), for messages.
    pub url: String,
    /// The length the server announced, if it did.
    pub content_length: Option<u64>,
    /// The bytes, in order; an error ends it.
    pub stream: ChunkStream,
    /// Counters updated as bytes arrive (for progress bars).
    pub stats: Arc<DownloadStats>,
}

impl fmt::Debug for Download {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Download")
            .field("url", &self.url)
            .field("content_length", &self.content_length)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Live counters of one download.
#[derive(Debug, Default)]
pub struct DownloadStats {
    /// File bytes handed on so far (bytes skipped after a restart are not counted twice).
    pub bytes: AtomicU64,
    /// Reconnections after an interruption.
    pub resumes: AtomicU32,
}

// ---------------------------------------------------------------------------------------
// Sources at any URL (AUR)

/// Fetches files from any `http`/`https` URL (AUR sources) with the upstream's patience:
/// stall timeouts, retries, resumed transfers. Every address it connects to passes `allow`:
/// a host name only resolves to allowed addresses (so DNS cannot point it at, say, a cloud
/// metadata service), a redirect may not lead to a denied literal address or leave HTTP,
/// and no proxy from the environment is used (it would resolve names itself).
#[derive(Clone)]
pub struct SourceFetcher {
    http: Http,
    allow: AddressPolicy,
}

impl fmt::Debug for SourceFetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SourceFetcher")
    }
}

/// Whether an address may be connected to.
pub type AddressPolicy = Arc<dyn Fn(std::net::IpAddr) -> bool + Send + Sync>;

/// Resolves names to the addresses the policy allows only.
struct PolicyResolver {
    allow: AddressPolicy,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = Arc::clone(&self.allow);
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<std::net::SocketAddr> =
                found.iter().copied().filter(|a| allow(a.ip())).collect();
            if allowed.is_empty() {
                let denied: Vec<String> = found.iter().map(|a| a.ip().to_string()).collect();
                return Err(format!(
                    "{host} resolves only to addresses sources are not fetched from ({})",
                    denied.join(", ")
                )
                .into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The address of a URL whose host is a literal address.
pub(crate) fn literal_ip(url: &Url) -> Option<std::net::IpAddr> {
    match url.host()? {
        url::Host::Ipv4(a) => Some(a.into()),
        url::Host::Ipv6(a) => Some(a.into()),
        url::Host::Domain(_) => None,
    }
}

impl SourceFetcher {
    /// A fetcher whose connections all pass `allow`.
    pub fn new(opts: FetchOptions, allow: AddressPolicy) -> Result<SourceFetcher> {
        if opts.stall_timeout.is_zero() {
            return Err(Error::Config(
                "the stall timeout must be longer than zero".into(),
            ));
        }
        let on_redirect = Arc::clone(&allow);
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            let url = attempt.url();
            if attempt.previous().len() >= 10 {
                attempt.error("more than 10 redirects")
            } else if !matches!(url.scheme(), "http" | "https") {
                let msg = format!("redirected to a {} URL", url.scheme());
                attempt.error(msg)
            } else if literal_ip(url).is_some_and(|ip| !on_redirect(ip)) {
                let msg = format!("redirected to {}, which sources are not fetched from", url);
                attempt.error(msg)
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .user_agent(opts.user_agent.as_str())
            .no_proxy()
            .redirect(redirects)
            .dns_resolver(Arc::new(PolicyResolver {
                allow: Arc::clone(&allow),
            }))
            .build()
            .map_err(|e| Error::Transfer {
                url: "(sources)".into(),
                detail: format!("cannot set up the HTTP client: {}", chain(&e)),
            })?;
        let base =
            Url::parse("http://sources.invalid/").map_err(|e| Error::Config(e.to_string()))?;
        Ok(SourceFetcher {
            http: Http { base, client, opts },
            allow,
        })
    }

    /// Starts downloading `url` (`None`: the server says it is not there). A literal
    /// address the policy denies is refused before anything is sent.
    pub async fn download(&self, url: &Url) -> Result<Option<Download>> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::Transfer {
                url: url.to_string(),
                detail: format!("{} URLs are not fetched", url.scheme()),
            });
        }
        if let Some(ip) = literal_ip(url)
            && !(self.allow)(ip)
        {
            return Err(Error::Transfer {
                url: url.to_string(),
                detail: format!("{ip} is an address sources are not fetched from"),
            });
        }
        self.http.download_url(url.clone(), None).await
    }
}

// ---------------------------------------------------------------------------------------
// HTTP

#[derive(Debug, Clone)]
struct Http {
    /// Always ends in `/`.
    base: Url,
    client: reqwest::Client,
    opts: FetchOptions,
}

/// Why one attempt did not get its answer.
enum SendError {
    Stalled,
    Failed(String),
    /// TLS refused the server (its certificate, or a protocol it cannot speak): retrying
    /// cannot change that.
    Tls(String),
}

impl Http {
    /// Refuses URLs that cannot be a mirror root (no host, a query or a fragment); `raw` is
    /// the address as given, for the message.
    fn new(mut base: Url, raw: &str, opts: FetchOptions) -> Result<Http> {
        if base.host_str().is_none_or(str::is_empty)
            || base.cannot_be_a_base()
            || base.query().is_some()
            || base.fragment().is_some()
        {
            return Err(Error::BadUpstream(raw.to_string()));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        // No total timeout on purpose: stalls are detected per phase (see `send`, `chunk`).
        let client = reqwest::Client::builder()
            .user_agent(opts.user_agent.as_str())
            .build()
            .map_err(|e| Error::Transfer {
                url: base.to_string(),
                detail: format!("cannot set up the HTTP client: {}", chain(&e)),
            })?;
        Ok(Http { base, client, opts })
    }

    /// The URL of a checked relative path. Segments are percent-encoded one by one, so a
    /// name like `foo-1:2.0-1` can never be read as a scheme.
    fn file_url(&self, rel: &str) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(rel.split('/'));
        }
        url
    }

    async fn get(&self, rel: &str, max: u64) -> Result<Option<Bytes>> {
        let url = self.file_url(rel);
        self.retrying(&url, || self.get_once(&url, max)).await
    }

    async fn get_once(&self, url: &Url, max: u64) -> Result<Option<Bytes>> {
        let Some(mut response) = self.open(Method::GET, url).await? else {
            return Ok(None);
        };
        let too_large = || Error::TooLarge {
            url: url.to_string(),
            limit: max,
        };
        let announced = response.content_length();
        if announced.is_some_and(|len| len > max) {
            return Err(too_large());
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = self.chunk(&mut response, url).await? {
            if (body.len() + chunk.len()) as u64 > max {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        if let Some(len) = announced
            && len != body.len() as u64
        {
            return Err(Error::Transfer {
                url: url.to_string(),
                detail: format!("body of {} bytes, announced {len}", body.len()),
            });
        }
        Ok(Some(body.freeze()))
    }

    async fn exists(&self, rel: &str) -> Result<bool> {
        let url = self.file_url(rel);
        let found = self
            .retrying(&url, || self.open(Method::HEAD, &url))
            .await?;
        Ok(found.is_some())
    }

    async fn download(&self, rel: &str, expected_len: Option<u64>) -> Result<Option<Download>> {
        self.download_url(self.file_url(rel), expected_len).await
    }

    async fn download_url(&self, url: Url, expected_len: Option<u64>) -> Result<Option<Download>> {
        let Some(response) = self.retrying(&url, || self.open(Method::GET, &url)).await? else {
            return Ok(None);
        };
        let content_length = response.content_length();
        if let (Some(len), Some(expected)) = (content_length, expected_len) {
            if len > expected {
                return Err(Error::TooLarge {
                    url: url.to_string(),
                    limit: expected,
                });
            }
            if len < expected {
                return Err(Error::Transfer {
                    url: url.to_string(),
                    detail: format!("the server announces {len} bytes, expected {expected}"),
                });
            }
        }
        let stats = Arc::new(DownloadStats::default());
        let transfer = Transfer {
            http: self.clone(),
            name: url.to_string(),
            url: url.clone(),
            expected_len,
            total_len: content_length,
            delivered: 0,
            skip: 0,
            response: Some(response),
            failures: 0,
            stats: Arc::clone(&stats),
            done: false,
        };
        let stream = futures::stream::unfold(transfer, |mut transfer| async move {
            let item = transfer.next().await?;
            Some((item, transfer))
        });
        Ok(Some(Download {
            url: url.into(),
            content_length,
            stream: Box::pin(stream),
            stats,
        }))
    }

    /// One request up to its response headers, bounded by the stall timeout; `from` > 0
    /// asks for the file from that offset on.
    async fn send(
        &self,
        method: Method,
        url: &Url,
        from: u64,
    ) -> Result<reqwest::Response, SendError> {
        let mut request = self.client.request(method, url.clone());
        if from > 0 {
            request = request.header(RANGE, format!("bytes={from}-"));
        }
        match tokio::time::timeout(self.opts.stall_timeout, request.send()).await {
            Err(_) => Err(SendError::Stalled),
            Ok(Err(e)) if tls_refused(&e) => Err(SendError::Tls(reqwest_detail(e))),
            Ok(Err(e)) => Err(SendError::Failed(reqwest_detail(e))),
            Ok(Ok(response)) => Ok(response),
        }
    }

    /// One request: the response when it is a success, `None` when the file is absent.
    async fn open(&self, method: Method, url: &Url) -> Result<Option<reqwest::Response>> {
        let response = self
            .send(method, url, 0)
            .await
            .map_err(|e| self.error(url, e))?;
        let status = response.status();
        if status.is_success() {
            Ok(Some(response))
        } else if absent(status) {
            Ok(None)
        } else {
            Err(Error::Http {
                url: url.to_string(),
                status: status.as_u16(),
            })
        }
    }

    /// The next body chunk, bounded by the stall timeout.
    async fn chunk(&self, response: &mut reqwest::Response, url: &Url) -> Result<Option<Bytes>> {
        match tokio::time::timeout(self.opts.stall_timeout, response.chunk()).await {
            Err(_) => Err(self.error(url, SendError::Stalled)),
            Ok(Err(e)) => Err(self.error(url, SendError::Failed(reqwest_detail(e)))),
            Ok(Ok(chunk)) => Ok(chunk),
        }
    }

    fn error(&self, url: &Url, e: SendError) -> Error {
        match e {
            SendError::Stalled => Error::Stalled {
                url: url.to_string(),
                secs: self.opts.stall_timeout.as_secs_f64().ceil() as u64,
            },
            SendError::Failed(detail) => Error::Transfer {
                url: url.to_string(),
                detail,
            },
            SendError::Tls(detail) => Error::Tls {
                url: url.to_string(),
                host: url.host_str().unwrap_or_default().to_string(),
                detail,
            },
        }
    }

    /// Runs `attempt` until it succeeds, fails for good or runs out of retries.
    async fn retrying<T, F, Fut>(&self, url: &Url, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut retry = 0;
        loop {
            match attempt().await {
                Err(e) if retryable(&e) && retry < self.opts.retries => {
                    retry += 1;
                    let wait = self.opts.backoff_before(retry);
                    tracing::warn!(
                        %url, error = %e, retry, "retrying in {}", humantime::format_duration(wait)
                    );
                    tokio::time::sleep(wait).await;
                }
                result => return result,
            }
        }
    }
}

/// 404 and 410: the file is not there (as opposed to a server that does not let us read it).
fn absent(status: StatusCode) -> bool {
    matches!(status, StatusCode::NOT_FOUND | StatusCode::GONE)
}

/// Server trouble that may pass: 5xx and 429.
fn retryable_status(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

fn retryable(e: &Error) -> bool {
    match e {
        Error::Transfer { .. } | Error::Stalled { .. } => true,
        Error::Http { status, .. } => StatusCode::from_u16(*status).is_ok_and(retryable_status),
        _ => false,
    }
}

/// Whether a request failed because TLS refused the server: a certificate that does not
/// verify (unknown issuer, expired, another name), none at all, or no protocol version
/// or cipher in common. None of these pass with time, unlike a reset connection.
fn tls_refused(e: &reqwest::Error) -> bool {
    rustls_cause(e).is_some_and(|tls| {
        matches!(
            tls,
            rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::UnsupportedNameType
                | rustls::Error::PeerIncompatible(_)
        )
    })
}

/// The rustls error behind `e`, if any. It arrives wrapped in `io::Error`s (one inside
/// another), whose `source()` skips what they wrap: those are opened with `get_ref`.
fn rustls_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        next = match err.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

/// An error and its causes on one line (reqwest's own message is often only "error
/// sending request").
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// What went wrong in a request, without the URL (messages name it once, first). For body
/// errors reqwest's own summary ("error decoding response body") is left out: the cause
/// says it better.
fn reqwest_detail(e: reqwest::Error) -> String {
    use std::error::Error as _;
    match e.source() {
        Some(cause) if e.is_body() || e.is_decode() => chain(cause),
        _ => chain(&e.without_url()),
    }
}

/// `Content-Range: bytes START-END/TOTAL` as (START, TOTAL); TOTAL may be `*`.
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let (range, total) = value.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        total => Some(total.parse().ok()?),
    };
    (start <= end && total.is_none_or(|total| end < total)).then_some((start, total))
}

/// Why a download was interrupted (and may be resumed).
enum Interruption {
    Stalled,
    Failed(String),
    Status(StatusCode),
    Short,
}

/// The state of one HTTP download, driven by its stream.
struct Transfer {
    http: Http,
    url: Url,
    /// The URL as a string, for messages.
    name: String,
    expected_len: Option<u64>,
    /// The file's length, once a response told it.
    total_len: Option<u64>,
    /// Bytes handed on.
    delivered: u64,
    /// Bytes still to drop from the current response (a restart the server did not let us
    /// resume).
    skip: u64,
    response: Option<reqwest::Response>,
    /// Interruptions since the last byte handed on.
    failures: u32,
    stats: Arc<DownloadStats>,
    done: bool,
}

impl Transfer {
    async fn next(&mut self) -> Option<io::Result<Bytes>> {
        if self.done {
            return None;
        }
        let item = self.step().await;
        if !matches!(item, Ok(Some(_))) {
            self.done = true;
            self.response = None;
        }
        item.transpose()
    }

    async fn step(&mut self) -> io::Result<Option<Bytes>> {
        let stall = self.http.opts.stall_timeout;
        loop {
            let interruption = match self.response.as_mut() {
                // Cut off after the last byte: nothing left to ask for.
                None if self.total_len == Some(self.delivered) => {
                    return self.finish().map(|()| None);
                }
                None => match self.reopen().await? {
                    None => continue,
                    Some(interruption) => interruption,
                },
                Some(response) => match tokio::time::timeout(stall, response.chunk()).await {
                    Err(_) => Interruption::Stalled,
                    Ok(Err(e)) => Interruption::Failed(reqwest_detail(e)),
                    Ok(Ok(Some(chunk))) => match self.accept(chunk)? {
                        Some(chunk) => return Ok(Some(chunk)),
                        None => continue,
                    },
                    Ok(Ok(None)) => {
                        self.response = None;
                        match self.total_len {
                            Some(total) if self.delivered < total => Interruption::Short,
                            _ => return self.finish().map(|()| None),
                        }
                    }
                },
            };
            self.response = None;
            self.failures += 1;
            if self.failures > self.http.opts.retries {
                return Err(self.give_up(interruption));
            }
            let wait = self.http.opts.backoff_before(self.failures);
            tracing::warn!(
                url = %self.name,
                at = self.delivered,
                problem = %self.describe(&interruption),
                "resuming in {}",
                humantime::format_duration(wait)
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// Hands a chunk on, after dropping bytes already delivered and checking the lengths.
    fn accept(&mut self, mut chunk: Bytes) -> io::Result<Option<Bytes>> {
        if self.skip > 0 {
            let n = self.skip.min(chunk.len() as u64);
            chunk = chunk.slice(n as usize..);
            self.skip -= n;
        }
        if chunk.is_empty() {
            return Ok(None);
        }
        let after = self.delivered + chunk.len() as u64;
        if let Some(expected) = self.expected_len
            && after > expected
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: more than the expected {expected} bytes", self.name),
            ));
        }
        if let Some(total) = self.total_len
            && after > total
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: more than the {total} bytes announced", self.name),
            ));
        }
        self.delivered = after;
        self.failures = 0;
        self.stats
            .bytes
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        Ok(Some(chunk))
    }

    /// The body ended where it should: check the length the caller expects.
    fn finish(&self) -> io::Result<()> {
        match self.expected_len {
            Some(expected) if self.delivered != expected => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{}: ended after {} bytes, expected {expected}",
                    self.name, self.delivered
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Asks again from where the transfer stopped. `Ok(None)` when a body is flowing again,
    /// `Ok(Some(_))` for a retryable failure, `Err` for one that retrying cannot fix.
    async fn reopen(&mut self) -> io::Result<Option<Interruption>> {
        self.stats.resumes.fetch_add(1, Ordering::Relaxed);
        let from = self.delivered;
        let response = match self.http.send(Method::GET, &self.url, from).await {
            Ok(response) => response,
            Err(SendError::Stalled) => return Ok(Some(Interruption::Stalled)),
            Err(SendError::Failed(detail)) => return Ok(Some(Interruption::Failed(detail))),
            Err(SendError::Tls(detail)) => {
                return Err(io::Error::other(format!(
                    "{}: resuming at byte {from}: TLS refused {}: {detail}",
                    self.name,
                    self.url.host_str().unwrap_or_default()
                )));
            }
        };
        let status = response.status();
        let fatal = |what: String| {
            io::Error::other(format!("{}: resuming at byte {from}: {what}", self.name))
        };
        if status == StatusCode::PARTIAL_CONTENT {
            let header = response
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|value| value.to_str().ok());
            match header.and_then(parse_content_range) {
                Some((start, total))
                    if start == from
                        && (total.is_none()
                            || self.total_len.is_none()
                            || total == self.total_len) =>
                {
                    self.total_len = self.total_len.or(total);
                    self.skip = 0;
                }
                _ => return Err(fatal(format!("unexpected Content-Range {header:?}"))),
            }
        } else if status.is_success() {
            // The server ignored the range: the whole file again, minus what we have.
            let len = response.content_length();
            if let (Some(len), Some(total)) = (len, self.total_len)
                && len != total
            {
                return Err(fatal(format!(
                    "the file changed from {total} to {len} bytes"
                )));
            }
            self.total_len = self.total_len.or(len);
            self.skip = from;
        } else if retryable_status(status) {
            return Ok(Some(Interruption::Status(status)));
        } else if absent(status) {
            return Err(fatal(format!("HTTP {status}: the file disappeared")));
        } else {
            return Err(fatal(format!("HTTP {status}")));
        }
        self.response = Some(response);
        Ok(None)
    }

    fn describe(&self, interruption: &Interruption) -> String {
        match interruption {
            Interruption::Stalled => format!(
                "stalled: nothing received for {}",
                humantime::format_duration(self.http.opts.stall_timeout)
            ),
            Interruption::Failed(detail) => detail.clone(),
            Interruption::Status(status) => format!("HTTP {status}"),
            Interruption::Short => "the body ended early".to_string(),
        }
    }

    /// The error that ends the stream after the last retry.
    fn give_up(&self, interruption: Interruption) -> io::Error {
        let kind = match interruption {
            Interruption::Stalled => io::ErrorKind::TimedOut,
            Interruption::Short => io::ErrorKind::UnexpectedEof,
            Interruption::Failed(_) | Interruption::Status(_) => io::ErrorKind::Other,
        };
        let at = match self.total_len {
            Some(total) => format!("at byte {} of {total}", self.delivered),
            None => format!("at byte {}", self.delivered),
        };
        let attempts = match self.failures {
            1 => "1 attempt".to_string(),
            n => format!("{n} attempts"),
        };
        io::Error::new(
            kind,
            format!(
                "{}: {} ({at}; gave up after {attempts})",
                self.name,
                self.describe(&interruption)
            ),
        )
    }
}

// ---------------------------------------------------------------------------------------
// Local directory

#[derive(Debug, Clone)]
struct Local {
    /// Canonical (absolute, no symbolic links).
    root: PathBuf,
    /// Opening a file, and each read, must finish within this (a hung network filesystem).
    stall_timeout: Duration,
}

impl Local {
    fn open(path: &Path, opts: &FetchOptions) -> Result<Local> {
        let io_error = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let root = std::fs::canonicalize(path).map_err(io_error)?;
        if !std::fs::metadata(&root).map_err(io_error)?.is_dir() {
            return Err(io_error(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            )));
        }
        Ok(Local {
            root,
            stall_timeout: opts.stall_timeout,
        })
    }

    fn stalled(&self, name: &str) -> Error {
        Error::Stalled {
            url: name.to_string(),
            secs: self.stall_timeout.as_secs_f64().ceil() as u64,
        }
    }

    /// The file a checked relative path names, with every link followed; `None` when it
    /// does not exist. Links that lead out of the root are refused.
    async fn resolve(&self, rel: &str) -> Result<Option<PathBuf>> {
        let (root, rel) = (self.root.clone(), rel.to_string());
        let shown = self.root.join(&rel).display().to_string();
        tokio::task::spawn_blocking(move || resolve_in(&root, &rel))
            .await
            .map_err(|e| Error::Transfer {
                url: shown,
                detail: format!("the file lookup's task failed: {e}"),
            })?
    }

    /// Opens a regular file: its name for messages, the file and its length, and the whole
    /// file read at once when it is at most `whole_up_to` bytes long. Anything else (a FIFO,
    /// whose open or read would wait for a writer forever, a socket, a device, a directory)
    /// is refused without reading from it; the whole step is bounded by the stall timeout.
    async fn open_reading(&self, rel: &str, whole_up_to: u64) -> Result<Option<(String, Opened)>> {
        let name = self.root.join(rel);
        let shown = name.display().to_string();
        tokio::time::timeout(
            self.stall_timeout,
            self.open_regular(rel, &name, whole_up_to),
        )
        .await
        .map_err(|_| self.stalled(&shown))?
        .map(|found| found.map(|o| (shown, o)))
    }

    /// One trip to a blocking thread: the lookup, both looks, the open (and the read of a
    /// small file: one trip instead of three for most packages).
    async fn open_regular(
        &self,
        rel: &str,
        name: &Path,
        whole_up_to: u64,
    ) -> Result<Option<Opened>> {
        let (root, rel, name) = (self.root.clone(), rel.to_string(), name.to_path_buf());
        let shown = name.display().to_string();
        tokio::task::spawn_blocking(move || open_regular_in(&root, &rel, &name, whole_up_to))
            .await
            .map_err(|e| Error::Transfer {
                url: shown,
                detail: format!("the open's task failed: {e}"),
            })?
    }

    async fn get(&self, rel: &str, max: u64) -> Result<Option<Bytes>> {
        // A small file (a signature) is read in the same blocking trip as its open.
        let Some((name, opened)) = self.open_reading(rel, max.min(LOCAL_WHOLE)).await? else {
            return Ok(None);
        };
        let too_large = || Error::TooLarge {
            url: name.clone(),
            limit: max,
        };
        if opened.len > max {
            return Err(too_large());
        }
        if let Some(whole) = opened.whole {
            if whole.len() as u64 > max {
                return Err(too_large());
            }
            return Ok(Some(whole.freeze()));
        }
        let (file, len) = (tokio::fs::File::from_std(opened.file), opened.len);
        let mut body = BytesMut::with_capacity(len as usize);
        let mut file = file.take(max.saturating_add(1));
        loop {
            let read = tokio::time::timeout(self.stall_timeout, file.read_buf(&mut body))
                .await
                .map_err(|_| self.stalled(&name))?
                .map_err(|source| Error::Io {
                    path: self.root.join(rel),
                    source,
                })?;
            if read == 0 {
                break;
            }
        }
        if body.len() as u64 > max {
            return Err(too_large());
        }
        Ok(Some(body.freeze()))
    }

    async fn exists(&self, rel: &str) -> Result<bool> {
        let Some(real) = self.resolve(rel).await? else {
            return Ok(false);
        };
        match tokio::fs::metadata(&real).await {
            Ok(meta) => Ok(meta.is_file()),
            Err(e) if is_absent(&e) => Ok(false),
            Err(source) => Err(Error::Io { path: real, source }),
        }
    }

    async fn download(&self, rel: &str, expected_len: Option<u64>) -> Result<Option<Download>> {
        let Some((name, opened)) = self.open_reading(rel, LOCAL_WHOLE).await? else {
            return Ok(None);
        };
        let Opened { file, len, whole } = opened;
        check_len(&name, len, expected_len)?;
        let stats = Arc::new(DownloadStats::default());
        let reader = LocalRead {
            file: tokio::fs::File::from_std(file),
            whole: whole.map(Some),
            stall_timeout: self.stall_timeout,
            name: name.clone(),
            expected_len,
            delivered: 0,
            stats: Arc::clone(&stats),
            done: false,
        };
        let stream = futures::stream::unfold(reader, |mut reader| async move {
            let item = reader.next().await?;
            Some((item, reader))
        });
        Ok(Some(Download {
            url: name,
            content_length: Some(len),
            stream: Box::pin(stream),
            stats,
        }))
    }

    async fn open_local(&self, rel: &str, expected_len: Option<u64>) -> Result<Option<LocalFile>> {
        let Some((name, opened)) = self.open_reading(rel, 0).await? else {
            return Ok(None);
        };
        check_len(&name, opened.len, expected_len)?;
        Ok(Some(LocalFile {
            name,
            path: self.root.join(rel),
            file: opened.file,
            len: opened.len,
            stall_timeout: self.stall_timeout,
        }))
    }

    async fn symlink_target(&self, rel: &str) -> Result<Option<String>> {
        let path = self.root.join(rel);
        // The directory holding the link must itself be inside the root.
        if let Some(parent) = Path::new(rel).parent()
            && !parent.as_os_str().is_empty()
            && self.resolve(&parent.to_string_lossy()).await?.is_none()
        {
            return Ok(None);
        }
        match tokio::fs::symlink_metadata(&path).await {
            Ok(meta) if meta.file_type().is_symlink() => {}
            Ok(_) => return Ok(None),
            Err(e) if is_absent(&e) => return Ok(None),
            Err(source) => return Err(Error::Io { path, source }),
        }
        let target = tokio::fs::read_link(&path)
            .await
            .map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
        let mut components = target
            .components()
            .filter(|c| !matches!(c, Component::CurDir));
        Ok(match (components.next(), components.next()) {
            (Some(Component::Normal(name)), None) => name.to_str().map(str::to_owned),
            _ => None,
        })
    }
}

/// A local file's length against the one the index gave.
fn check_len(name: &str, len: u64, expected: Option<u64>) -> Result<()> {
    match expected {
        Some(expected) if len > expected => Err(Error::TooLarge {
            url: name.to_string(),
            limit: expected,
        }),
        Some(expected) if len < expected => Err(Error::Transfer {
            url: name.to_string(),
            detail: format!("{len} bytes, expected {expected}"),
        }),
        _ => Ok(()),
    }
}

/// [`Local::resolve`], blocking.
fn resolve_in(root: &Path, rel: &str) -> Result<Option<PathBuf>> {
    let path = root.join(rel);
    match std::fs::canonicalize(&path) {
        Ok(real) if real.starts_with(root) => Ok(Some(real)),
        Ok(real) => Err(Error::Transfer {
            url: path.display().to_string(),
            detail: format!(
                "refusing a symbolic link out of the upstream directory (to {})",
                real.display()
            ),
        }),
        Err(e) if is_absent(&e) => Ok(None),
        Err(source) => Err(Error::Io { path, source }),
    }
}

/// A local file opened for reading.
struct Opened {
    file: std::fs::File,
    len: u64,
    /// All of it (up to one byte more than `len`, should it have grown), when small.
    whole: Option<BytesMut>,
}

/// [`Local::open_regular`], blocking.
fn open_regular_in(
    root: &Path,
    rel: &str,
    name: &Path,
    whole_up_to: u64,
) -> Result<Option<Opened>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let Some(real) = resolve_in(root, rel)? else {
        return Ok(None);
    };
    let io_error = |source| Error::Io {
        path: name.to_path_buf(),
        source,
    };
    // Looked at before opening (opening a device can do things), and again through the
    // open file, which O_NONBLOCK keeps from waiting should it have become a FIFO since.
    match std::fs::metadata(&real) {
        Ok(meta) => not_regular(&meta).map_or(Ok(()), |e| Err(io_error(e)))?,
        Err(e) if is_absent(&e) => return Ok(None),
        Err(e) => return Err(io_error(e)),
    }
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&real)
    {
        Ok(file) => file,
        Err(e) if is_absent(&e) => return Ok(None),
        Err(e) => return Err(io_error(e)),
    };
    let meta = file.metadata().map_err(io_error)?;
    not_regular(&meta).map_or(Ok(()), |e| Err(io_error(e)))?;
    let len = meta.len();
    let whole = if len <= whole_up_to {
        let mut bytes = Vec::with_capacity(len as usize + 1);
        (&file)
            .take(len + 1)
            .read_to_end(&mut bytes)
            .map_err(io_error)?;
        // Bytes -> BytesMut of a Vec's bytes takes the allocation over: no copy.
        Some(BytesMut::from(Bytes::from(bytes)))
    } else {
        None
    };
    Ok(Some(Opened { file, len, whole }))
}

/// "No such file" in its forms (`a/b` where `a` is a file is absent too).
fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// Why a file that is not a regular file is refused, naming what it is.
fn not_regular(meta: &std::fs::Metadata) -> Option<io::Error> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    let what = if t.is_file() {
        return None;
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a file"
    };
    Some(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what}, not a regular file: refused"),
    ))
}

/// The state of one local file being streamed.
struct LocalRead {
    file: tokio::fs::File,
    /// The whole file, read when it was opened (`Some(None)` once delivered).
    whole: Option<Option<BytesMut>>,
    stall_timeout: Duration,
    name: String,
    expected_len: Option<u64>,
    delivered: u64,
    stats: Arc<DownloadStats>,
    done: bool,
}

impl LocalRead {
    async fn next(&mut self) -> Option<io::Result<Bytes>> {
        if self.done {
            return None;
        }
        let item = self.read().await;
        if !matches!(item, Ok(Some(_))) {
            self.done = true;
        }
        item.transpose()
    }

    async fn read(&mut self) -> io::Result<Option<Bytes>> {
        let mut chunk = match &mut self.whole {
            Some(whole) => whole.take().unwrap_or_default(),
            None => BytesMut::with_capacity(LOCAL_CHUNK),
        };
        while self.whole.is_none() && chunk.len() < LOCAL_CHUNK {
            let read = tokio::time::timeout(self.stall_timeout, self.file.read_buf(&mut chunk));
            match read.await {
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "{}: stalled: nothing read for {}",
                            self.name,
                            humantime::format_duration(self.stall_timeout)
                        ),
                    ));
                }
                Ok(Ok(0)) => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Err(io::Error::new(e.kind(), format!("{}: {e}", self.name)));
                }
            }
        }
        let after = self.delivered + chunk.len() as u64;
        match self.expected_len {
            Some(expected) if after > expected => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: more than the expected {expected} bytes", self.name),
                ));
            }
            Some(expected) if chunk.is_empty() && after < expected => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{}: ended after {after} bytes, expected {expected}",
                        self.name
                    ),
                ));
            }
            _ => {}
        }
        if chunk.is_empty() {
            return Ok(None);
        }
        self.delivered = after;
        self.stats
            .bytes
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        Ok(Some(chunk.freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths() {
        for (rel, bad) in [
            ("lastupdate", false),
            ("core/os/x86_64/foo-1:2.0-1-x86_64.pkg.tar.zst", false),
            ("core/os/x86_64/core.db", false),
            ("", true),
            ("/etc/passwd", true),
            ("../x", true),
            ("a/../b", true),
            ("a/..", true),
            ("./a", true),
            ("a//b", true),
            ("a/", true),
            ("a\\b", true),
            ("a\0b", true),
            ("a\nb", true),
        ] {
            assert_eq!(unsafe_path(rel).is_some(), bad, "{rel:?}");
        }
    }

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 10-99/100"),
            Some((10, Some(100)))
        );
        assert_eq!(parse_content_range("bytes 10-99/*"), Some((10, None)));
        assert_eq!(parse_content_range("bytes 10-100/100"), None);
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let opts = FetchOptions {
            backoff: Duration::from_secs(1),
            ..FetchOptions::default()
        };
        assert_eq!(opts.backoff_before(1), Duration::from_secs(1));
        assert_eq!(opts.backoff_before(2), Duration::from_secs(2));
        assert_eq!(opts.backoff_before(4), Duration::from_secs(8));
        assert_eq!(opts.backoff_before(7), MAX_BACKOFF);
        assert_eq!(opts.backoff_before(100), MAX_BACKOFF);
    }

    #[test]
    fn file_urls_encode_each_segment() {
        let up = Upstream::parse("http://mirror.example/arch", FetchOptions::default())
            .expect("valid upstream");
        assert_eq!(up.url(), "http://mirror.example/arch/");
        let Source::Http(http) = &up.source else {
            panic!("not http");
        };
        assert_eq!(
            http.file_url("core/os/x86_64/foo-1:2.0+x-1.pkg.tar.zst")
                .as_str(),
            "http://mirror.example/arch/core/os/x86_64/foo-1:2.0+x-1.pkg.tar.zst"
        );
        assert_eq!(
            http.file_url("extra/a b%c#d?e").as_str(),
            "http://mirror.example/arch/extra/a%20b%25c%23d%3Fe"
        );
    }
}
