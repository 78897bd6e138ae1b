//! Enclave as a library: tenant-isolated memory with vector, full-text and
//! hybrid search.
//!
//! ```no_run
//! # async fn demo() -> enclave::Result<()> {
//! use enclave::{Memory, MemoryConfig, StoreConfig, EmbedderConfig, Layout};
//! use enclave::core::{DocumentType, NewDocument, SearchParams, TenantId};
//!
//! let memory = Memory::open(MemoryConfig::new(
//!     StoreConfig::embedded("./data", Layout::SharedFile),
//!     EmbedderConfig::Local { model_dir: "./.cache/model".into() },
//! )).await?;
//! let acme = memory.tenant(&TenantId::parse("acme")?);
//! acme.add_document(NewDocument::text("q4.md", DocumentType::Markdown, "# Q4\nRevenue grew 12%.")).await?;
//! let hits = acme.search(SearchParams::new("how did sales do last quarter")).await?;
//! # Ok(()) }
//! ```
//!
//! Layout: [`Memory`] (the opened library) → [`Tenant`] (one tenant's handle;
//! every data operation lives here) over the storage seam of
//! `enclave-store` and the embedders of `enclave-embed`; embedding work of
//! all tenants goes through one fair scheduler per `Memory` ([`Scheduling`]:
//! per-tenant queues served round-robin, heavy tenants in a low-priority lane).

mod config;
mod error;
mod ingest;
mod memory;
mod scheduler;
mod shared;
mod slots;
mod tenant;

pub use config::{EmbedderConfig, Limits, MemoryConfig, StoreConfig};
pub use enclave_core as core;
pub use enclave_embed as embed;
pub use enclave_store::sqlite::{Durability, Layout};
pub use error::{Error, Result};
pub use memory::Memory;
pub use scheduler::{EmbeddingMeter, Priority, SchedulerStats, Scheduling};
pub use slots::{StoreConcurrency, StoreSlotStats};
pub use tenant::{
    AddOutcome, AddResult, DocumentList, ExportPiece, ListParams, PurgeCounts, Tenant, WriteBudget,
    EXPORT_CHUNK_PAGE, MAX_OFFSET,
};
