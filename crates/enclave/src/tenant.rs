//! `Tenant`: one tenant's view of the library. Built only by
//! [`crate::Memory::tenant`]; it carries its tenant, so no method takes one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use enclave_core::chunk::{chunk_text, ChunkDraft, ChunkStrategy};
use enclave_core::fusion::rrf;
use enclave_core::{
    Document, DocumentBody, DocumentFilter, DocumentId, DocumentInfo, DocumentPatch,
    ExportedDocument, Message, MessageId, MetadataFilter, NewDocument, NewMessage, Search,
    SearchHit, SearchMode, SearchParams, SearchResults, SessionId, Statistics, TenantId,
};
use enclave_store::{
    dedupe_key, ChunkRecord, DocumentRecord, ListQuery, PutOutcome, SectionRecord, TenantStore,
};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::memory::Shared;
use crate::{Error, Priority, Result};

/// One document after validation, chunking and embedding.
enum Prepared {
    Done(AddResult),
    Write {
        record: Box<DocumentRecord>,
        chunks_created: u64,
        tokens_embedded: u64,
    },
}

/// One tenant's handle: every operation on the tenant's data, none taking
/// a tenant argument.
#[derive(Clone)]
pub struct Tenant {
    shared: Arc<Shared>,
    id: TenantId,
    store: Arc<dyn TenantStore>,
    /// The same store, for calls that take several slots at once.
    slotted: Arc<crate::slots::Slotted>,
    priority: Priority,
    gate: Arc<crate::memory::WriteGate>,
    /// The gate's generation when this handle was made (a purge since
    /// makes it stale: it can no longer write).
    generation: u64,
}

/// What a purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeCounts {
    pub documents: u64,
    pub chunks: u64,
    pub messages: u64,
}

/// What happened to an added document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddOutcome {
    /// A new document.
    Created,
    /// An existing document (same external id, or same origin and name) was
    /// re-chunked and re-embedded in place.
    Replaced,
    /// Same identity and same content: only name/metadata were refreshed,
    /// nothing was embedded.
    Unchanged,
}

/// What a write may still use of the tenant's quotas (the server fills it
/// from the tenant's `limits` and usage). Checked per document after it is
/// chunked and its tokens counted, before anything is embedded or written,
/// so a refused call leaves nothing behind. `None` = unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteBudget {
    /// New documents (re-indexing an existing one costs none).
    pub documents: Option<u64>,
    /// Bytes of content (a re-indexed document's full size counts).
    pub bytes: Option<u64>,
    /// Tokens to embed (precomputed vectors cost none).
    pub embedding_tokens: Option<u64>,
}

impl WriteBudget {
    fn spend(&mut self, new_document: bool, bytes: u64, tokens: u64) -> Result<()> {
        if new_document {
            if let Some(left) = &mut self.documents {
                if *left == 0 {
                    return Err(Error::QuotaExceeded(
                        "max_documents: the tenant holds as many documents as its limit allows"
                            .into(),
                    ));
                }
                *left -= 1;
            }
        }
        if let Some(left) = &mut self.bytes {
            if bytes > *left {
                return Err(Error::QuotaExceeded(format!(
                    "max_storage_bytes: the document needs {bytes} bytes and {left} are left"
                )));
            }
            *left -= bytes;
        }
        if let Some(left) = &mut self.embedding_tokens {
            if tokens > *left {
                return Err(Error::QuotaExceeded(format!(
                    "embedding_tokens_per_day / monthly_budget_usd: the document needs {tokens} tokens embedded and the quotas leave {left}"
                )));
            }
            *left -= tokens;
        }
        Ok(())
    }
}

/// The answer to `add_document` (API.md §4 201 body, plus the outcome).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddResult {
    pub document_id: DocumentId,
    pub chunks_created: u64,
    pub tokens_embedded: u64,
    pub created_at: DateTime<Utc>,
    pub outcome: AddOutcome,
}

/// A listing request (API.md §4 `GET /v1/documents`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListParams {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub offset: Option<u64>,
    pub origin: Option<String>,
    #[serde(rename = "type")]
    pub doc_type: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub metadata: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentList {
    pub documents: Vec<DocumentInfo>,
    pub total: u64,
    pub next_cursor: Option<String>,
}

const CURSOR_PREFIX: &str = "c1.";
/// Largest listing `offset` (llmemory parity; deep pages use the cursor).
pub const MAX_OFFSET: u64 = 1_000_000_000;
const EXPORT_PAGE: u32 = 64;

impl Tenant {
    pub(crate) fn new(shared: Arc<Shared>, id: TenantId) -> Self {
        let slotted = Arc::new(shared.slots.wrap(&id, shared.store.tenant(&id)));
        let store: Arc<dyn TenantStore> = slotted.clone();
        let gate = shared.gates.get(&id);
        let generation = gate.generation.load(std::sync::atomic::Ordering::SeqCst);
        Self {
            shared,
            id,
            store,
            slotted,
            priority: Priority::Normal,
            gate,
            generation,
        }
    }

