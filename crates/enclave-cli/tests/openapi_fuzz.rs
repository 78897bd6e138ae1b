//! The served `/openapi.json` says exactly what the server does: an
//! independent fuzzer (schemathesis, installed by `scripts/setup` into
//! `.cache/venv`) generates requests from the document — valid ones must be
//! accepted, invalid ones refused, every answer documented and shaped as
//! documented, never a server error — for an API key, a JWT and the platform
//! admin, on both stores. And the rules the document cannot state as
//! refusals are answers, proven here.

#[macro_use]
mod support;

use std::path::PathBuf;
use std::process::Command;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use support::*;

on_both_backends!(
    schemathesis_finds_no_disagreement_between_the_document_and_the_server,
    an_empty_date_range_finds_nothing_and_is_no_error,
    a_usage_period_longer_than_367_days_starts_367_days_before_its_end,
    a_key_given_a_past_expiry_is_created_expired,
    whole_numbers_written_with_a_fraction_are_integers_and_bodies_are_objects,
    an_overlap_above_half_the_chunk_is_used_as_half,
);

/// Seconds each schemathesis run may take (coverage, fuzzing and stateful
/// phases share it); `ENCLAVE_FUZZ_SECONDS` overrides (and
/// `ENCLAVE_FUZZ_SEED` the seeds) for a longer search.
const FUZZ_SECONDS: u64 = 40;

fn schemathesis() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let bin = root.join(".cache/venv/bin/schemathesis");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/setup (scripts/test does)",
        bin.display()
    );
    bin
}

