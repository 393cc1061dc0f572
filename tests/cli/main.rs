//! End-to-end tests of the `cidmirror` binary: every test runs the real executable in its
//! own temp directory. Expected CIDs come from published sources (Kubo's tests, the IPFS
//! specs, the gateway conformance fixtures; see /work/shared/vectors/unixfs.json) or from
//! properties (same CID on rerun, `cat` gives back the bytes that went in).

mod add_cat;
mod attacks;
mod aur;
mod bad_input;
mod car;
mod cluster;
mod concurrency;
mod crash;
mod expiry;
mod follow;
mod https;
mod integrity;
mod kubo;
mod mirror;
mod oracle;
mod pacman_client;
mod serve;
mod serve_support;
mod support;
mod volunteer;