    /// Held around every store call that adds or changes data: refused
    /// when the tenant was purged since this handle was made.
    async fn write_gate(&self) -> Result<tokio::sync::RwLockReadGuard<'_, ()>> {
        let held = self.gate.lock.read().await;
        if self
            .gate
            .generation
            .load(std::sync::atomic::Ordering::SeqCst)
            != self.generation
        {
            return Err(Error::Unavailable(
                "the tenant was purged while this request ran; nothing was written".into(),
            ));
        }
        Ok(held)
    }

    /// This handle with its embedding work scheduled at `priority` (ingestion
    /// jobs nobody waits on use [`Priority::Background`]).
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// The tenant this handle is bound to.
    pub fn id(&self) -> &TenantId {
        &self.id
    }

    /// Adds a document: validates, chunks, embeds and stores it in one
    /// transaction. Re-adding the same external id, or the same origin and
    /// name, re-indexes in place and keeps the document id.
    pub async fn add_document(&self, doc: NewDocument) -> Result<AddResult> {
        self.add_documents(vec![doc])
            .await?
            .pop()
            .ok_or_else(|| Error::Internal("no result for the document".into()))
    }

    /// Adds up to 1,000 documents in one call (e.g. a bulk import). Every
    /// document is validated, chunked and embedded before anything is
    /// written, so a bad one rejects the call and changes nothing (its field
    /// is named `documents[i].…`). Each document is stored whole; PostgreSQL
    /// commits the batch in one transaction.
    pub async fn add_documents(&self, docs: Vec<NewDocument>) -> Result<Vec<AddResult>> {
        self.add_documents_within(docs, WriteBudget::default())
            .await
    }

    /// [`Tenant::add_documents`] within a quota budget: a document that would
    /// exceed it fails the call with [`Error::QuotaExceeded`] before any
    /// document of the call is embedded further or written.
    pub async fn add_documents_within(
        &self,
        docs: Vec<NewDocument>,
        mut budget: WriteBudget,
    ) -> Result<Vec<AddResult>> {
        if docs.len() > 1000 {
            return Err(Error::invalid(
                "documents",
                "at most 1000 documents per call",
            ));
        }
        let batch = docs.len() > 1;
        // The content's bytes are admitted before any of it is looked at;
        // jobs (background) wait for room, callers get 429.
        let bytes: usize = docs.iter().map(NewDocument::content_bytes).sum();
        let started = std::time::Instant::now();
        let _admitted = self
            .shared
            .ingest
            .admit(
                &self.id,
                bytes as u64,
                self.priority == Priority::Background,
            )
            .await?;
        let mut results: Vec<Option<AddResult>> = Vec::with_capacity(docs.len());
        let mut records = Vec::new();
        let mut pending = Vec::new();
        // One lookup for the batch: which documents exist, and with what content.
        let keys: Vec<String> = docs
            .iter()
            .map(|d| dedupe_key(d.external_id.as_deref(), d.origin.as_ref(), &d.name))
            .collect();
        let admitted_at = started.elapsed();
        let mut existing = self.store.find_by_keys(&keys).await?;
        let looked_up_at = started.elapsed();
        for (i, (doc, key)) in docs.into_iter().zip(keys).enumerate() {
            let found = existing.remove(&key);
            let prepared =
                self.prepare(doc, key, found, &mut budget)
                    .await
                    .map_err(|e| match e {
                        Error::Invalid(mut x) if batch => {
                            x.field = format!("documents[{i}].{}", x.field);
                            Error::Invalid(x)
                        }
                        e => e,
                    })?;
            match prepared {
                Prepared::Done(r) => results.push(Some(r)),
                Prepared::Write {
                    record,
                    chunks_created,
                    tokens_embedded,
                } => {
                    pending.push((i, record.now, chunks_created, tokens_embedded));
                    records.push(*record);
                    results.push(None);
                }
            }
        }
        let prepared_at = started.elapsed();
        let (written, gate_at) = {
            let _gate = self.write_gate().await?;
            let gate_at = started.elapsed();
            (self.store.put_documents(records).await?, gate_at)
        };
        // Where an add's time went (cumulative; `ENCLAVE_LOG=enclave=debug`).
        tracing::debug!(
            tenant_id = %self.id,
            bytes,
            admitted_ms = admitted_at.as_secs_f64() * 1e3,
            looked_up_ms = looked_up_at.as_secs_f64() * 1e3,
            prepared_ms = prepared_at.as_secs_f64() * 1e3,
            gate_ms = gate_at.as_secs_f64() * 1e3,
            written_ms = started.elapsed().as_secs_f64() * 1e3,
            "add phases"
        );
        for ((i, now, chunks_created, tokens_embedded), (document_id, outcome)) in
            pending.into_iter().zip(written)
        {
            tracing::debug!(tenant_id = %self.id, %document_id, chunks_created, "document stored");
            results[i] = Some(AddResult {
                document_id,
                chunks_created,
                tokens_embedded,
                created_at: now,
                outcome: match outcome {
                    PutOutcome::Created => AddOutcome::Created,
                    PutOutcome::Replaced => AddOutcome::Replaced,
                },
            });
        }
        results
            .into_iter()
            .map(|r| r.ok_or_else(|| Error::Internal("a document was not written".into())))
            .collect()
    }

    /// Validates, chunks and embeds one document into the record to store
    /// (or settles it: unchanged content only refreshes name and metadata).
    /// Validates, chunks and embeds one document whose dedupe key is `key`
    /// (`existing`: the stored document with that key, if any).
    /// Every check of a document that needs no store and no model pass
    /// (names, ids, metadata, dates, sizes, chunking options, the text or
    /// the given chunks and their vectors); returns it as it will be added
    /// (dates kept to the stores' years, overlap capped at half a chunk).
    /// An ingestion job runs it on each document when it is submitted.
    pub fn check_document(&self, mut doc: NewDocument) -> Result<NewDocument> {
        let limits = self.shared.limits;
        validate_name(&doc.name, limits.max_name_chars)?;
        if let Some(x) = &doc.external_id {
            if x.is_empty() || x.len() > 255 || x.chars().any(char::is_control) {
                return Err(Error::invalid(
                    "external_id",
                    "must be 1-255 characters without control characters",
                ));
            }
        }
        validate_metadata(&doc.metadata, &limits)?;
        doc.document_date =
            enclave_core::check::maybe_timestamp("document_date", doc.document_date)?;
        let bytes = doc.content_bytes();
        if bytes > limits.max_document_bytes {
            return Err(Error::TooLarge {
                what: "content",
                actual: bytes,
                limit: limits.max_document_bytes,
            });
        }
        let embedder = &self.shared.embedder;
        let dims = embedder.dimensions();
        doc.chunking = doc.chunking.validated(embedder.max_input_tokens())?;
        match &doc.body {
            DocumentBody::Text(text) => {
                if text.trim().is_empty() {
                    return Err(Error::invalid("content", "must not be empty"));
                }
                enclave_core::check::text("content", text)?;
            }
            DocumentBody::Chunks(provided) => {
                if provided.is_empty() {
                    return Err(Error::invalid("chunks", "must hold at least one chunk"));
                }
                if provided.len() > limits.max_chunks_per_document {
                    return Err(Error::invalid(
                        "chunks",
                        format!("at most {} chunks", limits.max_chunks_per_document),
                    ));
                }
                for (i, p) in provided.iter().enumerate() {
                    if p.content.trim().is_empty() {
                        return Err(Error::invalid(
                            &format!("chunks[{i}].content"),
                            "must not be empty",
                        ));
                    }
                    enclave_core::check::text(&format!("chunks[{i}].content"), &p.content)?;
                    if p.embedding.len() != dims {
                        return Err(Error::invalid(
                            &format!("chunks[{i}].embedding"),
                            format!("has {} dimensions; expected {dims}", p.embedding.len()),
                        ));
                    }
                    if p.embedding.iter().any(|x| !x.is_finite())
                        || p.embedding.iter().all(|x| *x == 0.0)
                    {
                        return Err(Error::invalid(
                            &format!("chunks[{i}].embedding"),
                            "must be finite and non-zero",
                        ));
                    }
                }
            }
        }
        Ok(doc)
    }

    async fn prepare(
        &self,
        doc: NewDocument,
        key: String,
        existing: Option<enclave_store::ExistingDocument>,
        budget: &mut WriteBudget,
    ) -> Result<Prepared> {
        let doc = self.check_document(doc)?;
        let limits = self.shared.limits;
        let bytes = doc.content_bytes();
        let embedder = self.shared.embedder.clone();
        let dims = embedder.dimensions();
        let now = Utc::now();
        let hash = content_hash(&doc);
        let new_document = existing.is_none();

        if let Some(existing) = existing {
            if existing.content_hash == hash {
                let patch = DocumentPatch {
                    name: Some(doc.name.clone()),
                    metadata: Some(doc.metadata.clone()),
                };
                let _gate = self.write_gate().await?;
                self.store
                    .update_document(existing.document_id, &patch, now)
                    .await?
                    .ok_or(Error::NotFound)?;
                return Ok(Prepared::Done(AddResult {
                    document_id: existing.document_id,
                    chunks_created: 0,
                    tokens_embedded: 0,
                    created_at: existing.created_at,
                    outcome: AddOutcome::Unchanged,
                }));
            }
        }

        let metadata_bytes = if doc.metadata.is_empty() {
            0
        } else {
            Value::Object(doc.metadata.clone()).to_string().len()
        };
        let (chunks, sections, tokens_embedded, charged) = match doc.body {
            DocumentBody::Text(text) => {
                let counter = embedder.token_counter();
                let opts = doc.chunking;
                let doc_type = doc.doc_type;
                let max_chunks = limits.max_chunks_per_document;
                // Cut (bounded by the chunk limit inside the chunker), then
                // charge the quotas, and only then copy out chunk text.
                // A caller that goes away stops the cut at its next piece;
                // a large document is cut at the lowest OS priority, so
                // other tenants' requests run first.
                let cancelled = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let _cancel = crate::ingest::CancelOnDrop(cancelled.clone());
                let counter = crate::ingest::Cancellable {
                    inner: counter,
                    cancelled,
                };
                let cut = move || {
                    let c = chunk_text(&text, doc_type, &opts, &counter, max_chunks);
                    (text, c)
                };
                let pool = (bytes >= crate::ingest::LARGE_DOCUMENT_BYTES)
                    .then(|| self.shared.scheduler.cut_pool())
                    .flatten();
                let cut_started = std::time::Instant::now();
                let (text, chunked) = match pool {
                    Some(pool) => {
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        pool.spawn(move || {
                            let _ = tx.send(cut());
                        });
                        rx.await
                            .map_err(|_| Error::Internal("the chunker stopped".into()))?
                    }
                    None => tokio::task::spawn_blocking(cut)
                        .await
                        .map_err(|e| Error::Internal(e.to_string()))?,
                };
                let chunked = chunked?;
                let tokens: u64 = chunked.chunks.iter().map(|c| c.token_count as u64).sum();
                // Charged: the content, the metadata, each chunk's section
                // label and the hierarchical sections' copies of the text.
                let labels: usize = chunked
                    .chunks
                    .iter()
                    .filter_map(|c| c.section.as_ref().map(|s| s.len()))
                    .sum();
                let section_bytes: usize = chunked.sections.iter().map(|s| s.end - s.start).sum();
                let charged = (bytes + metadata_bytes + labels + section_bytes) as u64;
                budget.spend(new_document, charged, tokens)?;
                let sections: Vec<SectionRecord> = chunked
                    .sections
                    .iter()
                    .enumerate()
                    .map(|(i, s)| SectionRecord {
                        index: i as u32,
                        content: text[s.start..s.end].to_owned(),
                        token_count: s.token_count,
                    })
                    .collect();
                let pieces: Vec<(String, ChunkDraft)> = chunked
                    .chunks
                    .into_iter()
                    .map(|d| (text[d.start..d.end].to_owned(), d))
                    .collect();
                drop(text);
                let token_counts: Vec<u32> = pieces.iter().map(|p| p.1.token_count).collect();
                let cut_ms = cut_started.elapsed().as_secs_f64() * 1e3;
                let embed_started = std::time::Instant::now();
                let vectors = self
                    .shared
                    .scheduler
                    .embed(
                        &self.id,
                        pieces.iter().map(|p| p.0.clone()).collect(),
                        &token_counts,
                        self.priority,
                    )
                    .await?;
                tracing::debug!(
                    tenant_id = %self.id,
                    chunks = pieces.len(),
                    cut_ms,
                    embed_ms = embed_started.elapsed().as_secs_f64() * 1e3,
                    "prepare phases"
                );
                let chunks = pieces
                    .into_iter()
                    .zip(vectors)
                    .enumerate()
                    .map(|(i, ((content, draft), embedding))| {
                        let mut metadata = Map::new();
                        if let Some(s) = draft.section {
                            metadata.insert("section".into(), Value::String(s.to_string()));
                        }
                        metadata.insert("start".into(), draft.start.into());
                        metadata.insert("end".into(), draft.end.into());
                        ChunkRecord {
                            chunk_id: enclave_core::ChunkId::new(),
                            index: i as u32,
                            content,
                            token_count: draft.token_count,
                            metadata,
                            parent_index: draft.parent,
                            embedding,
                        }
                    })
                    .collect::<Vec<_>>();
                (chunks, sections, tokens, charged)
            }
            DocumentBody::Chunks(provided) => {
                // Charged: the content, the metadata and the vectors given
                // (stored as 4-byte floats).
                let charged = (bytes + metadata_bytes + provided.len() * dims * 4) as u64;
                budget.spend(new_document, charged, 0)?;
                let counter = embedder.token_counter();
                let mut chunks = Vec::with_capacity(provided.len());
                for (i, p) in provided.into_iter().enumerate() {
                    let mut embedding = p.embedding;
                    enclave_embed::l2_normalize(&mut embedding);
                    chunks.push(ChunkRecord {
                        chunk_id: enclave_core::ChunkId::new(),
                        index: i as u32,
                        token_count: counter.count_tokens(&p.content) as u32,
                        content: p.content,
                        metadata: Map::new(),
                        parent_index: None,
                        embedding,
                    });
                }
                (chunks, Vec::new(), 0, charged)
            }
        };
        if chunks.is_empty() {
            return Err(Error::invalid("content", "holds no text to index"));
        }
        let chunks_created = chunks.len() as u64;
        let record = DocumentRecord {
            document_id: DocumentId::new(),
            dedupe_key: key,
            name: doc.name,
            doc_type: doc.doc_type,
            origin: doc.origin,
            external_id: doc.external_id,
            metadata: doc.metadata,
            content_hash: hash,
            size_bytes: charged,
            document_date: doc.document_date,
            now,
            chunks,
            sections,
        };
        Ok(Prepared::Write {
            record: Box::new(record),
            chunks_created,
            tokens_embedded,
        })
    }

    /// Vector, full-text or hybrid (RRF) search over this tenant's chunks.
    pub async fn search(&self, params: SearchParams) -> Result<SearchResults> {
        let started = Instant::now();
        let search = Search::parse(&params)?;
        let depth = (search.limit as usize * 4).clamp(40, 400);
        // Both candidate queries run at once when the tenant's slots allow
        // two; they are taken together (two searches never each hold one
        // and wait for the other's).
        let both = search.mode.uses_vectors() && search.mode.uses_text();
        let held = self.slotted.hold(if both { 2 } else { 1 }).await?;
        let store = held.store();
        let vector_fut = async {
            if !search.mode.uses_vectors() {
                return Ok::<_, Error>(Vec::new());
            }
            let q = self.query_vector(&search.query).await?;
            Ok(store.vector_candidates(&q, &search.filter, depth).await?)
        };
        let text_fut = async {
            if !search.mode.uses_text() {
                return Ok::<_, Error>(Vec::new());
            }
            Ok(store
                .text_candidates(&search.text, &search.filter, depth)
                .await?)
        };
        let (vector, text) = if held.count() >= 2 || !both {
            futures::try_join!(vector_fut, text_fut)?
        } else {
            (vector_fut.await?, text_fut.await?)
        };
        drop(held);
        let vscore: HashMap<i64, f64> = vector.iter().map(|c| (c.key, c.score)).collect();
        let tscore: HashMap<i64, f64> = text.iter().map(|c| (c.key, c.score)).collect();
        let ranked: Vec<(i64, f64)> = match search.mode {
            SearchMode::Vector => vector.iter().map(|c| (c.key, c.score)).collect(),
            SearchMode::Text => text.iter().map(|c| (c.key, c.score)).collect(),
            _ => {
                let vk: Vec<i64> = vector.iter().map(|c| c.key).collect();
                let tk: Vec<i64> = text.iter().map(|c| c.key).collect();
                rrf(&vk, &tk, search.alpha)
                    .into_iter()
                    .map(|f| (f.item, f.score))
                    .collect()
            }
        };
        let ranked: Vec<(i64, f64)> = ranked
            .into_iter()
            .filter(|(_, s)| search.min_score.is_none_or(|m| *s >= m))
            .take(search.limit as usize)
            .collect();
        let keys: Vec<i64> = ranked.iter().map(|(k, _)| *k).collect();
        let mut rows: HashMap<i64, _> = self
            .store
            .hydrate(&keys)
            .await?
            .into_iter()
            .map(|r| (r.key, r))
            .collect();
        let mut results = Vec::with_capacity(ranked.len());
        for (key, score) in ranked {
            let Some(row) = rows.remove(&key) else {
                continue;
            };
            let doc = row.document;
            results.push(SearchHit {
                chunk_id: row.chunk_id,
                document_id: doc.document_id,
                document_name: doc.name.clone(),
                doc_type: doc.doc_type,
                origin: doc.origin.clone(),
                content: row.content,
                score,
                vector_score: vscore.get(&key).copied(),
                text_score: tscore.get(&key).copied(),
                rank: results.len() as u32 + 1,
                metadata: doc.metadata.clone(),
                chunk_index: row.index,
                parent_content: row.parent_content,
                document: search.include_documents.then_some(doc),
            });
        }
        Ok(SearchResults {
            results,
            mode: search.mode,
            took_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    /// `search` with each hit's document attached.
    pub async fn search_with_documents(&self, mut params: SearchParams) -> Result<SearchResults> {
        params.include_documents = true;
        self.search(params).await
    }

    async fn query_vector(&self, query: &str) -> Result<Arc<Vec<f32>>> {
        let key = (self.id.clone(), query.to_owned());
        if let Some(cache) = &self.shared.query_cache {
            if let Some(v) = cache.lock().get(&key) {
                return Ok(v.clone());
            }
        }
        let v = Arc::new(
            self.shared
                .scheduler
                .embed_query(query.to_owned())
                .await?
                .pop()
                .ok_or_else(|| Error::Internal("embedder returned nothing".into()))?,
        );
        if let Some(cache) = &self.shared.query_cache {
            cache.lock().put(key, v.clone());
        }
        Ok(v)
    }

    /// A page of documents, newest first, with the total matching count.
    pub async fn list_documents(&self, params: ListParams) -> Result<DocumentList> {
        let limit = params.limit.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(Error::invalid("limit", "must be between 1 and 100"));
        }
        if params.offset.is_some_and(|o| o > MAX_OFFSET) {
            return Err(Error::invalid(
                "offset",
                format!("must be at most {MAX_OFFSET}; page with the cursor instead"),
            ));
        }
        let created_after =
            enclave_core::check::maybe_timestamp("created_after", params.created_after)?;
        let created_before =
            enclave_core::check::maybe_timestamp("created_before", params.created_before)?;
        let after = match params.cursor.as_deref() {
            None | Some("") => None,
            Some(c) => Some(
                c.strip_prefix(CURSOR_PREFIX)
                    .and_then(|id| DocumentId::parse(id).ok())
                    .ok_or_else(|| {
                        Error::invalid("cursor", "is not a cursor this server issued")
                    })?,
            ),
        };
        let origins: Vec<String> = params.origin.into_iter().collect();
        let types: Vec<String> = params.doc_type.into_iter().collect();
        let (origins, types) = DocumentFilter::parse_lists(&origins, &types)?;
        let filter = DocumentFilter {
            origins,
            types,
            metadata: MetadataFilter::parse(params.metadata.as_ref().unwrap_or(&Value::Null))?,
            created_after,
            created_before,
            ..Default::default()
        };
        let page = self
            .store
            .list_documents(&ListQuery {
                filter,
                limit,
                after,
                offset: params.offset.unwrap_or(0),
            })
            .await?;
        Ok(DocumentList {
            documents: page.documents,
            total: page.total,
            next_cursor: page.next_after.map(|id| format!("{CURSOR_PREFIX}{id}")),
        })
    }

    /// One document, optionally with its chunks. Missing and foreign ids are
    /// the same `NotFound`.
    pub async fn get_document(&self, id: &DocumentId, include_chunks: bool) -> Result<Document> {
        self.store
            .get_document(*id, include_chunks)
            .await?
            .ok_or(Error::NotFound)
    }

    /// Renames a document and/or replaces its metadata.
    pub async fn update_document(
        &self,
        id: &DocumentId,
        patch: DocumentPatch,
    ) -> Result<DocumentInfo> {
        if let Some(n) = &patch.name {
            validate_name(n, self.shared.limits.max_name_chars)?;
        }
        if let Some(m) = &patch.metadata {
            validate_metadata(m, &self.shared.limits)?;
        }
        let _gate = self.write_gate().await?;
        self.store
            .update_document(*id, &patch, Utc::now())
            .await?
            .ok_or(Error::NotFound)
    }

    /// Deletes one document (its chunks, vectors and index entries with it).
    pub async fn delete_document(&self, id: &DocumentId) -> Result<()> {
        match self
            .store
            .delete_documents(std::slice::from_ref(id))
            .await?
        {
            0 => Err(Error::NotFound),
            _ => Ok(()),
        }
    }

    /// Deletes those of `ids` that exist in this tenant; others are not counted.
    pub async fn delete_documents(&self, ids: &[DocumentId]) -> Result<u64> {
        if ids.len() > 1000 {
            return Err(Error::invalid("document_ids", "at most 1000 ids per call"));
        }
        Ok(self.store.delete_documents(ids).await?)
    }

    /// Appends a message to a conversation (API.md §6); the store numbers
    /// it within the session.
    pub async fn add_message(&self, session: &SessionId, msg: NewMessage) -> Result<Message> {
        let limit = self.shared.limits.max_document_bytes;
        if msg.content.len() > limit {
            return Err(Error::TooLarge {
                what: "content",
                actual: msg.content.len(),
                limit,
            });
        }
        validate_metadata(&msg.metadata, &self.shared.limits)?;
        enclave_core::check::text("content", &msg.content)?;
        let _gate = self.write_gate().await?;
        Ok(self
            .store
            .append_message(Message {
                message_id: MessageId::new(),
                session_id: session.clone(),
                seq: 0,
                role: msg.role,
                content: msg.content,
                origin: msg.origin,
                metadata: msg.metadata,
                created_at: Utc::now(),
            })
            .await?)
    }

    /// The last `limit` (1–500) messages of a session before `before_seq`,
    /// oldest first. A session with no messages (or another tenant's) is
    /// simply empty.
    pub async fn messages(
        &self,
        session: &SessionId,
        before_seq: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Message>> {
        if !(1..=500).contains(&limit) {
            return Err(Error::invalid("limit", "must be between 1 and 500"));
        }
        Ok(self.store.list_messages(session, before_seq, limit).await?)
    }

    /// Deletes a session; `NotFound` when it has no messages in this tenant.
    pub async fn delete_session(&self, session: &SessionId) -> Result<u64> {
        match self.store.delete_session(session).await? {
            0 => Err(Error::NotFound),
            n => Ok(n),
        }
    }

    /// The tenant's messages: how many, and their bytes.
    pub async fn message_usage(&self) -> Result<enclave_store::MessageUsage> {
        Ok(self.store.message_usage().await?)
    }

    /// How many messages the tenant holds.
    pub async fn message_count(&self) -> Result<u64> {
        Ok(self.store.message_count().await?)
    }

    /// Purges the tenant's data: every handle made before this call can no
    /// longer write (writes already inside the store finish first), then
    /// every document and message is deleted.
    pub async fn purge(&self) -> Result<PurgeCounts> {
        self.gate
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _exclusive = self.gate.lock.write().await;
        let (documents, chunks, messages) = self.delete_everything().await?;
        Ok(PurgeCounts {
            documents,
            chunks,
            messages,
        })
    }

    /// Deletes every document and message of the tenant; returns
    /// (documents, chunks, messages) removed. Writers may go on; see
    /// [`Tenant::purge`].
    pub async fn delete_everything(&self) -> Result<(u64, u64, u64)> {
        let before = self.statistics().await?;
        let mut documents = 0;
        loop {
            let page = self
                .store
                .list_documents(&ListQuery {
                    limit: 100,
                    ..Default::default()
                })
                .await?;
            if page.documents.is_empty() {
                break;
            }
            let ids: Vec<DocumentId> = page.documents.iter().map(|d| d.document_id).collect();
            documents += self.store.delete_documents(&ids).await?;
        }
        let after = self.statistics().await?;
        let messages = self.store.delete_all_messages().await?;
        Ok((
            documents,
            before.chunk_count.saturating_sub(after.chunk_count),
            messages,
        ))
    }

    pub async fn statistics(&self) -> Result<Statistics> {
        Ok(self.store.statistics().await?)
    }

    /// Every document with its chunks and vectors, in id order, one whole
    /// document at a time (a document's chunks are held together: for
    /// bounded memory whatever the documents, use [`Tenant::export_pieces`]).
    pub fn export(&self) -> impl Stream<Item = Result<ExportedDocument>> + Send + 'static {
        futures::stream::try_unfold(
            (self.export_pieces().boxed(), None::<ExportedDocument>),
            |(mut pieces, mut current)| async move {
                while let Some(piece) = pieces.try_next().await? {
                    match piece {
                        ExportPiece::Document(info) => {
                            current = Some(ExportedDocument {
                                info,
                                chunks: Vec::new(),
                            })
                        }
                        ExportPiece::Chunks(c) => {
                            if let Some(d) = current.as_mut() {
                                d.chunks.extend(c);
                            }
                        }
                        ExportPiece::End => {
                            if let Some(d) = current.take() {
                                return Ok(Some((d, (pieces, None))));
                            }
                        }
                    }
                }
                Ok::<_, Error>(None)
            },
        )
    }

    /// Every document with its chunks and vectors, in id order, as pieces:
    /// a document's record, its chunks a page ([`EXPORT_CHUNK_PAGE`]) at a
    /// time, its end. What is held at once is one page of documents'
    /// records or one page of chunks, however large the documents. Each page
    /// is read in its own snapshot: a document changed while it is exported
    /// may come out as a mix of before and after (export a quiet tenant, or
    /// compare with `/v1/stats`).
    pub fn export_pieces(&self) -> impl Stream<Item = Result<ExportPiece>> + Send + 'static {
        let store = self.store.clone();
        let documents = futures::stream::try_unfold(
            (store.clone(), None::<DocumentId>, false),
            |(store, after, done)| async move {
                if done {
                    return Ok(None);
                }
                let page = store.export_documents(after, EXPORT_PAGE).await?;
                let done = page.len() < EXPORT_PAGE as usize;
                let next = page.last().map(|d| d.document_id);
                Ok::<_, Error>(Some((
                    futures::stream::iter(page.into_iter().map(Ok::<_, Error>)),
                    (store, next, done),
                )))
            },
        )
        .try_flatten();
        documents
            .map_ok(move |info| {
                let store = store.clone();
                let id = info.document_id;
                let chunks = futures::stream::try_unfold(
                    (store, None::<u32>, false),
                    move |(store, after, done)| async move {
                        if done {
                            return Ok(None);
                        }
                        let page = store.export_chunks(id, after, EXPORT_CHUNK_PAGE).await?;
                        let done = page.len() < EXPORT_CHUNK_PAGE as usize;
                        let next = page.last().map(|c| c.chunk.index);
                        if page.is_empty() {
                            return Ok(None);
                        }
                        Ok::<_, Error>(Some((ExportPiece::Chunks(page), (store, next, done))))
                    },
                );
                futures::stream::once(async move { Ok(ExportPiece::Document(info)) })
                    .chain(chunks)
                    .chain(futures::stream::once(async { Ok(ExportPiece::End) }))
            })
            .try_flatten()
    }
}

