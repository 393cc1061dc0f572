pub mod fixture;
pub mod git;
pub mod server;
