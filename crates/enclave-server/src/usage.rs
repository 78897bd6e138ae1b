//! Usage metering (API.md §7 `GET /v1/usage`). Requests are counted in
//! memory per tenant and UTC day and flushed to the control store every
//! couple of seconds, at shutdown, and before a tenant's usage is read, so
//! the hot path never waits on a write. What a crash loses is at most the
//! last flush interval's counts (documented in docs/ARCHITECTURE.md).

use std::collections::HashMap;

use chrono::{NaiveDate, Utc};
use enclave_core::TenantId;
use enclave_store::control::{ControlStore, UsageCounts};
use parking_lot::Mutex;

#[derive(Default)]
pub struct UsageMeter {
    pending: Mutex<HashMap<(TenantId, NaiveDate), UsageCounts>>,
}

impl UsageMeter {
    pub fn record(&self, tenant: &TenantId, counts: UsageCounts) {
        let day = Utc::now().date_naive();
        self.pending
            .lock()
            .entry((tenant.clone(), day))
            .or_default()
            .add(&counts);
    }

    /// Counts of `tenant` for `day` not yet flushed to the control store.
    pub fn pending(&self, tenant: &TenantId, day: NaiveDate) -> UsageCounts {
        self.pending
            .lock()
            .get(&(tenant.clone(), day))
            .cloned()
            .unwrap_or_default()
    }

    /// Drops a tenant's pending counts (it is being purged).
    pub fn forget(&self, tenant: &TenantId) {
        self.pending.lock().retain(|(t, _), _| t != tenant);
    }

    /// Writes pending counts (of one tenant, or all); counts whose write
    /// fails are kept for the next flush.
    pub async fn flush(&self, control: &dyn ControlStore, only: Option<&TenantId>) {
        let batch: Vec<((TenantId, NaiveDate), UsageCounts)> = {
            let mut p = self.pending.lock();
            let keys: Vec<(TenantId, NaiveDate)> = p
                .keys()
                .filter(|(t, _)| only.is_none_or(|o| o == t))
                .cloned()
                .collect();
            keys.into_iter()
                .filter_map(|k| p.remove(&k).map(|v| (k, v)))
                .collect()
        };
        for ((tenant, day), counts) in batch {
            if counts.is_zero() {
                continue;
            }
            if let Err(e) = control.tenant(&tenant).add_usage(day, counts).await {
                tracing::warn!(error = %e, "usage flush failed; kept for the next one");
                self.pending
                    .lock()
                    .entry((tenant, day))
                    .or_default()
                    .add(&counts);
            }
        }
    }
}
