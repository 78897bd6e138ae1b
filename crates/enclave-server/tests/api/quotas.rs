//! Tenant quotas (API.md §8 `limits`) against the server in-process on both stores:
//! a tenant at its document, storage or daily embedding-token limit gets 429
//! `quota_exceeded` and nothing is stored; re-indexing an existing document
//! and precomputed vectors cost what they should; `/v1/usage` equals the
//! operations performed.

use crate::support::{spawn_app, App, Backend, ADMIN};
use serde_json::{json, Value};

async fn create(app: &App, key: &str, body: Value) -> crate::support::Resp {
    app.post("/v1/documents", key, body).await
}

fn text(name: &str, content: &str) -> Value {
    json!({"name": name, "type": "text", "content": content})
}

async fn stats(app: &App, key: &str) -> Value {
    app.get("/v1/stats", key).await.ok(200).clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_at_its_quota_gets_429_quota_exceeded_and_nothing_is_stored() {
    for backend in [Backend::Embedded, Backend::Postgres] {
        let app = spawn_app(backend).await;

        // Documents: two allowed; the third is refused; re-indexing one of
        // the two (same name) is not a new document.
        let acme = app
            .tenant_with_limits("acme", json!({"max_documents": 2}))
            .await;
        create(&app, &acme, text("a.txt", "first ledger"))
            .await
            .ok(201);
        create(&app, &acme, text("b.txt", "second ledger"))
            .await
            .ok(201);
        let r = create(&app, &acme, text("c.txt", "third ledger")).await;
        r.problem(429, "quota_exceeded");
        assert!(r.text.contains("max_documents"), "{backend:?}: {}", r.text);
        assert!(r.body["detail"].as_str().is_some());
        assert_eq!(stats(&app, &acme).await["document_count"], 2, "{backend:?}");
        let hits = app
            .post(
                "/v1/search",
                &acme,
                json!({"query": "third", "mode": "text"}),
            )
            .await;
        assert_eq!(hits.ok(200)["results"].as_array().unwrap().len(), 0);
        create(&app, &acme, text("b.txt", "second ledger, revised"))
            .await
            .ok(201);
        assert_eq!(stats(&app, &acme).await["document_count"], 2);

        // Storage bytes: 40 of 50 used, a 20-byte document does not fit.
        let globex = app
            .tenant_with_limits("globex", json!({"max_storage_bytes": 50}))
            .await;
        create(&app, &globex, text("one.txt", &"x".repeat(40)))
            .await
            .ok(201);
        let r = create(&app, &globex, text("two.txt", &"y".repeat(20))).await;
        r.problem(429, "quota_exceeded");
        assert!(r.text.contains("max_storage_bytes"), "{}", r.text);
        let s = stats(&app, &globex).await;
        assert_eq!(
            (s["document_count"].clone(), s["total_size_bytes"].clone()),
            (json!(1), json!(40))
        );

        // Embedding tokens per day: the second text document would pass the
        // limit; precomputed vectors embed nothing and still go in.
        let initech = app
            .tenant_with_limits("initech", json!({"embedding_tokens_per_day": 12}))
            .await;
        let first = create(
            &app,
            &initech,
            text("t1.txt", "alpha beta gamma delta epsilon"),
        )
        .await
        .ok(201)
        .clone();
        let spent = first["tokens_embedded"].as_u64().unwrap();
        assert!(spent > 0 && spent <= 12, "{first}");
        let r = create(
            &app,
            &initech,
            text("t2.txt", &"zeta eta theta iota kappa lambda mu ".repeat(3)),
        )
        .await;
        r.problem(429, "quota_exceeded");
        assert!(r.text.contains("embedding_tokens_per_day"), "{}", r.text);
        let mut v = vec![0.0f32; 384];
        v[3] = 1.0;
        let pre = create(
            &app,
            &initech,
            json!({"name": "pre.txt", "type": "text",
                   "chunks": [{"content": "precomputed vectors cost no tokens", "embedding": v}]}),
        )
        .await;
        assert_eq!(pre.ok(201)["tokens_embedded"], 0);
        assert_eq!(stats(&app, &initech).await["document_count"], 2);

        // Usage equals what happened: documents added and tokens embedded
        // count only the writes that were stored.
        let u = app.get("/v1/usage", &initech).await.ok(200).clone();
        assert_eq!(u["documents_added"], 2, "{backend:?}: {u}");
        assert_eq!(u["tokens_embedded"], spent, "{backend:?}: {u}");
        let u = app.get("/v1/usage", &acme).await.ok(200).clone();
        assert_eq!(
            u["documents_added"], 3,
            "{backend:?}: two new, one re-indexed: {u}"
        );

        // Lifting the limit lets the refused document in.
        app.patch(
            "/admin/v1/tenants/acme",
            ADMIN,
            json!({"limits": {"max_documents": null}}),
        )
        .await
        .ok(200);
        create(&app, &acme, text("c.txt", "third ledger"))
            .await
            .ok(201);
        assert_eq!(stats(&app, &acme).await["document_count"], 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_priced_with_the_configured_prices_per_request_search_and_model_token() {
    let app = crate::support::spawn_app_with(
        Backend::Embedded,
        &[(
            crate::support::EXTRA_SETTINGS,
            "[prices]\nrequest_usd = 0.001\nsearch_usd = 0.01\n\
             [prices.embedding_usd_per_million_tokens]\n\"hash-384\" = 2000.0\n\"other-model\" = 99.0",
        )],
    )
    .await;
    let key = app.tenant("acme").await;
    let mut tokens = 0;
    for i in 0..3 {
        tokens += create(
            &app,
            &key,
            text(&format!("d{i}.txt"), "priced ledger entry words"),
        )
        .await
        .ok(201)["tokens_embedded"]
            .as_u64()
            .unwrap();
    }
    for _ in 0..2 {
        app.post(
            "/v1/search",
            &key,
            json!({"query": "ledger", "mode": "text"}),
        )
        .await
        .ok(200);
    }
    let u = app.get("/v1/usage", &key).await.ok(200).clone();
    let requests = u["requests"].as_u64().unwrap();
    assert_eq!(u["searches"], 2, "{u}");
    assert_eq!(u["tokens_embedded"], tokens, "{u}");
    // 3 creates + 2 searches + this usage read.
    assert_eq!(requests, 6, "{u}");
    let expected = requests as f64 * 0.001 + 2.0 * 0.01 + tokens as f64 * 2000.0 / 1e6;
    let cost = u["cost_usd"].as_f64().unwrap();
    assert!(
        (cost - expected).abs() < 1e-9,
        "cost {cost}, expected {expected}: {u}"
    );
    let by_day = u["by_day"].as_array().unwrap();
    let day_cost: f64 = by_day.iter().map(|d| d["cost_usd"].as_f64().unwrap()).sum();
    assert!((day_cost - cost).abs() < 1e-9, "{u}");
    // A server without prices bills nothing.
    let free = spawn_app(Backend::Embedded).await;
    let k = free.tenant("acme").await;
    create(&free, &k, text("d.txt", "unpriced")).await.ok(201);
    assert_eq!(free.get("/v1/usage", &k).await.ok(200)["cost_usd"], 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_monthly_budget_refuses_writes_and_searches_but_not_reading_usage() {
    let app = crate::support::spawn_app_with(
        Backend::Embedded,
        &[(
            crate::support::EXTRA_SETTINGS,
            "[prices]\nrequest_usd = 0.01\n[prices.embedding_usd_per_million_tokens]\n\"hash-384\" = 10000.0",
        )],
    )
    .await;
    let key = app
        .tenant_with_limits("acme", json!({"monthly_budget_usd": 0.095}))
        .await;
    // 0.01 for the request and 0.01 per token embedded.
    let first = create(&app, &key, text("a.txt", "small ledger note"))
        .await
        .ok(201)
        .clone();
    let tokens = first["tokens_embedded"].as_u64().unwrap();
    assert!((2..=5).contains(&tokens), "{first}");
    // A document whose tokens the dollars left cannot buy: refused whole.
    let r = create(
        &app,
        &key,
        text("big.txt", &"many words to embed here ".repeat(4)),
    )
    .await;
    r.problem(429, "quota_exceeded");
    assert!(r.text.contains("monthly_budget_usd"), "{}", r.text);
    assert_eq!(stats(&app, &key).await["document_count"], 1);
    // Searches (0.01 each) run until the month's spend reaches the budget.
    let mut admitted = 0;
    let refusal = loop {
        let r = app
            .post(
                "/v1/search",
                &key,
                json!({"query": "ledger", "mode": "text"}),
            )
            .await;
        if r.status.as_u16() == 429 {
            break r;
        }
        r.ok(200);
        admitted += 1;
        assert!(admitted < 20, "the budget never stopped searches");
    };
    refusal.problem(429, "quota_exceeded");
    assert!(admitted >= 1);
    // Reading what was spent still works, and it is at the budget.
    let u = app.get("/v1/usage", &key).await.ok(200).clone();
    let cost = u["cost_usd"].as_f64().unwrap();
    assert!(cost >= 0.095 - 1e-9, "{u}");
    assert!(
        cost <= 0.095 + 0.02 + 1e-9,
        "overshot by more than the requests in flight: {u}"
    );
    // Raising the budget lets work through again.
    app.patch(
        "/admin/v1/tenants/acme",
        ADMIN,
        json!({"limits": {"monthly_budget_usd": 10.0}}),
    )
    .await
    .ok(200);
    app.post(
        "/v1/search",
        &key,
        json!({"query": "ledger", "mode": "text"}),
    )
    .await
    .ok(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_usage_view_shows_each_tenant_what_its_own_usage_shows() {
    for backend in [Backend::Embedded, Backend::Postgres] {
        let app = crate::support::spawn_app_with(
            backend,
            &[(
                crate::support::EXTRA_SETTINGS,
                "[prices]\nrequest_usd = 0.001\nsearch_usd = 0.01",
            )],
        )
        .await;
        let a = app
            .tenant_with_limits("alpha", json!({"monthly_budget_usd": 5.0}))
            .await;
        let b = app.tenant("beta").await;
        create(&app, &a, text("a.md", "alpha's only document"))
            .await
            .ok(201);
        for _ in 0..3 {
            app.post("/v1/search", &b, json!({"query": "anything"}))
                .await
                .ok(200);
        }
        // A tenant credential is not the platform admin.
        app.get("/admin/v1/usage", &a)
            .await
            .problem(403, "forbidden");

        let own_a = app.get("/v1/usage", &a).await.ok(200).clone();
        let own_b = app.get("/v1/usage", &b).await.ok(200).clone();
        let page1 = app
            .get("/admin/v1/usage?limit=1", ADMIN)
            .await
            .ok(200)
            .clone();
        let rows1 = page1["tenants"].as_array().unwrap();
        assert_eq!(rows1.len(), 1);
        let cursor = page1["next_cursor"].as_str().unwrap().to_owned();
        let page2 = app
            .get(&format!("/admin/v1/usage?limit=1&cursor={cursor}"), ADMIN)
            .await
            .ok(200)
            .clone();
        let rows: Vec<&Value> = rows1
            .iter()
            .chain(page2["tenants"].as_array().unwrap())
            .collect();
        let row = |id: &str| *rows.iter().find(|r| r["tenant_id"] == id).unwrap();
        let (ra, rb) = (row("alpha"), row("beta"));
        // The view itself is not a tenant request: figures as each tenant's
        // own view showed them (which counted itself).
        for (r, own) in [(ra, &own_a), (rb, &own_b)] {
            for f in [
                "searches",
                "documents_added",
                "tokens_embedded",
                "storage_bytes",
            ] {
                assert_eq!(r[f], own[f], "{backend:?} {f}: {r} vs {own}");
            }
            assert_eq!(r["requests"], own["requests"], "{backend:?}: {r} vs {own}");
        }
        assert_eq!(rb["searches"], 3);
        assert_eq!(ra["documents_added"], 1);
        assert_eq!(ra["document_count"], 1);
        assert_eq!(ra["monthly_budget_usd"], 5.0);
        assert!(ra["month_to_date_usd"].as_f64().unwrap() > 0.0);
        assert!(rb.get("monthly_budget_usd").is_none());
        let cost_b = rb["cost_usd"].as_f64().unwrap();
        assert!((cost_b - (4.0 * 0.001 + 3.0 * 0.01)).abs() < 1e-9, "{rb}");
    }
}
