//! Valid inputs built with the real code: what the seed corpora start from, and the
//! fixed state some targets need (the previous view of a delta, the publisher's key).

use cidmirror_listing::{
    self as listing, FileRef, Item, ItemKind, Listing, ListingInput, Manifest, RepoSummary,
};
use cidmirror_resolver::follow::view::View;
use cidmirror_store::car::CarWriter;
use cidmirror_store::dir::{DirEntry, Directory};
use cidmirror_store::hash::{HashAlg, raw_cid};
use cidmirror_store::importer::{self, VecSink};
use cidmirror_store::{Cid, ImportParams, Profile, Sha256};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::Digest;

use crate::MemStore;

/// The publisher key of the feed target (a fixed seed: the corpus carries its signatures).
pub fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

/// Its public half, which the feed target checks announcements against.
pub fn verifying_key() -> VerifyingKey {
    signing_key().verifying_key()
}

/// A feed event body (`data:` of a `snapshot` event) for (seq, root, previous), signed.
pub fn snapshot_event_json(seq: u64, root: &Cid, previous: Option<&Cid>) -> String {
    let msg = cidmirror_store::sign::snapshot_message(seq, root, previous);
    let sig = signing_key().sign(&msg);
    serde_json::json!({
        "seq": seq,
        "root": root.to_string(),
        "previous": previous.map(Cid::to_string),
        "published_at": "2025-01-02T03:04:05Z",
        "signature": hex::encode(sig.to_bytes()),
    })
    .to_string()
}

/// A `desc` entry as repo-add writes it.
pub fn desc_text(name: &str, version: &str) -> String {
    let filename = format!("{name}-{version}-x86_64.pkg.tar.zst");
    let sha = hex::encode(sha2::Sha256::digest(filename.as_bytes()));
    format!(
        "%FILENAME%\n{filename}\n\n%NAME%\n{name}\n\n%BASE%\n{name}\n\n%VERSION%\n{version}\n\n\
         %DESC%\nThe {name} package\n\n%CSIZE%\n{size}\n\n%ISIZE%\n4096\n\n\
         %SHA256SUM%\n{sha}\n\n%URL%\nhttps://example.org/{name}\n\n%LICENSE%\nMIT\n\n\
         %ARCH%\nx86_64\n\n%BUILDDATE%\n1700000000\n\n%PACKAGER%\nA Packager <a@example.org>\n\n\
         %DEPENDS%\nglibc\nsh\n\n",
        size = filename.len(),
    )
}

fn file_ref(files: &mut Vec<(Cid, Vec<u8>)>, bytes: &[u8]) -> FileRef {
    files.push((raw_cid(HashAlg::Sha2_256, bytes), bytes.to_vec()));
    FileRef {
        size: bytes.len() as u64,
        sha256: Sha256(sha2::Sha256::digest(bytes).into()),
        cid: raw_cid(HashAlg::Sha2_256, bytes),
        tsize: bytes.len() as u64,
    }
}

/// A listing and the blocks of the desc files its packages name.
pub struct Built {
    /// The listing (directories, manifest, changes).
    pub listing: listing::Published,
    /// Its blocks.
    pub listing_blocks: Vec<(Cid, Vec<u8>)>,
    /// Its items, for the next snapshot's `previous`.
    pub items: Vec<Item>,
    /// Every block of every desc file.
    pub desc_blocks: Vec<(Cid, Vec<u8>)>,
    /// The files the listing names (packages, signatures, databases): one raw block each.
    pub files: Vec<(Cid, Vec<u8>)>,
}

impl Built {
    /// The root.
    pub fn root(&self) -> Cid {
        self.listing.root.cid
    }

    /// Every block: the listing's and the desc files'.
    pub fn blocks(&self) -> impl Iterator<Item = &(Cid, Vec<u8>)> {
        self.listing_blocks.iter().chain(&self.desc_blocks)
    }

    /// A CAR of every block under the root (what a delta of a first snapshot carries, and
    /// more: the directories too).
    pub fn car(&self) -> Vec<u8> {
        let mut w = CarWriter::new(Vec::new(), &[self.root()]).expect("CAR into a Vec");
        for (cid, data) in self.blocks() {
            w.write_block(cid, data).expect("CAR into a Vec");
        }
        w.finish().expect("CAR into a Vec")
    }
}

