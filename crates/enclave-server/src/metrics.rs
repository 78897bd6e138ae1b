//! Prometheus metrics (`GET /metrics`). Labels are bounded by construction:
//! the route *template* (`/v1/documents/{id}`, never the id), the method and
//! the status code, for rate limits the outcome and backend, for the
//! embedding scheduler the lane — no tenant label, so cardinality does not
//! grow with tenants (per-tenant figures are in `/v1/usage` and the admin
//! plane). The one exception is opt-in: `[metrics] top_tenants = N` labels
//! the N busiest tenants' counters (at most N label values).

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

    fn render(
        &self,
        embedding: enclave::SchedulerStats,
        slots: enclave::StoreSlotStats,
        jobs: JobFigures,
        failures: &crate::failures::FailureGuard,
        top: &[(enclave_core::TenantId, enclave_store::control::UsageCounts)],
    ) -> String {
        let mut buf = Vec::new();
        let mut families = self.registry.gather();
        families.extend(failure_families(failures));
        families.extend(scheduler_families(embedding));
        families.extend(slot_families(slots));
        families.extend(job_families(jobs));
        families.extend(top_tenant_families(top));
        let _ = TextEncoder::new().encode(&families, &mut buf);
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

/// Prometheus text format, for the operator: it needs the platform admin
/// credential (platform-wide activity is not for tenants), or is served
/// without one on the separate operator address (`[metrics] listen`).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"),
        (status = 401, description = "no or a wrong platform admin credential", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "a tenant credential", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "too many failed credentials from this address", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ))]
pub async fn metrics(_: crate::auth::PlatformAdmin, State(state): State<AppState>) -> Response {
    operator_metrics(State(state)).await.into_response()
}

/// `/metrics` on the operator listener (no credential: that address is
/// reachable only by whoever runs Prometheus).
pub async fn operator_metrics(State(state): State<AppState>) -> impl IntoResponse {
    use std::sync::atomic::Ordering::Relaxed;
    let runner = &state.inner.jobs;
    let jobs = JobFigures {
        // All replicas' unfinished jobs, from the control store (-1 when it
        // does not answer: the scrape still succeeds).
        unfinished: match state.control().unfinished_jobs().await {
            Ok(n) => n as f64,
            Err(_) => -1.0,
        },
        running: runner.running.load(Relaxed) as f64,
        documents: runner.documents_processed.load(Relaxed) as f64,
        finished: runner.jobs_finished.load(Relaxed) as f64,
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.inner.metrics.render(
            state.inner.memory.scheduler_stats(),
            state.inner.memory.store_slot_stats(),
            jobs,
            &state.inner.failures,
            &state.inner.usage.top(state.options().metrics.top_tenants),
        ),
    )
}

/// `enclave_top_tenant_*_total{tenant_id}`: this process' counts for the
/// `[metrics] top_tenants` busiest tenants (by requests), so the label set
/// is at most N whatever the number of tenants.
fn top_tenant_families(
    top: &[(enclave_core::TenantId, enclave_store::control::UsageCounts)],
) -> Vec<prometheus::proto::MetricFamily> {
    use prometheus::core::Collector;
    if top.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    type Field = fn(&enclave_store::control::UsageCounts) -> u64;
    let fields: [(&str, &str, Field); 4] = [
        (
            "enclave_top_tenant_requests_total",
            "requests of the busiest tenants (this process)",
            |c| c.requests,
        ),
        (
            "enclave_top_tenant_searches_total",
            "searches of the busiest tenants (this process)",
            |c| c.searches,
        ),
        (
            "enclave_top_tenant_documents_added_total",
            "documents added by the busiest tenants (this process)",
            |c| c.documents_added,
        ),
        (
            "enclave_top_tenant_tokens_embedded_total",
            "tokens embedded for the busiest tenants (this process)",
            |c| c.tokens_embedded,
        ),
    ];
    for (name, help, get) in fields {
        let c = prometheus::IntCounterVec::new(Opts::new(name, help), &["tenant_id"])
            .expect("valid metric");
        for (t, counts) in top {
            c.with_label_values(&[t.as_str()]).inc_by(get(counts));
        }
        out.extend(c.collect());
    }
    out
}

/// Failed credentials: counted, refused before any store access, and the
/// aggregated audit events written for them (no tenant label).
fn failure_families(f: &crate::failures::FailureGuard) -> Vec<prometheus::proto::MetricFamily> {
    use prometheus::core::Collector;
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = Vec::new();
    for (name, help, v) in [
        (
            "enclave_auth_failures_total",
            "failed credentials and tenant-hint mismatches",
            f.failures_total.load(Relaxed),
        ),
        (
            "enclave_auth_refused_total",
            "requests refused (429) before any store access: their address, or the process, had no failures left",
            f.refused_total.load(Relaxed),
        ),
        (
            "enclave_auth_held_total",
            "refusals held for up to [auth_failures] tarpit_ms before they were answered",
            f.held_total.load(Relaxed),
        ),
        (
            "enclave_auth_audit_aggregates_total",
            "aggregated audit events written for failed credentials",
            f.audit_events_total.load(Relaxed),
        ),
    ] {
        let c = prometheus::IntCounter::new(name, help).expect("valid metric");
        c.inc_by(v);
        out.extend(c.collect());
    }
    out
}

