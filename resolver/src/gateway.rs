//! The IPFS trustless gateway (`/ipfs/...`): being written.

use axum::Router;

use crate::AppState;

/// The gateway's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
}
