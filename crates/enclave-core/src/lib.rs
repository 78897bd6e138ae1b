//! Enclave's domain core: the types every other crate speaks, and the pure
//! logic that needs no I/O.
//!
//! - [`id`]: validated identifiers (`TenantId`, `Origin`, `DocumentId`, `ChunkId`);
//! - [`document`]: what is submitted, stored and exported;
//! - [`search`]: search requests (validated), filters and hits;
//! - [`filter`]: the metadata filter language and its reference evaluator;
//! - [`message`]: conversation memory;
//! - [`query`]: web-search style full-text queries;
//! - [`chunk`]: token-aware chunking;
//! - [`fusion`]: reciprocal rank fusion;
//! - [`tenancy`]: roles, tenant status, isolation modes and slugs.

pub mod analyze;
pub mod bm25;
pub mod check;
pub mod chunk;
mod doc_type;
pub mod document;
mod error;
pub mod filter;
pub mod fusion;
pub mod id;
pub mod message;
pub mod query;
pub mod search;
pub mod tenancy;

pub use chunk::{ChunkStrategy, ChunkingOptions, TokenCounter};
pub use document::{
    ChunkInfo, Document, DocumentBody, DocumentInfo, DocumentPatch, DocumentType, ExportedChunk,
    ExportedDocument, NewDocument, ProvidedChunk, Statistics,
};
pub use error::InvalidInput;
pub use filter::MetadataFilter;
pub use id::{ChunkId, DocumentId, MessageId, Origin, SessionId, TenantId};
pub use message::{Message, MessageRole, NewMessage};
pub use search::{
    Aggregation, DocumentFilter, Fusion, Prf, Search, SearchDefaults, SearchHit, SearchMode,
    SearchParams, SearchResults,
};
pub use tenancy::{Isolation, Role, Slug, TenantStatus};
