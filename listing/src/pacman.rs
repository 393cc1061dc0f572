//! pacman's database formats as the listing publishes them: one entry's `desc` file, and the
//! `<repo>.db` archive that repo-add writes.
//!
//! The publisher reads upstream's archives ([`Compression::detect`], [`Compression::decoder`])
//! and publishes every entry's `desc` verbatim under `index/<repo>/<arch>/<name>`; a follower
//! rebuilds the unsigned archives from those entries with [`build_db`], the way repo-add lays
//! them out and deterministically, so that every follower serving one snapshot serves the
//! same bytes. Both parse a `desc` with the one strict reader, [`Desc::parse`]: everything in
//! a snapshot's `index/` passed it on the publisher.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, Read, Write};

use cidmirror_schema::Sha256;

/// The largest `desc` file accepted. Real ones are well under 4 KiB (a `%PGPSIG%` of a
/// 16 KiB signature is the largest legitimate field; a package with a thousand
/// `%PROVIDES%` lines stays under 64 KiB).
pub const MAX_DESC_SIZE: u64 = 256 << 10;

/// Memory the xz decoder may use. `xz -9` needs about 65 MiB to decompress; the format allows
/// dictionaries of 1.5 GiB, which a hostile upstream could otherwise make us allocate.
const XZ_MEMLIMIT: u64 = 256 << 20;

/// How a database archive is compressed. `repo-add` picks it from the name it is given
/// (`core.db.tar.zst`); upstreams then publish it as `core.db`, so it is detected from the
/// content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain tar archive.
    None,
    /// gzip (`.tar.gz`).
    Gzip,
    /// Zstandard (`.tar.zst`), what Arch uses today.
    Zstd,
    /// xz (`.tar.xz`).
    Xz,
    /// bzip2 (`.tar.bz2`).
    Bzip2,
}

impl Compression {
    /// Recognises the compression from the first bytes of a file (at least 262 bytes for a
    /// plain tar archive, 1024 for an empty one; a few for the compressed formats). `None` for
    /// anything else, for instance an HTML error page served in place of the database.
    pub fn detect(head: &[u8]) -> Option<Compression> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Self::Gzip)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Self::Zstd)
        } else if head.starts_with(&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]) {
            Some(Self::Xz)
        } else if head.starts_with(b"BZh") {
            Some(Self::Bzip2)
        } else if head.get(257..262) == Some(b"ustar".as_slice()) {
            Some(Self::None)
        } else if head.len() >= 1024 && head[..1024].iter().all(|&b| b == 0) {
            // The end-of-archive marker alone: an empty database as `repo-add` writes it
            // (`bsdtar -cf - -T /dev/null`), which has no header and so no `ustar` magic.
            Some(Self::None)
        } else {
            None
        }
    }

    /// The suffix `repo-add` uses for this compression (`core.db.tar.gz`).
    pub fn archive_suffix(self) -> &'static str {
        match self {
            Self::None => ".tar",
            Self::Gzip => ".tar.gz",
            Self::Zstd => ".tar.zst",
            Self::Xz => ".tar.xz",
            Self::Bzip2 => ".tar.bz2",
        }
    }
    /// A streaming decoder of `bytes` (xz bounded to 256 MiB of decoder memory).
    pub fn decoder(self, bytes: &[u8]) -> io::Result<Box<dyn Read + '_>> {
        self.decoder_of(bytes)
    }

    /// [`Compression::decoder`] of any buffered stream (an archive not held whole).
    pub fn decoder_of<'a, R: io::BufRead + 'a>(self, input: R) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Self::None => Box::new(input),
            Self::Gzip => Box::new(flate2::bufread::GzDecoder::new(input)),
            Self::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(input)?),
            Self::Xz => {
                let stream = liblzma::stream::Stream::new_stream_decoder(XZ_MEMLIMIT, 0)
                    .map_err(io::Error::other)?;
                Box::new(liblzma::bufread::XzDecoder::new_stream(input, stream))
            }
            Self::Bzip2 => Box::new(bzip2::bufread::BzDecoder::new(input)),
        })
    }

    /// The compression repo-add picks from a file name (`compress_as` in makepkg's
    /// `util/compress.sh`); `.db` and `.files` are the names pacman downloads, which repo-add
    /// makes links to the `.tar.gz` archives by default.
    pub fn from_file_name(file_name: &str) -> io::Result<Self> {
        let suffixes = [
            (".tar.gz", Self::Gzip),
            (".db", Self::Gzip),
            (".files", Self::Gzip),
            (".tar.zst", Self::Zstd),
            (".tar.xz", Self::Xz),
            (".tar.bz2", Self::Bzip2),
            (".tar", Self::None),
        ];
        suffixes
            .iter()
            .find(|(suffix, _)| file_name.ends_with(suffix))
            .map(|&(_, c)| c)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{file_name:?}: not a pacman database name (.db, .tar[.gz|.zst|.xz|.bz2])"
                    ),
                )
            })
    }

    /// Compresses a whole tar archive. The levels are those of the command-line tools
    /// repo-add falls back to (`gzip -n` = 6, `zstd` = 3, `xz` = 6, `bzip2` = 9): zstd's 19
    /// would make the archive a few percent smaller at a hundred times the CPU, and a
    /// follower rebuilds its databases on every snapshot.
    pub fn compress(self, tar: Vec<u8>) -> io::Result<Vec<u8>> {
        match self {
            Self::None => Ok(tar),
            Self::Gzip => {
                // No file name and mtime 0 in the header, like `gzip -n`: the same entries
                // must give the same bytes whenever and wherever they are built.
                let mut enc = flate2::GzBuilder::new()
                    .mtime(0)
                    .write(Vec::new(), flate2::Compression::new(6));
                enc.write_all(&tar)?;
                enc.finish()
            }
            Self::Zstd => {
                let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3)?;
                enc.include_checksum(true)?;
                enc.set_pledged_src_size(Some(tar.len() as u64))?;
                enc.include_contentsize(true)?;
                enc.write_all(&tar)?;
                enc.finish()
            }
            Self::Xz => {
                let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 6);
                enc.write_all(&tar)?;
                enc.finish()
            }
            Self::Bzip2 => {
                let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
                enc.write_all(&tar)?;
                enc.finish()
            }
        }
    }
}

