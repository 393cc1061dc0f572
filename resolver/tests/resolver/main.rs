//! Integration tests of the resolver crate, one binary.

mod gateway;
mod gw_support;
