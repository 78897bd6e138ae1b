//! Typed options for opening a [`crate::Memory`]. Library code never reads the
//! environment; binaries build these from their settings.

use std::path::PathBuf;
use std::sync::Arc;

use enclave_embed::Embedder;
use enclave_store::sqlite::{Durability, Layout};

/// Where data lives.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum StoreConfig {
    /// The embedded SQLite store in `dir`.
    Embedded {
        dir: PathBuf,
        layout: Layout,
        durability: Durability,
        /// Memory for in-memory vector matrices (least recently searched
        /// tenants are unloaded beyond it).
        vector_cache_bytes: usize,
        /// Language of full-text analysis (`core::analyze::LANGUAGES`).
        text_language: String,
    },
}

impl StoreConfig {
    pub fn embedded(dir: impl Into<PathBuf>, layout: Layout) -> Self {
        StoreConfig::Embedded {
            dir: dir.into(),
            layout,
            durability: Durability::default(),
            vector_cache_bytes: 1 << 30,
            text_language: "english".to_owned(),
        }
    }

    /// The same store, analyzing text in `language`.
    pub fn with_text_language(self, language: impl Into<String>) -> Self {
        match self {
            StoreConfig::Embedded {
                dir,
                layout,
                durability,
                vector_cache_bytes,
                ..
            } => StoreConfig::Embedded {
                dir,
                layout,
                durability,
                vector_cache_bytes,
                text_language: language.into(),
            },
        }
    }
}

/// Which embedder to use.
#[derive(Clone)]
#[non_exhaustive]
pub enum EmbedderConfig {
    /// all-MiniLM-L6-v2 from a model directory.
    Local { model_dir: PathBuf },
    /// The deterministic feature-hashing embedder (tests, demos without a model).
    Hash { dimensions: usize },
    /// Any embedder the caller built.
    Custom(Arc<dyn Embedder>),
}

impl std::fmt::Debug for EmbedderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local { model_dir } => write!(f, "Local({})", model_dir.display()),
            Self::Hash { dimensions } => write!(f, "Hash({dimensions})"),
            Self::Custom(e) => write!(f, "Custom({})", e.model_id()),
        }
    }
}

/// Size limits applied before any work is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest document content, in bytes.
    pub max_document_bytes: usize,
    /// Largest metadata object, serialized, in bytes.
    pub max_metadata_bytes: usize,
    /// Deepest nesting of metadata objects and arrays.
    pub max_metadata_depth: usize,
    /// Most chunks one document may produce.
    pub max_chunks_per_document: usize,
    /// Longest document name, in characters.
    pub max_name_chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_document_bytes: 10 * 1024 * 1024,
            max_metadata_bytes: 64 * 1024,
            max_metadata_depth: 8,
            max_chunks_per_document: 20_000,
            max_name_chars: 1024,
        }
    }
}

#[derive(Debug, Clone)]
pub struct MemoryConfig {
    pub store: StoreConfig,
    pub embedder: EmbedderConfig,
    pub limits: Limits,
    /// Query embeddings remembered per process (keyed by tenant and text).
    pub query_cache_entries: usize,
}

impl MemoryConfig {
    pub fn new(store: StoreConfig, embedder: EmbedderConfig) -> Self {
        Self {
            store,
            embedder,
            limits: Limits::default(),
            query_cache_entries: 4096,
        }
    }
}
