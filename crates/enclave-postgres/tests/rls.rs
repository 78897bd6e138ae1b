//! The database itself refuses cross-tenant access: SQL-level tests run as
//! the app role against a real PostgreSQL 18 + pgvector (scripts/test starts
//! one; `ENCLAVE_TEST_DATABASE_URL` may name an existing server's superuser).

use sqlx::postgres::PgPoolOptions;
use sqlx::{ConnectOptions, Executor, PgPool, Row};

struct TestDb {
    owner: PgPool,
    app: PgPool,
    app_url: String,
    owner_url: String,
    app_role: String,
}

/// A fresh database with its own owner and app roles, migrated.
async fn fresh_db() -> TestDb {
    let admin_url = std::env::var("ENCLAVE_TEST_DATABASE_URL")
        .expect("ENCLAVE_TEST_DATABASE_URL is not set: run the tests through scripts/test, which starts PostgreSQL");
    let (scratch, app) = enclave_postgres::scratch::ScratchDatabase::migrated(&admin_url)
        .await
        .unwrap();
    let app_opts = scratch.as_role(&app);
    let app_url = app_opts.to_url_lossy().to_string();
    TestDb {
        owner: PgPoolOptions::new()
            .max_connections(2)
            .connect(&scratch.owner_url)
            .await
            .unwrap(),
        app: PgPoolOptions::new()
            .max_connections(1)
            .connect_with(app_opts)
            .await
            .unwrap(),
        app_url,
        owner_url: scratch.owner_url.clone(),
        app_role: app,
    }
}

