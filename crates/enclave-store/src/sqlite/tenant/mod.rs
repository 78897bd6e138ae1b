//! One tenant's data in a SQLite file. Every statement states
//! `tenant_id = ?` with this handle's tenant; the tenant's full-text table is
//! found through its row in `tenants`.

mod documents;
mod ingest;
mod messages;
mod rows;
mod search;
mod vectors;

pub(crate) use vectors::VectorCache;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use enclave_core::analyze::Analyzer;
use enclave_core::query::TextQuery;
use enclave_core::{
    Document, DocumentFilter, DocumentId, DocumentInfo, DocumentPatch, ExportedChunk, Message,
    SessionId, Statistics, TenantId,
};
use rusqlite::{params, OptionalExtension, Transaction};

use super::db::{sql_err, Db};
use super::sql::ts;
use super::Inner;
use crate::{
    Candidate, ChunkKey, Completion, DocumentPage, DocumentRecord, ExistingDocument, HitRow,
    ListQuery, PutOutcome, StoreError, StoreResult, TenantStore,
};

pub(crate) struct SqliteTenant {
    inner: Arc<Inner>,
    tenant: TenantId,
}

fn fts_table(tenant_no: i64) -> String {
    format!("fts_{tenant_no}")
}

/// Creates a tenant's full-text table. It receives the analyzer's terms
/// (`enclave_core::analyze`), space-separated, never raw text: its
/// tokenizer only splits them again (every character of a term is a token
/// character to it) so the table counts exactly those terms.
fn create_fts_table(tx: &Transaction<'_>, tenant_no: i64) -> StoreResult<()> {
    tx.execute_batch(&format!(
        "CREATE VIRTUAL TABLE {} USING fts5(content, content='', contentless_delete=1, \
         tokenize=\"unicode61 remove_diacritics 0 categories 'L* N* M* Co'\")",
        fts_table(tenant_no)
    ))
    .map_err(sql_err)
}

/// The analysis this file's full-text tables were written with.
fn analysis_mark(analyzer: &Analyzer) -> String {
    format!("enclave-terms-1:{}", analyzer.language())
}

/// Rebuilds every tenant's full-text table of the file when it was written
/// with another analysis (an older Enclave, or another language) — from the
/// chunks' own text, in one transaction, so a crash leaves the old tables.
pub(crate) fn reindex_text_if_needed(
    conn: &mut rusqlite::Connection,
    analyzer: &Analyzer,
) -> StoreResult<()> {
    let mark = analysis_mark(analyzer);
    let current = |c: &rusqlite::Connection| -> StoreResult<Option<String>> {
        c.query_row(
            "SELECT value FROM meta WHERE key = 'text_analysis'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql_err)
    };
    if current(conn)?.as_deref() == Some(mark.as_str()) {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sql_err)?;
    if current(&tx)?.as_deref() != Some(mark.as_str()) {
        let tenants: Vec<(String, i64)> = {
            let mut stmt = tx
                .prepare("SELECT tenant_id, tenant_no FROM tenants")
                .map_err(sql_err)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(sql_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql_err)?;
            rows
        };
        for (tenant, tno) in tenants {
            tx.execute_batch(&format!("DROP TABLE IF EXISTS {}", fts_table(tno)))
                .map_err(sql_err)?;
            create_fts_table(&tx, tno)?;
            let mut read = tx
                .prepare("SELECT chunk_no, content FROM chunks WHERE tenant_id = ?1 AND kind = 0")
                .map_err(sql_err)?;
            let mut ins = tx
                .prepare(&format!(
                    "INSERT INTO {} (rowid, content) VALUES (?1, ?2)",
                    fts_table(tno)
                ))
                .map_err(sql_err)?;
            let mut rows = read.query([&tenant]).map_err(sql_err)?;
            while let Some(r) = rows.next().map_err(sql_err)? {
                let no: i64 = r.get(0).map_err(sql_err)?;
                let content: String = r.get(1).map_err(sql_err)?;
                ins.execute(params![no, analyzer.terms(&content).join(" ")])
                    .map_err(sql_err)?;
            }
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('text_analysis', ?1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [&mark],
        )
        .map_err(sql_err)?;
    }
    tx.commit().map_err(sql_err)
}

fn tenant_no(tx: &Transaction<'_>, tenant: &TenantId) -> StoreResult<Option<i64>> {
    tx.query_row(
        "SELECT tenant_no FROM tenants WHERE tenant_id = ?1",
        [tenant.as_str()],
        |r| r.get(0),
    )
    .optional()
    .map_err(sql_err)
}

/// The tenant's row and full-text table, created on its first write.
fn ensure_tenant(tx: &Transaction<'_>, tenant: &TenantId, now: DateTime<Utc>) -> StoreResult<i64> {
    if let Some(n) = tenant_no(tx, tenant)? {
        return Ok(n);
    }
    let n: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(tenant_no), 0) + 1 FROM tenants",
            [],
            |r| r.get(0),
        )
        .map_err(sql_err)?;
    tx.execute(
        "INSERT INTO tenants (tenant_id, tenant_no, created_at) VALUES (?1, ?2, ?3)",
        params![tenant.as_str(), n, ts(now)],
    )
    .map_err(sql_err)?;
    create_fts_table(tx, n)?;
    Ok(n)
}

