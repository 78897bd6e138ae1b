//! Minting API keys: a request is validated and its secret minted
//! ([`new_key`]), audited by the caller under the new key's id, then
//! stored ([`store_key`]): an unaudited key is never made. The key format
//! and its hashing are `crate::keys`.

use chrono::{DateTime, Utc};
use enclave_core::{Role, TenantId};
use enclave_store::control::{KeyRecord, TenantControl};
use serde::{Deserialize, Serialize};

use crate::keys;
use crate::ApiResult;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyBody {
    pub name: String,
    #[schema(value_type = String)]
    pub role: Role,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// The 201 body: the only time `key` is shown.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    pub key_id: String,
    pub key: String,
    pub name: String,
    #[schema(value_type = String)]
    pub role: Role,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A key as listed: never its secret or hash.
#[derive(Serialize)]
pub struct KeyView {
    pub key_id: String,
    pub name: String,
    pub role: Role,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<KeyRecord> for KeyView {
    fn from(k: KeyRecord) -> Self {
        KeyView {
            key_id: k.key_id,
            name: k.name,
            role: k.role,
            created_by: k.created_by,
            created_at: k.created_at,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
            last_used_at: k.last_used_at,
        }
    }
}

/// Mints a key for `tenant` and stores its hash (the CLI's bootstrap; the
/// API audits between the two steps).
pub async fn mint_key(
    control: &dyn TenantControl,
    tenant: &TenantId,
    b: NewKeyBody,
    created_by: &str,
) -> ApiResult<CreatedKey> {
    store_key(control, new_key(tenant, b, created_by)?).await
}

/// A key minted and not yet stored: its id can be audited before the key
/// exists (fail closed).
pub struct PendingKey {
    record: KeyRecord,
    created: CreatedKey,
}

impl PendingKey {
    pub fn key_id(&self) -> &str {
        &self.created.key_id
    }
}

/// Validates a key request and mints its secret (nothing stored).
pub fn new_key(tenant: &TenantId, b: NewKeyBody, created_by: &str) -> ApiResult<PendingKey> {
    enclave_core::check::name("name", &b.name, enclave_core::check::MAX_LABEL_CHARS)?;
    // An `expires_at` already past is no error: the key is created expired
    // and authenticates nothing (JSON Schema cannot say "in the future").
    let expires_at = enclave_core::check::maybe_timestamp("expires_at", b.expires_at)?;
    let m = keys::mint();
    Ok(PendingKey {
        record: KeyRecord {
            key_id: m.key_id.clone(),
            tenant_id: tenant.clone(),
            name: b.name.clone(),
            role: b.role,
            salt: m.salt,
            secret_hash: m.secret_hash,
            created_by: created_by.to_owned(),
            created_at: Utc::now(),
            expires_at,
            revoked_at: None,
            last_used_at: None,
        },
        created: CreatedKey {
            key_id: m.key_id,
            key: m.key,
            name: b.name,
            role: b.role,
            expires_at,
        },
    })
}

/// Stores a minted key; it works from the next request.
pub async fn store_key(control: &dyn TenantControl, p: PendingKey) -> ApiResult<CreatedKey> {
    control.insert_key(p.record).await?;
    Ok(p.created)
}