/// One entry's `desc` file: `%FIELD%` header lines, each followed by its value lines and a
/// blank line. The raw bytes are kept verbatim because they are published byte for byte;
/// the fields are kept in file order, unknown ones included, for everything that reads them,
/// as spans of the raw bytes: a database of 200,000 entries holds 200,000 of these for a
/// whole sync, and a `String` per value cost five times the file itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Desc {
    /// Valid UTF-8 (checked by [`Desc::parse`]), at most [`MAX_DESC_SIZE`] bytes.
    raw: Vec<u8>,
    fields: Vec<Field>,
}

/// A field being read: its name's span, the line of its header, its values' span so far.
type OpenField = ((u32, u32), usize, Option<(u32, u32)>);

/// Where one field is in [`Desc::raw`]: its name (without `%` signs) and its value lines
/// (from the first value's start to the last one's end, `\n`-separated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Field {
    name: (u32, u32),
    values: (u32, u32),
}

impl fmt::Debug for Desc {
    /// The fields, and the size of the raw bytes rather than the bytes themselves.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Desc")
            .field("raw_len", &self.raw.len())
            .field("fields", &self.fields().collect::<Vec<_>>())
            .finish()
    }
}

impl Desc {
    /// Parses a `desc` file. Accepted as pacman writes it (`\n` line ends, UTF-8) and
    /// tolerating what pacman's reader tolerates: no blank line after the last section, no
    /// final newline, extra blank lines between sections. Refused: anything not UTF-8, NUL
    /// bytes, carriage returns, a value before any header, a header not of the form
    /// `%NAME%`, a field given twice, a field with no values, and a file with no fields.
    /// The error says what is wrong and on which line; the caller adds repo and entry.
    pub fn parse(raw: Vec<u8>) -> std::result::Result<Desc, String> {
        if raw.len() as u64 > MAX_DESC_SIZE {
            return Err(format!(
                "{} bytes, more than the {MAX_DESC_SIZE} allowed for a desc file",
                raw.len()
            ));
        }
        let text = std::str::from_utf8(&raw).map_err(|e| format!("not UTF-8: {e}"))?;
        let line_of = |pos: usize| text[..pos].matches('\n').count() + 1;
        if let Some(pos) = text.find('\0') {
            return Err(format!("NUL byte on line {}", line_of(pos)));
        }
        if let Some(pos) = text.find('\r') {
            return Err(format!(
                "carriage return on line {}: lines must end with \\n only",
                line_of(pos)
            ));
        }

        // Offsets fit in u32: the size is bounded above.
        let at = |s: &str| (s.as_ptr() as usize - text.as_ptr() as usize) as u32;
        let mut fields: Vec<Field> = Vec::new();
        // The open section: its name's span, the line of its header, its values' span.
        let mut open: Option<OpenField> = None;
        let name_of = |(start, len): (u32, u32)| &text[start as usize..(start + len) as usize];
        let close = |fields: &mut Vec<Field>, (name, line, values): OpenField| {
            let Some(values) = values else {
                return Err(format!(
                    "field %{}% on line {line} has no values",
                    name_of(name)
                ));
            };
            fields.push(Field { name, values });
            Ok(())
        };

        for (i, line) in text.split('\n').enumerate() {
            let lineno = i + 1;
            if line.is_empty() {
                if let Some(section) = open.take() {
                    close(&mut fields, section)?;
                }
                continue;
            }
            if let Some((_, _, values)) = &mut open {
                let end = at(line) + line.len() as u32;
                *values = Some(match *values {
                    None => (at(line), end),
                    Some((start, _)) => (start, end),
                });
                continue;
            }
            let Some(name) = header_name(line) else {
                return Err(if fields.is_empty() {
                    format!("line {lineno}: value {line:?} before any %FIELD% header")
                } else {
                    format!("line {lineno}: expected a %FIELD% header, found {line:?}")
                });
            };
            if fields.iter().any(|f| name_of(f.name) == name) {
                return Err(format!("line {lineno}: field %{name}% given twice"));
            }
            open = Some(((at(name), name.len() as u32), lineno, None));
        }
        if let Some(section) = open.take() {
            close(&mut fields, section)?;
        }
        if fields.is_empty() {
            return Err("no fields".into());
        }
        fields.shrink_to_fit();
        Ok(Desc { raw, fields })
    }