impl SqliteTenant {
    pub fn new(inner: Arc<Inner>, tenant: TenantId) -> Self {
        Self { inner, tenant }
    }

    /// Whether the tenant can hold rows (file-per-tenant: its file exists);
    /// deletes for a tenant without a file change nothing and create nothing.
    fn has_data(&self) -> bool {
        self.inner.shared.is_some() || SqliteStore_file_exists(&self.inner, &self.tenant)
    }

    /// Runs a write on a blocking thread.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>, &TenantId) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let inner = self.inner.clone();
        let tenant = self.tenant.clone();
        blocking(move || inner.db(&tenant)?.write(|tx| f(tx, &tenant))).await
    }

    /// Runs a read on a blocking thread; a tenant with no file yet reads as empty.
    async fn read<T: Default + Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>, &TenantId, &Inner) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let inner = self.inner.clone();
        let tenant = self.tenant.clone();
        blocking(move || {
            if inner.shared.is_none()
                && !inner.files.lock().contains_key(&tenant)
                && !super::SqliteStore::tenant_file_exists(&inner.opts.dir, &tenant)
            {
                return Ok(T::default());
            }
            let db: Arc<Db> = inner.db(&tenant)?;
            db.read(|tx| f(tx, &tenant, &inner))
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Internal(format!("store task: {e}")))?
}

#[async_trait::async_trait]
impl TenantStore for SqliteTenant {
    async fn find_by_keys(
        &self,
        keys: &[String],
    ) -> StoreResult<std::collections::HashMap<String, ExistingDocument>> {
        ingest::find_by_keys(self, keys).await
    }

    async fn put_document(&self, doc: DocumentRecord) -> StoreResult<(DocumentId, PutOutcome)> {
        ingest::put_document(self, doc).await
    }

    async fn vector_candidates(
        &self,
        query: &[f32],
        filter: &DocumentFilter,
        k: usize,
    ) -> StoreResult<Vec<Candidate>> {
        search::vector_candidates(self, query, filter, k).await
    }

    async fn text_candidates(
        &self,
        query: &TextQuery,
        filter: &DocumentFilter,
        k: usize,
    ) -> StoreResult<Vec<Candidate>> {
        search::text_candidates(self, query, filter, k).await
    }
    async fn complete_scores(
        &self,
        vector: &[f32],
        vector_keys: &[ChunkKey],
        text: &TextQuery,
        text_keys: &[ChunkKey],
    ) -> StoreResult<Completion> {
        search::complete_scores(self, vector, vector_keys, text, text_keys).await
    }

    async fn hydrate(&self, keys: &[ChunkKey]) -> StoreResult<Vec<HitRow>> {
        search::hydrate(self, keys).await
    }

    async fn list_documents(&self, q: &ListQuery) -> StoreResult<DocumentPage> {
        documents::list_documents(self, q).await
    }

    async fn get_document(
        &self,
        id: DocumentId,
        include_chunks: bool,
    ) -> StoreResult<Option<Document>> {
        documents::get_document(self, id, include_chunks).await
    }

    async fn update_document(
        &self,
        id: DocumentId,
        patch: &DocumentPatch,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<DocumentInfo>> {
        documents::update_document(self, id, patch, now).await
    }

    async fn delete_documents(&self, ids: &[DocumentId]) -> StoreResult<u64> {
        documents::delete_documents(self, ids).await
    }

    async fn statistics(&self) -> StoreResult<Statistics> {
        documents::statistics(self).await
    }

    async fn append_message(&self, m: Message) -> StoreResult<Message> {
        messages::append_message(self, m).await
    }

    async fn list_messages(
        &self,
        session: &SessionId,
        before_seq: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        messages::list_messages(self, session, before_seq, limit).await
    }

    async fn delete_session(&self, session: &SessionId) -> StoreResult<u64> {
        messages::delete_session(self, session).await
    }

    async fn message_count(&self) -> StoreResult<u64> {
        messages::message_count(self).await
    }

    async fn message_usage(&self) -> StoreResult<crate::MessageUsage> {
        messages::message_usage(self).await
    }

    async fn delete_all_messages(&self) -> StoreResult<u64> {
        messages::delete_all_messages(self).await
    }

    async fn export_documents(
        &self,
        after: Option<DocumentId>,
        limit: u32,
    ) -> StoreResult<Vec<DocumentInfo>> {
        documents::export_documents(self, after, limit).await
    }

    async fn export_chunks(
        &self,
        id: DocumentId,
        after_index: Option<u32>,
        limit: u32,
    ) -> StoreResult<Vec<ExportedChunk>> {
        documents::export_chunks(self, id, after_index, limit).await
    }
}

#[allow(non_snake_case)]
fn SqliteStore_file_exists(inner: &Inner, tenant: &TenantId) -> bool {
    inner.files.lock().contains_key(tenant)
        || super::SqliteStore::tenant_file_exists(&inner.opts.dir, tenant)
}