/// The listing of a `core` repository with `packages` (name, version), a database under
/// both names and a signature on every other package, after `previous`.
pub fn snapshot(packages: &[(&str, &str)], previous: Option<&Built>) -> Built {
    let params = Profile::UnixfsV1_2025.params();
    let mut sink = VecSink::default();
    let mut items = Vec::new();
    let mut files = Vec::new();
    for (i, (name, version)) in packages.iter().enumerate() {
        let desc = desc_text(name, version);
        let f = importer::import(desc.as_bytes(), &params, &mut sink).expect("import a desc");
        let filename = format!("{name}-{version}-x86_64.pkg.tar.zst");
        items.push(Item {
            repo: "core".into(),
            arch: "x86_64".into(),
            kind: ItemKind::Package,
            file: file_ref(&mut files, filename.as_bytes()),
            sig: (i % 2 == 0).then(|| file_ref(&mut files, format!("{filename}.sig").as_bytes())),
            package: Some((
                (*name).to_string(),
                DirEntry {
                    cid: f.cid,
                    tsize: f.tsize,
                },
            )),
            filename,
            alias: None,
        });
    }
    items.push(Item {
        repo: "core".into(),
        arch: "x86_64".into(),
        kind: ItemKind::Database,
        filename: "core.db.tar.gz".into(),
        alias: Some("core.db".into()),
        file: file_ref(&mut files, format!("db of {packages:?}").as_bytes()),
        sig: None,
        package: None,
    });
    let repos = [RepoSummary {
        repo: "core".into(),
        arch: "x86_64".into(),
        packages: packages.len() as u64,
        bytes: 1000,
        database: "core.db.tar.gz".into(),
        files: None,
        signed: false,
        database_file: None,
        files_file: None,
    }];
    let mut listing_blocks = cidmirror_store::importer::VecSink::default();
    let scratch = std::env::temp_dir();
    let listing = listing::publish(
        &ListingInput {
            profile: Profile::UnixfsV1_2025,
            upstream: "https://mirror.example.org/",
            lastupdate: "1700000000",
            items: &items,
            repos: &repos,
            previous: previous.map(|p| (p.root(), &p.items[..])),
            aur: &[],
            previous_aur: &[],
            scratch: &scratch,
        },
        &mut listing_blocks,
    )
    .expect("build a listing");
    Built {
        listing,
        listing_blocks: listing_blocks.0,
        items,
        desc_blocks: sink.0,
        files,
    }
}

/// The packages of the first snapshot of [`previous_view`].
pub const FIRST: &[(&str, &str)] = &[("acl", "2.3-1"), ("bash", "5.2-1"), ("zlib", "1.3-1")];

/// The follower's view of the first snapshot: what a delta target applies its input to.
pub fn previous_view() -> View {
    let first = snapshot(FIRST, None);
    let store = MemStore::new();
    for (cid, data) in first.blocks() {
        store.insert(*cid, data.clone());
    }
    let manifest = Manifest::parse(&first.listing.manifest, "manifest.json").expect("manifest");
    let none = DirEntry {
        cid: first.root(),
        tsize: 0,
    };
    // An empty view: applying the first snapshot's changes (all additions) fills it.
    let (empty, _, _) = View::new(
        first.root(),
        Listing::new(manifest, none, none, Vec::new()).expect("an empty listing"),
    )
    .expect("an empty view builds");
    crate::block_on(cidmirror_resolver::fuzzing::delta(
        &store,
        &empty,
        first.root(),
    ))
    .expect("the first snapshot rebuilds from its own changes")
}