/// One piece of an export ([`Tenant::export_pieces`]).
#[derive(Debug, Clone, PartialEq)]
pub enum ExportPiece {
    /// A document begins (its record, without chunks).
    Document(DocumentInfo),
    /// The next chunks of the current document, in index order.
    Chunks(Vec<enclave_core::ExportedChunk>),
    /// The current document is complete.
    End,
}

impl ExportPiece {
    /// Appends this piece's part of the NDJSON export to `out`: one line per
    /// document, `{…its record…,"chunks":[…]}`, the same line a whole
    /// [`ExportedDocument`] serializes to. `first_chunk` carries, from
    /// piece to piece, whether the current document has had a chunk yet.
    pub fn write_ndjson(&self, first_chunk: &mut bool, out: &mut Vec<u8>) -> Result<()> {
        let json = |e: serde_json::Error| Error::Internal(format!("export: {e}"));
        match self {
            ExportPiece::Document(info) => {
                *first_chunk = true;
                let start = out.len();
                serde_json::to_writer(&mut *out, info).map_err(json)?;
                // `{…}` → `{…,"chunks":[`
                if out.len() > start && out.last() == Some(&b'}') {
                    out.pop();
                }
                out.extend_from_slice(b",\"chunks\":[");
            }
            ExportPiece::Chunks(chunks) => {
                for c in chunks {
                    if !std::mem::take(first_chunk) {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut *out, c).map_err(json)?;
                }
            }
            ExportPiece::End => out.extend_from_slice(b"]}\n"),
        }
        Ok(())
    }
}

