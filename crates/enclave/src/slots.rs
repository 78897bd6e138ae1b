//! Per-tenant concurrency on the store: no tenant holds more than its share
//! of the data connections, however slow its queries or however many of
//! its exports run.
//!
//! Every [`crate::Tenant`] reaches its data through a [`Slotted`] store: each
//! call takes one of the tenant's `per_tenant` slots for as long as it runs
//! (a store call holds at most one pooled connection), waiting up to `wait`
//! for one to free. A tenant with every slot busy past that is refused with
//! [`StoreError::Busy`] (API 429 `rate_limited`, `Retry-After`), and the
//! others' calls never queue behind it. A caller that goes away while
//! waiting leaves the queue; one that goes away mid-call frees its slot when
//! the store call's future is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use enclave_core::query::TextQuery;
use enclave_core::{
    Document, DocumentFilter, DocumentId, DocumentInfo, DocumentPatch, ExportedChunk, Message,
    SessionId, Statistics, TenantId,
};
use enclave_store::{
    Candidate, ChunkKey, DocumentPage, DocumentRecord, ExistingDocument, HitRow, ListQuery,
    MessageUsage, PutOutcome, StoreError, StoreResult, TenantStore,
};
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How many store calls of one tenant may run at once, and how long a
/// further one waits for a slot before it is refused (`[store]` of the
/// server's settings).
#[serde_with::serde_as]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConcurrency {
    /// Store calls of one tenant running at once (each holds at most one
    /// data connection).
    #[serde(rename = "max_concurrent_per_tenant")]
    pub per_tenant: usize,
    /// How long a further call waits for a slot before 429.
    #[serde(rename = "slot_wait_ms")]
    #[serde_as(as = "serde_with::DurationMilliSeconds<u64>")]
    pub wait: Duration,
}

impl StoreConcurrency {
    /// Refuses values the slots cannot work with.
    pub fn check(&self) -> Result<(), String> {
        if self.per_tenant == 0 {
            return Err("max_concurrent_per_tenant must be at least 1".into());
        }
        if self.wait > Duration::from_secs(60) {
            return Err("slot_wait_ms must be at most 60000".into());
        }
        Ok(())
    }
}

impl Default for StoreConcurrency {
    fn default() -> Self {
        // Half of the server's eight data connections on PostgreSQL: one
        // tenant can never hold them all.
        Self {
            per_tenant: 4,
            wait: Duration::from_secs(2),
        }
    }
}

/// What the slots have done since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreSlotStats {
    /// Calls that found every slot of their tenant busy and waited.
    pub waited_total: u64,
    /// Calls refused after waiting `wait`.
    pub refused_total: u64,
}

/// The slots of the tenants that have a live handle.
pub(crate) struct TenantSlots {
    config: StoreConcurrency,
    map: Mutex<HashMap<TenantId, Arc<Semaphore>>>,
    waited: AtomicU64,
    refused: AtomicU64,
}

