//! Prometheus metrics (`GET /metrics`). Labels are bounded by construction:
//! the route *template* (`/v1/documents/{id}`, never the id), the method and
//! the status code, and for rate limits the outcome and backend — no tenant
//! label, so cardinality does not grow with tenants (per-tenant figures are
//! in `/v1/usage` and the admin plane).

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::AppState;

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    pub(crate) audit_failures: prometheus::IntCounter,
    pub(crate) limiter: crate::limits::LimiterMetrics,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "enclave_http_requests_total",
                "HTTP requests by route template, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "enclave_http_request_duration_seconds",
                "HTTP request latency by route template",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
            &["route", "method"],
        )
        .expect("valid metric");
        let audit_failures = prometheus::IntCounter::new(
            "enclave_audit_write_failures_total",
            "audit events that could not be written on the way to refusing a request",
        )
        .expect("valid metric");
        registry
            .register(Box::new(requests.clone()))
            .expect("register");
        registry
            .register(Box::new(latency.clone()))
            .expect("register");
        registry
            .register(Box::new(audit_failures.clone()))
            .expect("register");
        let limiter = crate::limits::LimiterMetrics::new();
        registry
            .register(Box::new(limiter.decisions.clone()))
            .expect("register");
        registry
            .register(Box::new(limiter.redis_errors.clone()))
            .expect("register");
        registry
            .register(Box::new(limiter.redis_up.clone()))
            .expect("register");
        Self {
            limiter,
            registry,
            requests,
            latency,
            audit_failures,
        }
    }

    fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts and times every request.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let resp = next.run(req).await;
    let m = &state.inner.metrics;
    m.requests
        .with_label_values(&[&route, &method, resp.status().as_str()])
        .inc();
    m.latency
        .with_label_values(&[&route, &method])
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.inner.metrics.render(),
    )
}
