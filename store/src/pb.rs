//! dag-pb and UnixFS protobuf encoding, byte for byte as Kubo (go-codec-dagpb, boxo) writes it.
//!
//! Written by hand on purpose: a generic protobuf encoder (prost) writes fields in number
//! order (Data before Links), omits empty names and zero sizes, and may pack repeated
//! integers; Kubo does none of that, and any difference changes the CID. The decoder is
//! strict about bounds (it reads untrusted blocks) but accepts both packed and unpacked
//! `blocksizes` and skips unknown fields, as Go does.

use cid::Cid;

/// UnixFS `Data.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// Raw (0): trickle-layout leaves.
    Raw,
    /// Directory (1).
    Directory,
    /// File (2).
    File,
    /// Metadata (3), unused.
    Metadata,
    /// Symlink (4): Data is the target.
    Symlink,
    /// HAMT shard (5).
    HamtShard,
}

impl DataType {
    fn code(self) -> u64 {
        match self {
            DataType::Raw => 0,
            DataType::Directory => 1,
            DataType::File => 2,
            DataType::Metadata => 3,
            DataType::Symlink => 4,
            DataType::HamtShard => 5,
        }
    }

    fn from_code(c: u64) -> Option<Self> {
        Some(match c {
            0 => DataType::Raw,
            1 => DataType::Directory,
            2 => DataType::File,
            3 => DataType::Metadata,
            4 => DataType::Symlink,
            5 => DataType::HamtShard,
            _ => return None,
        })
    }
}

/// UnixFS modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mtime {
    /// Seconds since the epoch.
    pub seconds: i64,
    /// Nanoseconds (1..=999999999), if any.
    pub nanos: Option<u32>,
}

/// The UnixFS `Data` message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Unixfs<'a> {
    /// Node type (written always).
    pub typ: Option<DataType>,
    /// File bytes, symlink target or HAMT bitfield.
    pub data: Option<&'a [u8]>,
    /// Total file size below this node.
    pub filesize: Option<u64>,
    /// Data size of each child, in link order.
    pub blocksizes: Vec<u64>,
    /// HAMT hash function (0x22 = murmur3-x64-64).
    pub hash_type: Option<u64>,
    /// HAMT fanout.
    pub fanout: Option<u64>,
    /// POSIX mode bits.
    pub mode: Option<u32>,
    /// Modification time.
    pub mtime: Option<Mtime>,
}

/// One dag-pb link as encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Target.
    pub cid: Cid,
    /// Name (empty for file chunks).
    pub name: Vec<u8>,
    /// Cumulative size of the target DAG.
    pub tsize: u64,
}

/// A decoded dag-pb node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node<'a> {
    /// Links in encoded order.
    pub links: Vec<Link>,
    /// The Data field, if present.
    pub data: Option<&'a [u8]>,
}

// ---------------------------------------------------------------------------------------
// Encoding

const WIRE_VARINT: u64 = 0;
const WIRE_I64: u64 = 1;
const WIRE_LEN: u64 = 2;
const WIRE_I32: u64 = 5;

/// Appends `v` as a protobuf varint.
pub fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Encoded length of a varint.
pub fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

fn put_key(buf: &mut Vec<u8>, field: u64, wire: u64) {
    put_varint(buf, (field << 3) | wire);
}

fn put_bytes(buf: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_key(buf, field, WIRE_LEN);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

fn put_uint(buf: &mut Vec<u8>, field: u64, v: u64) {
    put_key(buf, field, WIRE_VARINT);
    put_varint(buf, v);
}

impl Unixfs<'_> {
    /// The message bytes, fields in number order.
    pub fn encode(&self) -> Vec<u8> {
        let mut b =
            Vec::with_capacity(16 + self.data.map_or(0, <[u8]>::len) + 4 * self.blocksizes.len());
        if let Some(t) = self.typ {
            put_uint(&mut b, 1, t.code());
        }
        if let Some(d) = self.data {
            put_bytes(&mut b, 2, d);
        }
        if let Some(s) = self.filesize {
            put_uint(&mut b, 3, s);
        }
        for &s in &self.blocksizes {
            // repeated, NOT packed: one key per value, as Go's proto2 writes it.
            put_uint(&mut b, 4, s);
        }
        if let Some(h) = self.hash_type {
            put_uint(&mut b, 5, h);
        }
        if let Some(f) = self.fanout {
            put_uint(&mut b, 6, f);
        }
        if let Some(m) = self.mode {
            put_uint(&mut b, 7, u64::from(m));
        }
        if let Some(t) = self.mtime {
            let mut inner = Vec::new();
            // int64 Seconds = 1 (varint, two's complement for negatives); fixed32 nanos = 2.
            put_uint(&mut inner, 1, t.seconds as u64);
            if let Some(n) = t.nanos {
                put_key(&mut inner, 2, WIRE_I32);
                inner.extend_from_slice(&n.to_le_bytes());
            }
            put_bytes(&mut b, 8, &inner);
        }
        b
    }
}

