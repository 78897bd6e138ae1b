//! Conversation memory (API.md §6). Sessions are per tenant and implicit: a
//! session exists while it has messages, and the same id in two tenants is
//! two sessions (another tenant's session reads as empty, deletes as 404).

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use enclave_core::{MessageRole, NewMessage, Origin, SessionId};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Body, Caller, Member, Viewer, Q};
use crate::service::quota;
use crate::{ApiError, ApiResult, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(append, list))
        .routes(routes!(remove))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewMessageBody {
    #[schema(value_type = String)]
    role: MessageRole,
    content: String,
    #[serde(default)]
    origin: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
}

#[utoipa::path(
    post,
    path = "/v1/sessions/{session_id}/messages",
    tag = "sessions",
    request_body = NewMessageBody,
    params(("session_id" = String, Path)),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "the message id and its sequence number", body = serde_json::Value)
    )
)]
async fn append(
    caller: Caller<Member>,
    Path(session): Path<String>,
    Body(b): Body<NewMessageBody>,
) -> ApiResult<impl IntoResponse> {
    let session = SessionId::parse(&session)?;
    let metadata = match b.metadata {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(ApiError::invalid("metadata: must be a JSON object")),
    };
    // A message is stored data like a document: a spent monthly budget
    // refuses it (budget_left_usd errs), and it counts against storage.
    let state = caller.state();
    let tenant = &caller.ctx.tenant;
    quota::budget_left_usd(state, &tenant.id, &tenant.limits).await?;
    let bytes = (b.content.len() + Value::Object(metadata.clone()).to_string().len()) as u64;
    quota::check_storage_for(state, tenant, caller.writer(), "the message needs", bytes).await?;
    let m = caller
        .writer()
        .add_message(
            &session,
            NewMessage {
                role: b.role,
                content: b.content,
                origin: b.origin.as_deref().map(Origin::parse).transpose()?,
                metadata,
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"message_id": m.message_id, "seq": m.seq, "created_at": m.created_at})),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    before_seq: Option<i64>,
    #[serde(default)]
    tenant_id: Option<String>,
    #[serde(default)]
    owner_id: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/sessions/{session_id}/messages",
    tag = "sessions",
    params(("session_id" = String, Path), ("limit" = Option<u32>, Query), ("before_seq" = Option<i64>, Query)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "messages in order", body = serde_json::Value)
    )
)]
async fn list(
    caller: Caller<Viewer>,
    Path(session): Path<String>,
    Q(q): Q<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    let _ = (q.tenant_id, q.owner_id);
    let session = SessionId::parse(&session).map_err(|_| ApiError::NotFound)?;
    let messages = caller
        .reader()
        .messages(&session, q.before_seq, q.limit.unwrap_or(50))
        .await?;
    Ok(Json(json!({"session_id": session, "messages": messages})))
}

#[utoipa::path(
    delete,
    path = "/v1/sessions/{session_id}",
    tag = "sessions",
    params(("session_id" = String, Path)),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "the session's messages are deleted")
    )
)]
async fn remove(caller: Caller<Member>, Path(session): Path<String>) -> ApiResult<StatusCode> {
    let session = SessionId::parse(&session).map_err(|_| ApiError::NotFound)?;
    // Audited before it takes effect (fail closed).
    caller
        .audit("session.delete", Some(session.to_string()), json!({}))
        .await?;
    caller.writer().delete_session(&session).await?;
    Ok(StatusCode::NO_CONTENT)
}
