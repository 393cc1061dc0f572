//! CAR v1: the transport format for DAGs (`ipfs dag import/export`, `?format=car`).
//!
//! `varint(len) || dag-cbor {"roots": [cid...], "version": 1}`, then per block
//! `varint(len(cid) + len(data)) || cid || data`. The header goes through
//! `serde_ipld_dagcbor`; the framing is written here because the available crate (iroh-car)
//! is async-only and reads a stream cut inside a length prefix as a clean end. This reader
//! treats every cut as an error that says where, caps section sizes (a hostile length cannot
//! make it allocate), and checks every block against its CID before handing it out.

use std::io::{ErrorKind, Read, Write};

use cid::Cid;
use serde::{Deserialize, Serialize};

use crate::hash::verify_block;
use crate::pb;
use crate::{Error, Result};

/// Largest section accepted: a 4 MiB block (the network's limit) plus its CID.
pub const MAX_SECTION: u64 = (4 << 20) + 1024;
/// Largest header accepted.
const MAX_HEADER: u64 = 1 << 20;

#[derive(Serialize, Deserialize)]
struct HeaderV1 {
    roots: Vec<Cid>,
    version: u64,
}

/// The encoded header (length prefix included) for `roots`.
pub fn encode_header(roots: &[Cid]) -> Vec<u8> {
    let header = HeaderV1 {
        roots: roots.to_vec(),
        version: 1,
    };
    // Serializing a struct of CIDs and an integer into a Vec cannot fail.
    let body = serde_ipld_dagcbor::to_vec(&header).unwrap_or_default();
    let mut out = Vec::with_capacity(body.len() + 2);
    pb::put_varint(&mut out, body.len() as u64);
    out.extend_from_slice(&body);
    out
}

/// The encoded section for one block (length prefix included).
pub fn encode_section(cid: &Cid, data: &[u8]) -> Vec<u8> {
    let cid_bytes = cid.to_bytes();
    let mut out = Vec::with_capacity(cid_bytes.len() + data.len() + 10);
    pb::put_varint(&mut out, (cid_bytes.len() + data.len()) as u64);
    out.extend_from_slice(&cid_bytes);
    out.extend_from_slice(data);
    out
}

/// Writes a CAR v1 stream.
pub struct CarWriter<W: Write> {
    w: W,
    written: u64,
}

impl<W: Write> CarWriter<W> {
    /// Writes the header.
    pub fn new(mut w: W, roots: &[Cid]) -> Result<Self> {
        let h = encode_header(roots);
        w.write_all(&h).map_err(|source| Error::Stream {
            what: "writing CAR",
            source,
        })?;
        Ok(CarWriter {
            w,
            written: h.len() as u64,
        })
    }

    /// Appends one block.
    pub fn write_block(&mut self, cid: &Cid, data: &[u8]) -> Result<()> {
        let s = encode_section(cid, data);
        self.w.write_all(&s).map_err(|source| Error::Stream {
            what: "writing CAR",
            source,
        })?;
        self.written += s.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> Result<W> {
        self.w.flush().map_err(|source| Error::Stream {
            what: "writing CAR",
            source,
        })?;
        Ok(self.w)
    }
}

/// Reads a CAR v1 stream, verifying every block.
pub struct CarReader<R: Read> {
    r: R,
    what: String,
    offset: u64,
    roots: Vec<Cid>,
    buf: Vec<u8>,
    verify: bool,
}

impl<R: Read> CarReader<R> {
    /// Reads the header. `what` names the stream in errors (a path, or "stdin").
    pub fn new(r: R, what: impl Into<String>) -> Result<Self> {
        let mut c = CarReader {
            r,
            what: what.into(),
            offset: 0,
            roots: Vec::new(),
            buf: Vec::new(),
            verify: true,
        };
        let len = match c.varint()? {
            Some(l) => l,
            None => return Err(c.err("empty stream: no CAR header")),
        };
        if len == 0 || len > MAX_HEADER {
            return Err(c.err(&format!("header length {len} is not plausible")));
        }
        c.fill(len as usize, "header")?;
        let h: HeaderV1 = serde_ipld_dagcbor::from_slice(&c.buf)
            .map_err(|e| c.err(&format!("header is not valid dag-cbor: {e}")))?;
        if h.version != 1 {
            return Err(c.err(&format!("version {} is not supported (only 1)", h.version)));
        }
        c.roots = h.roots;
        Ok(c)
    }

    /// Skips the hash check of each block: only for a CAR this process wrote itself from
    /// blocks it had already verified (a staging file).
    pub fn trusted(mut self) -> Self {
        self.verify = false;
        self
    }

