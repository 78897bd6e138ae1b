//! The server's one error type and its one mapping to RFC 9457 problem JSON
//! (API.md §3). Internal causes are logged with the request id and never
//! sent: the client sees the code, a title and a detail written for it.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("the request names a tenant other than the credential's")]
    TenantMismatch,
    #[error("the tenant is suspended")]
    TenantSuspended,
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Over the tenant's or the credential's request rate; retry after this
    /// many seconds.
    #[error("the request rate is over this tenant's limit; retry after {0} s")]
    RateLimited(u64),
    /// A queue the request needs is full; nothing was done (code
    /// `rate_limited`, with `Retry-After`).
    #[error("{what}; retry after {retry_after} s")]
    QueueFull { what: String, retry_after: u64 },
    /// A tenant quota is spent; nothing was done.
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("a backing store is unavailable; nothing was changed")]
    Unavailable(String),
    /// A bug; the message is logged, never returned.
    #[error("internal error")]
    Internal(String),
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    code: &'a str,
    detail: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::TenantMismatch | ApiError::TenantSuspended => {
                StatusCode::FORBIDDEN
            }
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited(_) | ApiError::QueueFull { .. } | ApiError::QuotaExceeded(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The API.md §3 code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Invalid(_) => "invalid_request",
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::TenantMismatch => "tenant_mismatch",
            ApiError::TenantSuspended => "tenant_suspended",
            ApiError::NotFound => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::RateLimited(_) | ApiError::QueueFull { .. } => "rate_limited",
            ApiError::QuotaExceeded(_) => "quota_exceeded",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::Invalid(_) => "Invalid request",
            ApiError::Unauthenticated(_) => "Unauthenticated",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::TenantMismatch => "Tenant mismatch",
            ApiError::TenantSuspended => "Tenant suspended",
            ApiError::NotFound => "Not found",
            ApiError::Conflict(_) => "Conflict",
            ApiError::PayloadTooLarge(_) => "Payload too large",
            ApiError::RateLimited(_) | ApiError::QueueFull { .. } => "Rate limited",
            ApiError::QuotaExceeded(_) => "Quota exceeded",
            ApiError::Unavailable(_) => "Unavailable",
            ApiError::Internal(_) => "Internal error",
        }
    }

    /// What the client is told. Never a cause from below the API.
    pub fn public_detail(&self) -> String {
        match self {
            ApiError::Unavailable(_) => {
                "a backing store is unavailable; nothing was changed, retry later".into()
            }
            ApiError::Internal(_) => "an internal error occurred; it has been logged".into(),
            ApiError::NotFound => "no such resource in this tenant".into(),
            other => other.to_string(),
        }
    }

    /// The problem object (API.md §3) the client is sent.
    fn problem(&self) -> Problem<'static> {
        Problem {
            kind: format!("urn:enclave:problem:{}", self.code()),
            title: self.title(),
            status: self.status().as_u16(),
            code: self.code(),
            detail: self.public_detail(),
        }
    }

    /// The problem as a job stores a failed document's result: `status`,
    /// `code` and `detail` of the same object.
    pub fn brief_problem(&self) -> serde_json::Value {
        let p = self.problem();
        serde_json::json!({"status": p.status, "code": p.code, "detail": p.detail})
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        ApiError::Invalid(msg.into())
    }

    /// The error of a part of a request (`documents[3]`): an invalid field
    /// is named inside it (`documents[3].metadata: …`); other errors are
    /// unchanged.
    pub fn within(self, part: &str) -> Self {
        match self {
            ApiError::Invalid(m) => ApiError::Invalid(format!("{part}.{m}")),
            e => e,
        }
    }

    pub fn forbidden(msg: impl Into<String>) -> Self {
        ApiError::Forbidden(msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(cause) => tracing::error!(%cause, "internal error"),
            ApiError::Unavailable(cause) => tracing::warn!(%cause, "store unavailable"),
            _ => {}
        }
        let status = self.status();
        let mut resp = (status, axum::Json(self.problem())).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match self {
            ApiError::RateLimited(secs)
            | ApiError::QueueFull {
                retry_after: secs, ..
            } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            // The store comes back on its own; clients may retry soon.
            ApiError::Unavailable(_) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            }
            _ => {}
        }
        if status == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"enclave\""),
            );
        }
        resp
    }
}

impl From<enclave::Error> for ApiError {
    fn from(e: enclave::Error) -> Self {
        match e {
            enclave::Error::Invalid(i) => ApiError::Invalid(i.to_string()),
            enclave::Error::NotFound => ApiError::NotFound,
            enclave::Error::QuotaExceeded(m) => ApiError::QuotaExceeded(m),
            enclave::Error::TooLarge {
                what,
                actual,
                limit,
            } => {
                ApiError::PayloadTooLarge(format!("{what} is {actual} bytes; the limit is {limit}"))
            }
            enclave::Error::Conflict(m) => ApiError::Conflict(m),
            enclave::Error::Busy {
                what,
                retry_after_secs,
            } => ApiError::QueueFull {
                what: format!(
                    "{what} is full; submit the document as a job (POST /v1/jobs/documents), or"
                ),
                retry_after: retry_after_secs,
            },
            enclave::Error::StoreBusy(m) => ApiError::QueueFull {
                what: m,
                retry_after: 1,
            },
            enclave::Error::Unavailable(m) => ApiError::Unavailable(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<enclave_store::StoreError> for ApiError {
    fn from(e: enclave_store::StoreError) -> Self {
        use enclave_store::StoreError as S;
        match e {
            S::Invalid(m) => ApiError::Invalid(m),
            S::Conflict(m) => ApiError::Conflict(m),
            S::Unavailable(m) => ApiError::Unavailable(m),
            S::Busy(m) => ApiError::QueueFull {
                what: m,
                retry_after: 1,
            },
            S::Full(m) => ApiError::QueueFull {
                what: m,
                retry_after: 5,
            },
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<enclave_core::InvalidInput> for ApiError {
    fn from(e: enclave_core::InvalidInput) -> Self {
        ApiError::Invalid(e.to_string())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