    fn text(&self) -> &str {
        // Checked by `parse`, the only constructor; never fails.
        std::str::from_utf8(&self.raw).unwrap_or_default()
    }

    fn span(&self, (start, end): (u32, u32)) -> &str {
        self.text()
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }

    fn name(&self, f: &Field) -> &str {
        self.span((f.name.0, f.name.0 + f.name.1))
    }

    fn values(&self, f: &Field) -> Vec<&str> {
        self.span(f.values).split('\n').collect()
    }

    /// Frees the bytes and fields, once they are stored elsewhere (the publisher keeps an
    /// entry's desc in its spool from the moment the database is read); afterwards the
    /// desc reads as empty.
    pub fn release(&mut self) {
        self.raw = Vec::new();
        self.fields = Vec::new();
    }

    /// The file exactly as read.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The fields in file order: name without `%` signs, and values (at least one each).
    pub fn fields(&self) -> impl Iterator<Item = (&str, Vec<&str>)> {
        self.fields.iter().map(|f| (self.name(f), self.values(f)))
    }

    /// The values of `field`, named without `%` signs (`"DEPENDS"`).
    pub fn get(&self, field: &str) -> Option<Vec<&str>> {
        self.fields
            .iter()
            .find(|f| self.name(f) == field)
            .map(|f| self.values(f))
    }

    /// The first value of `field`, for the fields that have one (`"NAME"`).
    pub fn one(&self, field: &str) -> Option<&str> {
        let f = self.fields.iter().find(|f| self.name(f) == field)?;
        self.span(f.values).split('\n').next()
    }
}

/// What locates an entry and its package file: the fields a follower reads from a `desc`
/// of the listing (the publisher validated all of them before publishing; they are checked
/// again here because they become paths and archive member names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryFields<'a> {
    /// `%NAME%`.
    pub name: &'a str,
    /// `%VERSION%` (`[epoch:]pkgver-pkgrel`).
    pub version: &'a str,
    /// `%FILENAME%`: the package file in the repository directory.
    pub filename: &'a str,
    /// `%CSIZE%`: its size.
    pub csize: u64,
    /// `%SHA256SUM%`: its SHA-256.
    pub sha256: Sha256,
}