/// Chunks read (and held) at once by an export.
pub const EXPORT_CHUNK_PAGE: u32 = 256;

use futures::{StreamExt, TryStreamExt};

fn validate_name(name: &str, max: usize) -> Result<()> {
    Ok(enclave_core::check::name("name", name, max)?)
}

fn validate_metadata(m: &Map<String, Value>, limits: &crate::Limits) -> Result<()> {
    fn depth(v: &Value) -> usize {
        match v {
            Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
            Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    let d = m.values().map(depth).max().unwrap_or(0) + 1;
    if d > limits.max_metadata_depth {
        return Err(Error::invalid(
            "metadata",
            format!(
                "nests {d} levels; the limit is {}",
                limits.max_metadata_depth
            ),
        ));
    }
    for (k, v) in m {
        enclave_core::check::text("metadata", k)?;
        enclave_core::check::json("metadata", v)?;
    }
    let size = Value::Object(m.clone()).to_string().len();
    if size > limits.max_metadata_bytes {
        return Err(Error::TooLarge {
            what: "metadata",
            actual: size,
            limit: limits.max_metadata_bytes,
        });
    }
    Ok(())
}

/// Identifies the indexed form of a document: equal hashes mean re-adding it
/// would produce the same chunks and vectors.
fn content_hash(doc: &NewDocument) -> String {
    let mut h = Sha256::new();
    h.update(doc.doc_type.as_str());
    h.update([0]);
    match &doc.body {
        DocumentBody::Text(t) => {
            h.update(b"text\0");
            h.update(t.as_bytes());
            let strategy = match doc.chunking.strategy {
                ChunkStrategy::Auto => "auto",
                ChunkStrategy::Fixed => "fixed",
                ChunkStrategy::Sliding => "sliding",
                ChunkStrategy::Hierarchical => "hierarchical",
                _ => "other",
            };
            h.update(format!(
                "\0{strategy}\0{}\0{}",
                doc.chunking.max_tokens, doc.chunking.overlap_tokens
            ));
        }
        DocumentBody::Chunks(cs) => {
            h.update(b"chunks\0");
            for c in cs {
                h.update((c.content.len() as u64).to_le_bytes());
                h.update(c.content.as_bytes());
                for x in &c.embedding {
                    h.update(x.to_le_bytes());
                }
            }
        }
    }
    if let Some(d) = doc.document_date {
        h.update(d.to_rfc3339());
    }
    hex::encode(h.finalize())
}
