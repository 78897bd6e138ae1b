//! `Idempotency-Key` records and the one decision both backends make from them.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// Where an `Idempotency-Key` stands when a request arrives with it.
#[derive(Debug, Clone, PartialEq)]
pub enum IdempotencyState {
    /// First use (or the earlier attempt expired or was abandoned): the
    /// caller now holds the key and must `finish` or `abort` it.
    Acquired,
    /// The same key and body completed before: replay this response.
    Completed { status: u16, body: Value },
    /// The key was used with a different body.
    Mismatch,
    /// The same request is being processed right now.
    InProgress,
}

/// A stored idempotency record: request hash, the completed response
/// (status, body) if any, and when it was claimed.
pub type IdempotencyRecord = (Vec<u8>, Option<(u16, Value)>, DateTime<Utc>);

/// Decides [`Idempotency::idempotency_begin`](super::Idempotency::idempotency_begin) from the stored record.
pub fn idempotency_decision(
    stored: Option<IdempotencyRecord>,
    request_hash: &[u8],
    abandoned_before: DateTime<Utc>,
    expired_before: DateTime<Utc>,
) -> (IdempotencyState, bool) {
    // (state, whether the caller must (re)write the record as pending)
    match stored {
        None => (IdempotencyState::Acquired, true),
        Some((_, _, at)) if at < expired_before => (IdempotencyState::Acquired, true),
        Some((hash, _, _)) if hash != request_hash => (IdempotencyState::Mismatch, false),
        Some((_, Some((status, body)), _)) => (IdempotencyState::Completed { status, body }, false),
        Some((_, None, at)) if at < abandoned_before => (IdempotencyState::Acquired, true),
        Some(_) => (IdempotencyState::InProgress, false),
    }
}
