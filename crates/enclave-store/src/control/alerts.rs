//! Budget alerts: one per tenant, month and threshold, retried with backoff.

use chrono::{DateTime, Utc};
use enclave_core::TenantId;
use serde::{Deserialize, Serialize};

/// A tenant's spend crossed a share of its `monthly_budget_usd`
/// (docs/API-EXTENSIONS.md, "Budget alerts"). One per tenant, month and
/// threshold, ever: stored before it is sent, so neither a second replica
/// nor a restart sends it again; kept until a delivery succeeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetAlert {
    pub tenant_id: TenantId,
    /// `YYYY-MM` (UTC).
    pub month: String,
    /// 80 or 100.
    pub threshold_percent: u32,
    pub budget_usd: f64,
    pub spent_usd: f64,
    pub created_at: DateTime<Utc>,
    /// Deliveries tried so far (including the one about to be made).
    pub attempts: u32,
}

impl BudgetAlert {
    /// The alert's stable id (receivers deduplicate on it).
    pub fn id(&self) -> String {
        format!(
            "budget:{}:{}:{}",
            self.tenant_id, self.month, self.threshold_percent
        )
    }
}

/// Undelivered alerts are retried at most this many times.
pub const MAX_ALERT_ATTEMPTS: u32 = 20;

/// When the next delivery of an alert tried `attempts` times is due:
/// `retry` doubled per attempt, at most an hour.
pub fn alert_backoff(retry: std::time::Duration, attempts: u32) -> std::time::Duration {
    retry
        .saturating_mul(1 << attempts.saturating_sub(1).min(16))
        .min(std::time::Duration::from_secs(3600))
}
