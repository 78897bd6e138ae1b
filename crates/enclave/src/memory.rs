//! `Memory`: the opened library. Its only door to data is [`Memory::tenant`].

use std::num::NonZeroUsize;
use std::sync::Arc;

use enclave_core::TenantId;
use enclave_embed::{Embedder, HashEmbedder, MiniLm, MiniLmOptions};
use enclave_store::sqlite::{SqliteOptions, SqliteStore};
use enclave_store::Store;
use lru::LruCache;
use parking_lot::Mutex;

use crate::config::{EmbedderConfig, Limits, MemoryConfig, StoreConfig};
use crate::scheduler::{Scheduler, SchedulerStats, Scheduling};
use crate::shared::{Shared, WriteGates};
use crate::slots::{StoreConcurrency, StoreSlotStats, TenantSlots};
use crate::tenant::Tenant;
use crate::{Error, Result};

/// The opened library: a store, an embedder and limits.
#[derive(Clone)]
pub struct Memory {
    pub(crate) inner: Arc<Shared>,
}

fn ingest_gate(s: &Scheduling) -> Arc<crate::ingest::IngestGate> {
    crate::ingest::IngestGate::new(
        s.max_preparing_bytes_per_tenant,
        s.max_preparing_bytes_total,
    )
}

impl Memory {
    /// The embedding model's identifier (what usage is priced by).
    pub fn embedding_model(&self) -> &str {
        self.inner.embedder.model_id()
    }

    /// Opens the configured store and loads the embedder.
    pub async fn open(config: MemoryConfig) -> Result<Memory> {
        let embedder = Self::load_embedder(config.embedder).await?;
        let store = Self::open_store(config.store, embedder.dimensions()).await?;
        Ok(Self::from_parts(
            store,
            embedder,
            config.limits,
            config.query_cache_entries,
        ))
    }

    /// Opens the configured embedded store for `dims`-dimensional vectors
    /// (off the async runtime). For callers that share one embedder between
    /// several stores.
    pub async fn open_store(config: StoreConfig, dims: usize) -> Result<Arc<dyn Store>> {
        Ok(match config {
            StoreConfig::Embedded {
                dir,
                layout,
                durability,
                vector_cache_bytes,
                text_language,
            } => {
                let mut opts = SqliteOptions::new(dir, layout, dims);
                opts.text_language = text_language;
                opts.durability = durability;
                opts.vector_cache_bytes = vector_cache_bytes;
                Arc::new(
                    tokio::task::spawn_blocking(move || SqliteStore::open(opts))
                        .await
                        .map_err(|e| Error::Internal(e.to_string()))??,
                )
            }
        })
    }

    /// Builds the configured embedder (loading model weights off the async
    /// runtime). For callers that open a store themselves, e.g. PostgreSQL.
    pub async fn load_embedder(config: EmbedderConfig) -> Result<Arc<dyn Embedder>> {
        Ok(match config {
            EmbedderConfig::Local { model_dir } => {
                let m = tokio::task::spawn_blocking(move || {
                    MiniLm::load(MiniLmOptions::new(model_dir))
                })
                .await
                .map_err(|e| Error::Internal(e.to_string()))??;
                Arc::new(m)
            }
            EmbedderConfig::Hash { dimensions } => Arc::new(HashEmbedder::new(dimensions)),
            EmbedderConfig::Custom(e) => e,
        })
    }

    /// Assembles a `Memory` from an already-open store and embedder.
    pub fn from_parts(
        store: Arc<dyn Store>,
        embedder: Arc<dyn Embedder>,
        limits: Limits,
        query_cache_entries: usize,
    ) -> Memory {
        Memory {
            inner: Arc::new(Shared {
                scheduler: Scheduler::new(embedder.clone(), Scheduling::default()),
                gates: WriteGates::default(),
                slots: TenantSlots::new(StoreConcurrency::default()),
                ingest: ingest_gate(&Scheduling::default()),
                store,
                embedder,
                limits,
                query_cache: NonZeroUsize::new(query_cache_entries)
                    .map(|n| Mutex::new(LruCache::new(n))),
            }),
        }
    }

    /// The same store and embedder with embedding work shared between
    /// tenants as `scheduling` says (instead of [`Scheduling::default`]).
    /// Work already queued stays with the previous scheduler.
    pub fn with_scheduling(self, scheduling: Scheduling) -> Memory {
        let slots = self.inner.slots.config();
        self.rebuilt(scheduling, slots)
    }

    /// The same store and embedder with each tenant's store calls bounded
    /// as `concurrency` says (instead of [`StoreConcurrency::default`]).
    pub fn with_store_concurrency(self, concurrency: StoreConcurrency) -> Memory {
        let scheduling = self.inner.scheduler.scheduling();
        self.rebuilt(scheduling, concurrency)
    }

    fn rebuilt(self, scheduling: Scheduling, concurrency: StoreConcurrency) -> Memory {
        let cache_entries = self
            .inner
            .query_cache
            .as_ref()
            .map_or(0, |c| c.lock().cap().get());
        Memory {
            inner: Arc::new(Shared {
                scheduler: Scheduler::new(self.inner.embedder.clone(), scheduling),
                gates: WriteGates::default(),
                slots: TenantSlots::new(concurrency),
                ingest: ingest_gate(&scheduling),
                store: self.inner.store.clone(),
                embedder: self.inner.embedder.clone(),
                limits: self.inner.limits,
                query_cache: NonZeroUsize::new(cache_entries).map(|n| Mutex::new(LruCache::new(n))),
            }),
        }
    }

    /// Reports every embedding unit computed, to its tenant, to `meter`
    /// (set once per `Memory`; after [`Memory::with_scheduling`]).
    pub fn set_embedding_meter(&self, meter: Arc<dyn crate::EmbeddingMeter>) {
        self.inner.scheduler.set_meter(meter);
    }

    /// Queue depths and lane figures of the embedding scheduler.
    pub fn scheduler_stats(&self) -> SchedulerStats {
        self.inner.scheduler.stats()
    }

    /// How often tenants found every store slot of theirs busy.
    pub fn store_slot_stats(&self) -> StoreSlotStats {
        self.inner.slots.stats()
    }

    /// The handle through which everything of one tenant is reached. Its
    /// methods take no tenant argument.
    pub fn tenant(&self, id: &TenantId) -> Tenant {
        Tenant::new(self.inner.clone(), id.clone())
    }

    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.inner.embedder
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }
}