impl TenantSlots {
    pub fn new(config: StoreConcurrency) -> Arc<Self> {
        Arc::new(Self {
            config: StoreConcurrency {
                per_tenant: config.per_tenant.max(1),
                wait: config.wait,
            },
            map: Mutex::default(),
            waited: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    pub fn config(&self) -> StoreConcurrency {
        self.config
    }

    pub fn stats(&self) -> StoreSlotStats {
        StoreSlotStats {
            waited_total: self.waited.load(Relaxed),
            refused_total: self.refused.load(Relaxed),
        }
    }

    /// `store` with every call counted against `tenant`'s slots.
    pub fn wrap(self: &Arc<Self>, tenant: &TenantId, store: Arc<dyn TenantStore>) -> Slotted {
        let sem = {
            let mut m = self.map.lock();
            match m.get(tenant) {
                Some(s) => s.clone(),
                None => {
                    if m.len() >= 10_000 {
                        // Nobody holds these: no call of theirs is running.
                        m.retain(|_, s| Arc::strong_count(s) > 1);
                    }
                    let s = Arc::new(Semaphore::new(self.config.per_tenant));
                    m.insert(tenant.clone(), s.clone());
                    s
                }
            }
        };
        Slotted {
            inner: store,
            sem,
            slots: self.clone(),
        }
    }
}

/// A tenant's store whose calls each hold one of the tenant's slots.
pub(crate) struct Slotted {
    inner: Arc<dyn TenantStore>,
    sem: Arc<Semaphore>,
    slots: Arc<TenantSlots>,
}

/// Slots held for a call that runs several store queries at once (a hybrid
/// search's vector and text candidates), taken together so two such calls
/// never each hold one and wait for the other's.
pub(crate) struct Held {
    _permits: OwnedSemaphorePermit,
    count: usize,
    store: Arc<dyn TenantStore>,
}

impl Held {
    /// How many queries may run at once under these slots.
    pub fn count(&self) -> usize {
        self.count
    }
    /// The store, to be called only while these slots are held.
    pub fn store(&self) -> &Arc<dyn TenantStore> {
        &self.store
    }
}

impl Slotted {
    /// `n` slots at once (at most the tenant's all), for queries run
    /// concurrently through [`Held::store`].
    pub async fn hold(&self, n: usize) -> StoreResult<Held> {
        let count = n.clamp(1, self.slots.config.per_tenant);
        let permits = self.acquire(count as u32).await?;
        Ok(Held {
            _permits: permits,
            count,
            store: self.inner.clone(),
        })
    }

    async fn slot(&self) -> StoreResult<OwnedSemaphorePermit> {
        self.acquire(1).await
    }

    async fn acquire(&self, n: u32) -> StoreResult<OwnedSemaphorePermit> {
        if let Ok(p) = self.sem.clone().try_acquire_many_owned(n) {
            return Ok(p);
        }
        self.slots.waited.fetch_add(1, Relaxed);
        let wait = self.slots.config.wait;
        match tokio::time::timeout(wait, self.sem.clone().acquire_many_owned(n)).await {
            Ok(Ok(p)) => Ok(p),
            // The semaphore is never closed; timing out is the refusal.
            _ => {
                self.slots.refused.fetch_add(1, Relaxed);
                Err(StoreError::Busy(format!(
                    "all {} of this tenant's data connections stayed busy for {} ms",
                    self.slots.config.per_tenant,
                    wait.as_millis()
                )))
            }
        }
    }
}

#[async_trait::async_trait]
impl TenantStore for Slotted {
    async fn find_by_keys(
        &self,
        dedupe_keys: &[String],
    ) -> StoreResult<HashMap<String, ExistingDocument>> {
        let _slot = self.slot().await?;
        self.inner.find_by_keys(dedupe_keys).await
    }
    async fn put_document(&self, doc: DocumentRecord) -> StoreResult<(DocumentId, PutOutcome)> {
        let _slot = self.slot().await?;
        self.inner.put_document(doc).await
    }
    async fn put_documents(
        &self,
        docs: Vec<DocumentRecord>,
    ) -> StoreResult<Vec<(DocumentId, PutOutcome)>> {
        let _slot = self.slot().await?;
        self.inner.put_documents(docs).await
    }
    async fn vector_candidates(
        &self,
        query: &[f32],
        filter: &DocumentFilter,
        k: usize,
    ) -> StoreResult<Vec<Candidate>> {
        let _slot = self.slot().await?;
        self.inner.vector_candidates(query, filter, k).await
    }
    async fn text_candidates(
        &self,
        query: &TextQuery,
        filter: &DocumentFilter,
        k: usize,
    ) -> StoreResult<Vec<Candidate>> {
        let _slot = self.slot().await?;
        self.inner.text_candidates(query, filter, k).await
    }
    async fn complete_scores(
        &self,
        vector: &[f32],
        vector_keys: &[ChunkKey],
        text: &TextQuery,
        text_keys: &[ChunkKey],
    ) -> StoreResult<enclave_store::Completion> {
        let _slot = self.slot().await?;
        self.inner
            .complete_scores(vector, vector_keys, text, text_keys)
            .await
    }
    async fn hydrate(&self, keys: &[ChunkKey]) -> StoreResult<Vec<HitRow>> {
        let _slot = self.slot().await?;
        self.inner.hydrate(keys).await
    }
    async fn list_documents(&self, query: &ListQuery) -> StoreResult<DocumentPage> {
        let _slot = self.slot().await?;
        self.inner.list_documents(query).await
    }
    async fn get_document(
        &self,
        id: DocumentId,
        include_chunks: bool,
    ) -> StoreResult<Option<Document>> {
        let _slot = self.slot().await?;
        self.inner.get_document(id, include_chunks).await
    }
    async fn update_document(
        &self,
        id: DocumentId,
        patch: &DocumentPatch,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<DocumentInfo>> {
        let _slot = self.slot().await?;
        self.inner.update_document(id, patch, now).await
    }
    async fn delete_documents(&self, ids: &[DocumentId]) -> StoreResult<u64> {
        let _slot = self.slot().await?;
        self.inner.delete_documents(ids).await
    }
    async fn statistics(&self) -> StoreResult<Statistics> {
        let _slot = self.slot().await?;
        self.inner.statistics().await
    }
    async fn export_documents(
        &self,
        after: Option<DocumentId>,
        limit: u32,
    ) -> StoreResult<Vec<DocumentInfo>> {
        let _slot = self.slot().await?;
        self.inner.export_documents(after, limit).await
    }
    async fn export_chunks(
        &self,
        id: DocumentId,
        after_index: Option<u32>,
        limit: u32,
    ) -> StoreResult<Vec<ExportedChunk>> {
        let _slot = self.slot().await?;
        self.inner.export_chunks(id, after_index, limit).await
    }
    async fn append_message(&self, message: Message) -> StoreResult<Message> {
        let _slot = self.slot().await?;
        self.inner.append_message(message).await
    }
    async fn list_messages(
        &self,
        session: &SessionId,
        before_seq: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        let _slot = self.slot().await?;
        self.inner.list_messages(session, before_seq, limit).await
    }
    async fn delete_session(&self, session: &SessionId) -> StoreResult<u64> {
        let _slot = self.slot().await?;
        self.inner.delete_session(session).await
    }
    async fn delete_all_messages(&self) -> StoreResult<u64> {
        let _slot = self.slot().await?;
        self.inner.delete_all_messages().await
    }
    async fn message_count(&self) -> StoreResult<u64> {
        let _slot = self.slot().await?;
        self.inner.message_count().await
    }
    async fn message_usage(&self) -> StoreResult<MessageUsage> {
        let _slot = self.slot().await?;
        self.inner.message_usage().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use enclave_store::sqlite::{Layout, SqliteOptions, SqliteStore};
    use enclave_store::Store;

    fn store() -> (tempfile::TempDir, Arc<dyn TenantStore>) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(SqliteOptions::new(dir.path(), Layout::SharedFile, 8)).unwrap();
        let t = s.tenant(&TenantId::parse("acme").unwrap());
        (dir, t)
    }

    #[tokio::test]
    async fn a_tenant_with_every_slot_held_is_refused_after_the_wait_and_others_are_not() {
        let (_d, inner) = store();
        let slots = TenantSlots::new(StoreConcurrency {
            per_tenant: 2,
            wait: Duration::from_millis(50),
        });
        let a = TenantId::parse("a").unwrap();
        let b = TenantId::parse("b").unwrap();
        let sa = slots.wrap(&a, inner.clone());
        let held = (sa.slot().await.unwrap(), sa.slot().await.unwrap());
        // A second handle of the same tenant shares its slots.
        let sa2 = slots.wrap(&a, inner.clone());
        let err = sa2.message_count().await.unwrap_err();
        assert!(matches!(err, StoreError::Busy(_)), "{err:?}");
        // Another tenant is not held up at all.
        let sb = slots.wrap(&b, inner.clone());
        sb.message_count().await.unwrap();
        assert_eq!(slots.stats().refused_total, 1);
        // A freed slot is taken by a waiter.
        let waiter = tokio::spawn(async move { sa2.message_count().await });
        tokio::task::yield_now().await;
        drop(held);
        waiter.await.unwrap().unwrap();
    }
}
