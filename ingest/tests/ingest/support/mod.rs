pub mod fixture;
pub mod server;
