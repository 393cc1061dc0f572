//! The one place where errors become HTTP statuses. Clients get a short, safe message;
//! details (paths, store internals) go to the log.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Nothing at this path or CID.
    #[error("not found: {0}")]
    NotFound(String),
    /// A request that cannot be valid (bad CID, bad path, bad parameter).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A range outside the file.
    #[error("range not satisfiable (size {size})")]
    RangeNotSatisfiable {
        /// The file's size.
        size: u64,
    },
    /// Nothing has been published yet.
    #[error("no snapshot has been published yet")]
    NoSnapshot,
    /// A representation the gateway does not produce for this content.
    #[error("not acceptable: {0}")]
    NotAcceptable(String),
    /// The store failed or holds something broken.
    #[error(transparent)]
    Store(#[from] cidmirror_store::Error),
    /// The publisher's database failed.
    #[error(transparent)]
    Schema(#[from] cidmirror_schema::Error),
    /// Anything else that is our fault.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The status code and the message a client may see.
    pub fn status_and_message(&self) -> (StatusCode, String) {
        use cidmirror_store::Error as S;
        match self {
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, format!("not found: {m}")),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, format!("bad request: {m}")),
            ApiError::RangeNotSatisfiable { .. } => (
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range not satisfiable".into(),
            ),
            ApiError::NoSnapshot => (
                StatusCode::SERVICE_UNAVAILABLE,
                "no snapshot has been published yet".into(),
            ),
            ApiError::NotAcceptable(m) => {
                (StatusCode::NOT_ACCEPTABLE, format!("not acceptable: {m}"))
            }
            ApiError::Store(e) => match e {
                S::BlockNotFound(c) => (StatusCode::NOT_FOUND, format!("block {c} not found")),
                S::PathNotFound { root, path } => (
                    StatusCode::NOT_FOUND,
                    format!("{root}/{path}: no such file or directory"),
                ),
                S::NotADirectory(p) => (StatusCode::NOT_FOUND, format!("{p}: not a directory")),
                S::IsADirectory(p) => (StatusCode::NOT_FOUND, format!("{p}: is a directory")),
                S::InvalidCid { input, reason } => (
                    StatusCode::BAD_REQUEST,
                    format!("invalid CID {input:?}: {reason}"),
                ),
                S::RangeNotSatisfiable { .. } => (
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "range not satisfiable".into(),
                ),
                S::Unsupported { what, code } => (
                    StatusCode::NOT_IMPLEMENTED,
                    format!("unsupported {what} 0x{code:x}"),
                ),
                S::Malformed { cid, what, .. } => (
                    StatusCode::BAD_GATEWAY,
                    format!("block {cid} is not valid {what}"),
                ),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal error".into()),
            },
            ApiError::Schema(_) | ApiError::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = self.status_and_message();
        if status.is_server_error() {
            tracing::warn!("{status}: {self}");
        } else {
            tracing::debug!("{status}: {self}");
        }
        let mut resp = (status, format!("{message}\n")).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let ApiError::RangeNotSatisfiable { size } = self
            && let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}"))
        {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        resp
    }
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;
