//! Integration tests of the resolver crate, one binary.

mod delta;
mod gateway;
mod gw_support;
mod transfer;
mod volunteers;
