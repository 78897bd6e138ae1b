//! Search settings over HTTP on both stores: a tenant's search defaults
//! (`search` on the admin plane) apply to its own searches until a request
//! says otherwise, never to another tenant's; document aggregation returns
//! each document once.

use crate::support::{spawn_app, App, Backend, ADMIN};
use serde_json::{json, Value};

async fn hybrid(app: &App, key: &str, extra: Value) -> Value {
    let mut body =
        json!({"query": "ledger reconciliation quarterly", "mode": "hybrid", "limit": 10});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            body[k] = v;
        }
    }
    app.post("/v1/search", key, body).await.ok(200).clone()
}

fn hits(r: &Value) -> &Vec<Value> {
    r["results"].as_array().unwrap()
}

/// RRF scores are sums of 1/(60 + rank): at most 2/61.
fn looks_rrf(r: &Value) -> bool {
    hits(r)
        .iter()
        .all(|h| h["score"].as_f64().unwrap() <= 2.0 / 61.0 + 1e-12)
}

/// Convex fusion scores every hit on both lists: both scores are shown.
fn looks_convex(r: &Value) -> bool {
    hits(r).iter().all(|h| h["vector_score"].is_number())
        && hits(r)
            .iter()
            .any(|h| h["score"].as_f64().unwrap() > 2.0 / 61.0)
}

async fn seed(app: &App, key: &str) {
    for (name, text) in [
        (
            "q1.md",
            "Quarterly ledger reconciliation. The ledger is reconciled each quarter.",
        ),
        ("q2.md", "Ledger entries are reconciled against the bank."),
        ("q3.md", "The quarterly report covers revenue."),
    ] {
        app.add(key, name, text, json!({})).await;
    }
    // A document of several chunks that each mention the ledger.
    let long = (0..40)
        .map(|i| format!("Section {i}: the ledger reconciliation for quarter {i} is filed."))
        .collect::<Vec<_>>()
        .join("\n\n");
    app.add(
        key,
        "handbook.md",
        &long,
        json!({"chunking": {"max_tokens": 32, "overlap_tokens": 0}}),
    )
    .await;
}

async fn a_tenants_search_defaults_apply_until_a_request_says_otherwise(backend: Backend) {
    let app = spawn_app(backend).await;
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    seed(&app, &acme).await;
    seed(&app, &globex).await;

    // Built in: convex fusion, every chunk on its own.
    let r = hybrid(&app, &acme, json!({})).await;
    assert!(looks_convex(&r), "{r}");

    // The tenant's default becomes RRF with best-chunk aggregation.
    let t = app
        .patch(
            "/admin/v1/tenants/acme",
            ADMIN,
            json!({"search": {"fusion": "rrf", "aggregation": "best_chunk"}}),
        )
        .await;
    assert_eq!(
        t.ok(200)["search"],
        json!({"fusion": "rrf", "aggregation": "best_chunk"})
    );
    let r = hybrid(&app, &acme, json!({})).await;
    assert!(looks_rrf(&r), "{r}");
    let docs: Vec<&str> = hits(&r)
        .iter()
        .map(|h| h["document_id"].as_str().unwrap())
        .collect();
    let mut unique = docs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(docs.len(), unique.len(), "each document once: {r}");
    // The request's own choices win.
    let r = hybrid(
        &app,
        &acme,
        json!({"fusion": "convex", "aggregation": "chunk"}),
    )
    .await;
    assert!(looks_convex(&r), "{r}");
    assert!(
        hits(&r)
            .iter()
            .filter(|h| h["document_name"] == "handbook.md")
            .count()
            > 1,
        "chunks rank on their own again: {r}"
    );
    // Another tenant's searches keep the built-in defaults.
    let r = hybrid(&app, &globex, json!({})).await;
    assert!(looks_convex(&r), "{r}");

    // A value no search could use is refused by name and changes nothing.
    for (bad, field) in [
        (json!({"alpha": 2}), "search.alpha"),
        (json!({"aggregation_decay": 0}), "search.aggregation_decay"),
        (json!({"fusion": "sum"}), "search"),
        (json!({"limit": 5}), "search"),
    ] {
        let r = app
            .patch("/admin/v1/tenants/acme", ADMIN, json!({ "search": bad }))
            .await;
        r.problem(400, "invalid_request");
        assert!(r.text.contains(field), "{bad}: {}", r.text);
    }
    let t = app.get("/admin/v1/tenants/acme", ADMIN).await;
    assert_eq!(t.ok(200)["search"]["fusion"], "rrf");

    // `{}` clears the defaults; the changes were audited.
    app.patch("/admin/v1/tenants/acme", ADMIN, json!({"search": {}}))
        .await
        .ok(200);
    let r = hybrid(&app, &acme, json!({})).await;
    assert!(looks_convex(&r), "{r}");
    let audit = app.get("/admin/v1/audit?limit=500", ADMIN).await;
    let updates = audit.ok(200)["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "tenant.update" && e["target"] == "acme")
        .count();
    assert!(updates >= 2, "{}", audit.text);
    app.verify_audit().await;
}

async fn decayed_sums_rank_a_document_of_many_matching_chunks_first(backend: Backend) {
    let app = spawn_app(backend).await;
    let acme = app.tenant("acme").await;
    seed(&app, &acme).await;
    let search = |aggregation: &'static str| {
        let (app, acme) = (&app, &acme);
        async move {
            app.post(
                "/v1/search",
                acme,
                json!({"query": "ledger reconciliation", "mode": "text", "limit": 10,
                       "aggregation": aggregation, "aggregation_decay": 0.9}),
            )
            .await
            .ok(200)
            .clone()
        }
    };
    let best = search("best_chunk").await;
    let summed = search("decayed_sum").await;
    // Forty chunks of the handbook each hold the words: summed, it leads.
    assert_eq!(hits(&summed)[0]["document_name"], "handbook.md", "{summed}");
    let first = hits(&summed)[0]["score"].as_f64().unwrap();
    let single = hits(&best)
        .iter()
        .find(|h| h["document_name"] == "handbook.md")
        .unwrap()["score"]
        .as_f64()
        .unwrap();
    assert!(first > 2.0 * single, "{first} vs its best chunk's {single}");
    for r in [&best, &summed] {
        let mut names: Vec<&str> = hits(r)
            .iter()
            .map(|h| h["document_name"].as_str().unwrap())
            .collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(n, names.len(), "each document once: {r}");
    }
}

on_both_backends!(
    a_tenants_search_defaults_apply_until_a_request_says_otherwise,
    decayed_sums_rank_a_document_of_many_matching_chunks_first,
);