/// Two tenants with a row in every tenant table, written through RLS itself.
async fn seed(db: &TestDb) {
    for t in ["tenant-a", "tenant-b"] {
        let mut tx = db.app.begin().await.unwrap();
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(t)
            .execute(&mut *tx)
            .await
            .unwrap();
        let doc = uuid::Uuid::now_v7();
        tx.execute(
            sqlx::query("INSERT INTO tenants (tenant_id, slug, name) VALUES ($1, $1, $1)").bind(t),
        )
        .await
        .unwrap();
        tx.execute(
            sqlx::query(
                "INSERT INTO documents (tenant_id, document_id, dedupe_key, name, doc_type, content_hash, size_bytes, chunk_count, token_count, created_at, updated_at) \
                 VALUES ($1, $2, 'k', 'doc', 'text', 'h', 5, 1, 1, now(), now())",
            )
            .bind(t)
            .bind(doc),
        )
        .await
        .unwrap();
        tx.execute(
            sqlx::query("INSERT INTO chunks (tenant_id, chunk_id, document_id, idx, content, token_count) VALUES ($1, $2, $3, 0, $4, 1)")
                .bind(t)
                .bind(uuid::Uuid::now_v7())
                .bind(doc)
                .bind(format!("secret of {t}")),
        )
        .await
        .unwrap();
        tx.execute(
            sqlx::query("INSERT INTO messages (tenant_id, session_id, seq, message_id, role, content) VALUES ($1, 's', 1, $2, 'user', 'hi')")
                .bind(t)
                .bind(uuid::Uuid::now_v7()),
        )
        .await
        .unwrap();
        tx.execute(
            sqlx::query(
                "INSERT INTO usage_daily (tenant_id, day, requests) VALUES ($1, current_date, 1)",
            )
            .bind(t),
        )
        .await
        .unwrap();
        tx.execute(
            sqlx::query("INSERT INTO idempotency_keys (tenant_id, key, request_hash, created_at) VALUES ($1, 'k', '\\x00', now())")
                .bind(t),
        )
        .await
        .unwrap();
        tx.execute(
            sqlx::query("INSERT INTO api_keys (tenant_id, key_id, name, role, salt, secret_hash, created_by, created_at) VALUES ($1, $2, 'k', 'owner', '\\x00', '\\x00', 'test', now())")
                .bind(t)
                .bind(format!("key-of-{t}")),
        )
        .await
        .unwrap();
        for q in [
            "INSERT INTO jobs (tenant_id, job_id, kind, status, payload, total, created_by, created_at) VALUES ($1, 'j', 'documents', 'queued', '[]', 0, 'test', now())",
            "INSERT INTO job_results (tenant_id, job_id, idx, document_id) VALUES ($1, 'j', 0, 'd')",
            "INSERT INTO job_queue (tenant_id, job_id, enqueued_at) VALUES ($1, 'j', now())",
            "INSERT INTO text_stats (tenant_id, lexeme, df, tokens) VALUES ($1, '', 1, 3)",
            "INSERT INTO budget_alerts (tenant_id, month, threshold_percent, budget_usd, spent_usd, created_at, attempts, next_attempt_at) VALUES ($1, '2026-12', 80, 1, 0.8, now(), 1, now())",
        ] {
            tx.execute(sqlx::query(q).bind(t)).await.unwrap();
        }
        tx.execute(
            sqlx::query("INSERT INTO audit_events (tenant_id, seq, event_id, actor, action, hash) VALUES ($1, 1, $2, 'test', 'seed', '\\x00')")
                .bind(t)
                .bind(uuid::Uuid::now_v7()),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
}

async fn count(pool: &PgPool, tenant: Option<&str>, table: &str) -> Vec<String> {
    let mut tx = pool.begin().await.unwrap();
    if let Some(t) = tenant {
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(t)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    let rows = sqlx::query(&format!("SELECT tenant_id FROM {table}"))
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    rows.iter().map(|r| r.get::<String, _>(0)).collect()
}

#[tokio::test]
async fn without_a_tenant_every_tenant_table_is_empty_and_with_one_only_its_rows_show() {
    let db = fresh_db().await;
    seed(&db).await;
    for table in enclave_postgres::TENANT_TABLES {
        assert!(
            count(&db.app, None, table).await.is_empty(),
            "{table} leaks rows with no tenant set"
        );
        let a = count(&db.app, Some("tenant-a"), table).await;
        assert!(
            !a.is_empty() && a.iter().all(|t| t == "tenant-a"),
            "{table}: {a:?}"
        );
        // The owner is bound too (FORCE ROW LEVEL SECURITY).
        assert!(
            count(&db.owner, None, table).await.is_empty(),
            "{table}: the owner bypasses RLS"
        );
    }
}

#[tokio::test]
async fn platform_scope_sees_the_job_queue_but_no_job_payload_or_result() {
    let db = fresh_db().await;
    seed(&db).await;
    let mut tx = db.app.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.scope', 'platform', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    // Replicas claim across tenants: the queue (ids and leases) is visible...
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM job_queue")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(queued, 2);
    // ...the tenants' job payloads and results are not.
    for table in ["jobs", "job_results", "documents", "chunks"] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(n, 0, "{table} is visible in platform scope");
    }
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn writes_for_another_tenant_are_refused() {
    let db = fresh_db().await;
    seed(&db).await;
    let mut tx = db.app.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', 'tenant-a', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = tx
        .execute("INSERT INTO usage_daily (tenant_id, day) VALUES ('tenant-b', current_date - 1)")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
    tx.rollback().await.unwrap();

    let mut tx = db.app.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', 'tenant-a', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = tx
        .execute("UPDATE chunks SET tenant_id = 'tenant-b'")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("row-level security"),
        "moving a row to another tenant: {err}"
    );
    tx.rollback().await.unwrap();

    // B's rows are invisible to A's updates and deletes.
    let mut tx = db.app.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', 'tenant-a', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let updated = tx
        .execute("UPDATE chunks SET content = 'pwned' WHERE tenant_id = 'tenant-b'")
        .await
        .unwrap();
    let deleted = tx
        .execute("DELETE FROM documents WHERE tenant_id = 'tenant-b'")
        .await
        .unwrap();
    assert_eq!((updated.rows_affected(), deleted.rows_affected()), (0, 0));
    tx.commit().await.unwrap();
    let b = {
        let mut tx = db.app.begin().await.unwrap();
        sqlx::query("SELECT set_config('app.tenant_id', 'tenant-b', true)")
            .execute(&mut *tx)
            .await
            .unwrap();
        let c: String = sqlx::query_scalar("SELECT content FROM chunks")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        c
    };
    assert_eq!(b, "secret of tenant-b");
}

#[tokio::test]
async fn the_app_role_cannot_escape_row_level_security() {
    let db = fresh_db().await;
    seed(&db).await;
    enclave_postgres::check_app_role(&db.app)
        .await
        .expect("the app role is safe");
    for stmt in [
        "TRUNCATE chunks",
        "ALTER TABLE chunks DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE chunks NO FORCE ROW LEVEL SECURITY",
        "DROP POLICY tenant_isolation ON chunks",
        "DELETE FROM audit_events",
        "UPDATE audit_events SET action = 'x'",
    ] {
        let err = db.app.execute(stmt).await.unwrap_err();
        assert!(
            err.to_string().contains("permission denied")
                || err.to_string().contains("must be owner"),
            "{stmt}: {err}"
        );
    }
    let owner: String =
        sqlx::query_scalar("SELECT tableowner::text FROM pg_tables WHERE tablename = 'chunks'")
            .fetch_one(&db.app)
            .await
            .unwrap();
    let err = db
        .app
        .execute(format!("SET ROLE {owner}").as_str())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("permission denied"),
        "SET ROLE owner: {err}"
    );
    // Turning row security off does not reveal rows: queries it would affect fail.
    let mut conn = db.app.acquire().await.unwrap();
    conn.execute("SET row_security = off").await.unwrap();
    let err = conn.execute("SELECT * FROM chunks").await.unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
    conn.execute("RESET row_security").await.unwrap();
    // And the server's start-up check refuses the owner.
    let err = enclave_postgres::check_app_role(&db.owner)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("owns"), "{err}");
    assert!(!db.app_url.is_empty());
}

