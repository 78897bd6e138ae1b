//! What every tenant handle of one opened library shares: the store, the
//! embedder, the limits, the scheduler, the query cache and the per-tenant
//! write gates.

use std::sync::Arc;

use enclave_core::TenantId;
use enclave_embed::Embedder;
use enclave_store::Store;
use lru::LruCache;
use parking_lot::Mutex;

use crate::config::Limits;
use crate::scheduler::Scheduler;
use crate::slots::TenantSlots;

/// Query embeddings, keyed by tenant and query text.
pub(crate) type QueryCache = Mutex<LruCache<(TenantId, String), Arc<Vec<f32>>>>;

pub(crate) struct Shared {
    pub store: Arc<dyn Store>,
    pub embedder: Arc<dyn Embedder>,
    pub limits: Limits,
    pub query_cache: Option<QueryCache>,
    pub scheduler: Arc<Scheduler>,
    pub gates: WriteGates,
    pub slots: Arc<TenantSlots>,
    pub ingest: Arc<crate::ingest::IngestGate>,
}

/// One tenant's write gate. Writes that add or change data hold it shared
/// around their store call and check the generation their handle was made
/// in; a purge bumps the generation, then holds the gate exclusively while
/// it deletes. So no handle made before a purge writes after it — not an
/// upload whose embedding was still running, not a job's current document
/// — and the purge waits only for writes already inside the store.
#[derive(Default)]
pub(crate) struct WriteGate {
    pub lock: tokio::sync::RwLock<()>,
    pub generation: std::sync::atomic::AtomicU64,
}

/// The gates of the tenants that have a live handle.
#[derive(Default)]
pub(crate) struct WriteGates(Mutex<std::collections::HashMap<TenantId, Arc<WriteGate>>>);

impl WriteGates {
    pub fn get(&self, tenant: &TenantId) -> Arc<WriteGate> {
        let mut m = self.0.lock();
        if let Some(g) = m.get(tenant) {
            return g.clone();
        }
        if m.len() >= 10_000 {
            // A gate nobody holds has no handle that could write stale.
            m.retain(|_, g| Arc::strong_count(g) > 1);
        }
        let g = Arc::new(WriteGate::default());
        m.insert(tenant.clone(), g.clone());
        g
    }
}
