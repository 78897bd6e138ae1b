//! PostgreSQL isolation modes, tenant moves and per-tenant vector indexes,
//! proven through the library against a real PostgreSQL 18 + pgvector:
//! data lives exactly where the tenant directory says, a move loses nothing
//! (not even writes racing it), schema mode holds hundreds of tenants, and
//! a large tenant's searches go through its own HNSW index at exact-scan
//! recall while small tenants stay exact.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{open, open_postgres, open_postgres_with, text_doc, Backend, PgMode};
use enclave::core::{
    DocumentBody, ExportedDocument, Origin, ProvidedChunk, SearchMode, SearchParams,
};
use enclave::embed::HashEmbedder;
use enclave::{EmbedderConfig, Layout, ListParams, Tenant};
use enclave_postgres::{
    ensure_vector_indexes, move_tenant, schema_name, IndexChange, IndexPolicy, MoveTarget,
    PgOptions,
};
use futures::{StreamExt, TryStreamExt};
use rand::{Rng, SeedableRng};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

fn hash() -> Arc<HashEmbedder> {
    Arc::new(HashEmbedder::new(384))
}

async fn superuser(opts: &PgConnectOptions) -> PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .connect_with(opts.clone())
        .await
        .unwrap()
}

/// Rows of `tenant` in `schema.table`, counted by the superuser (no RLS).
async fn rows_in(su: &PgPool, schema: &str, table: &str, tenant: &str) -> i64 {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("{schema}.{table}"))
        .fetch_one(su)
        .await
        .unwrap();
    if !exists {
        return 0;
    }
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {schema}.{table} WHERE tenant_id = $1"
    ))
    .bind(tenant)
    .fetch_one(su)
    .await
    .unwrap()
}

async fn export(t: &Tenant) -> Vec<ExportedDocument> {
    t.export().try_collect().await.unwrap()
}

/// (document, chunk, rounded score) of a search, for comparing backends.
async fn ranked(t: &Tenant, query: &str, mode: SearchMode) -> Vec<(String, String, i64)> {
    t.search(SearchParams::new(query).mode(mode).limit(10))
        .await
        .unwrap()
        .results
        .into_iter()
        .map(|h| {
            (
                h.document_id.to_string(),
                h.chunk_id.to_string(),
                (h.score * 1e6).round() as i64,
            )
        })
        .collect()
}

#[tokio::test]
async fn schema_mode_serves_five_hundred_tenants_without_crossing() {
    let b = open_postgres(hash(), PgMode::Schema).await;
    let pg = b.pg.as_ref().unwrap();
    let n = 500;
    futures::stream::iter(0..n)
        .map(|i| {
            let b = &b;
            async move {
                let t = b.tenant(&format!("s{i:03}")).await;
                t.add_document(text_doc(
                    "ledger.txt",
                    &format!("quarterly ledger entry for marker{i}"),
                ))
                .await
                .unwrap();
            }
        })
        .buffer_unordered(4)
        .collect::<()>()
        .await;

    for i in 0..n {
        let t = b.tenant(&format!("s{i:03}")).await;
        let hits = t
            .search(SearchParams::new("ledger entry").mode(SearchMode::Hybrid))
            .await
            .unwrap();
        assert_eq!(hits.results.len(), 1, "tenant {i} sees exactly its own doc");
        assert!(hits.results[0].content.ends_with(&format!("marker{i}")));
        assert_eq!(t.statistics().await.unwrap().document_count, 1);
    }
    let su = superuser(&pg.main.superuser).await;
    let schemas: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 't\\_%'")
            .fetch_one(&su)
            .await
            .unwrap();
    assert_eq!(schemas, n as i64);
    let shared: i64 = sqlx::query_scalar("SELECT count(*) FROM public.documents")
        .fetch_one(&su)
        .await
        .unwrap();
    assert_eq!(shared, 0, "no schema-mode row is in the shared tables");
    // Each schema is under forced RLS, like the public tables.
    let unforced: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname LIKE 't\\_%' AND c.relkind = 'r' AND c.relname <> '_sqlx_migrations' \
           AND NOT (c.relrowsecurity AND c.relforcerowsecurity)",
    )
    .fetch_one(&su)
    .await
    .unwrap();
    assert_eq!(unforced, 0);
}

