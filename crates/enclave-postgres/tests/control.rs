//! The control seam's conformance suite on PostgreSQL, as the app role
//! (bound by row-level security) on a fresh migrated database.

use std::sync::Arc;

use enclave_postgres::scratch::ScratchDatabase;
use enclave_postgres::PgControl;
use enclave_store::control::ControlStore;

async fn open() -> Arc<dyn ControlStore> {
    let admin_url = std::env::var("ENCLAVE_TEST_DATABASE_URL").expect(
        "ENCLAVE_TEST_DATABASE_URL is not set: run the tests through scripts/test, which starts PostgreSQL",
    );
    let (scratch, app) = ScratchDatabase::migrated(&admin_url)
        .await
        .expect("a migrated scratch database");
    let control = PgControl::connect(&scratch.url_as(&app), 4)
        .await
        .expect("connect as the app role");
    Arc::new(control)
}

enclave_store::control_conformance!(open());
