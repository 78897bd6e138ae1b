//! Ingestion: a document body (as `POST /v1/documents` and each item of a
//! job carry it) becomes the library's [`NewDocument`], is added within the
//! tenant's quotas ([`super::quota`]) and metered; a job's documents are
//! checked, charged against storage and queued.

use chrono::{DateTime, Utc};
use enclave::AddOutcome;
use enclave_core::{
    ChunkingOptions, DocumentBody, DocumentId, DocumentType, NewDocument, Origin, ProvidedChunk,
};
use enclave_store::control::{JobRecord, NewJob, TenantRecord, UsageCounts};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::quota;
use crate::{ApiError, ApiResult, AppState};

/// Most documents one job may carry.
pub const MAX_JOB_DOCUMENTS: usize = 10_000;

/// A new document as the API takes it (API.md §4).
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = CreateBody)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewDocumentBody {
    name: String,
    #[serde(rename = "type", default = "default_type")]
    doc_type: String,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    origin: Option<String>,
    #[serde(default)]
    external_id: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    chunking: Option<ChunkingOptions>,
    #[serde(default)]
    document_date: Option<DateTime<Utc>>,
    /// Precomputed vectors: explicit chunks with embeddings instead of `content`.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    chunks: Option<Vec<ProvidedChunk>>,
    /// Accepted for API.md's shape; the vectors travel inside `chunks`.
    #[serde(default)]
    embeddings: Option<Value>,
}

fn default_type() -> String {
    "text".into()
}

/// The 201 body of an added document.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Created {
    #[schema(value_type = String)]
    pub(crate) document_id: DocumentId,
    chunks_created: u64,
    tokens_embedded: u64,
    created_at: DateTime<Utc>,
}

impl NewDocumentBody {
    /// The library's document (shape checks only; the library validates
    /// the rest when it adds it).
    pub(crate) fn into_document(self) -> ApiResult<NewDocument> {
        let doc_type: DocumentType = self.doc_type.parse()?;
        let body = match (self.content, self.chunks) {
            (Some(c), None) => DocumentBody::Text(c),
            (None, Some(ch)) => DocumentBody::Chunks(ch),
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid(
                    "give either content or chunks (with embeddings), not both",
                ))
            }
            (None, None) => return Err(ApiError::invalid("content: is required")),
        };
        if !matches!(self.embeddings, None | Some(Value::Null))
            && matches!(body, DocumentBody::Text(_))
        {
            return Err(ApiError::invalid(
                "embeddings: precomputed vectors go with explicit chunks: [{content, embedding}]",
            ));
        }
        let metadata = match self.metadata {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => return Err(ApiError::invalid("metadata: must be a JSON object")),
        };
        Ok(NewDocument {
            name: self.name,
            doc_type,
            body,
            origin: self.origin.as_deref().map(Origin::parse).transpose()?,
            external_id: self.external_id,
            metadata,
            document_date: self.document_date,
            chunking: self.chunking.unwrap_or_default(),
        })
    }
}

/// A stored job item (the JSON a job's payload holds) as a document.
pub(crate) fn parse_document(v: Value) -> ApiResult<NewDocument> {
    serde_json::from_value::<NewDocumentBody>(v)
        .map_err(|e| ApiError::invalid(e.to_string()))
        .and_then(NewDocumentBody::into_document)
}

/// Adds one document within the tenant's quotas and meters it.
pub(crate) async fn store_document(
    state: &AppState,
    tenant: &TenantRecord,
    handle: &enclave::Tenant,
    doc: NewDocument,
) -> ApiResult<Created> {
    let budget = quota::write_budget(state, tenant, handle).await?;
    let r = handle
        .add_documents_within(vec![doc], budget)
        .await?
        .pop()
        .ok_or_else(|| ApiError::Internal("no result for the document".into()))?;
    // Its tokens were metered as they were embedded.
    state.inner.usage.record(
        &tenant.id,
        UsageCounts {
            documents_added: u64::from(r.outcome != AddOutcome::Unchanged),
            ..Default::default()
        },
    );
    Ok(Created {
        document_id: r.document_id,
        chunks_created: r.chunks_created,
        tokens_embedded: r.tokens_embedded,
        created_at: r.created_at,
    })
}

/// A job carries 1 to [`MAX_JOB_DOCUMENTS`] documents.
pub(crate) fn check_job_size(n: usize) -> ApiResult<()> {
    if n == 0 || n > MAX_JOB_DOCUMENTS {
        return Err(ApiError::invalid(format!(
            "documents: give 1 to {MAX_JOB_DOCUMENTS} documents"
        )));
    }
    Ok(())
}

/// Queues a job of `documents` (bodies as [`NewDocumentBody`], tenant hints
/// already checked and removed) for the background runner.
///
/// Every document gets the checks that need no store and no model now
/// (shape, names, metadata, content, chunking options: a failure names
/// `documents[i]`); what only adding can tell (the chunk count, quotas, the
/// budget) is each document's result. A spent monthly budget refuses the
/// job, and the payload, stored until the job finishes, counts against the
/// tenant's storage like what it will become.
pub(crate) async fn submit_job(
    state: &AppState,
    tenant: &TenantRecord,
    handle: &enclave::Tenant,
    created_by: &str,
    documents: Vec<Value>,
) -> ApiResult<JobRecord> {
    let n = documents.len();
    check_job_size(n)?;
    for (i, d) in documents.iter().enumerate() {
        let body = serde_json::from_value::<NewDocumentBody>(d.clone())
            .map_err(|e| ApiError::invalid(format!("documents[{i}]: {e}")))?;
        body.into_document()
            .and_then(|doc| Ok(handle.check_document(doc)?))
            .map_err(|e| e.within(&format!("documents[{i}]")))?;
    }
    quota::budget_left_usd(state, &tenant.id, &tenant.limits).await?;
    let payload = Value::Array(documents);
    let payload_bytes = payload.to_string().len() as u64;
    quota::check_storage_for(
        state,
        tenant,
        handle,
        "the job's documents hold",
        payload_bytes,
    )
    .await?;
    let job = NewJob {
        job_id: uuid::Uuid::now_v7().to_string(),
        kind: "documents".into(),
        payload,
        total: n as u64,
        created_by: created_by.to_owned(),
        created_at: Utc::now(),
    };
    let rec = state
        .control()
        .tenant(&tenant.id)
        .create_job(job, state.options().jobs.bounds())
        .await?;
    state.inner.jobs.wake.notify_one();
    Ok(rec)
}
