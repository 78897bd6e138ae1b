//! The admin plane's `isolation` at tenant creation, against the server in-process:
//! on PostgreSQL with a placement credential a tenant created with
//! `isolation: "schema"` or `"database"` has its data in its own schema or
//! database from its first write (checked in the catalog, as a superuser),
//! is served and purged like any other, and never sees a neighbour; a server
//! that cannot place tenants refuses the request with 400 and creates
//! nothing.

use crate::support::{spawn_app, spawn_app_with, App, Backend, ADMIN, OWNER_URL, SUPERUSER_URL};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

/// A tenant id unique to this run (tenant databases are server-wide).
fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

async fn create(app: &App, id: &str, isolation: Option<&str>) -> crate::support::Resp {
    let mut body = json!({"id": id, "slug": id.to_ascii_lowercase(), "name": id});
    if let Some(i) = isolation {
        body["isolation"] = json!(i);
    }
    app.post("/admin/v1/tenants", ADMIN, body).await
}

async fn documents_in(su: &PgPool, table: &str, tenant: &str) -> i64 {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(table)
        .fetch_one(su)
        .await
        .unwrap();
    if !exists {
        return 0;
    }
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {table} WHERE tenant_id = $1"
    ))
    .bind(tenant)
    .fetch_one(su)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_created_with_schema_or_database_isolation_live_there_from_their_first_write() {
    let app = spawn_app_with(
        Backend::Postgres,
        &[
            ("ENCLAVE_PLACEMENT_OWNER_URL", OWNER_URL),
            ("ENCLAVE_TENANT_DATABASE_ADMIN_URL", SUPERUSER_URL),
        ],
    )
    .await;
    let su_opts = app.main_superuser.clone().unwrap();
    let su = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(su_opts.clone())
        .await
        .unwrap();
    let (shared, schema, database) = (unique("plain"), unique("own-schema"), unique("own-db"));
    for (id, isolation) in [
        (&shared, None),
        (&schema, Some("schema")),
        (&database, Some("database")),
    ] {
        let r = create(&app, id, isolation).await;
        let b = r.ok(201);
        assert_eq!(b["isolation"], isolation.unwrap_or("shared"), "{b}");
        assert_eq!(
            app.get(&format!("/admin/v1/tenants/{id}"), ADMIN)
                .await
                .ok(200)["isolation"],
            isolation.unwrap_or("shared")
        );
    }
    let mut keys = Vec::new();
    for id in [&shared, &schema, &database] {
        let key = app.owner_key(id).await;
        app.add(
            &key,
            "ledger.txt",
            &format!("ledger entry of {id}"),
            json!({}),
        )
        .await;
        keys.push(key);
    }
    // Each tenant finds its own document and nothing of the others.
    for (key, id) in keys.iter().zip([&shared, &schema, &database]) {
        let b = app
            .post(
                "/v1/search",
                key,
                json!({"query": "ledger entry", "mode": "text"}),
            )
            .await;
        let results = b.ok(200)["results"].as_array().unwrap().clone();
        assert_eq!(results.len(), 1, "{id}: {results:?}");
        assert!(results[0]["content"]
            .as_str()
            .unwrap()
            .contains(id.as_str()));
        assert_eq!(app.get("/v1/stats", key).await.ok(200)["document_count"], 1);
    }
    // Where the rows are, read from the catalog as a superuser.
    let schema_name =
        enclave_postgres::schema_name(&enclave::core::TenantId::parse(&schema).unwrap());
    assert_eq!(documents_in(&su, "public.documents", &shared).await, 1);
    assert_eq!(documents_in(&su, "public.documents", &schema).await, 0);
    assert_eq!(
        documents_in(&su, &format!("{schema_name}.documents"), &schema).await,
        1
    );
    assert_eq!(documents_in(&su, "public.documents", &database).await, 0);
    let db_name =
        enclave_postgres::tenant_database_name(&enclave::core::TenantId::parse(&database).unwrap());
    let tenant_db = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(su_opts.clone().database(&db_name))
        .await
        .unwrap();
    assert_eq!(
        documents_in(&tenant_db, "public.documents", &database).await,
        1
    );
    assert_eq!(
        documents_in(&tenant_db, "public.documents", &shared).await,
        0
    );
    // The app role is still only the app role in the tenant's database.
    let (owner, su_flag): (String, bool) = sqlx::query_as(
        "SELECT pg_get_userbyid(d.datdba)::text, r.rolsuper FROM pg_database d \
         JOIN pg_roles r ON r.oid = d.datdba WHERE d.datname = $1",
    )
    .bind(&db_name)
    .fetch_one(&su)
    .await
    .unwrap();
    assert!(
        !su_flag,
        "the tenant database is owned by {owner}, a superuser"
    );
    // Purged like any tenant: nothing left in its schema or database.
    for id in [&schema, &database] {
        let r = app.delete(&format!("/admin/v1/tenants/{id}"), ADMIN).await;
        assert_eq!(r.ok(200)["verified_empty"], true, "{id}");
    }
    assert_eq!(
        documents_in(&su, &format!("{schema_name}.chunks"), &schema).await,
        0
    );
    assert_eq!(
        documents_in(&tenant_db, "public.chunks", &database).await,
        0
    );
    tenant_db.close().await;
    sqlx::query(&format!("DROP DATABASE {db_name} WITH (FORCE)"))
        .execute(&su)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_cannot_place_tenants_refuses_other_isolation_and_creates_nothing() {
    // The embedded store, and PostgreSQL without a placement credential.
    for backend in [Backend::Embedded, Backend::Postgres] {
        let app = spawn_app(backend).await;
        for isolation in ["schema", "database"] {
            let id = unique(isolation);
            let r = create(&app, &id, Some(isolation)).await;
            r.problem(400, "invalid_request");
            assert!(
                r.body["detail"].as_str().unwrap().contains("isolation"),
                "{backend:?}: {}",
                r.text
            );
            app.get(&format!("/admin/v1/tenants/{id}"), ADMIN)
                .await
                .problem(404, "not_found");
        }
        create(&app, "still-fine", Some("shared")).await.ok(201);
        let r = create(&app, "nonsense", Some("galaxy")).await;
        r.problem(400, "invalid_request");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_isolation_without_a_database_admin_is_refused_and_leaves_no_tenant() {
    let app = spawn_app_with(
        Backend::Postgres,
        &[("ENCLAVE_PLACEMENT_OWNER_URL", OWNER_URL)],
    )
    .await;
    let id = unique("no-admin");
    let r = create(&app, &id, Some("database")).await;
    r.problem(400, "invalid_request");
    assert!(r.text.contains("tenant_database_admin_url"), "{}", r.text);
    app.get(&format!("/admin/v1/tenants/{id}"), ADMIN)
        .await
        .problem(404, "not_found");
    // The id is free again, and schema placement works with the owner alone.
    create(&app, &id, Some("schema")).await.ok(201);
}
