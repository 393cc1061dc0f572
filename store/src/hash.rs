//! Hash functions, multihashes and CIDs: making them and checking blocks against them.

use cid::Cid;
use sha2::Digest;

use crate::{Error, Result};

/// The multihash type carried in every [`Cid`].
pub type Multihash = cid::multihash::Multihash<64>;

/// Multicodec of dag-pb (UnixFS nodes).
pub const DAG_PB: u64 = 0x70;
/// Multicodec of raw blocks (raw leaves).
pub const RAW: u64 = 0x55;
/// Multihash code of the identity "hash" (the data is the digest).
pub const IDENTITY: u64 = 0x00;

/// A hash function that can name blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlg {
    /// sha2-256 (0x12): the default everywhere; the only one CIDv0 allows.
    Sha2_256,
    /// sha2-512 (0x13).
    Sha2_512,
    /// blake2b-256 (0xb220).
    Blake2b256,
}

impl HashAlg {
    /// Multihash code.
    pub fn code(self) -> u64 {
        match self {
            HashAlg::Sha2_256 => 0x12,
            HashAlg::Sha2_512 => 0x13,
            HashAlg::Blake2b256 => 0xb220,
        }
    }

    /// The algorithm with this multihash code.
    pub fn from_code(code: u64) -> Option<HashAlg> {
        match code {
            0x12 => Some(HashAlg::Sha2_256),
            0x13 => Some(HashAlg::Sha2_512),
            0xb220 => Some(HashAlg::Blake2b256),
            _ => None,
        }
    }

    /// The name Kubo uses (`sha2-256`, ...).
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha2_256 => "sha2-256",
            HashAlg::Sha2_512 => "sha2-512",
            HashAlg::Blake2b256 => "blake2b-256",
        }
    }

    /// The algorithm with this Kubo name.
    pub fn from_name(name: &str) -> Option<HashAlg> {
        [HashAlg::Sha2_256, HashAlg::Sha2_512, HashAlg::Blake2b256]
            .into_iter()
            .find(|h| h.name() == name)
    }

    /// A fresh incremental hasher.
    pub fn hasher(self) -> Hasher {
        match self {
            HashAlg::Sha2_256 => Hasher::Sha2_256(sha2::Sha256::new()),
            HashAlg::Sha2_512 => Hasher::Sha2_512(sha2::Sha512::new()),
            HashAlg::Blake2b256 => {
                Hasher::Blake2b256(blake2b_simd::Params::new().hash_length(32).to_state())
            }
        }
    }

    /// The multihash of `data`.
    pub fn digest(self, data: &[u8]) -> Multihash {
        let mut h = self.hasher();
        h.update(data);
        h.finish()
    }
}

/// An incremental hash computation that ends in a [`Multihash`].
pub enum Hasher {
    /// sha2-256.
    Sha2_256(sha2::Sha256),
    /// sha2-512.
    Sha2_512(sha2::Sha512),
    /// blake2b-256.
    Blake2b256(blake2b_simd::State),
}

impl Hasher {
    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha2_256(h) => h.update(data),
            Hasher::Sha2_512(h) => h.update(data),
            Hasher::Blake2b256(h) => {
                h.update(data);
            }
        }
    }

    /// The multihash of everything fed.
    pub fn finish(self) -> Multihash {
        // Digests are at most 64 bytes, so wrapping cannot fail.
        let (code, digest): (u64, Vec<u8>) = match self {
            Hasher::Sha2_256(h) => (0x12, h.finalize().to_vec()),
            Hasher::Sha2_512(h) => (0x13, h.finalize().to_vec()),
            Hasher::Blake2b256(h) => (0xb220, h.finalize().as_bytes().to_vec()),
        };
        Multihash::wrap(code, &digest).unwrap_or_default()
    }
}

/// The CID of a raw block with these bytes (always CIDv1, codec raw).
pub fn raw_cid(alg: HashAlg, data: &[u8]) -> Cid {
    Cid::new_v1(RAW, alg.digest(data))
}

/// Checks that `data` is the block `cid` names. Identity CIDs must carry `data` itself.
pub fn verify_block(cid: &Cid, data: &[u8]) -> Result<()> {
    let mh = cid.hash();
    let actual = if mh.code() == IDENTITY {
        if mh.digest() == data {
            return Ok(());
        }
        hex::encode(data)
    } else {
        let alg = HashAlg::from_code(mh.code()).ok_or(Error::Unsupported {
            what: "hash function",
            code: mh.code(),
        })?;
        let got = alg.digest(data);
        if got.digest() == mh.digest() {
            return Ok(());
        }
        hex::encode(got.digest())
    };
    Err(Error::HashMismatch {
        cid: Box::new(*cid),
        actual,
    })
}

/// The bytes of an identity CID's block, if `cid` is one.
pub fn identity_data(cid: &Cid) -> Option<&[u8]> {
    (cid.hash().code() == IDENTITY).then(|| cid.hash().digest())
}

/// Parses a CID string, with a message that says what was wrong.
///
/// The whole string must be the CID: the `cid` crate alone ignores bytes after the CID and
/// takes whatever follows an `/ipfs/` inside the string, so `<cid>aa` or
/// `junk/ipfs/<cid>` would otherwise name the same content as `<cid>`.
pub fn parse_cid(s: &str) -> Result<Cid> {
    let invalid = |reason: String| Error::InvalidCid {
        input: s.to_string(),
        reason,
    };
    let cid = Cid::try_from(s).map_err(|e| invalid(e.to_string()))?;
    let exact = match cid.version() {
        cid::Version::V0 => s.len() == 46 && s.starts_with("Qm"),
        cid::Version::V1 => {
            cid::multibase::decode(s).is_ok_and(|(_, bytes)| bytes == cid.to_bytes())
        }
    };
    if !exact {
        return Err(invalid("more than a CID".into()));
    }
    Ok(cid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_cid_of_hello_world() {
        let c = raw_cid(HashAlg::Sha2_256, b"hello world");
        assert_eq!(
            c.to_string(),
            "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
        );
        verify_block(&c, b"hello world").unwrap();
        let err = verify_block(&c, b"hello world!").unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
        assert!(err.contains(&c.to_string()), "{err}");
    }

    #[test]
    fn identity_cid_verifies_its_own_bytes() {
        let c = parse_cid("bafkqaaa").unwrap();
        assert_eq!(identity_data(&c), Some(&b""[..]));
        verify_block(&c, b"").unwrap();
        assert!(verify_block(&c, b"x").is_err());
    }

    #[test]
    fn bad_cid_strings_name_the_input() {
        for bad in ["", "Qm", "bafy!!", "zzzz"] {
            let err = parse_cid(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn a_cid_string_is_nothing_but_the_cid() {
        let v1 = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e";
        let v0 = "QmWATWQ7fVPP2EFGu71UkfnqhYXDYH566qy47CnJDgvs8u";
        for good in [v1, v0, &v1.to_uppercase()] {
            assert!(parse_cid(good).is_ok(), "{good}");
        }
        for bad in [
            format!("{v1}aa"),
            format!("{v0}a"),
            format!("junk/ipfs/{v1}"),
            format!("/ipfs/{v0}"),
            format!(" {v1}"),
        ] {
            let err = parse_cid(&bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }
}
