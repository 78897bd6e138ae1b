//! `enclave migrate` applies the schema as the owner and leaves an app role
//! that row-level security binds (API.md §10).

use std::process::Command;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Executor};

#[tokio::test]
async fn migrate_creates_a_safe_app_role_and_is_idempotent() {
    let admin_url = std::env::var("ENCLAVE_TEST_DATABASE_URL")
        .expect("run through scripts/test, which starts PostgreSQL");
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&admin_url)
        .await
        .unwrap();
    let id = uuid::Uuid::now_v7().simple().to_string();
    let (db, owner, app) = (
        format!("enclave_m_{id}"),
        format!("owner_{id}"),
        format!("app_{id}"),
    );
    admin
        .execute(format!("CREATE ROLE {owner} LOGIN CREATEROLE").as_str())
        .await
        .unwrap();
    admin
        .execute(format!("CREATE DATABASE {db} OWNER {owner}").as_str())
        .await
        .unwrap();
    let base: PgConnectOptions = admin_url.parse().unwrap();
    let su = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(base.clone().database(&db))
        .await
        .unwrap();
    su.execute("CREATE EXTENSION vector").await.unwrap();
    let owner_url = base
        .clone()
        .username(&owner)
        .database(&db)
        .to_url_lossy()
        .to_string();
    for _ in 0..2 {
        let out = Command::new(env!("CARGO_BIN_EXE_enclave"))
            .args([
                "migrate",
                "--database-url",
                &owner_url,
                "--app-role",
                &app,
                "--app-password-env",
                "MIGRATE_TEST_PW",
            ])
            .env("MIGRATE_TEST_PW", "s3cret'; DROP ROLE x; --")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let app_pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(base.username(&app).database(&db))
        .await
        .unwrap();
    enclave_postgres::check_app_role(&app_pool)
        .await
        .expect("app role is bound by RLS");
    let (superuser, bypass): (bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1")
            .bind(&app)
            .fetch_one(&su)
            .await
            .unwrap();
    assert!(!superuser && !bypass);
    let has_password: bool =
        sqlx::query_scalar("SELECT rolpassword IS NOT NULL FROM pg_authid WHERE rolname = $1")
            .bind(&app)
            .fetch_one(&su)
            .await
            .unwrap();
    assert!(has_password, "the password from --app-password-env was set");
}
