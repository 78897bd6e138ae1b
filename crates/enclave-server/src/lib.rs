//! Enclave's HTTP server: the contract of `shared/API.md` over the library.
//!
//! Layout:
//! - [`auth`]: credentials → [`auth::TenantCtx`]; role-typed [`auth::Caller`]
//!   handles, the platform-admin guard and the tenant-checking JSON body;
//! - [`keys`] (API keys) and [`jwt`] (JWT verification);
//! - [`failures`]: what a failed credential may cost (per-address and global
//!   failure buckets, checked before any store access; aggregated audit);
//! - [`error`]: the one error type and its problem+json mapping;
//! - [`state`]: what handlers share;
//! - [`limits`]: rate limits (in-process or Redis), plans and prices;
//!   `usage`: the per-tenant, per-day counters;
//! - `unread`: `Connection: close` on answers that left a body unread;
//! - [`service`]: the application layer (ingest, quotas, keys, tenants,
//!   purge, audit) that routes and background loops call;
//! - `background`: the loops beside the requests: usage flush with budget
//!   [`alerts`] (stored once, signed webhook), failed-credential audit
//!   flush, the tenant change follower, the ingestion [`jobs`] runner;
//! - `routes`: HTTP only, one module per resource, each exposing
//!   `router()`, merged in [`app`] (API.md's routes plus
//!   docs/API-EXTENSIONS.md's); a route calls services, never the reverse.
//!
//! [`run`] takes a bound listener and a shutdown future (tests bind port 0);
//! in-flight requests finish before it returns.

pub mod auth;
mod background;
pub mod client;
pub mod error;
pub mod failures;
pub mod jwt;
pub mod keys;
pub mod limits;
mod metrics;
pub mod openapi;
mod routes;
mod schema_rules;
pub mod service;
pub mod settings;
pub mod state;
#[cfg(feature = "testkit")]
pub mod testkit;
mod unread;
mod usage;

use std::future::Future;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::HeaderName;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use background::{alerts, jobs};
pub use error::{ApiError, ApiResult};
pub use service::audit::{verify_all as verify_audit, ChainCheck};
pub use service::keys::{mint_key, CreatedKey, NewKeyBody};
pub use settings::Settings;
pub use state::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole HTTP surface.
pub fn app(state: AppState) -> Router {
    let max_body = state.options().max_body_bytes;
    let (router, api) = api_router().split_for_parts();
    let api = document(api, &schema_facts(&state));
    router
        .layer(axum::Extension(std::sync::Arc::new(api)))
        .fallback(|| async { ApiError::NotFound })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(state.clone(), time_limit))
        .layer(middleware::from_fn(limits::headers))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req
                .headers()
                .get(&REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(),
                    request_id = %id, tenant_id = tracing::field::Empty)
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(middleware::from_fn(unread::close_if_unread))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            client::resolve_client,
        ))
        .with_state(state)
}

/// The operator listener's surface: `/metrics` without a credential (bind
/// it where only the operator reaches it).
pub fn operator_app(state: AppState) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(metrics::operator_metrics))
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
}

/// Serves [`operator_app`] on `listener` until the process ends.
pub async fn serve_operator(listener: TcpListener, state: AppState) {
    if let Err(e) = axum::serve(listener, operator_app(state)).await {
        tracing::error!(error = %e, "the operator metrics listener stopped");
    }
}

/// Every API route with its OpenAPI description (the served document is
/// this router's).
fn api_router() -> utoipa_axum::router::OpenApiRouter<AppState> {
    use utoipa::OpenApi;
    utoipa_axum::router::OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(routes::documents::router())
        .merge(routes::jobs::router())
        .merge(routes::sessions::router())
        .merge(routes::tenant::router())
        .merge(routes::admin::router())
        .merge(routes::ops::router())
        .merge(routes::usage::router())
        .routes(utoipa_axum::routes!(metrics::metrics))
        .routes(utoipa_axum::routes!(openapi::docs_page))
        .routes(utoipa_axum::routes!(openapi::openapi_json))
}

/// The OpenAPI document a server with the default limits and `dimensions`
/// and `model_max_tokens` of its embedding model serves at `/openapi.json`.
pub fn openapi_document(dimensions: usize, model_max_tokens: u32) -> serde_json::Value {
    let limits = enclave::Limits::default();
    document(
        api_router().into_openapi(),
        &schema_rules::Facts::new(&limits, dimensions, model_max_tokens),
    )
}

fn schema_facts(state: &AppState) -> schema_rules::Facts {
    let e = state.memory().embedder();
    schema_rules::Facts {
        places_tenants: state.inner.placer.is_some(),
        ..schema_rules::Facts::new(
            state.memory().limits(),
            e.dimensions(),
            e.max_input_tokens(),
        )
    }
}

/// The generated document with the common answers and the server's rules.
fn document(mut api: utoipa::openapi::OpenApi, facts: &schema_rules::Facts) -> serde_json::Value {
    openapi::add_common_responses(&mut api);
    let mut doc = serde_json::to_value(&api).unwrap_or_default();
    for missed in schema_rules::apply(&mut doc, facts) {
        tracing::error!(rule = %missed, "an OpenAPI rule names nothing in the document");
    }
    doc
}

/// Answers 503 `unavailable` when a request runs past the configured limit.
async fn time_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit: Duration = state.options().request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::Unavailable("request time limit reached".into()).into_response(),
    }
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish
/// and stops the background loops.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let background = background::start(&state);
    let served = axum::serve(
        listener,
        app(state.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    background.stop(&state).await;
    served
}