#[tokio::test]
async fn moving_a_tenant_through_every_mode_keeps_its_documents_and_results() {
    let b = open_postgres(hash(), PgMode::Shared).await;
    let pg = b.pg.as_ref().unwrap();
    let mover = b.tenant("mover").await;
    let bystander = b.tenant("bystander").await;
    let words = [
        "invoice", "refund", "shipping", "warranty", "ledger", "audit", "payroll", "budget",
    ];
    for i in 0..25 {
        let doc = text_doc(
            &format!("doc-{i}.txt"),
            &format!(
                "{} {} report number {i}. {}",
                words[i % 8],
                words[(i * 3) % 8],
                "Second sentence about operations. ".repeat(i % 4 + 1)
            ),
        )
        .with_origin(Origin::parse(if i % 2 == 0 { "crm" } else { "wiki" }).unwrap())
        .with_metadata(serde_json::json!({"n": i, "team": words[i % 3]}));
        mover.add_document(doc).await.unwrap();
    }
    for i in 0..5 {
        bystander
            .add_document(text_doc(
                &format!("b-{i}"),
                "invoice refund bystander secret",
            ))
            .await
            .unwrap();
    }
    let baseline = export(&mover).await;
    let queries = ["invoice refund", "warranty shipping report", "ledger"];
    let mut results = Vec::new();
    for q in queries {
        for mode in [SearchMode::Vector, SearchMode::Text, SearchMode::Hybrid] {
            results.push(ranked(&mover, q, mode).await);
        }
    }
    let su = superuser(&pg.main.superuser).await;
    let schema = schema_name(&common::tenant("mover"));

    // shared → schema → database → database (another) → shared → schema
    let db1 = pg.tenant_database().await;
    let db2 = pg.tenant_database().await;
    let owner_of = |t: &MoveTarget| match t {
        MoveTarget::Database { owner_url, .. } => Some(owner_url.clone()),
        _ => None,
    };
    let steps = [
        MoveTarget::Schema,
        db1.clone(),
        db2.clone(),
        MoveTarget::Shared,
        MoveTarget::Schema,
    ];
    let mut source_owner: Option<String> = None;
    for (step, target) in steps.into_iter().enumerate() {
        let report = move_tenant(
            &pg.main.owner_url,
            &common::tenant("mover"),
            target.clone(),
            &pg.app_role,
            source_owner.as_deref(),
        )
        .await
        .unwrap_or_else(|e| panic!("step {step}: {e}"));
        assert_eq!(
            report
                .rows
                .iter()
                .find(|(t, _)| *t == "documents")
                .unwrap()
                .1,
            25,
            "step {step}: {report:?}"
        );
        source_owner = owner_of(&target);

        // Same documents, chunks, vectors; same ranked results.
        assert_eq!(export(&mover).await, baseline, "step {step}");
        let mut now = Vec::new();
        for q in queries {
            for mode in [SearchMode::Vector, SearchMode::Text, SearchMode::Hybrid] {
                now.push(ranked(&mover, q, mode).await);
            }
        }
        assert_eq!(now, results, "step {step}: search results changed");
        let listed = mover.list_documents(ListParams::default()).await.unwrap();
        assert_eq!(listed.total, 25);
        // The bystander neither lost anything nor sees the mover.
        let seen = bystander
            .search(SearchParams::new("invoice refund report").mode(SearchMode::Hybrid))
            .await
            .unwrap();
        assert_eq!(seen.results.len(), 5, "step {step}");
        assert!(seen.results.iter().all(|h| h.content.contains("bystander")));

        // The data is where the directory says, and nowhere else.
        let in_public = rows_in(&su, "public", "chunks", "mover").await;
        let in_schema = rows_in(&su, &schema, "chunks", "mover").await;
        let mut in_databases = Vec::new();
        for db in pg.tenant_databases.lock().await.iter() {
            let s = superuser(&db.superuser).await;
            in_databases.push(rows_in(&s, "public", "chunks", "mover").await);
            s.close().await;
        }
        let placed = match step {
            0 | 4 => (0, true, vec![0, 0]),
            1 => (0, false, vec![1, 0]),
            2 => (0, false, vec![0, 1]),
            _ => (1, false, vec![0, 0]),
        };
        assert_eq!(
            (
                (in_public > 0) as i32,
                in_schema > 0,
                in_databases
                    .iter()
                    .map(|n| (*n > 0) as i32)
                    .collect::<Vec<_>>()
            ),
            placed,
            "step {step}: public {in_public}, schema {in_schema}, databases {in_databases:?}"
        );
    }
}

