//! Shared helpers for the library's integration tests: every behaviour test
//! runs against each backend returned by [`backends`].
#![allow(dead_code)]

use std::path::PathBuf;

use enclave::core::{DocumentType, NewDocument, TenantId};
use enclave::{EmbedderConfig, Layout, Memory, MemoryConfig, StoreConfig};

/// A backend under test: its name, the opened library, and what keeps its
/// data alive.
pub struct Backend {
    pub name: &'static str,
    pub memory: Memory,
    pub _dir: Option<tempfile::TempDir>,
}

pub async fn open(layout: Layout, embedder: EmbedderConfig) -> Backend {
    let dir = tempfile::tempdir().expect("tempdir");
    let memory = Memory::open(MemoryConfig::new(
        StoreConfig::embedded(dir.path(), layout),
        embedder,
    ))
    .await
    .expect("open memory");
    Backend {
        name: match layout {
            Layout::SharedFile => "embedded-shared-file",
            Layout::FilePerTenant => "embedded-file-per-tenant",
        },
        memory,
        _dir: Some(dir),
    }
}

/// PostgreSQL, shared mode: a scratch database migrated by its owner, the
/// library connected as the app role (bound by row-level security).
pub async fn open_postgres(embedder: std::sync::Arc<dyn enclave::embed::Embedder>) -> Backend {
    let admin_url = std::env::var("ENCLAVE_TEST_DATABASE_URL")
        .expect("ENCLAVE_TEST_DATABASE_URL is not set: run the tests through scripts/test, which starts PostgreSQL");
    let (scratch, app) = enclave_postgres::scratch::ScratchDatabase::migrated(&admin_url)
        .await
        .expect("scratch database");
    let url = scratch.url_as(&app);
    let store = enclave_postgres::PgStore::connect(&url, embedder.dimensions(), 4)
        .await
        .expect("connect as app role");
    Backend {
        name: "postgres-shared",
        memory: Memory::from_parts(
            std::sync::Arc::new(store),
            embedder,
            Default::default(),
            1024,
        ),
        _dir: None,
    }
}

/// Every backend, with the fast deterministic embedder.
pub async fn backends() -> Vec<Backend> {
    let mut out = Vec::new();
    for layout in [Layout::SharedFile, Layout::FilePerTenant] {
        out.push(open(layout, EmbedderConfig::Hash { dimensions: 384 }).await);
    }
    out.push(open_postgres(std::sync::Arc::new(enclave::embed::HashEmbedder::new(384))).await);
    out
}

pub fn tenant(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

pub fn text_doc(name: &str, content: &str) -> NewDocument {
    NewDocument::text(name, DocumentType::Text, content)
}

/// The real model's directory, fetched by the setup step.
pub fn model_dir() -> PathBuf {
    let dir = std::env::var_os("ENCLAVE_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/model"));
    assert!(
        dir.join("model.safetensors").exists(),
        "the embedding model is missing from {}; run scripts/setup (the README's test command does)",
        dir.display()
    );
    dir
}