    /// The roots named in the header.
    pub fn roots(&self) -> &[Cid] {
        &self.roots
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next block, verified against its CID; `None` at a clean end of stream.
    pub fn next_block(&mut self) -> Result<Option<(Cid, Vec<u8>)>> {
        let start = self.offset;
        let Some(len) = self.varint()? else {
            return Ok(None);
        };
        if len == 0 || len > MAX_SECTION {
            return Err(self.err(&format!(
                "section at byte {start} has length {len} (limit {MAX_SECTION})"
            )));
        }
        self.fill(len as usize, "block")?;
        let mut cur = std::io::Cursor::new(&self.buf[..]);
        let cid = Cid::read_bytes(&mut cur)
            .map_err(|e| self.err(&format!("section at byte {start}: bad CID: {e}")))?;
        let data = self.buf[cur.position() as usize..].to_vec();
        if self.verify {
            verify_block(&cid, &data)
                .map_err(|e| self.err(&format!("section at byte {start}: {e}")))?;
        }
        Ok(Some((cid, data)))
    }

    fn err(&self, detail: &str) -> Error {
        Error::Car {
            what: self.what.clone(),
            detail: detail.to_string(),
        }
    }

    /// A varint; `None` only on EOF before its first byte.
    fn varint(&mut self) -> Result<Option<u64>> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let mut b = [0u8; 1];
            let n = loop {
                match self.r.read(&mut b) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(source) => {
                        return Err(Error::Stream {
                            what: "reading CAR",
                            source,
                        });
                    }
                }
            };
            if n == 0 {
                if i == 0 {
                    return Ok(None);
                }
                return Err(self.err(&format!(
                    "truncated inside a length at byte {}",
                    self.offset
                )));
            }
            self.offset += 1;
            v |= u64::from(b[0] & 0x7f) << (7 * i);
            if b[0] & 0x80 == 0 {
                return Ok(Some(v));
            }
        }
        Err(self.err(&format!("length varint too long at byte {}", self.offset)))
    }

    fn fill(&mut self, len: usize, what: &str) -> Result<()> {
        self.buf.resize(len, 0);
        let mut got = 0;
        while got < len {
            match self.r.read(&mut self.buf[got..]) {
                Ok(0) => {
                    return Err(self.err(&format!(
                        "truncated: {what} at byte {} needs {len} bytes, stream ends after {got}",
                        self.offset
                    )));
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Error::Stream {
                        what: "reading CAR",
                        source,
                    });
                }
            }
        }
        self.offset += len as u64;
        Ok(())
    }
}

impl<R: Read> Iterator for CarReader<R> {
    type Item = Result<(Cid, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_block().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{HashAlg, raw_cid};

    fn sample() -> (Vec<u8>, Vec<Cid>) {
        let a = raw_cid(HashAlg::Sha2_256, b"a");
        let b = raw_cid(HashAlg::Sha2_256, &[7u8; 300]);
        let mut w = CarWriter::new(Vec::new(), &[a]).unwrap();
        w.write_block(&a, b"a").unwrap();
        w.write_block(&b, &[7u8; 300]).unwrap();
        (w.finish().unwrap(), vec![a, b])
    }

    #[test]
    fn round_trip() {
        let (car, cids) = sample();
        let r = CarReader::new(&car[..], "t").unwrap();
        assert_eq!(r.roots(), &cids[..1]);
        let blocks: Vec<_> = r.map(|b| b.unwrap().0).collect();
        assert_eq!(blocks, cids);
    }

    #[test]
    fn every_truncation_is_an_error_or_a_section_boundary() {
        let (car, _) = sample();
        let header_len = encode_header(&[raw_cid(HashAlg::Sha2_256, b"a")]).len();
        let first_end = header_len + encode_section(&raw_cid(HashAlg::Sha2_256, b"a"), b"a").len();
        for cut in 0..car.len() {
            let res: Result<Vec<_>> =
                CarReader::new(&car[..cut], "cut").and_then(|r| r.collect::<Result<Vec<_>>>());
            if cut == header_len || cut == first_end {
                assert!(res.is_ok(), "cut at a boundary {cut}");
            } else {
                let e = res.unwrap_err().to_string();
                assert!(e.contains("cut"), "{cut}: {e}");
            }
        }
    }

    #[test]
    fn a_wrong_block_names_its_cid() {
        let (mut car, cids) = sample();
        let n = car.len();
        car[n - 1] ^= 1;
        let err = CarReader::new(&car[..], "t")
            .unwrap()
            .collect::<Result<Vec<_>>>()
            .unwrap_err()
            .to_string();
        assert!(err.contains(&cids[1].to_string()), "{err}");
    }

    #[test]
    fn hostile_lengths_are_refused() {
        let (car, _) = sample();
        let mut bad = encode_header(&[raw_cid(HashAlg::Sha2_256, b"a")]);
        pb::put_varint(&mut bad, u64::MAX >> 1);
        assert!(
            CarReader::new(&bad[..], "t")
                .unwrap()
                .next_block()
                .unwrap_err()
                .to_string()
                .contains("limit")
        );
        assert!(CarReader::new(&car[1..], "t").is_err());
    }
}
