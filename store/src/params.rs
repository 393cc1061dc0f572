//! Import parameters and the named profiles of IPIP-499.
//!
//! A publisher picks one [`Profile`] and never changes it: every parameter below changes
//! every CID. [`ImportParams`] exists separately so tests can reproduce any of Kubo's
//! historic settings (other chunk sizes, trickle layout, other hashes).

use std::fmt;
use std::str::FromStr;

use cid::Version;

use crate::hash::HashAlg;
use crate::{Error, Result};

/// How leaves are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeafKind {
    /// Raw blocks (codec 0x55): the block is the chunk.
    Raw,
    /// dag-pb nodes wrapping the chunk in UnixFS data.
    DagPb,
}

/// How leaves are arranged under the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// All leaves at the same depth (Kubo's default).
    Balanced,
    /// Kubo's `--trickle` layout (for reproducing old CIDs; cidmirror does not publish it).
    Trickle,
}

/// Which directory size estimate decides when a directory becomes a HAMT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HamtEstimate {
    /// Sum of (name length + CID byte length) over the links (`unixfs-v0-2015`).
    Links,
    /// Exact size of the basic directory block (`unixfs-v1-2025`).
    Block,
}

/// Every parameter that influences the CIDs of an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImportParams {
    /// CID version of dag-pb nodes (raw leaves are always CIDv1).
    pub cid_version: Version,
    /// Leaf encoding.
    pub leaves: LeafKind,
    /// Fixed chunk size in bytes.
    pub chunk_size: usize,
    /// Most links of an internal file node.
    pub max_links: usize,
    /// Leaf arrangement.
    pub layout: Layout,
    /// Hash function for every block.
    pub hash: HashAlg,
    /// A directory whose estimate is above this many bytes becomes a HAMT.
    pub hamt_threshold: u64,
    /// Which estimate is compared with the threshold.
    pub hamt_estimate: HamtEstimate,
    /// HAMT fanout (a power of two, at most 256).
    pub hamt_fanout: u32,
}

impl ImportParams {
    /// Checks that the parameters can be used together.
    pub fn validate(&self) -> Result<()> {
        if self.chunk_size == 0 {
            return Err(Error::InvalidParams("chunk size must be at least 1".into()));
        }
        if self.chunk_size > 4 << 20 {
            return Err(Error::InvalidParams(format!(
                "chunk size {} is above the 4 MiB block limit of the IPFS network",
                self.chunk_size
            )));
        }
        if self.max_links < 2 {
            return Err(Error::InvalidParams("max links must be at least 2".into()));
        }
        if self.cid_version == Version::V0 && self.hash != HashAlg::Sha2_256 {
            return Err(Error::InvalidParams(format!(
                "CIDv0 requires sha2-256, not {}",
                self.hash.name()
            )));
        }
        if !self.hamt_fanout.is_power_of_two() || !(2..=256).contains(&self.hamt_fanout) {
            return Err(Error::InvalidParams(format!(
                "HAMT fanout {} must be a power of two between 2 and 256",
                self.hamt_fanout
            )));
        }
        Ok(())
    }

    /// The parameters of a profile.
    pub fn profile(p: Profile) -> ImportParams {
        match p {
            Profile::UnixfsV1_2025 => ImportParams {
                cid_version: Version::V1,
                leaves: LeafKind::Raw,
                chunk_size: 1 << 20,
                max_links: 1024,
                layout: Layout::Balanced,
                hash: HashAlg::Sha2_256,
                hamt_threshold: 256 << 10,
                hamt_estimate: HamtEstimate::Block,
                hamt_fanout: 256,
            },
            Profile::UnixfsV0_2015 => ImportParams {
                cid_version: Version::V0,
                leaves: LeafKind::DagPb,
                chunk_size: 256 << 10,
                max_links: 174,
                layout: Layout::Balanced,
                hash: HashAlg::Sha2_256,
                hamt_threshold: 256 << 10,
                hamt_estimate: HamtEstimate::Links,
                hamt_fanout: 256,
            },
        }
    }
}

impl Default for ImportParams {
    fn default() -> Self {
        ImportParams::profile(Profile::default())
    }
}

/// A named, frozen set of [`ImportParams`] (IPIP-499).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Profile {
    /// CIDv1, raw leaves, 1 MiB chunks, 1024 links, HAMT by block size. cidmirror's default.
    #[default]
    UnixfsV1_2025,
    /// CIDv0, dag-pb leaves, 256 KiB chunks, 174 links, HAMT by links size. Kubo's historic
    /// default.
    UnixfsV0_2015,
}

impl Profile {
    /// Every profile, for help texts.
    pub const ALL: [Profile; 2] = [Profile::UnixfsV1_2025, Profile::UnixfsV0_2015];

    /// The profile's parameters.
    pub fn params(self) -> ImportParams {
        ImportParams::profile(self)
    }

    /// The profile's name.
    pub fn name(self) -> &'static str {
        match self {
            Profile::UnixfsV1_2025 => "unixfs-v1-2025",
            Profile::UnixfsV0_2015 => "unixfs-v0-2015",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                Error::InvalidParams(format!(
                    "unknown profile {s:?} (known: {})",
                    Profile::ALL.map(|p| p.name()).join(", ")
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_round_trip_and_validate() {
        for p in Profile::ALL {
            assert_eq!(p.name().parse::<Profile>().unwrap(), p);
            p.params().validate().unwrap();
        }
        let err = "unixfs-v2".parse::<Profile>().unwrap_err().to_string();
        assert!(err.contains("unixfs-v1-2025"), "{err}");
    }

    #[test]
    fn v0_needs_sha256() {
        let p = ImportParams {
            hash: HashAlg::Blake2b256,
            ..Profile::UnixfsV0_2015.params()
        };
        assert!(p.validate().is_err());
    }
}
