//! API key records (only the salted hash of a secret is stored).

use chrono::{DateTime, Utc};
use enclave_core::{Role, TenantId};

/// A stored API key: its public id and a salted hash of its secret, never
/// the secret.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    /// The `<public-id>` of `ek_<public-id>_<secret>`.
    pub key_id: String,
    pub tenant_id: TenantId,
    pub name: String,
    pub role: Role,
    pub salt: Vec<u8>,
    /// SHA-256 of salt ‖ secret.
    pub secret_hash: Vec<u8>,
    /// Who created it (`key:<id>`, `user:<sub>`, `platform`).
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}