fn jwt(tenant: &str, role: &str) -> String {
    let claims = json!({"sub": "fuzzer", "tenant_id": tenant, "role": role,
                        "exp": chrono::Utc::now().timestamp() + 3600,
                        "iss": "https://issuer.test", "aud": "enclave"});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

/// Runs schemathesis with every check on the operations `paths` matches,
/// as `credential`; panics with its report unless it found nothing.
fn fuzz(app: &App, label: &str, credential: &str, paths: &str, seed: u64) {
    let work = tempfile::tempdir().unwrap();
    // A request body is bounded in bytes (413 `payload_too_large`, on every
    // operation with a body in the document), which JSON Schema cannot
    // state: a schema-valid body over the limit may be refused with 413.
    // Every other default of the check stays.
    let config = work.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        "[checks.positive_data_acceptance]\n\
         expected-statuses = [\"2xx\", \"3xx\", \"401\", \"403\", \"404\", \"409\", \"413\", \"429\", \"5xx\"]\n",
    )
    .unwrap();
    let seconds = std::env::var("ENCLAVE_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(FUZZ_SECONDS);
    let out = Command::new(schemathesis())
        .current_dir(work.path())
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(app.url("/openapi.json"))
        .args(["--checks", "all"])
        .args(["-H", &format!("Authorization: Bearer {credential}")])
        .args(["--include-path-regex", paths])
        .args(["--max-time", &seconds.to_string()])
        // PostgreSQL text cannot hold NUL; the document says it is refused
        // everywhere (info.description) rather than in every schema.
        .args(["--generation-allow-x00", "false"])
        // One worker: schemathesis' coverage phase parses Python source with
        // `ast` from its worker threads, which CPython 3.11 does not allow
        // ("AST constructor recursion depth mismatch"), and one worker keeps
        // a seed's run the same run.
        .args(["--workers", "1", "--request-timeout", "30", "--no-color"])
        .args(["--seed", &seed.to_string()])
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .output()
        .expect("run schemathesis");
    let report = String::from_utf8_lossy(&out.stdout);
    let tail: Vec<String> = report
        .lines()
        .rev()
        .take(200)
        .map(|l| l.chars().take(600).collect())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    assert!(
        out.status.success() && report.contains("No issues found"),
        "schemathesis ({label}, {paths}, seed {seed}) found issues:\n{}\n{}",
        tail.join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = report
        .lines()
        .find(|l| l.contains(" generated, "))
        .unwrap_or("");
    eprintln!("schemathesis {label}: {}", generated.trim());
}

async fn schemathesis_finds_no_disagreement_between_the_document_and_the_server(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant("acme").await;
    // Something to find, list and page through.
    for i in 0..3 {
        app.add(
            &key,
            &format!("note {i}"),
            "quarterly revenue grew",
            json!({}),
        )
        .await;
    }
    // Fixed seeds, so a CI run is repeatable; `ENCLAVE_FUZZ_SEED` explores.
    let base: u64 = std::env::var("ENCLAVE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let seed = base + u64::from(backend == Backend::Postgres);
    let tenant = "^/(v1/|healthz$|readyz$|openapi\\.json$|docs$)";
    fuzz(&app, "API key", &key, tenant, seed);
    fuzz(&app, "JWT", &jwt("acme", "owner"), "^/v1/", seed + 10);
    fuzz(&app, "admin token", ADMIN, "^/(admin/|metrics$)", seed + 20);
}

async fn an_empty_date_range_finds_nothing_and_is_no_error(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant("acme").await;
    app.add(&key, "q3", "quarterly revenue grew", json!({}))
        .await;
    let search = |after: &str, before: &str| json!({"query": "revenue", "created_after": after, "created_before": before});
    let r = app
        .post(
            "/v1/search",
            &key,
            search("2000-01-01T00:00:00Z", "9999-01-01T00:00:00Z"),
        )
        .await;
    assert_eq!(r.ok(200)["results"].as_array().unwrap().len(), 1);
    for (after, before) in [
        ("2000-01-01T00:00:00Z", "2000-01-01T00:00:00Z"),
        ("9999-01-01T00:00:00Z", "2000-01-01T00:00:00Z"),
    ] {
        let r = app.post("/v1/search", &key, search(after, before)).await;
        assert_eq!(r.ok(200)["results"], json!([]), "{after} {before}");
    }
    let r = app
        .get(
            "/v1/documents?created_after=9999-01-01T00:00:00Z&created_before=2000-01-01T00:00:00Z",
            &key,
        )
        .await;
    assert_eq!(r.ok(200)["documents"], json!([]));
    // Bounds a UTC offset carries just outside years 1-9999 are their ends.
    let r = app
        .post(
            "/v1/search",
            &key,
            search("0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00"),
        )
        .await;
    assert_eq!(r.ok(200)["results"].as_array().unwrap().len(), 1);
    let r = app
        .post(
            "/v1/search",
            &key,
            search("-0001-01-01T00:00:00Z", "2000-01-01T00:00:00Z"),
        )
        .await;
    r.problem(400, "invalid_request");
}

async fn a_usage_period_longer_than_367_days_starts_367_days_before_its_end(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant("acme").await;
    let r = app
        .get("/v1/usage?from=2020-01-01&to=2026-06-30", &key)
        .await;
    let body = r.ok(200);
    assert_eq!(body["from"], "2025-06-29", "{body}");
    assert_eq!(body["to"], "2026-06-30");
    let r = app
        .get("/v1/usage?from=2026-06-30&to=2026-01-01", &key)
        .await;
    let body = r.ok(200);
    assert_eq!(body["by_day"], json!([]), "{body}");
    assert_eq!(body["requests"], 0);
    let r = app
        .get("/admin/v1/usage?from=2020-01-01&to=2026-06-30", ADMIN)
        .await;
    r.ok(200);
    app.get("/v1/usage?from=2026-13-01", &key)
        .await
        .problem(400, "invalid_request");
}

async fn a_key_given_a_past_expiry_is_created_expired(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.tenant("acme").await;
    let r = app
        .post(
            "/v1/keys",
            &owner,
            json!({"name": "late", "role": "viewer", "expires_at": "2000-01-01T00:00:00Z"}),
        )
        .await;
    let created = r.ok(201).clone();
    assert_eq!(created["expires_at"], "2000-01-01T00:00:00Z");
    let dead = created["key"].as_str().unwrap();
    app.get("/v1/documents", dead)
        .await
        .problem(401, "unauthenticated");
    // Names of keys, like those of documents, hold no control characters.
    app.post(
        "/v1/keys",
        &owner,
        json!({"name": "bad\u{9b}name", "role": "viewer"}),
    )
    .await
    .problem(400, "invalid_request");
}

async fn whole_numbers_written_with_a_fraction_are_integers_and_bodies_are_objects(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let key = app.tenant("acme").await;
    let id = app
        .add(
            &key,
            "q3",
            "quarterly revenue grew",
            json!({"metadata": {"ratio": 2.0}}),
        )
        .await;
    let r = app
        .post(
            "/v1/search",
            &key,
            json!({"query": "revenue", "limit": 5.0}),
        )
        .await;
    assert_eq!(r.ok(200)["results"].as_array().unwrap().len(), 1);
    // Metadata is the caller's data: kept as written.
    let doc = app.get(&format!("/v1/documents/{id}"), &key).await;
    assert_eq!(doc.ok(200)["metadata"]["ratio"].to_string(), "2.0");
    // Numbers at the ends of f64 come back as written from every store
    // (PostgreSQL's jsonb spells them out digit by digit).
    let big = json!({"metadata": {"big": -1.797_693_134_862_315_5e308, "small": 5e-324}});
    let r = app.patch(&format!("/v1/documents/{id}"), &key, big).await;
    assert_eq!(
        r.ok(200)["metadata"]["big"],
        json!(-1.797_693_134_862_315_5e308)
    );
    let doc = app.get(&format!("/v1/documents/{id}"), &key).await;
    assert_eq!(doc.ok(200)["metadata"]["small"], json!(5e-324));
    // Limits are bounded to 2^53 (what a JSON number holds exactly).
    app.patch(
        "/admin/v1/tenants/acme",
        ADMIN,
        json!({"limits": {"monthly_budget_usd": 1e300}}),
    )
    .await
    .problem(400, "invalid_request");
    app.post(
        "/v1/search",
        &key,
        json!({"query": "revenue", "limit": 5.5}),
    )
    .await
    .problem(400, "invalid_request");
    for body in [json!([null, null]), json!(["revenue"]), json!("revenue")] {
        let r = app.post("/v1/search", &key, body.clone()).await;
        r.problem(400, "invalid_request");
        let r = app
            .patch(&format!("/v1/documents/{id}"), &key, body.clone())
            .await;
        r.problem(400, "invalid_request");
    }
}

async fn an_overlap_above_half_the_chunk_is_used_as_half(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant("acme").await;
    let text = "word ".repeat(400);
    let created = |chunking: Value| json!({"name": "doc", "content": text, "chunking": chunking});
    // Only max_tokens given: the default overlap (32) is more than half.
    let small = app
        .post(
            "/v1/documents",
            &key,
            created(json!({"strategy": "sliding", "max_tokens": 32})),
        )
        .await;
    let small = small.ok(201)["chunks_created"].as_u64().unwrap();
    let half = app
        .post(
            "/v1/documents",
            &key,
            json!({"name": "doc2", "content": text,
                   "chunking": {"strategy": "sliding", "max_tokens": 32, "overlap_tokens": 16}}),
        )
        .await;
    assert_eq!(half.ok(201)["chunks_created"].as_u64().unwrap(), small);
    app.post("/v1/documents", &key, created(json!({"max_tokens": 8})))
        .await
        .problem(400, "invalid_request");
}