struct JobFigures {
    unfinished: f64,
    running: f64,
    documents: f64,
    finished: f64,
}

fn job_families(j: JobFigures) -> Vec<prometheus::proto::MetricFamily> {
    use prometheus::core::Collector;
    let mut out = Vec::new();
    for (name, help, v, counter) in [
        (
            "enclave_jobs_unfinished",
            "jobs accepted and not finished, all replicas (-1: control store unreachable)",
            j.unfinished,
            false,
        ),
        (
            "enclave_jobs_running",
            "jobs this replica is processing",
            j.running,
            false,
        ),
        (
            "enclave_job_documents_processed_total",
            "job documents this replica processed",
            j.documents,
            true,
        ),
        (
            "enclave_jobs_finished_total",
            "jobs this replica finished",
            j.finished,
            true,
        ),
    ] {
        if counter {
            let c = prometheus::Counter::new(name, help).expect("valid metric");
            c.inc_by(v);
            out.extend(c.collect());
        } else {
            let g = prometheus::Gauge::new(name, help).expect("valid metric");
            g.set(v);
            out.extend(g.collect());
        }
    }
    out
}

/// The embedding scheduler's queue depths and lane figures, read at scrape
/// time (no tenant label: queue depth is summed over tenants).
fn scheduler_families(s: enclave::SchedulerStats) -> Vec<prometheus::proto::MetricFamily> {
    use prometheus::core::Collector;
    let gauge = |name: &str, help: &str, v: f64| {
        let g = prometheus::Gauge::new(name, help).expect("valid metric");
        g.set(v);
        g.collect()
    };
    let by_lane = |name: &str, help: &str, v: [f64; 2], counter: bool| {
        let opts = Opts::new(name, help);
        if counter {
            let c = prometheus::CounterVec::new(opts, &["lane"]).expect("valid metric");
            c.with_label_values(&["foreground"]).inc_by(v[0]);
            c.with_label_values(&["background"]).inc_by(v[1]);
            c.collect()
        } else {
            let g = prometheus::GaugeVec::new(opts, &["lane"]).expect("valid metric");
            g.with_label_values(&["foreground"]).set(v[0]);
            g.with_label_values(&["background"]).set(v[1]);
            g.collect()
        }
    };
    let counter = |name: &str, help: &str, v: f64| {
        let c = prometheus::Counter::new(name, help).expect("valid metric");
        c.inc_by(v);
        c.collect()
    };
    let mut out = Vec::new();
    out.extend(gauge(
        "enclave_embedding_queue_units",
        "embedding units waiting for a slot, all tenants",
        s.queued_units as f64,
    ));
    out.extend(gauge(
        "enclave_embedding_queue_tenants",
        "tenants with embedding units waiting",
        s.waiting_tenants as f64,
    ));
    out.extend(by_lane(
        "enclave_embedding_running_units",
        "embedding units computing, by lane",
        [s.running[0] as f64, s.running[1] as f64],
        false,
    ));
    out.extend(by_lane(
        "enclave_embedding_units_total",
        "embedding units finished, by lane",
        [s.units_total[0] as f64, s.units_total[1] as f64],
        true,
    ));
    out.extend(counter(
        "enclave_embedding_queue_wait_seconds_total",
        "seconds embedding units waited for a slot (sum)",
        s.wait_seconds_total,
    ));
    out.extend(counter(
        "enclave_embedding_refused_total",
        "embedding calls refused (429) because a queue was full",
        s.refused_total as f64,
    ));
    out.extend(counter(
        "enclave_embedding_abandoned_tokens_total",
        "tokens removed unembedded because their caller went away",
        s.abandoned_tokens as f64,
    ));
    out.extend(counter(
        "enclave_embedding_queries_total",
        "query embeddings computed (never queued)",
        s.queries_total as f64,
    ));
    out
}

/// `enclave_store_slot_*_total`: store calls that found every slot of
/// their tenant busy (docs/ARCHITECTURE.md, "Noisy neighbours on the data
/// pool").
fn slot_families(s: enclave::StoreSlotStats) -> Vec<prometheus::proto::MetricFamily> {
    use prometheus::core::Collector;
    let mut out = Vec::new();
    for (name, help, v) in [
        (
            "enclave_store_slot_waits_total",
            "store calls that waited because their tenant's calls held every slot",
            s.waited_total,
        ),
        (
            "enclave_store_slot_refused_total",
            "store calls refused (429) after waiting for one of their tenant's slots",
            s.refused_total,
        ),
    ] {
        let c = prometheus::IntCounter::new(name, help).expect("valid metric");
        c.inc_by(v);
        out.extend(c.collect());
    }
    out
}
