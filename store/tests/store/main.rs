//! Integration tests of the store crate, one binary: vectors, CAR fixtures, size tables,
//! the store conformance suite.

mod support;
mod vectors;
