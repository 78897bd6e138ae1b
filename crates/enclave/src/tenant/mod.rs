//! `Tenant`: one tenant's view of the library. Built only by
//! [`crate::Memory::tenant`]; it carries its tenant, so no method takes one.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use enclave_core::{
    Document, DocumentFilter, DocumentId, DocumentInfo, DocumentPatch, Message, MessageId,
    MetadataFilter, NewMessage, SessionId, Statistics, TenantId,
};
use enclave_store::{ListQuery, TenantStore};
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod add;
mod check;
mod export;
mod search;

pub use add::{AddOutcome, AddResult, WriteBudget};
use check::{validate_metadata, validate_name};
pub use export::{ExportPiece, EXPORT_CHUNK_PAGE};

use crate::shared::Shared;
use crate::{Error, Priority, Result};

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
    gate: Arc<crate::shared::WriteGate>,
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
}
