//! Ingestion jobs (docs/API-EXTENSIONS.md): a large upload accepted with
//! `202` and processed in the background by the fair scheduler
//! (`crate::jobs`), and its status.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use enclave_store::control::{JobItemResult, JobRecord};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Body, Caller, Member, Viewer};
use crate::failures::Cause;
use crate::service::ingest::{self, NewDocumentBody};
use crate::{ApiError, ApiResult, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(get_one))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct JobBody {
    /// Document bodies, each as `POST /v1/documents` takes it.
    #[schema(value_type = Vec<NewDocumentBody>)]
    documents: Vec<Value>,
}

/// A job as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
struct JobView {
    job_id: String,
    kind: String,
    /// `queued` | `running` | `succeeded`
    status: String,
    documents_total: u64,
    documents_done: u64,
    documents_failed: u64,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    /// Per document, in order, once processed: `document_id`, or `error`
    /// (a problem object with `status`, `code`, `detail`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    results: Option<Vec<JobItemResult>>,
}

impl JobView {
    fn new(r: JobRecord, results: Option<Vec<JobItemResult>>) -> Self {
        Self {
            job_id: r.job_id,
            kind: r.kind,
            status: r.status.as_str().to_owned(),
            documents_total: r.total,
            documents_done: r.done,
            documents_failed: r.failed,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            results,
        }
    }
}

#[utoipa::path(
    post,
    path = "/v1/jobs/documents",
    tag = "jobs",
    request_body = JobBody,
    security(("bearer" = [])),
    responses(
        (status = 202, description = "accepted: stored, processed in the background; poll the Location", body = JobView),
        (status = 400, description = "invalid_request (a document's shape, named documents[i])", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden, tenant_mismatch (also a document's tenant_id/owner_id) or tenant_suspended", body = crate::openapi::Problem, content_type = "application/problem+json")
    )
)]
async fn create(caller: Caller<Member>, Body(mut body): Body<JobBody>) -> ApiResult<Response> {
    ingest::check_job_size(body.documents.len())?;
    // A tenant hint inside a document is checked as at the top of a body.
    for (i, d) in body.documents.iter_mut().enumerate() {
        let Some(obj) = d.as_object_mut() else {
            continue;
        };
        for field in ["tenant_id", "owner_id"] {
            if let Some(v) = obj.remove(field) {
                if v.as_str() != Some(caller.ctx.tenant_id().as_str()) {
                    tracing::info!(
                        document = i,
                        field,
                        "tenant hint mismatch in a job document"
                    );
                    caller.state().inner.failures.failed(
                        None,
                        Some(caller.ctx.tenant_id()),
                        Cause::TenantMismatch,
                        Some(if field == "tenant_id" {
                            "documents[].tenant_id"
                        } else {
                            "documents[].owner_id"
                        }),
                        &caller.ctx.actor,
                    );
                    return Err(ApiError::TenantMismatch);
                }
            }
        }
    }
    let rec = ingest::submit_job(
        caller.state(),
        &caller.ctx.tenant,
        caller.writer(),
        &caller.ctx.actor,
        body.documents,
    )
    .await?;
    let location = format!("/v1/jobs/{}", rec.job_id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(JobView::new(rec, None)),
    )
        .into_response())
}

#[utoipa::path(
    get,
    path = "/v1/jobs/{job_id}",
    tag = "jobs",
    params(("job_id" = String, Path)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the job, with each processed document's result", body = JobView)
    )
)]
async fn get_one(caller: Caller<Viewer>, Path(job_id): Path<String>) -> ApiResult<Json<JobView>> {
    let (rec, results) = caller
        .state()
        .control()
        .tenant(caller.ctx.tenant_id())
        .get_job(&job_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(JobView::new(rec, Some(results))))
}