#[tokio::test]
async fn writes_racing_a_move_all_land_in_the_new_place() {
    let b = open_postgres(hash(), PgMode::Shared).await;
    let pg = b.pg.as_ref().unwrap();
    let t = b.tenant("busy").await;
    for i in 0..40 {
        t.add_document(text_doc(&format!("before-{i}"), "steady state"))
            .await
            .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (t, stop) = (t.clone(), stop.clone());
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("during-{i}");
                t.add_document(text_doc(&name, "written while moving"))
                    .await
                    .unwrap();
                acknowledged.push(name);
                i += 1;
            }
            acknowledged
        })
    };
    let reader = {
        let (t, stop) = (t.clone(), stop.clone());
        tokio::spawn(async move {
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                let n = t.statistics().await.unwrap().document_count;
                assert!(n >= 40, "a read during the move saw {n} documents");
                reads += 1;
            }
            reads
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let db = pg.tenant_database().await;
    let owner = match &db {
        MoveTarget::Database { owner_url, .. } => owner_url.clone(),
        _ => unreachable!(),
    };
    // shared → schema → its own database → shared, writes and reads running.
    for (target, source_owner) in [
        (MoveTarget::Schema, None),
        (db, None),
        (MoveTarget::Shared, Some(owner.as_str())),
    ] {
        move_tenant(
            &pg.main.owner_url,
            &common::tenant("busy"),
            target,
            &pg.app_role,
            source_owner,
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let acknowledged = writer.await.unwrap();
    let reads = reader.await.unwrap();
    assert!(!acknowledged.is_empty() && reads > 0);
    let names: std::collections::HashSet<String> =
        export(&t).await.into_iter().map(|d| d.info.name).collect();
    assert_eq!(names.len(), 40 + acknowledged.len());
    for a in &acknowledged {
        assert!(names.contains(a), "acknowledged write {a} was lost");
    }
}

async fn load(b: &Backend, name: &str, docs: Vec<enclave::core::NewDocument>) -> Tenant {
    let t = b.tenant(name).await;
    for d in docs {
        t.add_document(d).await.unwrap();
    }
    t
}

/// `n` documents of `per` chunks with seeded vectors clustered around 24
/// topics, the way sentence embeddings cluster.
fn random_docs(seed: u64, n: usize, per: usize) -> Vec<enclave::core::NewDocument> {
    let mut topics = rand::rngs::StdRng::seed_from_u64(0);
    let centers: Vec<Vec<f32>> = (0..24)
        .map(|_| {
            (0..384)
                .map(|_| topics.random_range(-1.0f32..1.0))
                .collect()
        })
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|d| {
            let chunks = (0..per)
                .map(|c| {
                    let center = &centers[rng.random_range(0..centers.len())];
                    ProvidedChunk {
                        content: format!("chunk {c} of document {d}"),
                        embedding: center
                            .iter()
                            .map(|x| x + rng.random_range(-0.8f32..0.8))
                            .collect(),
                    }
                })
                .collect();
            let mut doc = text_doc(&format!("doc-{d}"), "")
                .with_origin(Origin::parse(if d % 2 == 0 { "even" } else { "odd" }).unwrap());
            doc.body = DocumentBody::Chunks(chunks);
            doc
        })
        .collect()
}

/// Index tenants from 1,000 chunks, drop below 500 (the test's scale).
fn small_policy() -> IndexPolicy {
    IndexPolicy {
        min_chunks: 1000,
        drop_below: 500,
        ..IndexPolicy::default()
    }
}

async fn index_scans(su: &PgPool, index: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT COALESCE(sum(idx_scan), 0)::int8 FROM pg_stat_all_indexes WHERE indexrelname = $1",
    )
    .bind(index)
    .fetch_one(su)
    .await
    .unwrap()
}

#[tokio::test]
async fn large_tenants_search_through_their_own_index_and_small_ones_exactly() {
    let b = open_postgres_with(
        hash(),
        PgMode::Shared,
        PgOptions {
            max_connections: 4,
            exact_scan_max_chunks: 500,
            ..PgOptions::default()
        },
    )
    .await;
    let pg = b.pg.as_ref().unwrap();
    // The exact reference: the embedded store holds the same documents.
    let reference = open(Layout::SharedFile, EmbedderConfig::Hash { dimensions: 384 }).await;
    let big = load(&b, "big", random_docs(1, 60, 50)).await;
    let small = load(&b, "small", random_docs(2, 2, 10)).await;
    let big_ref = load(&reference, "big", random_docs(1, 60, 50)).await;
    let small_ref = load(&reference, "small", random_docs(2, 2, 10)).await;

    let changes = ensure_vector_indexes(&pg.main.owner_url, &small_policy())
        .await
        .unwrap();
    assert_eq!(
        changes,
        vec![IndexChange::Built {
            tenant: "big".into(),
            chunks: 3000
        }],
        "only the large tenant gets an index"
    );
    let su = superuser(&pg.main.superuser).await;
    let index = enclave_postgres::vector_index_name(&common::tenant("big"));
    let predicate: String = sqlx::query_scalar(
        "SELECT pg_get_expr(i.indpred, i.indrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = $1",
    )
    .bind(&index)
    .fetch_one(&su)
    .await
    .unwrap();
    assert!(predicate.contains("tenant_id = 'big'"), "{predicate}");

    let before = index_scans(&su, &index).await;
    let (mut found, mut wanted) = (0usize, 0usize);
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for q in 0..30 {
        let query = format!("chunk {} of document {}", rng.random_range(0..50), q);
        for (filter, label) in [(None, "all"), (Some("even"), "even origin")] {
            let params = |mut p: SearchParams| {
                p.origins = filter.map(|o| vec![o.to_owned()]).unwrap_or_default();
                p
            };
            let got = big
                .search(params(
                    SearchParams::new(&query).mode(SearchMode::Vector).limit(10),
                ))
                .await
                .unwrap();
            let exact = big_ref
                .search(params(
                    SearchParams::new(&query).mode(SearchMode::Vector).limit(10),
                ))
                .await
                .unwrap();
            assert_eq!(got.results.len(), 10, "{label}");
            if let Some(o) = filter {
                assert!(got
                    .results
                    .iter()
                    .all(|h| h.origin.as_ref().map(|x| x.as_str()) == Some(o)));
            }
            let want: std::collections::HashSet<_> =
                exact.results.iter().map(|h| h.content.clone()).collect();
            found += got
                .results
                .iter()
                .filter(|h| want.contains(&h.content))
                .count();
            wanted += want.len();
        }
        // The small tenant is exact: identical to the reference.
        let got = small
            .search(SearchParams::new(&query).mode(SearchMode::Vector).limit(10))
            .await
            .unwrap();
        let exact = small_ref
            .search(SearchParams::new(&query).mode(SearchMode::Vector).limit(10))
            .await
            .unwrap();
        let contents = |r: &enclave::core::SearchResults| {
            r.results
                .iter()
                .map(|h| h.content.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(contents(&got), contents(&exact));
    }
    let recall = found as f64 / wanted as f64;
    assert!(recall >= 0.95, "recall@10 through the index: {recall}");
    // Cumulative statistics reach the view when each pooled backend flushes
    // them (at most once a second, or after it idles), so some of the 60
    // searches' scans may still be pending; most of them must have arrived.
    let mut after = index_scans(&su, &index).await;
    for _ in 0..30 {
        if after >= before + 60 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        after = index_scans(&su, &index).await;
    }
    assert!(
        after >= before + 30,
        "the large tenant's searches used its index ({before} → {after} scans)"
    );

    // Shrinking below the policy drops the index, and search stays correct.
    let ids: Vec<_> = export(&big)
        .await
        .into_iter()
        .take(55)
        .map(|d| d.info.document_id)
        .collect();
    big.delete_documents(&ids).await.unwrap();
    let changes = ensure_vector_indexes(&pg.main.owner_url, &small_policy())
        .await
        .unwrap();
    assert_eq!(
        changes,
        vec![IndexChange::Dropped {
            tenant: "big".into(),
            chunks: 250
        }]
    );
    let got = big
        .search(SearchParams::new("chunk 3 of document 1").mode(SearchMode::Vector))
        .await
        .unwrap();
    assert_eq!(got.results.len(), 10);
}

/// Chunks of `tenant` whose document row is gone, and chunks in total, in
/// `schema` (superuser: no RLS).
async fn orphan_and_total_chunks(su: &PgPool, schema: &str, tenant: &str) -> (i64, i64) {
    sqlx::query_as(&format!(
        "SELECT count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM {schema}.documents d \
                WHERE d.tenant_id = c.tenant_id AND d.document_id = c.document_id)), count(*) \
         FROM {schema}.chunks c WHERE c.tenant_id = $1"
    ))
    .bind(tenant)
    .fetch_one(su)
    .await
    .unwrap()
}

#[tokio::test]
async fn no_chunk_outlives_its_document_even_when_deletes_race_reindexing() {
    for mode in [PgMode::Shared, PgMode::Schema] {
        let b = open_postgres(hash(), mode).await;
        let pg = b.pg.as_ref().unwrap();
        let su = superuser(&pg.main.superuser).await;
        let schema = match mode {
            PgMode::Schema => schema_name(&common::tenant("churn")),
            _ => "public".to_string(),
        };
        let t = b.tenant("churn").await;
        let neighbour = b.tenant("neighbour").await;
        neighbour
            .add_document(text_doc("keep.txt", "the neighbour's chunk stays"))
            .await
            .unwrap();
        let paragraph = |i: usize, v: usize| {
            (0..3 + v % 4)
                .map(|p| format!("Document {i} version {v} paragraph {p} about ledgers."))
                .collect::<Vec<_>>()
                .join("\n\n")
        };
        let mut ids = Vec::new();
        for i in 0..30 {
            ids.push(
                t.add_document(text_doc(&format!("doc-{i}.txt"), &paragraph(i, 0)))
                    .await
                    .unwrap()
                    .document_id,
            );
        }
        // One by one, as a batch, and re-indexing in place.
        t.delete_document(&ids[0]).await.unwrap();
        assert_eq!(t.delete_documents(&ids[1..5]).await.unwrap(), 4);
        for i in 5..10 {
            t.add_document(text_doc(&format!("doc-{i}.txt"), &paragraph(i, 1)))
                .await
                .unwrap();
        }
        // Deletes racing re-indexing of the same documents, many rounds.
        for round in 0..10 {
            let (reindex, delete) = (t.clone(), t.clone());
            let targets: Vec<usize> = (10 + round * 2..12 + round * 2).collect();
            let doomed: Vec<_> = targets.iter().map(|&i| ids[i]).collect();
            let writer = tokio::spawn(async move {
                for &i in &targets {
                    reindex
                        .add_document(text_doc(&format!("doc-{i}.txt"), &paragraph(i, 2 + round)))
                        .await
                        .unwrap();
                }
            });
            let deleter = tokio::spawn(async move { delete.delete_documents(&doomed).await });
            writer.await.unwrap();
            deleter.await.unwrap().unwrap();
        }
        let (orphans, total) = orphan_and_total_chunks(&su, &schema, "churn").await;
        assert_eq!(orphans, 0, "{mode:?}: chunks left without their document");
        let stats = t.statistics().await.unwrap();
        assert_eq!(
            total as u64,
            stats.chunk_count
                + sqlx::query_scalar::<_, i64>(&format!(
                    "SELECT count(*) FROM {schema}.chunks WHERE tenant_id = 'churn' AND kind = 1"
                ))
                .fetch_one(&su)
                .await
                .unwrap() as u64,
            "{mode:?}: the chunk rows are exactly the documents' chunks"
        );
        // The neighbour's rows were never touched.
        let neighbour_schema = match mode {
            PgMode::Schema => schema_name(&common::tenant("neighbour")),
            _ => "public".to_string(),
        };
        assert_eq!(
            orphan_and_total_chunks(&su, &neighbour_schema, "neighbour").await,
            (0, 1)
        );
        // Deleting everything leaves nothing.
        let all: Vec<_> = t
            .list_documents(ListParams {
                limit: Some(100),
                ..ListParams::default()
            })
            .await
            .unwrap()
            .documents
            .into_iter()
            .map(|d| d.document_id)
            .collect();
        t.delete_documents(&all).await.unwrap();
        assert_eq!(orphan_and_total_chunks(&su, &schema, "churn").await, (0, 0));
    }
}
