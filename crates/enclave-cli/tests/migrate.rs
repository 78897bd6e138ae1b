//! `enclave migrate` applies the schema as the owner and leaves an app role
//! that row-level security binds (API.md §10).

use std::process::Command;

use sqlx::postgres::PgPoolOptions;

#[tokio::test]
async fn migrate_creates_a_safe_app_role_and_is_idempotent() {
    let admin_url = std::env::var("ENCLAVE_TEST_DATABASE_URL")
        .expect("run through scripts/test, which starts PostgreSQL");
    let scratch = enclave_postgres::scratch::ScratchDatabase::create(&admin_url)
        .await
        .unwrap();
    let (owner_url, app) = (scratch.owner_url.clone(), format!("app_{}", scratch.id));
    let su = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(scratch.superuser.clone())
        .await
        .unwrap();
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
        .connect_with(scratch.as_role(&app))
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
