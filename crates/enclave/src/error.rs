//! The library's one error type. Each variant maps to one API error code, so
//! the server translates without guessing.

use enclave_core::InvalidInput;
use enclave_embed::EmbedError;
use enclave_store::StoreError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad input; names the field (API `invalid_request`).
    #[error("invalid {0}")]
    Invalid(#[from] InvalidInput),
    /// The resource does not exist *in this tenant* (API `not_found`). Another
    /// tenant's id produces exactly this.
    #[error("not found")]
    NotFound,
    /// Over a configured size limit (API `payload_too_large`).
    #[error("{what} is {actual} bytes; the limit is {limit}")]
    TooLarge {
        what: &'static str,
        actual: usize,
        limit: usize,
    },
    /// A tenant quota (documents, storage bytes, embedding tokens) would be
    /// exceeded; nothing was embedded or written (API `quota_exceeded`).
    #[error("{0}")]
    QuotaExceeded(String),
    /// A queue the call needs is full (the tenant's embedding work, or all
    /// tenants'); nothing was done, retry after the given seconds (API
    /// `rate_limited` with `Retry-After`).
    #[error("{what} is full; retry after {retry_after_secs} s")]
    Busy {
        what: &'static str,
        retry_after_secs: u64,
    },
    /// The tenant's own store calls hold every one of its data connections;
    /// nothing was done, retry shortly (API `rate_limited`, `Retry-After: 1`).
    #[error("{0}")]
    StoreBusy(String),
    /// A uniqueness rule would break (API `conflict`).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A backing store or the embedding model is unreachable; nothing changed
    /// (API `unavailable`).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A bug or corruption. Details are for logs, never for clients.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Error::Invalid(InvalidInput::new(field, message))
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(m) => Error::invalid("embeddings", m),
            StoreError::Conflict(m) => Error::Conflict(m),
            StoreError::Unavailable(m) => Error::Unavailable(m),
            StoreError::Full(_) => Error::Busy {
                what: "a queue of the tenant's",
                retry_after_secs: 5,
            },
            StoreError::Busy(m) => Error::StoreBusy(m),
            StoreError::Internal(m) => Error::Internal(m),
            other => Error::Internal(other.to_string()),
        }
    }
}

impl From<EmbedError> for Error {
    fn from(e: EmbedError) -> Self {
        match e {
            EmbedError::Input(m) => Error::invalid("content", m),
            EmbedError::Model(m) => Error::Unavailable(format!("embedding model: {m}")),
            other => Error::Internal(other.to_string()),
        }
    }
}