/// A HAMT-sharded directory of `n` entries (fanout 256, sharded at any size) and its
/// blocks, each entry a small raw file named `file-<i>`.
pub fn hamt_directory(n: usize, fanout: u32) -> (Cid, Vec<(Cid, Vec<u8>)>) {
    let params = ImportParams {
        hamt_threshold: 0,
        hamt_fanout: fanout,
        ..Profile::UnixfsV1_2025.params()
    };
    let mut dir = Directory::new();
    let mut blocks = Vec::new();
    for i in 0..n {
        let data = format!("contents of file {i}\n").into_bytes();
        let cid = raw_cid(HashAlg::Sha2_256, &data);
        dir.insert(
            &format!("file-{i}"),
            DirEntry {
                cid,
                tsize: data.len() as u64,
            },
        )
        .expect("a fresh name");
        blocks.push((cid, data));
    }
    let mut sink = VecSink::default();
    let root = dir.build(&params, &mut sink).expect("build a HAMT");
    blocks.extend(sink.0);
    (root.cid, blocks)
}

/// A file of `len` bytes imported in chunks of `chunk` with `max_links` links per node
/// (a tree of several levels for small numbers), and its blocks.
pub fn chunked_file(len: usize, chunk: usize, max_links: usize) -> (Cid, Vec<(Cid, Vec<u8>)>) {
    let params = ImportParams {
        chunk_size: chunk,
        max_links,
        ..Profile::UnixfsV1_2025.params()
    };
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let mut sink = VecSink::default();
    let f = importer::import(&data[..], &params, &mut sink).expect("import a file");
    (f.cid, sink.0)
}

/// A CAR of `blocks` with `roots`.
pub fn car_of(roots: &[Cid], blocks: &[(Cid, Vec<u8>)]) -> Vec<u8> {
    let mut w = CarWriter::new(Vec::new(), roots).expect("CAR into a Vec");
    for (cid, data) in blocks {
        w.write_block(cid, data).expect("CAR into a Vec");
    }
    w.finish().expect("CAR into a Vec")
}

/// What the gateway target's store holds: a snapshot listing (the current snapshot) with
/// its files, a HAMT directory, a file of several levels and a directory of both. The seed
/// generator names these CIDs in its requests.
pub struct GatewayContent {
    /// The current snapshot.
    pub snapshot: Built,
    /// A HAMT directory of 40 files (fanout 16).
    pub hamt: (Cid, Vec<(Cid, Vec<u8>)>),
    /// A file of 5000 bytes in 256-byte chunks, 4 links a node.
    pub file: (Cid, Vec<(Cid, Vec<u8>)>),
    /// A basic directory: `hamt/` and `file.bin`.
    pub dir: (Cid, Vec<(Cid, Vec<u8>)>),
}

/// The gateway target's content (deterministic: the same CIDs on every machine).
pub fn gateway_content() -> GatewayContent {
    let snapshot = snapshot(FIRST, None);
    let hamt = hamt_directory(40, 16);
    let file = chunked_file(5000, 256, 4);
    let entry = |(cid, blocks): &(Cid, Vec<(Cid, Vec<u8>)>)| DirEntry {
        cid: *cid,
        tsize: blocks.iter().map(|(_, b)| b.len() as u64).sum(),
    };
    let mut d = Directory::new();
    d.insert("hamt", entry(&hamt)).expect("a fresh name");
    d.insert("file.bin", entry(&file)).expect("a fresh name");
    let mut sink = VecSink::default();
    let root = d
        .build(&Profile::UnixfsV1_2025.params(), &mut sink)
        .expect("build a directory");
    GatewayContent {
        snapshot,
        hamt,
        file,
        dir: (root.cid, sink.0),
    }
}

impl GatewayContent {
    /// Every block of all of it.
    pub fn blocks(&self) -> Vec<(Cid, Vec<u8>)> {
        let mut out: Vec<(Cid, Vec<u8>)> = self.snapshot.blocks().cloned().collect();
        out.extend(self.snapshot.files.iter().cloned());
        for (_, b) in [&self.hamt, &self.file, &self.dir] {
            out.extend(b.iter().cloned());
        }
        out
    }
}

/// A request as the gateway target reads its input: `METHOD TARGET`, header lines
/// (`name: value`), an empty line, the body.
pub fn request_text(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target}\n").into_bytes();
    for (k, v) in headers {
        out.extend_from_slice(format!("{k}: {v}\n").as_bytes());
    }
    out.push(b'\n');
    out.extend_from_slice(body);
    out
}
