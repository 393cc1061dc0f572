//! AUR package bases: what a `.SRCINFO` says to fetch, and whether fetched bytes are what it
//! says.
//!
//! A `.SRCINFO` is parsed with `alpm-srcinfo` (the ALPM project's parser, which aurweb uses;
//! MIT/Apache like cidmirror, where paru's `srcinfo` is GPL-3.0), read no larger than
//! [`SRCINFO_MAX`], then flattened into one [`SourceSpec`] per source of every architecture:
//! the file name makepkg saves it under, what it is (a URL to fetch, a version-control
//! checkout, a file of the package's own repository) and every checksum given for it
//! (`SKIP` kept as such). Everything in it is hostile until checked: file names are single
//! path components, only `http` and `https` are fetched (of makepkg's default `DLAGENTS`,
//! `ftp` is not yet), hosts pass a [`HostPolicy`], and at most [`SOURCES_MAX`] sources are
//! read.
//!
//! [`Hashes`] computes every algorithm a source needs in one pass over its bytes, and
//! [`SourceSpec::verify`] compares them with every checksum that is not `SKIP`: all must
//! match, as makepkg requires. `ck` (POSIX `cksum`, a CRC) is no hash: a source checked
//! only by it is not cached (see [`Uncached`]).

pub mod fetch;
pub mod follow;
pub mod git;
#[cfg(test)]
mod testing;

use std::fmt;
use std::net::IpAddr;

use alpm_srcinfo::SourceInfoV1;
use alpm_types::digests::{Blake2b512, Md5, Sha1, Sha224, Sha256, Sha384, Sha512};
use alpm_types::{SkippableChecksum, Source};
use sha2::Digest;

/// The largest `.SRCINFO` read. Real ones are a few KiB; the largest on the AUR is far
/// below this.
pub const SRCINFO_MAX: usize = 1 << 20;
/// The most sources (all architectures together) one package base may list.
pub const SOURCES_MAX: usize = 1000;
/// The longest file name accepted (as most filesystems allow).
const NAME_MAX: usize = 255;

/// The checksum algorithms of makepkg that are hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algo {
    /// `md5sums`.
    Md5,
    /// `sha1sums`.
    Sha1,
    /// `sha224sums`.
    Sha224,
    /// `sha256sums`.
    Sha256,
    /// `sha384sums`.
    Sha384,
    /// `sha512sums`.
    Sha512,
    /// `b2sums`: BLAKE2b-512, as `b2sum` prints it.
    B2,
}

impl Algo {
    /// Every algorithm, in makepkg's order.
    pub const ALL: [Algo; 7] = [
        Algo::Md5,
        Algo::Sha1,
        Algo::Sha224,
        Algo::Sha256,
        Algo::Sha384,
        Algo::Sha512,
        Algo::B2,
    ];

    /// The name makepkg gives it (`sha256` of `sha256sums`), also used in `/by-hash/<name>/`.
    pub fn name(self) -> &'static str {
        match self {
            Algo::Md5 => "md5",
            Algo::Sha1 => "sha1",
            Algo::Sha224 => "sha224",
            Algo::Sha256 => "sha256",
            Algo::Sha384 => "sha384",
            Algo::Sha512 => "sha512",
            Algo::B2 => "b2",
        }
    }

    /// The algorithm of that name.
    pub fn from_name(name: &str) -> Option<Algo> {
        Algo::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Algo::Md5 => 16,
            Algo::Sha1 => 20,
            Algo::Sha224 => 28,
            Algo::Sha256 => 32,
            Algo::Sha384 => 48,
            Algo::Sha512 | Algo::B2 => 64,
        }
    }
}

impl fmt::Display for Algo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a source is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// A file fetched from this URL.
    Remote(url::Url),
    /// A version-control checkout (`git+https://...`): not a file, not cached.
    Vcs(String),
    /// A file of the package's own git repository.
    Local,
}

