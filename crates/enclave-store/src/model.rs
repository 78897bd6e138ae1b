//! The records that cross the storage seam.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use enclave_core::query::TextQuery;
use enclave_core::{
    ChunkId, Document, DocumentFilter, DocumentId, DocumentInfo, DocumentPatch, DocumentType,
    ExportedChunk, Message, Origin, SessionId, Statistics, TenantId,
};
use serde_json::{Map, Value};

/// What went wrong in a store. Messages never carry another tenant's data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A caller error the store detected (e.g. a vector of the wrong length).
    #[error("{0}")]
    Invalid(String),
    /// The write would break a uniqueness rule (e.g. a rename onto another
    /// document's name in the same origin).
    #[error("{0}")]
    Conflict(String),
    /// The backing store cannot be reached; nothing was changed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A bounded queue of the tenant's is full (e.g. its unfinished jobs);
    /// nothing was changed.
    #[error("{0}")]
    Full(String),
    /// Every one of the tenant's store slots stayed busy (its own calls
    /// hold them); nothing was done, retry shortly.
    #[error("{0}")]
    Busy(String),
    /// A bug or corruption; details are for logs only.
    #[error("store internal error: {0}")]
    Internal(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A chunk to store, with its vector (leaf chunks) or without (section
/// parents kept only for context).
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkRecord {
    pub chunk_id: ChunkId,
    pub index: u32,
    pub content: String,
    pub token_count: u32,
    pub metadata: Map<String, Value>,
    /// Index of the parent section (hierarchical chunking).
    pub parent_index: Option<u32>,
    pub embedding: Vec<f32>,
}

/// A parent section (hierarchical chunking); not searchable by itself.
#[derive(Debug, Clone, PartialEq)]
pub struct SectionRecord {
    pub index: u32,
    pub content: String,
    pub token_count: u32,
}

/// A whole document as written in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentRecord {
    /// Id used if the document is new; an existing document with the same
    /// `dedupe_key` keeps its own id.
    pub document_id: DocumentId,
    /// Identity for idempotent re-adds: external id, or origin + name.
    pub dedupe_key: String,
    pub name: String,
    pub doc_type: DocumentType,
    pub origin: Option<Origin>,
    pub external_id: Option<String>,
    pub metadata: Map<String, Value>,
    /// Hash of the content and chunking options: equal hashes mean equal chunks.
    pub content_hash: String,
    pub size_bytes: u64,
    pub document_date: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
    pub chunks: Vec<ChunkRecord>,
    pub sections: Vec<SectionRecord>,
}

/// The identity under which re-adding a document replaces it: the caller's
/// external id when given, otherwise origin and name.
pub fn dedupe_key(external_id: Option<&str>, origin: Option<&Origin>, name: &str) -> String {
    match external_id {
        Some(x) => format!("x:{x}"),
        None => format!("n:{}\n{name}", origin.map_or("", |o| o.as_str())),
    }
}

/// What `put_document` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    Replaced,
}

/// An existing document found by its dedupe key.
#[derive(Debug, Clone, PartialEq)]
pub struct ExistingDocument {
    pub document_id: DocumentId,
    pub content_hash: String,
    pub chunk_count: u64,
    pub token_count: u64,
    pub created_at: DateTime<Utc>,
}

/// A backend's internal handle on a chunk, valid inside one tenant.
pub type ChunkKey = i64;

/// A candidate from one retriever: chunk and raw score (higher is better).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub key: ChunkKey,
    pub score: f64,
}

/// The other half of a hybrid search's scores (`TenantStore::complete_scores`):
/// the cosine of each text candidate and the BM25 of each vector candidate,
/// exact, so fusion weighs every candidate on both lists' scores — a chunk
/// outside one list's first k is further down that list, not absent from it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completion {
    /// Cosine similarity of each asked chunk that exists.
    pub vector: Vec<Candidate>,
    /// BM25 of each asked chunk that matches the text query (a chunk
    /// holding none of its terms has none and is left out).
    pub text: Vec<Candidate>,
    /// The most any of the tenant's chunks could score for the text query
    /// (`enclave_core::bm25::ceiling`); 0 when none of its terms occurs.
    pub text_ceiling: f64,
}

/// A chunk with the fields a search hit shows.
#[derive(Debug, Clone, PartialEq)]
pub struct HitRow {
    pub key: ChunkKey,
    pub chunk_id: ChunkId,
    pub index: u32,
    pub content: String,
    pub parent_content: Option<String>,
    pub document: DocumentInfo,
}

/// A page request over documents.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub filter: DocumentFilter,
    pub limit: u32,
    /// Continue after this document (ids are time-ordered; newest first).
    pub after: Option<DocumentId>,
    pub offset: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DocumentPage {
    pub documents: Vec<DocumentInfo>,
    pub total: u64,
    /// The last document of this page, when more follow.
    pub next_after: Option<DocumentId>,
}

/// Hands out tenant-scoped handles. The only way to reach tenant data.
pub trait Store: Send + Sync + 'static {
    /// A handle on one tenant's data. Cheap; opens nothing until used.
    fn tenant(&self, id: &TenantId) -> Arc<dyn TenantStore>;
    /// The vector length this store was created for.
    fn dimensions(&self) -> usize;
    /// The text analysis this store indexes with (query-side stages
    /// analyze feedback text the same way).
    fn analyzer(&self) -> &enclave_core::analyze::Analyzer;
}

