//! Integration tests of the store crate, one binary: the published CID vectors, the CAR
//! fixtures, the size tables, the store conformance suite and the embedded store.

mod car;
mod cluster;
mod conformance;
mod embedded;
mod hostile;
mod integrity;
mod kubo;
mod sizes;
mod support;
mod vectors;