impl Desc {
    /// The entry's [`EntryFields`]; the error names the field that is missing or unusable.
    pub fn entry(&self) -> Result<EntryFields<'_>, String> {
        let field = |name: &str| {
            self.one(name)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("desc has no %{name}%"))
        };
        let (name, version, filename) = (field("NAME")?, field("VERSION")?, field("FILENAME")?);
        for (f, value) in [("NAME", name), ("VERSION", version), ("FILENAME", filename)] {
            if value.contains('/') || value == "." || value == ".." {
                return Err(format!("%{f}% {value:?} is not a valid path component"));
            }
        }
        let csize = field("CSIZE")?;
        let csize = decimal_size(csize)
            .ok_or_else(|| format!("%CSIZE% {csize:?} is not a size in bytes"))?;
        let sha256 = field("SHA256SUM")?
            .parse()
            .map_err(|e| format!("%SHA256SUM%: {e}"))?;
        Ok(EntryFields {
            name,
            version,
            filename,
            csize,
            sha256,
        })
    }
}

/// A `%CSIZE%`-style size: decimal digits only (no sign, no space, no unit), fitting u64.
pub fn decimal_size(text: &str) -> Option<u64> {
    text.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| text.parse::<u64>().ok())
        .flatten()
}

/// `NAME` if `line` is a `%NAME%` header (ASCII letters, digits and `_`).
fn header_name(line: &str) -> Option<&str> {
    let name = line.strip_prefix('%')?.strip_suffix('%')?;
    (!name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .then_some(name)
}

/// A tar header as repo-add's `bsdtar -cf` run as root leaves it, minus the clock: ustar,
/// owner root:root (0:0), mtime 0 so that the archive depends on the entries alone.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> io::Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_username("root")?;
    h.set_groupname("root")?;
    Ok(h)
}

/// The database archive pacman downloads as `<repo>.db`: a tar with one
/// `<name>-<version>/` directory (mode 0755) holding `desc` (mode 0644) per package, in
/// order of directory name (bytewise, as repo-add's glob in the C locale and
/// bench/gen_repo.py sort them), compressed as `file_name` says (`.tar.gz`, `.db` and
/// `.files`: gzip; `.tar.zst`: zstd; `.tar.xz`: xz; `.tar.bz2`: bzip2; `.tar`: none).
/// Deterministic: the same entries, in any order, give the same bytes, and the same bytes
/// as a [`DbArchive`] kept across snapshots gives for them.
///
/// Two entries for one package name are refused (`InvalidInput`), and so is an entry
/// without a usable name and version: pacman would keep one of two at random, so they can
/// only come from a bug in the caller's index.
pub fn build_db(entries: &[&Desc], file_name: &str) -> io::Result<Vec<u8>> {
    let mut db = DbArchive::new(file_name)?;
    let mut keys = Vec::with_capacity(entries.len());
    for (i, desc) in entries.iter().enumerate() {
        db.add(i, desc)?;
        keys.push(i);
    }
    db.build(&keys)
}

/// One package's members of the archive (`<dir>/` and `<dir>/desc`), kept ready to
/// concatenate: compressed on their own for gzip and zstd, as tar bytes for the others.
#[derive(Debug, Clone)]
struct Segment {
    /// `<name>-<version>`: the archive's order.
    dir: String,
    /// `%NAME%`, for the check that no name comes twice.
    name: String,
    /// The bytes that go into the archive.
    data: Vec<u8>,
    /// CRC-32 and length of the tar bytes (gzip's trailer covers them all).
    crc: u32,
    len: u64,
}

/// A database archive kept between snapshots, so that a follower rebuilds `<repo>.db`
/// for the packages that changed, not for the whole repository: every package's members
/// are compressed on their own and kept under a key of the caller's (the `desc`'s CID);
/// [`DbArchive::build`] concatenates the segments of the packages asked for, in archive
/// order.
///
/// The formats allow this: a deflate stream is a sequence of blocks, and a segment that
/// ends with a sync flush (an empty stored block) is byte-aligned and depends on no other
/// (each has a compressor of its own), so the segments, one final empty block and a gzip
/// header and trailer (the CRC-32s combined) are one valid gzip member; zstd decoders read
/// concatenated frames as one stream. Compressing ~2 KiB at a time costs some ratio (the
/// archive is larger than repo-add's, measured in bench/refresh.sh) and the follower
/// serves it over loopback or a LAN. xz, bzip2 and plain tar are rare names: their
/// segments are kept as tar bytes and the whole archive is compressed at build time.
#[derive(Debug)]
pub struct DbArchive<K> {
    compression: Compression,
    segments: std::collections::HashMap<K, Segment>,
}