/// Why a source is not cached (shown in status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uncached {
    /// Every checksum given for it is `SKIP`: nothing says what its bytes must be.
    OnlySkip,
    /// Its only checksum is `ck` (a CRC, which anyone can forge).
    OnlyCk,
    /// A version-control source.
    Vcs,
    /// A file of the package's own repository (published with the `.SRCINFO`'s repository,
    /// not fetched).
    Local,
    /// A URL scheme that is not fetched (only `http` and `https` are; makepkg's default
    /// `DLAGENTS` also fetch `ftp`, which the HTTP client here cannot).
    Scheme(String),
    /// A host the publisher does not fetch from.
    Host(String),
}

impl fmt::Display for Uncached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uncached::OnlySkip => f.write_str("every checksum is SKIP"),
            Uncached::OnlyCk => f.write_str("only a ck (CRC) checksum, which is no hash"),
            Uncached::Vcs => f.write_str("a version-control source"),
            Uncached::Local => f.write_str("a file of the package's own repository"),
            Uncached::Scheme(s) => {
                write!(
                    f,
                    "scheme {s}: only http, https and ftp sources are fetched"
                )
            }
            Uncached::Host(h) => write!(f, "host {h} is not fetched from (host policy)"),
        }
    }
}

/// One source of one architecture (or of all, `arch` `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    /// `None` for `source`, `Some("x86_64")` for `source_x86_64`.
    pub arch: Option<String>,
    /// The name makepkg saves it under (`name` of `name::url`, else the URL's last part).
    pub file_name: String,
    /// The source as the `.SRCINFO` writes it (`name::url` included).
    pub entry: String,
    /// What it is.
    pub kind: SourceKind,
    /// Every hash given for it: `None` for `SKIP`.
    pub sums: Vec<(Algo, Option<Vec<u8>>)>,
    /// Whether a non-`SKIP` `ck` sum is given too.
    pub has_ck: bool,
}

/// A checksum that the bytes fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The algorithm.
    pub algo: Algo,
    /// Lowercase hex, as in the `.SRCINFO`.
    pub expected: String,
    /// Lowercase hex of the bytes fetched.
    pub actual: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: expected {}, got {}",
            self.algo, self.expected, self.actual
        )
    }
}

impl SourceSpec {
    /// The checksums that check it (not `SKIP`).
    pub fn checks(&self) -> impl Iterator<Item = (Algo, &[u8])> {
        self.sums
            .iter()
            .filter_map(|(a, d)| d.as_deref().map(|d| (*a, d)))
    }

    /// Why it is not cached, if it is not; `policy` decides which URL hosts are fetched.
    pub fn uncached(&self, policy: &HostPolicy) -> Option<Uncached> {
        match &self.kind {
            SourceKind::Vcs(_) => return Some(Uncached::Vcs),
            SourceKind::Local => return Some(Uncached::Local),
            SourceKind::Remote(u) => {
                if !matches!(u.scheme(), "http" | "https") {
                    return Some(Uncached::Scheme(u.scheme().to_string()));
                }
                if let Err(h) = policy.check_url(u) {
                    return Some(Uncached::Host(h));
                }
            }
        }
        if self.checks().next().is_none() {
            return Some(if self.has_ck {
                Uncached::OnlyCk
            } else {
                Uncached::OnlySkip
            });
        }
        None
    }

    /// The algorithms to compute over its bytes.
    pub fn algos(&self) -> Vec<Algo> {
        let mut a: Vec<Algo> = self.checks().map(|(a, _)| a).collect();
        a.sort();
        a.dedup();
        a
    }

    /// Every checksum (not `SKIP`) the digests fail; empty when all match. A checksum whose
    /// algorithm was not computed counts as failed (the caller computes [`Self::algos`]).
    pub fn verify(&self, digests: &[(Algo, Vec<u8>)]) -> Vec<Mismatch> {
        self.checks()
            .filter_map(|(algo, want)| {
                let got = digests.iter().find(|(a, _)| *a == algo).map(|(_, d)| d);
                (got.map(Vec::as_slice) != Some(want)).then(|| Mismatch {
                    algo,
                    expected: hex::encode(want),
                    actual: got
                        .map(hex::encode)
                        .unwrap_or_else(|| "not computed".into()),
                })
            })
            .collect()
    }
}

