//! Bounded document preparation: the bytes of document content being
//! chunked, embedded and written are capped per tenant and in all *before*
//! any of that work starts, and large documents are cut at the lowest OS
//! priority where an abandoned one stops at its next piece.
//!
//! Without it, a tenant sending 10 MiB documents at its full request rate
//! and abandoning each (the security review's attack) had every one of them
//! tokenized on the blocking pool — many seconds of CPU per second, and
//! gigabytes of memory — whatever the embedding queue later refused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use enclave_core::{TenantId, TokenCounter};
use parking_lot::Mutex;

use crate::{Error, Result};

/// Documents at least this large are cut on the low-priority pool; smaller
/// ones (the common case, milliseconds of work) on the ordinary one.
pub(crate) const LARGE_DOCUMENT_BYTES: usize = 256 * 1024;

#[derive(Default)]
struct Held {
    total: u64,
    per_tenant: HashMap<TenantId, u64>,
}

/// Content bytes in preparation, per tenant and in all.
pub(crate) struct IngestGate {
    per_tenant_max: u64,
    total_max: u64,
    held: Mutex<Held>,
    freed: tokio::sync::Notify,
}

/// Bytes admitted for one call; returned when it is dropped (the call
/// finished, failed, or its caller went away).
pub(crate) struct Admitted {
    gate: Arc<IngestGate>,
    tenant: TenantId,
    bytes: u64,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        {
            let mut h = self.gate.held.lock();
            h.total -= self.bytes;
            if let Some(t) = h.per_tenant.get_mut(&self.tenant) {
                *t -= self.bytes;
                if *t == 0 {
                    h.per_tenant.remove(&self.tenant);
                }
            }
        }
        self.gate.freed.notify_waiters();
    }
}

impl IngestGate {
    pub fn new(per_tenant_max: usize, total_max: usize) -> Arc<Self> {
        Arc::new(Self {
            per_tenant_max: per_tenant_max.max(1) as u64,
            total_max: total_max.max(1) as u64,
            held: Mutex::default(),
            freed: tokio::sync::Notify::new(),
        })
    }

    /// Admits `bytes` of `tenant`'s content when they fit its share and the
    /// total — or when nothing of the tenant (resp. nobody) is in
    /// preparation, so one document as large as the document limit is
    /// always possible, alone.
    fn try_admit(self: &Arc<Self>, tenant: &TenantId, bytes: u64) -> Option<Admitted> {
        let mut h = self.held.lock();
        let mine = h.per_tenant.get(tenant).copied().unwrap_or(0);
        let fits_tenant = mine == 0 || mine + bytes <= self.per_tenant_max;
        let fits_total = h.total == 0 || h.total + bytes <= self.total_max;
        if !(fits_tenant && fits_total) {
            return None;
        }
        h.total += bytes;
        *h.per_tenant.entry(tenant.clone()).or_default() += bytes;
        Some(Admitted {
            gate: self.clone(),
            tenant: tenant.clone(),
            bytes,
        })
    }

    /// [`Self::try_admit`], refusing at once (`wait` false: a caller who
    /// can retry gets 429 with `Retry-After`) or waiting for room (jobs).
    pub async fn admit(
        self: &Arc<Self>,
        tenant: &TenantId,
        bytes: u64,
        wait: bool,
    ) -> Result<Admitted> {
        loop {
            let freed = self.freed.notified();
            if let Some(a) = self.try_admit(tenant, bytes) {
                return Ok(a);
            }
            if !wait {
                return Err(Error::Busy {
                    what: "the documents this tenant has in preparation",
                    retry_after_secs: 2,
                });
            }
            freed.await;
        }
    }

    /// Bytes in preparation now, in all.
    #[cfg(test)]
    pub fn total(&self) -> u64 {
        self.held.lock().total
    }
}

/// Set when the call that started a cut goes away: the cut stops at its
/// next piece (its result is never read).
pub(crate) struct CancelOnDrop(pub Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A token counter that counts nothing more once its call was cancelled
/// (the chunker sees the rest of the text as token-free and ends).
pub(crate) struct Cancellable {
    pub inner: Arc<dyn TokenCounter>,
    pub cancelled: Arc<AtomicBool>,
}

impl TokenCounter for Cancellable {
    fn token_spans(&self, text: &str) -> Vec<(usize, usize)> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Vec::new();
        }
        self.inner.token_spans(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn preparation_bytes_are_bounded_per_tenant_and_in_all_but_one_document_always_fits() {
        let g = IngestGate::new(100, 150);
        let (a, b, c) = (
            TenantId::parse("a").unwrap(),
            TenantId::parse("b").unwrap(),
            TenantId::parse("c").unwrap(),
        );
        // Alone, a document larger than the share is admitted.
        let big = g.admit(&a, 500, false).await.unwrap();
        // Then nothing more of that tenant, and nothing over the total.
        assert!(matches!(
            g.admit(&a, 1, false).await,
            Err(Error::Busy { .. })
        ));
        assert!(matches!(
            g.admit(&b, 10, false).await,
            Err(Error::Busy { .. })
        ));
        drop(big);
        assert_eq!(g.total(), 0);
        let a1 = g.admit(&a, 60, false).await.unwrap();
        let b1 = g.admit(&b, 80, false).await.unwrap();
        // a's share has room (60 + 40), the total does not (140 + 40).
        assert!(g.admit(&a, 40, false).await.is_err());
        assert!(g.admit(&c, 20, false).await.is_err());
        let a2 = g.admit(&a, 10, false).await.unwrap();
        // A waiting caller is admitted when room returns.
        let g2 = g.clone();
        let waiter = tokio::spawn(async move { g2.admit(&c, 100, true).await.map(|_| ()) });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop((a1, b1, a2));
        waiter.await.unwrap().unwrap();
        assert_eq!(g.total(), 0);
    }
}
