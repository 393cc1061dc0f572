//! The one place where errors become HTTP statuses. Clients get a short, safe message;
//! details (paths, store internals) go to the log.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cidmirror_store::hash::identity_data;

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
    /// The client asked too often; it may try again after `retry_after`.
    #[error("too many requests: retry after {retry_after:?}")]
    TooManyRequests {
        /// When a request would be accepted again.
        retry_after: std::time::Duration,
    },
    /// A resource is exhausted for now (the volunteer table is full).
    #[error("unavailable: {what}")]
    Unavailable {
        /// What is exhausted.
        what: String,
        /// When to try again.
        retry_after: std::time::Duration,
    },
    /// A follower could not get the file from any source or mirror.
    #[error("bad gateway: {0}")]
    Upstream(String),
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
                // An identity CID carries its block: the client sent the broken bytes.
                S::Malformed { cid, what, detail } if identity_data(cid).is_some() => (
                    StatusCode::BAD_REQUEST,
                    format!("block {cid} is not valid {what}: {detail}"),
                ),
                S::Malformed { cid, what, .. } => (
                    StatusCode::BAD_GATEWAY,
                    format!("block {cid} is not valid {what}"),
                ),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal error".into()),
            },
            ApiError::TooManyRequests { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too many requests".into())
            }
            ApiError::Unavailable { what, .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("unavailable: {what}"),
            ),
            ApiError::Upstream(m) => (StatusCode::BAD_GATEWAY, format!("bad gateway: {m}")),
            ApiError::Schema(_) | ApiError::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = self.status_and_message();
        let message = shorten(&message);
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
        if let ApiError::TooManyRequests { retry_after }
        | ApiError::Unavailable { retry_after, .. } = self
        {
            // Whole seconds, rounded up: a client retrying at once would be refused again.
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        resp
    }
}

/// Longest message sent to a client, in characters.
const MESSAGE_MAX: usize = 300;

/// `message`, its middle elided if it is longer than [`MESSAGE_MAX`]: messages quote the
/// client's input (a CID, a path segment), which may be kilobytes long, and the start and
/// the reason at the end are what tell the problem.
fn shorten(message: &str) -> String {
    let n = message.chars().count();
    if n <= MESSAGE_MAX {
        return message.to_string();
    }
    let (head, tail) = (MESSAGE_MAX * 2 / 3, MESSAGE_MAX / 3);
    let start: String = message.chars().take(head).collect();
    let end: String = message.chars().skip(n - tail).collect();
    format!("{start}[... {} characters ...]{end}", n - head - tail)
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_keep_their_start_and_end() {
        assert_eq!(shorten("short"), "short");
        let long = format!(
            "invalid CID \"{}\": Failed to parse multihash",
            "b".repeat(10_000)
        );
        let s = shorten(&long);
        assert!(s.chars().count() < MESSAGE_MAX + 40, "{s}");
        assert!(s.starts_with("invalid CID \"bbb"), "{s}");
        assert!(s.ends_with("\": Failed to parse multihash"), "{s}");
        assert!(s.contains("characters ...]"), "{s}");
        let wide = "\u{e9}".repeat(MESSAGE_MAX + 1);
        assert!(shorten(&wide).chars().count() < MESSAGE_MAX + 40);
    }
}