/// A parsed `.SRCINFO`.
#[derive(Debug, Clone)]
pub struct SrcInfo {
    /// `pkgbase`.
    pub pkgbase: String,
    /// `[epoch:]pkgver-pkgrel`.
    pub version: String,
    /// The file, verbatim (published as it is).
    pub text: String,
    /// Every source of every architecture, in the file's order (common ones first).
    pub sources: Vec<SourceSpec>,
}

/// Why a `.SRCINFO` is refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SrcinfoError {
    /// Larger than [`SRCINFO_MAX`].
    #[error("{what}: .SRCINFO is {size} bytes, more than the {max} allowed")]
    TooLarge {
        /// The package base or file.
        what: String,
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not UTF-8, or not what `alpm-srcinfo` accepts.
    #[error("{what}: .SRCINFO: {detail}")]
    Parse {
        /// The package base or file.
        what: String,
        /// What is wrong (the parser's message, made printable).
        detail: String,
    },
    /// More sources than [`SOURCES_MAX`].
    #[error("{what}: {n} sources, more than the {max} allowed")]
    TooManySources {
        /// The package base.
        what: String,
        /// How many it lists.
        n: usize,
        /// The limit.
        max: usize,
    },
    /// A source whose file name is not a single plain path component.
    #[error("{what}: source {entry}: file name {name:?} is not a plain file name")]
    FileName {
        /// The package base.
        what: String,
        /// The source entry.
        entry: String,
        /// The name.
        name: String,
    },
    /// A checksum array of another length than its source array (makepkg refuses it too).
    #[error("{what}: {array} has {got} entries for {want} sources")]
    Length {
        /// The package base.
        what: String,
        /// `sha256sums_x86_64`, ...
        array: String,
        /// Its length.
        got: usize,
        /// The sources' count.
        want: usize,
    },
    /// Two sources saved under one file name with different checksums.
    #[error("{what}: two sources are saved as {name}")]
    Duplicate {
        /// The package base.
        what: String,
        /// The file name.
        name: String,
    },
}

/// Which hosts sources are fetched from. By default none of the addresses a publisher
/// should never be made to reach on behalf of a `.SRCINFO`: loopback, link-local (cloud
/// metadata services live there), private, shared (CGNAT), multicast and unspecified
/// addresses; a literal address is checked here, a host name after it resolves (by the
/// fetcher). `allow` lists exceptions (tests allow `127.0.0.1`).
#[derive(Debug, Clone, Default)]
pub struct HostPolicy {
    /// Addresses fetched from even though they are in a denied range.
    pub allow: Vec<IpAddr>,
}

impl HostPolicy {
    /// Whether a source may be fetched from `ip`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        if self.allow.contains(&ip) {
            return true;
        }
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                !(v4.is_loopback()
                    || v4.is_link_local()
                    || v4.is_private()
                    || v4.is_multicast()
                    || v4.is_broadcast()
                    || v4.is_unspecified()
                    || o[0] == 0
                    || (o[0] == 100 && (o[1] & 0xc0) == 64))
            }
            IpAddr::V6(v6) => {
                if let Some(v4) = v6.to_ipv4_mapped() {
                    return self.allows(IpAddr::V4(v4));
                }
                let s = v6.segments();
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (s[0] & 0xffc0) == 0xfe80
                    || (s[0] & 0xfe00) == 0xfc00)
            }
        }
    }

    /// The URL's host if it is a literal address the policy refuses.
    pub fn check_url(&self, u: &url::Url) -> Result<(), String> {
        let Some(ip) = crate::upstream::literal_ip(u) else {
            // `localhost` resolves to loopback without asking anyone.
            let d = u.host_str().unwrap_or_default().trim_end_matches('.');
            let d = d.to_ascii_lowercase();
            if d.is_empty() || d == "localhost" || d.ends_with(".localhost") {
                return Err(d);
            }
            return Ok(());
        };
        if self.allows(ip) {
            Ok(())
        } else {
            Err(ip.to_string())
        }
    }
}

/// Outside text for a message: at most 300 characters, made safe for a terminal.
pub(crate) fn printable(s: &str) -> String {
    let cut: String = s.chars().take(300).collect();
    cidmirror_schema::text::printable(&cut).into_owned()
}