#[tokio::test]
async fn a_pooled_connection_never_carries_a_tenant_into_the_next_transaction() {
    let db = fresh_db().await; // the app pool has exactly one connection
    seed(&db).await;
    assert_eq!(
        count(&db.app, Some("tenant-a"), "documents").await,
        ["tenant-a"]
    );
    assert!(
        count(&db.app, None, "documents").await.is_empty(),
        "tenant-a's setting outlived its transaction"
    );
    let setting: Option<String> =
        sqlx::query_scalar("SELECT current_setting('app.tenant_id', true)")
            .fetch_one(&db.app)
            .await
            .unwrap();
    assert!(setting.unwrap_or_default().is_empty());
    assert_eq!(
        count(&db.app, Some("tenant-b"), "documents").await,
        ["tenant-b"]
    );
}

/// Citus readiness: every primary key, unique constraint, foreign key and
/// index of every tenant table leads with `tenant_id` — in the public tables
/// and in a schema-mode tenant's schema — read from the live catalog (so a
/// later migration cannot quietly break distribution). Per-tenant HNSW
/// indexes cannot lead with a column; they must pin `tenant_id` in their
/// predicate instead.
#[tokio::test]
async fn every_key_and_index_of_every_tenant_table_leads_with_tenant_id() {
    let db = fresh_db().await;
    seed(&db).await;
    let moved = enclave_postgres::move_tenant(
        &db.owner_url,
        &enclave_core::TenantId::parse("tenant-a").unwrap(),
        enclave_postgres::MoveTarget::Schema,
        &db.app_role,
        None,
    )
    .await
    .unwrap();
    assert!(!moved.rows.is_empty());
    let built = enclave_postgres::ensure_vector_indexes(
        &db.owner_url,
        &enclave_postgres::IndexPolicy {
            min_chunks: 1,
            drop_below: 0,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(built.len(), 2, "{built:?}");
    const IN_SCOPE: &str = "(n.nspname = 'public' OR n.nspname LIKE 't\\_%')";

    let constraints: Vec<(String, String, String, String, Option<String>)> = sqlx::query_as(&format!(
        "SELECT n.nspname::text, cl.relname::text, c.conname::text, c.contype::text, \
                (SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.conrelid AND a.attnum = c.conkey[1]) \
         FROM pg_constraint c JOIN pg_class cl ON cl.oid = c.conrelid JOIN pg_namespace n ON n.oid = cl.relnamespace \
         WHERE c.contype IN ('p', 'u', 'f') AND cl.relname = ANY($1) AND {IN_SCOPE}"
    ))
    .bind(enclave_postgres::TENANT_TABLES)
    .fetch_all(&db.owner)
    .await
    .unwrap();
    let schemas: std::collections::HashSet<&str> =
        constraints.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(
        schemas.len(),
        2,
        "public and the tenant's schema: {schemas:?}"
    );
    assert!(constraints.len() >= 24, "{constraints:?}");
    for (schema, table, name, kind, first) in &constraints {
        assert_eq!(
            first.as_deref(),
            Some("tenant_id"),
            "{schema}.{table}.{name} ({kind}) does not lead with tenant_id"
        );
    }
    // Foreign keys also reference a key that leads with tenant_id.
    let fks: Vec<(String, Option<String>)> = sqlx::query_as(&format!(
        "SELECT c.conname::text, (SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.confrelid AND a.attnum = c.confkey[1]) \
         FROM pg_constraint c JOIN pg_class cl ON cl.oid = c.conrelid JOIN pg_namespace n ON n.oid = cl.relnamespace \
         WHERE c.contype = 'f' AND cl.relname = ANY($1) AND {IN_SCOPE}"
    ))
    .bind(enclave_postgres::TENANT_TABLES)
    .fetch_all(&db.owner)
    .await
    .unwrap();
    for (name, first) in fks {
        assert_eq!(
            first.as_deref(),
            Some("tenant_id"),
            "{name} references a key without tenant_id"
        );
    }
    let indexes: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(&format!(
        "SELECT cl.relname::text, ic.relname::text, \
                (SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = i.indrelid AND a.attnum = i.indkey[0]), \
                pg_get_expr(i.indpred, i.indrelid) \
         FROM pg_index i JOIN pg_class cl ON cl.oid = i.indrelid JOIN pg_class ic ON ic.oid = i.indexrelid \
         JOIN pg_namespace n ON n.oid = cl.relnamespace WHERE cl.relname = ANY($1) AND {IN_SCOPE}"
    ))
    .bind(enclave_postgres::TENANT_TABLES)
    .fetch_all(&db.owner)
    .await
    .unwrap();
    let mut pinned = 0;
    for (table, index, first, predicate) in &indexes {
        // The platform-wide slug index lives on the tenant directory, a
        // reference table under Citus.
        // So does the API key lookup by public id (authentication precedes
        // knowing the tenant).
        if index == "tenants_slug" || index == "api_keys_by_key_id" {
            continue;
        }
        if first.as_deref() == Some("tenant_id") {
            continue;
        }
        let pins = predicate
            .as_deref()
            .is_some_and(|p| p.starts_with("((tenant_id = '") || p.starts_with("(tenant_id = '"));
        assert!(
            pins,
            "index {index} on {table} neither leads with tenant_id nor pins it ({predicate:?})"
        );
        pinned += 1;
    }
    assert_eq!(pinned, 2, "the two per-tenant vector indexes were checked");
    // Every tenant table is under forced row-level security with a policy.
    for t in enclave_postgres::TENANT_TABLES {
        let (rls, force, policies): (bool, bool, i64) = sqlx::query_as(
            "SELECT c.relrowsecurity, c.relforcerowsecurity, (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) \
             FROM pg_class c WHERE c.relname = $1",
        )
        .bind(t)
        .fetch_one(&db.owner)
        .await
        .unwrap();
        assert!(
            rls && force && policies >= 1,
            "{t}: rls={rls} force={force} policies={policies}"
        );
    }
}

/// `enclave migrate` run by a superuser also lets full-text search use its
/// GIN index under row-level security (`LEAKPROOF_TEXT_MATCH`); run by the
/// database's owner, who may not, it migrates and leaves that step alone.
#[tokio::test]
async fn migrating_as_a_superuser_lets_text_search_use_its_index_under_rls() {
    let admin_url = std::env::var("ENCLAVE_TEST_DATABASE_URL")
        .expect("ENCLAVE_TEST_DATABASE_URL is not set: run the tests through scripts/test");
    let scratch = enclave_postgres::scratch::ScratchDatabase::create(&admin_url)
        .await
        .unwrap();
    let su = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(scratch.superuser.clone())
        .await
        .unwrap();
    su.execute("ALTER FUNCTION pg_catalog.ts_match_vq(tsvector, tsquery) NOT LEAKPROOF")
        .await
        .unwrap();
    let app = format!("app_{}", scratch.id);
    enclave_postgres::migrate(&scratch.owner_url, &app, None)
        .await
        .unwrap();
    assert!(!enclave_postgres::text_match_is_leakproof(&su)
        .await
        .unwrap());
    let su_url = scratch.superuser.to_url_lossy().to_string();
    enclave_postgres::migrate(&su_url, &app, None)
        .await
        .unwrap();
    assert!(enclave_postgres::text_match_is_leakproof(&su)
        .await
        .unwrap());
    su.close().await;
}