/// One tenant's data. No method takes a tenant: the handle *is* the tenant.
#[async_trait::async_trait]
pub trait TenantStore: Send + Sync {
    /// The existing documents with these dedupe keys, by key (one lookup for
    /// a whole batch: a transaction per document cost PostgreSQL a directory
    /// read and a commit each).
    async fn find_by_keys(
        &self,
        dedupe_keys: &[String],
    ) -> StoreResult<std::collections::HashMap<String, ExistingDocument>>;
    /// Writes (or replaces, by dedupe key) a document, its chunks, vectors and
    /// text index entries in one transaction. Returns the document's id.
    async fn put_document(&self, doc: DocumentRecord) -> StoreResult<(DocumentId, PutOutcome)>;
    /// Writes several documents, each whole (as [`Self::put_document`]).
    /// Backends that can, commit the batch in one transaction; the default
    /// writes them one after another.
    async fn put_documents(
        &self,
        docs: Vec<DocumentRecord>,
    ) -> StoreResult<Vec<(DocumentId, PutOutcome)>> {
        let mut out = Vec::with_capacity(docs.len());
        for doc in docs {
            out.push(self.put_document(doc).await?);
        }
        Ok(out)
    }
    /// Nearest chunks by cosine similarity (vectors are unit length).
    async fn vector_candidates(
        &self,
        query: &[f32],
        filter: &DocumentFilter,
        k: usize,
    ) -> StoreResult<Vec<Candidate>>;
    /// Best chunks by the backend's full-text ranking (BM25 on SQLite),
    /// computed from this tenant's statistics only.
    async fn text_candidates(
        &self,
        query: &TextQuery,
        filter: &DocumentFilter,
        k: usize,
    ) -> StoreResult<Vec<Candidate>>;
    /// Exact scores of a hybrid search's candidates in the list they are
    /// missing from: cosine with `vector` for `vector_keys`, BM25 (with the
    /// same statistics and pruning as [`Self::text_candidates`]) for
    /// `text_keys`, and the text query's ceiling.
    async fn complete_scores(
        &self,
        vector: &[f32],
        vector_keys: &[ChunkKey],
        text: &TextQuery,
        text_keys: &[ChunkKey],
    ) -> StoreResult<Completion>;
    /// Loads chunks for display; keys that no longer exist are skipped.
    async fn hydrate(&self, keys: &[ChunkKey]) -> StoreResult<Vec<HitRow>>;
    async fn list_documents(&self, query: &ListQuery) -> StoreResult<DocumentPage>;
    async fn get_document(
        &self,
        id: DocumentId,
        include_chunks: bool,
    ) -> StoreResult<Option<Document>>;
    async fn update_document(
        &self,
        id: DocumentId,
        patch: &DocumentPatch,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<DocumentInfo>>;
    /// Deletes those of `ids` that exist in this tenant; returns how many.
    async fn delete_documents(&self, ids: &[DocumentId]) -> StoreResult<u64>;
    async fn statistics(&self) -> StoreResult<Statistics>;
    /// Up to `limit` documents after `after` (ascending id), without their
    /// chunks (export reads those a page at a time).
    async fn export_documents(
        &self,
        after: Option<DocumentId>,
        limit: u32,
    ) -> StoreResult<Vec<DocumentInfo>>;
    /// Up to `limit` of a document's searchable chunks after index
    /// `after_index` (ascending index), with their vectors.
    async fn export_chunks(
        &self,
        id: DocumentId,
        after_index: Option<u32>,
        limit: u32,
    ) -> StoreResult<Vec<ExportedChunk>>;
    /// Appends a message to a session; the store numbers it (`seq` = the
    /// session's last + 1, starting at 1) in the same transaction.
    /// `message.seq` is ignored.
    async fn append_message(&self, message: Message) -> StoreResult<Message>;
    /// The last `limit` messages of a session before `before_seq` (all when
    /// None), oldest first.
    async fn list_messages(
        &self,
        session: &SessionId,
        before_seq: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<Message>>;
    /// Deletes a session's messages; returns how many.
    async fn delete_session(&self, session: &SessionId) -> StoreResult<u64>;
    /// Deletes every message of the tenant (purge); returns how many.
    async fn delete_all_messages(&self) -> StoreResult<u64>;
    /// How many messages the tenant holds (purge verification, stats).
    async fn message_count(&self) -> StoreResult<u64>;
    /// The tenant's messages: how many, and the bytes of their content and
    /// metadata (what they are charged against `max_storage_bytes`).
    async fn message_usage(&self) -> StoreResult<MessageUsage>;
}

/// Which of a document's searchable chunks to read, and whether with their
/// vectors (only export needs them; `include_chunks` never loads them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkPage {
    pub after_index: Option<u32>,
    pub limit: u32,
    pub vectors: bool,
}

impl ChunkPage {
    pub const ALL_WITHOUT_VECTORS: ChunkPage = ChunkPage {
        after_index: None,
        limit: u32::MAX,
        vectors: false,
    };
}

/// What a tenant's conversation messages hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageUsage {
    pub count: u64,
    pub bytes: u64,
}
