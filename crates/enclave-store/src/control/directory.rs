//! Tenant directory records (API.md §8).

use chrono::{DateTime, Utc};
use enclave_core::{Isolation, SearchDefaults, Slug, TenantId, TenantStatus};
use serde::{Deserialize, Serialize};

/// A tenant's directory entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantRecord {
    pub id: TenantId,
    pub slug: Slug,
    pub name: String,
    pub plan: String,
    pub status: TenantStatus,
    pub isolation: Isolation,
    /// Per-tenant overrides of the plan's limits (API.md §8 `limits`).
    pub limits: super::TenantLimits,
    /// The fusion and aggregation this tenant's searches use when a
    /// request names none (docs/API-EXTENSIONS.md).
    #[serde(default)]
    pub search: SearchDefaults,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What `create_tenant` needs.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTenant {
    pub id: TenantId,
    pub slug: Slug,
    pub name: String,
    pub plan: String,
    pub isolation: Isolation,
    pub limits: super::TenantLimits,
    pub search: SearchDefaults,
    pub now: DateTime<Utc>,
}

/// Changes to a tenant (API.md §8 PATCH); `limits` and `search` replace
/// the object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantUpdate {
    pub status: Option<TenantStatus>,
    pub plan: Option<String>,
    pub limits: Option<super::TenantLimits>,
    pub search: Option<SearchDefaults>,
}

/// What purging a tenant's control-plane rows removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ControlPurge {
    pub keys_revoked: u64,
    pub audit_events_deleted: u64,
}
