//! Operations (API.md §9): liveness and readiness. Neither reveals tenant data.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use enclave_core::TenantId;
use serde_json::json;

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
}

/// Ready when the control plane and the data store answer a read.
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
