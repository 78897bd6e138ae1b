//! The control seam's conformance suite on the embedded control plane.

use std::sync::Arc;

use enclave_store::control::ControlStore;
use enclave_store::sqlite::SqliteControl;

async fn open() -> Arc<dyn ControlStore> {
    // Each test's directory lives as long as the process (the store keeps
    // its file open).
    let dir = Box::leak(Box::new(
        tempfile::tempdir().expect("a temporary directory"),
    ));
    Arc::new(SqliteControl::open(dir.path()).expect("open the control plane"))
}

enclave_store::control_conformance!(open());
