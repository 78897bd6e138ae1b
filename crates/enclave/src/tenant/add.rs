//! Adding documents: admission of the content bytes, one dedupe lookup per
//! batch, each document checked, cut, charged against its budget and
//! embedded, then the batch written in one store call.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use enclave_core::chunk::{chunk_text, ChunkDraft, ChunkStrategy, Chunked};
use enclave_core::{DocumentBody, DocumentId, DocumentPatch, NewDocument};
use enclave_store::{dedupe_key, ChunkRecord, DocumentRecord, PutOutcome, SectionRecord};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::{Error, Priority, Result};

use super::Tenant;

/// One document after validation, chunking and embedding.
enum Prepared {
    Done(AddResult),
    Write {
        record: Box<DocumentRecord>,
        chunks_created: u64,
        tokens_embedded: u64,
    },
}

/// What a document's body becomes: its chunk and section records, the
/// tokens embedded and the bytes charged.
struct PreparedBody {
    chunks: Vec<ChunkRecord>,
    sections: Vec<SectionRecord>,
    tokens_embedded: u64,
    charged: u64,
}

/// One document's charge against the call's budget: the content and
/// metadata bytes (`base`), to which each body adds what it stores.
struct Charge<'b> {
    budget: &'b mut WriteBudget,
    new_document: bool,
    base: u64,
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

impl Tenant {
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

    /// Validates, chunks and embeds one document whose dedupe key is `key`
    /// into the record to store (`existing`: the stored document with that
    /// key, if any); unchanged content only refreshes name and metadata.
    async fn prepare(
        &self,
        doc: NewDocument,
        key: String,
        existing: Option<enclave_store::ExistingDocument>,
        budget: &mut WriteBudget,
    ) -> Result<Prepared> {
        let doc = self.check_document(doc)?;
        let now = Utc::now();
        let hash = content_hash(&doc);
        let new_document = existing.is_none();
        if let Some(existing) = existing {
            if existing.content_hash == hash {
                return self.settle_unchanged(&doc, existing, now).await;
            }
        }
        let bytes = doc.content_bytes();
        let metadata_bytes = if doc.metadata.is_empty() {
            0
        } else {
            Value::Object(doc.metadata.clone()).to_string().len()
        };
        let charge = Charge {
            budget,
            new_document,
            base: (bytes + metadata_bytes) as u64,
        };
        let body = match doc.body {
            DocumentBody::Text(text) => {
                self.text_chunks(text, doc.doc_type, doc.chunking, charge)
                    .await?
            }
            DocumentBody::Chunks(provided) => self.provided_chunks(provided, charge)?,
        };
        if body.chunks.is_empty() {
            return Err(Error::invalid("content", "holds no text to index"));
        }
        let chunks_created = body.chunks.len() as u64;
        let record = DocumentRecord {
            document_id: DocumentId::new(),
            dedupe_key: key,
            name: doc.name,
            doc_type: doc.doc_type,
            origin: doc.origin,
            external_id: doc.external_id,
            metadata: doc.metadata,
            content_hash: hash,
            size_bytes: body.charged,
            document_date: doc.document_date,
            now,
            chunks: body.chunks,
            sections: body.sections,
        };
        Ok(Prepared::Write {
            record: Box::new(record),
            chunks_created,
            tokens_embedded: body.tokens_embedded,
        })
    }

    /// The same content is stored already: only its name and metadata are
    /// refreshed, nothing is embedded or charged.
    async fn settle_unchanged(
        &self,
        doc: &NewDocument,
        existing: enclave_store::ExistingDocument,
        now: DateTime<Utc>,
    ) -> Result<Prepared> {
        let patch = DocumentPatch {
            name: Some(doc.name.clone()),
            metadata: Some(doc.metadata.clone()),
        };
        let _gate = self.write_gate().await?;
        self.store
            .update_document(existing.document_id, &patch, now)
            .await?
            .ok_or(Error::NotFound)?;
        Ok(Prepared::Done(AddResult {
            document_id: existing.document_id,
            chunks_created: 0,
            tokens_embedded: 0,
            created_at: existing.created_at,
            outcome: AddOutcome::Unchanged,
        }))
    }

    /// Cuts `text` (bounded by the chunk limit inside the chunker): a
    /// caller that goes away stops the cut at its next piece, and a large
    /// document is cut at the lowest OS priority, so other tenants'
    /// requests run first. The text comes back with its cut.
    async fn cut(
        &self,
        text: String,
        doc_type: enclave_core::DocumentType,
        opts: enclave_core::ChunkingOptions,
    ) -> Result<(String, Chunked)> {
        let bytes = text.len();
        let max_chunks = self.shared.limits.max_chunks_per_document;
        let cancelled = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let _cancel = crate::ingest::CancelOnDrop(cancelled.clone());
        let counter = crate::ingest::Cancellable {
            inner: self.shared.embedder.token_counter(),
            cancelled,
        };
        let cut = move || {
            let c = chunk_text(&text, doc_type, &opts, &counter, max_chunks);
            (text, c)
        };
        let pool = (bytes >= crate::ingest::LARGE_DOCUMENT_BYTES)
            .then(|| self.shared.scheduler.cut_pool())
            .flatten();
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
        Ok((text, chunked?))
    }

    /// A text body: cut, then charged against the quotas, and only then
    /// chunk text copied out and embedded.
    async fn text_chunks(
        &self,
        text: String,
        doc_type: enclave_core::DocumentType,
        opts: enclave_core::ChunkingOptions,
        charge: Charge<'_>,
    ) -> Result<PreparedBody> {
        let cut_started = std::time::Instant::now();
        let (text, chunked) = self.cut(text, doc_type, opts).await?;
        let tokens: u64 = chunked.chunks.iter().map(|c| c.token_count as u64).sum();
        // Charged: the content, the metadata, each chunk's section label and
        // the hierarchical sections' copies of the text.
        let labels: usize = chunked
            .chunks
            .iter()
            .filter_map(|c| c.section.as_ref().map(|s| s.len()))
            .sum();
        let section_bytes: usize = chunked.sections.iter().map(|s| s.end - s.start).sum();
        let charged = charge.base + (labels + section_bytes) as u64;
        charge.budget.spend(charge.new_document, charged, tokens)?;
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
            .collect();
        Ok(PreparedBody {
            chunks,
            sections,
            tokens_embedded: tokens,
            charged,
        })
    }

    /// Chunks given with their vectors: charged (the content, the metadata
    /// and the vectors, stored as 4-byte floats), normalized, counted.
    fn provided_chunks(
        &self,
        provided: Vec<enclave_core::ProvidedChunk>,
        charge: Charge<'_>,
    ) -> Result<PreparedBody> {
        let dims = self.shared.embedder.dimensions();
        let charged = charge.base + (provided.len() * dims * 4) as u64;
        charge.budget.spend(charge.new_document, charged, 0)?;
        let counter = self.shared.embedder.token_counter();
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
        Ok(PreparedBody {
            chunks,
            sections: Vec::new(),
            tokens_embedded: 0,
            charged,
        })
    }
}