/// Checks that `name` is one plain path component.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.chars().any(char::is_control)
}

/// The file name makepkg saves a URL source under when none is given: the URL's text after
/// its last `/` (query included, as makepkg's `get_filename` keeps it).
fn url_file_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

/// Parses a `.SRCINFO` (`what` names it in errors: its package base or path).
pub fn parse(bytes: &[u8], what: &str) -> Result<SrcInfo, SrcinfoError> {
    let what = printable(what);
    if bytes.len() > SRCINFO_MAX {
        return Err(SrcinfoError::TooLarge {
            what,
            size: bytes.len(),
            max: SRCINFO_MAX,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| SrcinfoError::Parse {
        what: what.clone(),
        detail: format!("not UTF-8: {e}"),
    })?;
    // Counted before parsing: the parser builds every entry first.
    let n = text
        .lines()
        .filter(|l| {
            let k = l.trim_start();
            k.starts_with("source ") || k.starts_with("source_")
        })
        .count();
    if n > SOURCES_MAX {
        return Err(SrcinfoError::TooManySources {
            what,
            n,
            max: SOURCES_MAX,
        });
    }
    let info = SourceInfoV1::from_string(text).map_err(|e| SrcinfoError::Parse {
        what: what.clone(),
        detail: printable(&e.to_string()),
    })?;
    let base = &info.base;
    let mut sources = Vec::new();
    let common = Sums {
        b2: &base.b2_checksums,
        md5: &base.md5_checksums,
        sha1: &base.sha1_checksums,
        sha224: &base.sha224_checksums,
        sha256: &base.sha256_checksums,
        sha384: &base.sha384_checksums,
        sha512: &base.sha512_checksums,
        ck: base.crc_checksums.iter().map(|c| !c.is_skipped()).collect(),
    };
    flatten(&what, None, &base.sources, &common, &mut sources)?;
    for (arch, props) in &base.architecture_properties {
        let sums = Sums {
            b2: &props.b2_checksums,
            md5: &props.md5_checksums,
            sha1: &props.sha1_checksums,
            sha224: &props.sha224_checksums,
            sha256: &props.sha256_checksums,
            sha384: &props.sha384_checksums,
            sha512: &props.sha512_checksums,
            ck: props
                .crc_checksums
                .iter()
                .map(|c| !c.is_skipped())
                .collect(),
        };
        flatten(
            &what,
            Some(arch.to_string()),
            &props.sources,
            &sums,
            &mut sources,
        )?;
    }
    // One file name, one set of bytes (the same source listed twice is fine).
    for (i, a) in sources.iter().enumerate() {
        if sources[..i]
            .iter()
            .any(|b| b.file_name == a.file_name && (b.kind != a.kind || b.sums != a.sums))
        {
            return Err(SrcinfoError::Duplicate {
                what,
                name: printable(&a.file_name),
            });
        }
    }
    Ok(SrcInfo {
        pkgbase: base.name.to_string(),
        version: base.version.to_string(),
        text: text.to_string(),
        sources,
    })
}

/// The checksum arrays of one architecture.
struct Sums<'a> {
    b2: &'a [SkippableChecksum<Blake2b512>],
    md5: &'a [SkippableChecksum<Md5>],
    sha1: &'a [SkippableChecksum<Sha1>],
    sha224: &'a [SkippableChecksum<Sha224>],
    sha256: &'a [SkippableChecksum<Sha256>],
    sha384: &'a [SkippableChecksum<Sha384>],
    sha512: &'a [SkippableChecksum<Sha512>],
    /// Per source: a `ck` sum that is not `SKIP`.
    ck: Vec<bool>,
}

/// The `i`th entry of a checksum array as bytes (`None` for `SKIP`).
fn digest_of<D>(c: &SkippableChecksum<D>) -> Option<Vec<u8>>
where
    D: alpm_types::digests::Digest + Clone,
{
    match c {
        SkippableChecksum::Skip => None,
        SkippableChecksum::Checksum { digest } => Some(digest.as_ref().to_vec()),
    }
}

fn flatten(
    what: &str,
    arch: Option<String>,
    list: &[Source],
    sums: &Sums<'_>,
    out: &mut Vec<SourceSpec>,
) -> Result<(), SrcinfoError> {
    let suffix = arch.as_ref().map(|a| format!("_{a}")).unwrap_or_default();
    let want = list.len();
    let check = |name: &str, got: usize| {
        if got != 0 && got != want {
            Err(SrcinfoError::Length {
                what: what.to_string(),
                array: format!("{name}sums{suffix}"),
                got,
                want,
            })
        } else {
            Ok(())
        }
    };
    check("b2", sums.b2.len())?;
    check("md5", sums.md5.len())?;
    check("sha1", sums.sha1.len())?;
    check("sha224", sums.sha224.len())?;
    check("sha256", sums.sha256.len())?;
    check("sha384", sums.sha384.len())?;
    check("sha512", sums.sha512.len())?;
    check("ck", sums.ck.len())?;
    for (i, s) in list.iter().enumerate() {
        let entry = s.to_string();
        let (given, kind, fallback) = match s {
            Source::File { filename, location } => (
                filename.as_ref().map(|f| f.to_string_lossy().into_owned()),
                SourceKind::Local,
                location.to_string_lossy().into_owned(),
            ),
            Source::SourceUrl {
                filename,
                source_url,
            } => {
                let given = filename.as_ref().map(|f| f.to_string_lossy().into_owned());
                let raw = source_url.url.to_string();
                match &source_url.vcs_info {
                    Some(_) => (given, SourceKind::Vcs(entry.clone()), String::new()),
                    None => {
                        let name = url_file_name(&raw).to_string();
                        (
                            given,
                            SourceKind::Remote(source_url.url.clone().into_inner()),
                            name,
                        )
                    }
                }
            }
        };
        let file_name = given.unwrap_or(fallback);
        if !matches!(kind, SourceKind::Vcs(_)) && !plain_name(&file_name) {
            return Err(SrcinfoError::FileName {
                what: what.to_string(),
                entry: printable(&entry),
                name: printable(&file_name),
            });
        }
        let mut found = Vec::new();
        let mut take = |algo: Algo, d: Option<Option<Vec<u8>>>| {
            if let Some(d) = d {
                found.push((algo, d));
            }
        };
        take(Algo::Md5, sums.md5.get(i).map(digest_of));
        take(Algo::Sha1, sums.sha1.get(i).map(digest_of));
        take(Algo::Sha224, sums.sha224.get(i).map(digest_of));
        take(Algo::Sha256, sums.sha256.get(i).map(digest_of));
        take(Algo::Sha384, sums.sha384.get(i).map(digest_of));
        take(Algo::Sha512, sums.sha512.get(i).map(digest_of));
        take(Algo::B2, sums.b2.get(i).map(digest_of));
        out.push(SourceSpec {
            arch: arch.clone(),
            file_name,
            entry,
            kind,
            sums: found,
            has_ck: sums.ck.get(i).copied().unwrap_or(false),
        });
    }
    Ok(())
}

/// Every algorithm asked for, over the same bytes in one pass.
pub struct Hashes {
    md5: Option<Md5>,
    sha1: Option<Sha1>,
    sha224: Option<Sha224>,
    sha256: Option<Sha256>,
    sha384: Option<Sha384>,
    sha512: Option<Sha512>,
    b2: Option<Blake2b512>,
}

impl Hashes {
    /// Hashers for `algos` (SHA-256 always: it names the file in the store).
    pub fn new(algos: &[Algo]) -> Hashes {
        let on = |a: Algo| algos.contains(&a);
        Hashes {
            md5: on(Algo::Md5).then(Md5::new),
            sha1: on(Algo::Sha1).then(Sha1::new),
            sha224: on(Algo::Sha224).then(Sha224::new),
            sha256: Some(Sha256::new()),
            sha384: on(Algo::Sha384).then(Sha384::new),
            sha512: on(Algo::Sha512).then(Sha512::new),
            b2: on(Algo::B2).then(Blake2b512::new),
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        if let Some(h) = &mut self.md5 {
            h.update(data);
        }
        if let Some(h) = &mut self.sha1 {
            h.update(data);
        }
        if let Some(h) = &mut self.sha224 {
            h.update(data);
        }
        if let Some(h) = &mut self.sha256 {
            h.update(data);
        }
        if let Some(h) = &mut self.sha384 {
            h.update(data);
        }
        if let Some(h) = &mut self.sha512 {
            h.update(data);
        }
        if let Some(h) = &mut self.b2 {
            h.update(data);
        }
    }

    /// The digests, in [`Algo::ALL`] order.
    pub fn finish(self) -> Vec<(Algo, Vec<u8>)> {
        let mut out = Vec::new();
        if let Some(h) = self.md5 {
            out.push((Algo::Md5, h.finalize().to_vec()));
        }
        if let Some(h) = self.sha1 {
            out.push((Algo::Sha1, h.finalize().to_vec()));
        }
        if let Some(h) = self.sha224 {
            out.push((Algo::Sha224, h.finalize().to_vec()));
        }
        if let Some(h) = self.sha256 {
            out.push((Algo::Sha256, h.finalize().to_vec()));
        }
        if let Some(h) = self.sha384 {
            out.push((Algo::Sha384, h.finalize().to_vec()));
        }
        if let Some(h) = self.sha512 {
            out.push((Algo::Sha512, h.finalize().to_vec()));
        }
        if let Some(h) = self.b2 {
            out.push((Algo::B2, h.finalize().to_vec()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::testing::hex_of;
    use super::*;

    fn srcinfo(sources: &str) -> String {
        format!(
            "pkgbase = demo\n\tpkgver = 1.0\n\tpkgrel = 1\n\tarch = x86_64\n\tarch = aarch64\n{sources}\npkgname = demo\n"
        )
    }

    #[test]
    fn every_kind_of_source_is_read_with_its_sums() {
        let a = b"the first source\n";
        let b = b"the second source\n";
        let c = b"x86_64 only\n";
        let text = srcinfo(&format!(
            "\tsource = https://example.org/dl/demo-1.0.tar.gz\n\
             \tsource = renamed.txt::https://example.org/get?id=7\n\
             \tsource = git+https://example.org/demo.git#tag=v1\n\
             \tsource = local.patch\n\
             \tsha256sums = {}\n\tsha256sums = SKIP\n\tsha256sums = SKIP\n\tsha256sums = SKIP\n\
             \tb2sums = {}\n\tb2sums = {}\n\tb2sums = SKIP\n\tb2sums = SKIP\n\
             \tsource_x86_64 = https://example.org/x86.bin\n\
             \tsha512sums_x86_64 = {}\n",
            hex_of(Algo::Sha256, a),
            hex_of(Algo::B2, a),
            hex_of(Algo::B2, b),
            hex_of(Algo::Sha512, c),
        ));
        let info = parse(text.as_bytes(), "demo").unwrap();
        assert_eq!(info.pkgbase, "demo");
        assert_eq!(info.version, "1.0-1");
        assert_eq!(info.text, text, "kept verbatim");
        let names: Vec<_> = info.sources.iter().map(|s| s.file_name.as_str()).collect();
        assert_eq!(
            names,
            [
                "demo-1.0.tar.gz",
                "renamed.txt",
                "",
                "local.patch",
                "x86.bin"
            ],
            "{:#?}",
            info.sources
        );
        let policy = HostPolicy::default();
        let s = &info.sources;
        assert_eq!(s[0].algos(), vec![Algo::Sha256, Algo::B2]);
        assert_eq!(s[0].uncached(&policy), None);
        assert_eq!(s[1].algos(), vec![Algo::B2], "SKIP for sha256, b2 given");
        assert!(
            matches!(&s[1].kind, SourceKind::Remote(u) if u.as_str() == "https://example.org/get?id=7")
        );
        assert_eq!(s[2].uncached(&policy), Some(Uncached::Vcs));
        assert_eq!(s[3].uncached(&policy), Some(Uncached::Local));
        assert_eq!(s[4].arch.as_deref(), Some("x86_64"));
        assert_eq!(s[4].algos(), vec![Algo::Sha512]);

        // Bytes that match every sum pass; one byte off fails every sum, each named.
        let mut h = Hashes::new(&s[0].algos());
        h.update(a);
        assert!(s[0].verify(&h.finish()).is_empty());
        let mut h = Hashes::new(&s[0].algos());
        h.update(b"the first sourcE\n");
        let bad = s[0].verify(&h.finish());
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert_eq!(bad[0].algo, Algo::Sha256);
        assert_eq!(bad[0].expected, hex_of(Algo::Sha256, a));
        assert_eq!(bad[0].actual, hex_of(Algo::Sha256, b"the first sourcE\n"));
        assert!(
            bad[1].to_string().starts_with("b2: expected "),
            "{}",
            bad[1]
        );
    }

    #[test]
    fn one_sum_of_two_failing_is_a_failure() {
        let data = b"payload";
        let text = srcinfo(&format!(
            "\tsource = https://example.org/p\n\tsha256sums = {}\n\tb2sums = {}\n",
            hex_of(Algo::Sha256, data),
            hex_of(Algo::B2, b"something else"),
        ));
        let info = parse(text.as_bytes(), "demo").unwrap();
        let mut h = Hashes::new(&info.sources[0].algos());
        h.update(data);
        let bad = info.sources[0].verify(&h.finish());
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].algo, Algo::B2);
        assert_eq!(bad[0].expected, hex_of(Algo::B2, b"something else"));
        assert_eq!(bad[0].actual, hex_of(Algo::B2, data));
    }

    #[test]
    fn digests_agree_with_coreutils() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("data");
        std::fs::write(&f, &data).unwrap();
        for (algo, tool) in [
            (Algo::Md5, "md5sum"),
            (Algo::Sha1, "sha1sum"),
            (Algo::Sha224, "sha224sum"),
            (Algo::Sha256, "sha256sum"),
            (Algo::Sha384, "sha384sum"),
            (Algo::Sha512, "sha512sum"),
            (Algo::B2, "b2sum"),
        ] {
            let out = std::process::Command::new(tool).arg(&f).output().unwrap();
            assert!(out.status.success(), "{tool}");
            let want = String::from_utf8(out.stdout).unwrap();
            let want = want.split_whitespace().next().unwrap().to_string();
            assert_eq!(hex_of(algo, &data), want, "{algo} against {tool}");
            assert_eq!(want.len(), algo.digest_len() * 2);
        }
    }

    #[test]
    fn hostile_srcinfo_is_refused_clearly() {
        // Too large: refused before parsing.
        let big = vec![b'#'; SRCINFO_MAX + 1];
        let e = parse(&big, "big").unwrap_err();
        assert!(matches!(e, SrcinfoError::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains("big"), "{e}");

        // Too many sources.
        let many: String = (0..10_000)
            .map(|i| format!("\tsource = https://example.org/{i}\n\tsha256sums = SKIP\n"))
            .collect();
        let e = parse(srcinfo(&many).as_bytes(), "many").unwrap_err();
        assert!(
            matches!(e, SrcinfoError::TooManySources { n: 10_000, .. }),
            "{e}"
        );

        // A file name that climbs or has a slash.
        for entry in [
            "../evil::https://example.org/x",
            "a/b::https://example.org/x",
        ] {
            let text = srcinfo(&format!("\tsource = {entry}\n\tsha256sums = SKIP\n"));
            let e = parse(text.as_bytes(), "names").unwrap_err();
            assert!(matches!(e, SrcinfoError::FileName { .. }), "{entry}: {e}");
            assert!(e.to_string().contains("names"), "{e}");
        }

        // Not UTF-8, and garbage: parse errors with the name, escaped.
        let e = parse(b"\xff\xfe", "bin\x1b[31m").unwrap_err();
        assert!(e.to_string().contains("not UTF-8"), "{e}");
        assert!(!e.to_string().contains('\x1b'), "escaped: {e:?}");
        let e = parse(b"this is no srcinfo", "junk").unwrap_err();
        assert!(matches!(e, SrcinfoError::Parse { .. }), "{e}");

        // Checksum arrays of the wrong length.
        let text = srcinfo(
            "\tsource = https://example.org/a\n\tsource = https://example.org/b\n\tsha256sums = SKIP\n",
        );
        let e = parse(text.as_bytes(), "len").unwrap_err();
        assert_eq!(e.to_string(), "len: sha256sums has 1 entries for 2 sources");

        // A URL with no file name, and one name for two different sources.
        let text = srcinfo("\tsource = https://example.org/dir/\n\tsha256sums = SKIP\n");
        let e = parse(text.as_bytes(), "dir").unwrap_err();
        assert!(matches!(e, SrcinfoError::FileName { .. }), "{e}");
        let text = srcinfo(
            "\tsource = x::https://example.org/a\n\tsource = x::https://example.org/b\n\tsha256sums = SKIP\n\tsha256sums = SKIP\n",
        );
        let e = parse(text.as_bytes(), "dup").unwrap_err();
        assert_eq!(e.to_string(), "dup: two sources are saved as x");

        // A source checked only by ck is not cached, and says why.
        let text = srcinfo("\tsource = https://example.org/a\n\tcksums = 1234\n");
        let info = parse(text.as_bytes(), "ck").unwrap();
        assert_eq!(
            info.sources[0].uncached(&HostPolicy::default()),
            Some(Uncached::OnlyCk)
        );
    }

    #[test]
    fn only_http_https_ftp_and_allowed_hosts_are_fetched() {
        let text = srcinfo(
            "\tsource = file:///etc/passwd\n\
             \tsource = b::http://169.254.169.254/latest/meta-data\n\
             \tsource = c::http://127.0.0.1:8080/c\n\
             \tsource = d::http://[::1]/d\n\
             \tsource = e::http://localhost/e\n\
             \tsource = f::ftp://ftp.example.org/f\n\
             \tsource = g::http://10.1.2.3/g\n\
             \tsource = h::http://[::ffff:192.168.1.1]/h\n\
             \tsha256sums = 0000000000000000000000000000000000000000000000000000000000000000\n\
             \tsha256sums = 0000000000000000000000000000000000000000000000000000000000000000\n\
             \tsha256sums = 0000000000000000000000000000000000000000000000000000000000000000\n\
             \tsha256sums = 0000000000000000000000000000000000000000000000000000000000000000\n\
             \tsha256sums = 0000000000000000000000000000000000000000000000000000000000000000\n\
             \tsha256sums = 0000000000000000000000000000000000000000000000000000000000000000\n\
             \tsha256sums = 0000000000000000000000000000000000000000000000000000000000000000\n\
             \tsha256sums = 0000000000000000000000000000000000000000000000000000000000000000\n",
        );
        let info = parse(text.as_bytes(), "hosts").unwrap();
        let deny = HostPolicy::default();
        let why: Vec<_> = info.sources.iter().map(|s| s.uncached(&deny)).collect();
        assert_eq!(why[0], Some(Uncached::Scheme("file".into())));
        assert_eq!(why[1], Some(Uncached::Host("169.254.169.254".into())));
        assert_eq!(why[2], Some(Uncached::Host("127.0.0.1".into())));
        assert_eq!(why[3], Some(Uncached::Host("::1".into())));
        assert_eq!(why[4], Some(Uncached::Host("localhost".into())));
        assert_eq!(why[5], Some(Uncached::Scheme("ftp".into())), "not yet");
        assert_eq!(why[6], Some(Uncached::Host("10.1.2.3".into())));
        assert!(matches!(why[7], Some(Uncached::Host(_))), "{:?}", why[7]);
        let allow = HostPolicy {
            allow: vec!["127.0.0.1".parse().unwrap()],
        };
        assert_eq!(info.sources[2].uncached(&allow), None, "allowed explicitly");
        assert!(deny.allows("93.184.216.34".parse().unwrap()));
        assert!(!deny.allows("100.64.0.1".parse().unwrap()), "CGNAT");
        assert!(!deny.allows("fe80::1".parse().unwrap()));
        assert!(!deny.allows("fd00::1".parse().unwrap()));
        assert!(deny.allows("2001:db8::1".parse().unwrap()));
    }
}
