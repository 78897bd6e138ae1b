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
    /// This process' counts per tenant since start, for the top-N metrics
    /// (`[metrics] top_tenants`); bounded by [`TRACKED_TENANTS`].
    totals: Mutex<HashMap<TenantId, UsageCounts>>,
    /// Tenants with usage since the budget alerts last looked.
    dirty: Mutex<std::collections::HashSet<TenantId>>,
    /// Held by a flush while it writes, and by a purge while it deletes, so
    /// a flush that took a purged tenant's counts cannot write them back
    /// after the purge.
    pub(crate) flushing: tokio::sync::Mutex<()>,
    /// Tenants purged by this process (until re-created): counts recorded
    /// for them by requests still in flight are dropped, so a re-created id
    /// starts with no usage.
    purged: Mutex<std::collections::HashSet<TenantId>>,
}

/// Embedding tokens are counted when the scheduler computes them, whether
/// or not the write they were for completes (a caller that times out has
/// still spent them).
impl enclave::EmbeddingMeter for UsageMeter {
    fn embedded(&self, tenant: &TenantId, tokens: u64) {
        self.record(
            tenant,
            UsageCounts {
                tokens_embedded: tokens,
                ..Default::default()
            },
        );
    }
}

/// Most tenants whose process totals are kept: beyond it the tenant with
/// the fewest requests is dropped (so the top N stay exact unless more than
/// this many tenants are about as busy).
const TRACKED_TENANTS: usize = 10_000;

impl UsageMeter {
    pub fn record(&self, tenant: &TenantId, counts: UsageCounts) {
        if self.purged.lock().contains(tenant) {
            return;
        }
        let day = Utc::now().date_naive();
        self.pending
            .lock()
            .entry((tenant.clone(), day))
            .or_default()
            .add(&counts);
        self.dirty.lock().insert(tenant.clone());
        let mut totals = self.totals.lock();
        if !totals.contains_key(tenant) && totals.len() >= TRACKED_TENANTS {
            if let Some(least) = totals
                .iter()
                .min_by_key(|(_, c)| c.requests)
                .map(|(t, _)| t.clone())
            {
                totals.remove(&least);
            }
        }
        totals.entry(tenant.clone()).or_default().add(&counts);
    }

    /// The tenants with usage since the last call.
    pub fn take_dirty(&self) -> Vec<TenantId> {
        self.dirty.lock().drain().collect()
    }

    /// The `n` tenants with the most requests since this process started.
    pub fn top(&self, n: usize) -> Vec<(TenantId, UsageCounts)> {
        if n == 0 {
            return Vec::new();
        }
        let mut all: Vec<(TenantId, UsageCounts)> = self
            .totals
            .lock()
            .iter()
            .map(|(t, c)| (t.clone(), *c))
            .collect();
        all.sort_by(|a, b| b.1.requests.cmp(&a.1.requests).then(a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }

    /// Counts of `tenant` for `day` not yet flushed to the control store.
    pub fn pending(&self, tenant: &TenantId, day: NaiveDate) -> UsageCounts {
        self.pending
            .lock()
            .get(&(tenant.clone(), day))
            .cloned()
            .unwrap_or_default()
    }

    /// From now on, counts of `tenant` are dropped (it was purged).
    pub fn tombstone(&self, tenant: &TenantId) {
        let mut p = self.purged.lock();
        if p.len() >= TRACKED_TENANTS {
            p.clear();
        }
        p.insert(tenant.clone());
    }

    /// `tenant` exists again (re-created): its counts are kept.
    pub fn revive(&self, tenant: &TenantId) {
        self.purged.lock().remove(tenant);
    }

    /// Drops a tenant's pending counts (it is being purged).
    pub fn forget(&self, tenant: &TenantId) {
        self.pending.lock().retain(|(t, _), _| t != tenant);
        self.totals.lock().remove(tenant);
        self.dirty.lock().remove(tenant);
    }

    /// Writes pending counts (of one tenant, or all); counts whose write
    /// fails are kept for the next flush.
    pub async fn flush(&self, control: &dyn ControlStore, only: Option<&TenantId>) {
        let _writing = self.flushing.lock().await;
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
            match control.tenant(&tenant).add_usage(day, counts).await {
                Ok(()) => {}
                Err(enclave_store::StoreError::Unavailable(e)) => {
                    tracing::warn!(error = %e, "usage flush failed; kept for the next one");
                    self.pending
                        .lock()
                        .entry((tenant, day))
                        .or_default()
                        .add(&counts);
                }
                // Not a passing fault (the tenant is gone: its entry was
                // purged on another replica): retrying would never end.
                Err(e) => tracing::warn!(error = %e, "usage flush refused; counts dropped"),
            }
        }
    }
}
