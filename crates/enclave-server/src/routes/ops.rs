//! Operations (API.md §9): liveness and readiness. Neither reveals tenant data.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use enclave_core::TenantId;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
}

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "the process is up", body = serde_json::Value)))]
async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the control plane and the data store answer a read.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "every store answers", body = serde_json::Value),
        (status = 503, description = "a store is unreachable")
    )
)]
async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    // A tenant id no tenant can have been given a document under.
    let probe = TenantId::parse("readyz-probe").expect("valid id");
    let control = state.control().get_tenant(&probe).await.is_ok();
    let data = state.memory().tenant(&probe).statistics().await.is_ok();
    let status = if control && data {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(
            json!({"status": if status == StatusCode::OK { "ready" } else { "unavailable" },
                    "control_store": control, "data_store": data}),
        ),
    )
}