/// Appends one encoded link (`PBNode.Links`, field 2). Name and Tsize are always written.
pub fn put_link(buf: &mut Vec<u8>, cid: &Cid, name: &[u8], tsize: u64) {
    let cid_len = cid.encoded_len();
    let inner = 1
        + varint_len(cid_len as u64)
        + cid_len
        + 1
        + varint_len(name.len() as u64)
        + name.len()
        + 1
        + varint_len(tsize);
    put_key(buf, 2, WIRE_LEN);
    put_varint(buf, inner as u64);
    put_key(buf, 1, WIRE_LEN);
    put_varint(buf, cid_len as u64);
    // Writing into a Vec cannot fail.
    let _ = cid.write_bytes(&mut *buf);
    put_bytes(buf, 2, name);
    put_uint(buf, 3, tsize);
}

/// Encoded size of one link, without encoding it (for the HAMT "block" estimate).
pub fn link_len(cid_len: usize, name_len: usize, tsize: u64) -> usize {
    let inner = 1
        + varint_len(cid_len as u64)
        + cid_len
        + 1
        + varint_len(name_len as u64)
        + name_len
        + 1
        + varint_len(tsize);
    1 + varint_len(inner as u64) + inner
}

/// Appends the Data field (`PBNode.Data`, field 1), which Go writes after all links.
pub fn put_data(buf: &mut Vec<u8>, data: &[u8]) {
    put_bytes(buf, 1, data);
}

/// The prefix and suffix that wrap a chunk into a dag-pb UnixFS leaf of type `typ`:
/// `block = prefix || chunk || suffix`. Lets the importer hash a leaf without copying it.
pub fn leaf_frame(typ: DataType, len: usize) -> (Vec<u8>, Vec<u8>) {
    let len64 = len as u64;
    let mut unixfs_head = Vec::with_capacity(16);
    put_uint(&mut unixfs_head, 1, typ.code());
    if len > 0 {
        put_key(&mut unixfs_head, 2, WIRE_LEN);
        put_varint(&mut unixfs_head, len64);
    }
    let mut suffix = Vec::with_capacity(11);
    put_uint(&mut suffix, 3, len64);
    let unixfs_len = unixfs_head.len() + len + suffix.len();
    let mut prefix = Vec::with_capacity(24);
    put_key(&mut prefix, 1, WIRE_LEN);
    put_varint(&mut prefix, unixfs_len as u64);
    prefix.extend_from_slice(&unixfs_head);
    (prefix, suffix)
}

/// The whole dag-pb UnixFS File leaf block for `chunk`.
pub fn file_leaf_block(chunk: &[u8]) -> Vec<u8> {
    let (prefix, suffix) = leaf_frame(DataType::File, chunk.len());
    let mut b = Vec::with_capacity(prefix.len() + chunk.len() + suffix.len());
    b.extend_from_slice(&prefix);
    b.extend_from_slice(chunk);
    b.extend_from_slice(&suffix);
    b
}

// ---------------------------------------------------------------------------------------
// Decoding

/// A decoding failure: what and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn err(&self, what: &str) -> DecodeError {
        DecodeError(format!("{what} at byte {}", self.pos))
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.err("truncated varint"));
            };
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(self.err("varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("varint too long"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| self.err("length too large"))?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| self.err("length past end of block"))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn skip(&mut self, wire: u64) -> Result<(), DecodeError> {
        match wire {
            WIRE_VARINT => {
                self.varint()?;
            }
            WIRE_I64 => self.advance(8)?,
            WIRE_LEN => {
                self.bytes()?;
            }
            WIRE_I32 => self.advance(4)?,
            _ => return Err(self.err(&format!("unsupported wire type {wire}"))),
        }
        Ok(())
    }

    fn advance(&mut self, n: usize) -> Result<(), DecodeError> {
        if self.buf.len() - self.pos < n {
            return Err(self.err("truncated field"));
        }
        self.pos += n;
        Ok(())
    }

    fn key(&mut self) -> Result<(u64, u64), DecodeError> {
        let k = self.varint()?;
        Ok((k >> 3, k & 7))
    }
}

/// Decodes a dag-pb node.
pub fn decode_node(block: &[u8]) -> Result<Node<'_>, DecodeError> {
    let mut r = Reader::new(block);
    let mut node = Node::default();
    while !r.done() {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (1, WIRE_LEN) => node.data = Some(r.bytes()?),
            (2, WIRE_LEN) => node.links.push(decode_link(r.bytes()?)?),
            _ => return Err(r.err(&format!("unexpected field {field} wire {wire} in PBNode"))),
        }
    }
    Ok(node)
}