/// Compression level of segments: what `gzip` and `zstd` use by default.
const GZIP_LEVEL: u32 = 6;
const ZSTD_LEVEL: i32 = 3;

impl<K: std::hash::Hash + Eq + Clone> DbArchive<K> {
    /// An empty archive for the database named `file_name` (its compression comes from the
    /// name, as for [`build_db`]).
    pub fn new(file_name: &str) -> io::Result<Self> {
        Ok(DbArchive {
            compression: Compression::from_file_name(file_name)?,
            segments: std::collections::HashMap::new(),
        })
    }

    /// The compression of the archive it builds.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Whether the segment of `key` is held.
    pub fn contains(&self, key: &K) -> bool {
        self.segments.contains_key(key)
    }

    /// Number of segments held.
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    /// Whether no segment is held.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Makes and keeps the segment of one package under `key`.
    pub fn add(&mut self, key: K, desc: &Desc) -> io::Result<()> {
        let invalid = |detail: String| io::Error::new(io::ErrorKind::InvalidInput, detail);
        let e = desc.entry().map_err(invalid)?;
        let dir = format!("{}-{}", e.name, e.version);
        let mut tar = tar::Builder::new(Vec::with_capacity(desc.raw().len() + 1536));
        let mut h = header(tar::EntryType::Directory, 0o755, 0)?;
        tar.append_data(&mut h, format!("{dir}/"), io::empty())?;
        let mut h = header(tar::EntryType::Regular, 0o644, desc.raw().len() as u64)?;
        tar.append_data(&mut h, format!("{dir}/desc"), desc.raw())?;
        let mut bytes = tar.into_inner()?;
        // `into_inner` ends the archive: two zero blocks, which go once at the very end.
        bytes.truncate(bytes.len() - 1024);
        let segment = self.segment(dir, e.name.to_string(), bytes)?;
        self.segments.insert(key, segment);
        Ok(())
    }

    fn segment(&self, dir: String, name: String, tar: Vec<u8>) -> io::Result<Segment> {
        let mut crc = crc32fast::Hasher::new();
        crc.update(&tar);
        let (crc, len) = (crc.finalize(), tar.len() as u64);
        let data = match self.compression {
            Compression::Gzip => deflate_segment(&tar)?,
            Compression::Zstd => zstd_frame(&tar)?,
            Compression::None | Compression::Xz | Compression::Bzip2 => tar,
        };
        Ok(Segment {
            dir,
            name,
            data,
            crc,
            len,
        })
    }

    /// The archive of the packages `keys` (each added before), in archive order; every
    /// other segment is dropped. Two packages with one name are refused (`InvalidInput`).
    pub fn build(&mut self, keys: &[K]) -> io::Result<Vec<u8>> {
        let wanted: std::collections::HashSet<&K> = keys.iter().collect();
        self.segments.retain(|k, _| wanted.contains(k));
        let mut parts: Vec<&Segment> = Vec::with_capacity(keys.len());
        for k in keys {
            let s = self.segments.get(k).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    "a package whose segment was not added",
                )
            })?;
            parts.push(s);
        }
        parts.sort_unstable_by(|a, b| a.dir.cmp(&b.dir));
        parts.dedup_by(|a, b| std::ptr::eq(*a, *b));
        let mut names = HashSet::with_capacity(parts.len());
        for p in &parts {
            if !names.insert(p.name.as_str()) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("two entries for package {:?}", p.name),
                ));
            }
        }
        let end = self.segment(String::new(), String::new(), vec![0u8; 1024])?;
        let total: usize = parts.iter().map(|p| p.data.len()).sum::<usize>() + end.data.len();
        let mut out = Vec::with_capacity(total + 32);
        match self.compression {
            Compression::Gzip => {
                // RFC 1952: deflate, no flags, mtime 0 (as `gzip -n`), no extra flags, Unix.
                out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
                let mut crc = crc32fast::Hasher::new();
                for p in parts.iter().copied().chain(std::iter::once(&end)) {
                    out.extend_from_slice(&p.data);
                    crc.combine(&crc32fast::Hasher::new_with_initial_len(p.crc, p.len));
                }
                // The final block: fixed Huffman, empty (BFINAL=1, BTYPE=01, end of block).
                out.extend_from_slice(&[0x03, 0x00]);
                let len: u64 = parts.iter().map(|p| p.len).sum::<u64>() + end.len;
                out.extend_from_slice(&crc.finalize().to_le_bytes());
                out.extend_from_slice(&(len as u32).to_le_bytes());
            }
            Compression::Zstd => {
                for p in parts.iter().copied().chain(std::iter::once(&end)) {
                    out.extend_from_slice(&p.data);
                }
            }
            Compression::None | Compression::Xz | Compression::Bzip2 => {
                for p in parts.iter().copied().chain(std::iter::once(&end)) {
                    out.extend_from_slice(&p.data);
                }
                out = self.compression.compress(out)?;
            }
        }
        Ok(out)
    }
}

/// Raw deflate of `data` by a compressor of its own, ending with a sync flush: byte-aligned,
/// not final, so that segments concatenate into one deflate stream.
fn deflate_segment(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut c = flate2::Compress::new(flate2::Compression::new(GZIP_LEVEL), false);
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    loop {
        let consumed = c.total_in() as usize;
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(1024));
        }
        let status = c
            .compress_vec(&data[consumed..], &mut out, flate2::FlushCompress::Sync)
            .map_err(io::Error::other)?;
        // Done when every byte went in and the flush fit in the space there was.
        if c.total_in() as usize == data.len()
            && out.len() < out.capacity()
            && status == flate2::Status::Ok
        {
            return Ok(out);
        }
    }
}

/// One zstd frame of `data` with its content size and checksum.
fn zstd_frame(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut enc =
        zstd::stream::write::Encoder::new(Vec::with_capacity(data.len() / 2 + 64), ZSTD_LEVEL)?;
    enc.include_checksum(true)?;
    enc.set_pledged_src_size(Some(data.len() as u64))?;
    enc.include_contentsize(true)?;
    enc.write_all(data)?;
    enc.finish()
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::process::Command;

    use super::*;

    fn refs(v: &[Desc]) -> Vec<&Desc> {
        v.iter().collect()
    }

    /// A desc laid out as repo-add (and bench/gen_repo.py) writes it.
    fn desc_text(name: &str, version: &str) -> String {
        format!(
            "%FILENAME%\n{name}-{version}-x86_64.pkg.tar.zst\n\n\
             %NAME%\n{name}\n\n\
             %BASE%\n{name}\n\n\
             %VERSION%\n{version}\n\n\
             %DESC%\nSmall simple library for the protocol\n\n\
             %GROUPS%\nqt6\n\n\
             %CSIZE%\n20480\n\n\
             %ISIZE%\n61440\n\n\
             %MD5SUM%\n0123456789abcdef0123456789abcdef\n\n\
             %SHA256SUM%\nE3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855\n\n\
             %PGPSIG%\niQIzBAABCAAdFiEE\n\n\
             %URL%\nhttps://gnokra.org/{name}\n\n\
             %LICENSE%\nMIT\nGPL-3.0-or-later\n\n\
             %ARCH%\nx86_64\n\n\
             %BUILDDATE%\n1697408000\n\n\
             %PACKAGER%\nAlice Maintainer <alice@archlinux.org>\n\n\
             %DEPENDS%\nglibc\nzlib>=1.2\n\n\
             %OPTDEPENDS%\npython: command line bindings\n\n\
             %MAKEDEPENDS%\ncmake\nninja\n\n"
        )
    }

    #[test]
    fn an_archive_kept_across_snapshots_equals_one_built_afresh() {
        let names = ["zlib", "acl", "gtk3", "bash", "a", "python-zen"];
        let all: Vec<Desc> = names.iter().map(|n| entry(n, "1.0-1")).collect();
        let v2: Vec<Desc> = names.iter().map(|n| entry(n, "2.0-1")).collect();
        for name in NAMES {
            let mut kept: DbArchive<String> = DbArchive::new(name).unwrap();
            // Snapshot 1: everything; snapshot 2: two upgraded, one gone, one new.
            for (i, d) in all.iter().enumerate().take(5) {
                kept.add(format!("1/{i}"), d).unwrap();
            }
            let keys1: Vec<String> = (0..5).map(|i| format!("1/{i}")).collect();
            let first = kept.build(&keys1).unwrap();
            assert_eq!(
                first,
                build_db(&all[..5].iter().collect::<Vec<_>>(), name).unwrap()
            );
            kept.add("2/0".into(), &v2[0]).unwrap();
            kept.add("2/3".into(), &v2[3]).unwrap();
            kept.add("1/5".into(), &all[5]).unwrap();
            let keys2: Vec<String> = ["2/0", "1/1", "1/2", "2/3", "1/5"]
                .map(String::from)
                .to_vec();
            let second = kept.build(&keys2).unwrap();
            let fresh = [&v2[0], &all[1], &all[2], &v2[3], &all[5]];
            assert_eq!(second, build_db(&fresh, name).unwrap(), "{name}");
            assert_eq!(kept.len(), 5, "segments of packages gone are dropped");
            let got = members(&decompress(name, &second));
            assert_eq!(got.len(), 10, "{name}");
            assert_eq!(got[0].0, "acl-1.0-1/");
            kept.build(&[]).unwrap();
            assert!(kept.is_empty(), "{name}");
        }
    }

    fn entry(name: &str, version: &str) -> Desc {
        Desc::parse(desc_text(name, version).into_bytes()).unwrap()
    }

    #[test]
    fn entry_fields_of_a_repo_add_desc() {
        let d = entry("libgnokra", "1:2.3.4-1");
        let e = d.entry().unwrap();
        assert_eq!(
            (e.name, e.version, e.filename, e.csize),
            (
                "libgnokra",
                "1:2.3.4-1",
                "libgnokra-1:2.3.4-1-x86_64.pkg.tar.zst",
                20480
            )
        );
        assert_eq!(
            e.sha256.to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn unusable_entry_fields_are_refused_naming_the_field() {
        let ok = desc_text("foo", "1-1");
        let cases: &[(String, &str)] = &[
            (ok.replace("%NAME%\nfoo\n\n", ""), "%NAME%"),
            (ok.replace("%VERSION%\n1-1\n\n", ""), "%VERSION%"),
            (ok.replace("%FILENAME%\n", "%FILENAMES%\n"), "%FILENAME%"),
            (ok.replace("%CSIZE%\n20480", "%CSIZE%\n20k"), "%CSIZE%"),
            (
                ok.replace("%SHA256SUM%\nE3B0", "%SHA256SUM%\nB0"),
                "%SHA256SUM%",
            ),
            (ok.replace("%NAME%\nfoo", "%NAME%\n../foo"), "%NAME%"),
            (
                ok.replace("%FILENAME%\nfoo-1-1-x86_64.pkg.tar.zst", "%FILENAME%\n.."),
                "%FILENAME%",
            ),
        ];
        for (text, field) in cases {
            let d = Desc::parse(text.clone().into_bytes()).unwrap();
            let err = d.entry().unwrap_err();
            assert!(err.contains(field), "{field}: got {err:?}");
        }
    }

    /// Every (path, type, mode, bytes) in a plain tar, checking the fixed header fields.
    fn members(tar_bytes: &[u8]) -> Vec<(String, tar::EntryType, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut ar = tar::Archive::new(tar_bytes);
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let h = e.header().clone();
            assert_eq!(h.mtime().unwrap(), 0);
            assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
            assert_eq!(h.username().unwrap(), Some("root"));
            let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.push((path, h.entry_type(), h.mode().unwrap(), data));
        }
        out
    }

    fn decompress(name: &str, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match name.rsplit('.').next().unwrap() {
            "gz" | "db" => {
                assert_eq!(&bytes[..2], &[0x1f, 0x8b]);
                // mtime 0 and no FNAME flag, as `gzip -n` writes.
                assert_eq!(&bytes[4..8], &[0, 0, 0, 0]);
                assert_eq!(bytes[3] & 0x08, 0);
                flate2::read::GzDecoder::new(bytes)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            "zst" => {
                zstd::stream::read::Decoder::new(bytes)
                    .unwrap()
                    .read_to_end(&mut out)
                    .unwrap();
            }
            "xz" => {
                liblzma::read::XzDecoder::new(bytes)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            "bz2" => {
                bzip2::read::BzDecoder::new(bytes)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            "tar" => out = bytes.to_vec(),
            other => panic!("unexpected suffix {other}"),
        }
        out
    }

    const NAMES: [&str; 6] = [
        "extra.db",
        "extra.db.tar.gz",
        "extra.db.tar.zst",
        "extra.db.tar.xz",
        "extra.db.tar.bz2",
        "extra.db.tar",
    ];

    #[test]
    fn build_is_deterministic_and_order_independent() {
        let entries = vec![
            entry("zlib", "1.3-1"),
            entry("acl", "2.3-2"),
            entry("gtk3", "1:3.24-1"),
        ];
        let mut reversed = entries.clone();
        reversed.reverse();
        for name in NAMES {
            let a = build_db(&refs(&entries), name).unwrap();
            let b = build_db(&refs(&entries), name).unwrap();
            let c = build_db(&refs(&reversed), name).unwrap();
            assert_eq!(a, b, "{name}");
            assert_eq!(a, c, "{name}");
        }
    }

    #[test]
    fn archive_holds_one_desc_per_package_in_name_order() {
        // Sorted by directory name, bytewise, as repo-add's C-locale glob sorts them.
        let entries = vec![
            entry("foo", "2.0-1"),
            entry("foo-bar", "1.0-3"),
            entry("a", "0.1-1"),
            entry("python-zen", "3.1-1"),
        ];
        let mut expected = [
            ("a-0.1-1", entries[2].raw()),
            ("foo-2.0-1", entries[0].raw()),
            ("foo-bar-1.0-3", entries[1].raw()),
            ("python-zen-3.1-1", entries[3].raw()),
        ];
        expected.sort_by_key(|(dir, _)| *dir);
        for name in NAMES {
            let archive = build_db(&refs(&entries), name).unwrap();
            let got = members(&decompress(name, &archive));
            assert_eq!(got.len(), 2 * expected.len(), "{name}");
            for ((dir, desc), pair) in expected.iter().zip(got.chunks(2)) {
                assert_eq!(pair[0].0, format!("{dir}/"));
                assert_eq!(pair[0].1, tar::EntryType::Directory);
                assert_eq!(pair[0].2, 0o755);
                assert!(pair[0].3.is_empty());
                assert_eq!(pair[1].0, format!("{dir}/desc"));
                assert_eq!(pair[1].1, tar::EntryType::Regular);
                assert_eq!(pair[1].2, 0o644);
                assert_eq!(&pair[1].3[..], *desc, "{name}: {dir}/desc");
            }
        }
    }

    #[test]
    fn empty_database_and_bad_input() {
        for name in NAMES {
            let archive = build_db(&[], name).unwrap();
            assert!(members(&decompress(name, &archive)).is_empty(), "{name}");
        }
        let err = build_db(&[&entry("a", "1-1")], "extra.db.zip").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let err = build_db(&[&entry("a", "1-1"), &entry("a", "2-1")], "extra.db").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn bsdtar_lists_the_archive() {
        if Command::new("bsdtar").arg("--version").output().is_err() {
            println!("bsdtar is not on PATH: skipping the check against libarchive");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let entries = vec![entry("zlib", "1.3-1"), entry("acl", "2.3-2")];
        for name in NAMES {
            let path = dir.path().join(name);
            std::fs::write(&path, build_db(&refs(&entries), name).unwrap()).unwrap();
            let out = Command::new("bsdtar")
                .arg("-tf")
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                String::from_utf8(out.stdout).unwrap(),
                "acl-2.3-2/\nacl-2.3-2/desc\nzlib-1.3-1/\nzlib-1.3-1/desc\n",
                "{name}"
            );
            let out = Command::new("bsdtar")
                .arg("-xOf")
                .arg(&path)
                .arg("zlib-1.3-1/desc")
                .output()
                .unwrap();
            assert_eq!(out.stdout, entries[0].raw(), "{name}");
        }
    }
}