fn decode_link(buf: &[u8]) -> Result<Link, DecodeError> {
    let mut r = Reader::new(buf);
    let mut cid = None;
    let mut name = Vec::new();
    let mut tsize = 0;
    while !r.done() {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (1, WIRE_LEN) => {
                let b = r.bytes()?;
                cid = Some(Cid::try_from(b).map_err(|e| DecodeError(format!("link CID: {e}")))?);
            }
            (2, WIRE_LEN) => name = r.bytes()?.to_vec(),
            (3, WIRE_VARINT) => tsize = r.varint()?,
            _ => return Err(r.err(&format!("unexpected field {field} wire {wire} in PBLink"))),
        }
    }
    let cid = cid.ok_or_else(|| DecodeError("link without a CID".into()))?;
    Ok(Link { cid, name, tsize })
}

/// Decodes UnixFS `Data`.
pub fn decode_unixfs(buf: &[u8]) -> Result<Unixfs<'_>, DecodeError> {
    let mut r = Reader::new(buf);
    let mut u = Unixfs::default();
    while !r.done() {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (1, WIRE_VARINT) => {
                let c = r.varint()?;
                u.typ = Some(
                    DataType::from_code(c)
                        .ok_or_else(|| DecodeError(format!("unknown UnixFS type {c}")))?,
                );
            }
            (2, WIRE_LEN) => u.data = Some(r.bytes()?),
            (3, WIRE_VARINT) => u.filesize = Some(r.varint()?),
            (4, WIRE_VARINT) => u.blocksizes.push(r.varint()?),
            (4, WIRE_LEN) => {
                let mut p = Reader::new(r.bytes()?);
                while !p.done() {
                    u.blocksizes.push(p.varint()?);
                }
            }
            (5, WIRE_VARINT) => u.hash_type = Some(r.varint()?),
            (6, WIRE_VARINT) => u.fanout = Some(r.varint()?),
            (7, WIRE_VARINT) => {
                u.mode = Some(u32::try_from(r.varint()? & 0xffff_ffff).unwrap_or(0));
            }
            (8, WIRE_LEN) => {
                let mut m = Reader::new(r.bytes()?);
                let mut t = Mtime {
                    seconds: 0,
                    nanos: None,
                };
                while !m.done() {
                    match m.key()? {
                        (1, WIRE_VARINT) => t.seconds = m.varint()? as i64,
                        (2, WIRE_I32) => {
                            let s = m.pos;
                            m.advance(4)?;
                            let mut a = [0u8; 4];
                            a.copy_from_slice(&m.buf[s..s + 4]);
                            t.nanos = Some(u32::from_le_bytes(a));
                        }
                        (_, w) => m.skip(w)?,
                    }
                }
                u.mtime = Some(t);
            }
            (_, w) => r.skip(w)?,
        }
    }
    if u.typ.is_none() {
        return Err(DecodeError("UnixFS data without a Type".into()));
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths() {
        for (v, n) in [
            (0u64, 1),
            (1, 1),
            (127, 1),
            (128, 2),
            (16383, 2),
            (16384, 3),
            (u64::MAX, 10),
        ] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), n, "{v}");
            assert_eq!(varint_len(v), n, "{v}");
        }
    }

    #[test]
    fn hello_world_leaf_matches_unixfs_md() {
        // UNIXFS.md: `hello world` encodes as 0a11 0802 120b68656c6c6f20776f726c64 180b
        let b = file_leaf_block(b"hello world");
        assert_eq!(hex::encode(&b), "0a110802120b68656c6c6f20776f726c64180b");
        let n = decode_node(&b).unwrap();
        let u = decode_unixfs(n.data.unwrap()).unwrap();
        assert_eq!(u.typ, Some(DataType::File));
        assert_eq!(u.data, Some(&b"hello world"[..]));
        assert_eq!(u.filesize, Some(11));
    }

    #[test]
    fn empty_leaf_omits_data() {
        let b = file_leaf_block(b"");
        assert_eq!(hex::encode(&b), "0a0408021800");
    }

    #[test]
    fn link_len_matches_encoding() {
        let cid = crate::hash::raw_cid(crate::hash::HashAlg::Sha2_256, b"x");
        for (name, tsize) in [("", 0u64), ("a", 1), (&"n".repeat(200) as &str, 1 << 40)] {
            let mut b = Vec::new();
            put_link(&mut b, &cid, name.as_bytes(), tsize);
            assert_eq!(b.len(), link_len(cid.to_bytes().len(), name.len(), tsize));
        }
    }

    #[test]
    fn decoder_rejects_garbage_without_panicking() {
        for bad in [
            &[0x12u8, 0xff][..],
            &[0x0a, 0x05, 0x01],
            &[0xff; 12],
            &[0x12, 0x02, 0x0a, 0x01],
        ] {
            assert!(decode_node(bad).is_err(), "{bad:?}");
        }
        assert!(decode_unixfs(&[0x10, 0x01]).is_err(), "no type");
        assert!(decode_unixfs(&[0x08, 0x09]).is_err(), "unknown type");
    }

    #[test]
    fn packed_blocksizes_are_accepted() {
        let u = decode_unixfs(&[0x08, 0x02, 0x22, 0x02, 0x05, 0x06]).unwrap();
        assert_eq!(u.blocksizes, vec![5, 6]);
    }
}
