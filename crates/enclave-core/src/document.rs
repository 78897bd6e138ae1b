//! Documents as the library sees them: what a caller submits, what is stored,
//! and the pieces (chunks) that search returns.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::chunk::ChunkingOptions;
pub use crate::doc_type::DocumentType;
use crate::id::{ChunkId, DocumentId, Origin};

/// A chunk given by the caller together with its precomputed vector
/// (API.md §4 `chunks` + `embeddings`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProvidedChunk {
    pub content: String,
    pub embedding: Vec<f32>,
}

/// The body of a document: either text the library chunks and embeds, or
/// chunks with their vectors already computed.
#[derive(Debug, Clone, PartialEq)]
pub enum DocumentBody {
    Text(String),
    Chunks(Vec<ProvidedChunk>),
}

/// What a caller submits to `Tenant::add_document`.
#[derive(Debug, Clone)]
pub struct NewDocument {
    pub name: String,
    pub doc_type: DocumentType,
    pub body: DocumentBody,
    pub origin: Option<Origin>,
    /// Caller's stable id for the document; re-adding the same one re-indexes
    /// it in place. Without it, `(origin, name)` is the identity.
    pub external_id: Option<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// The date the document is about (a report's date, an email's date).
    pub document_date: Option<DateTime<Utc>>,
    pub chunking: ChunkingOptions,
}

impl NewDocument {
    /// A text document with default chunking and no metadata.
    pub fn text(
        name: impl Into<String>,
        doc_type: DocumentType,
        content: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            doc_type,
            body: DocumentBody::Text(content.into()),
            origin: None,
            external_id: None,
            metadata: Default::default(),
            document_date: None,
            chunking: ChunkingOptions::default(),
        }
    }

    pub fn with_origin(mut self, origin: Origin) -> Self {
        self.origin = Some(origin);
        self
    }

    pub fn with_metadata(mut self, metadata: serde_json::Value) -> Self {
        if let serde_json::Value::Object(m) = metadata {
            self.metadata = m;
        }
        self
    }

    pub fn with_external_id(mut self, id: impl Into<String>) -> Self {
        self.external_id = Some(id.into());
        self
    }

    /// Size of the submitted content in bytes (text or the sum of chunk texts).
    pub fn content_bytes(&self) -> usize {
        match &self.body {
            DocumentBody::Text(t) => t.len(),
            DocumentBody::Chunks(c) => c.iter().map(|c| c.content.len()).sum(),
        }
    }
}

/// A stored document's descriptive fields (API.md §4 list shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentInfo {
    pub document_id: DocumentId,
    pub name: String,
    #[serde(rename = "type")]
    pub doc_type: DocumentType,
    pub origin: Option<Origin>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub size_bytes: u64,
    pub chunk_count: u64,
    pub token_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document_date: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A stored chunk (API.md §4 `include_chunks` shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkInfo {
    pub chunk_id: ChunkId,
    pub index: u32,
    pub content: String,
    pub token_count: u32,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// For hierarchical chunking: the index of the section chunk this chunk
    /// belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_index: Option<u32>,
}

/// A document with, optionally, its chunks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    #[serde(flatten)]
    pub info: DocumentInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunks: Option<Vec<ChunkInfo>>,
}

/// Changes to a document's descriptive fields (API.md §4 PATCH).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DocumentPatch {
    pub name: Option<String>,
    /// Replaces the whole metadata object.
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A document in an export: the document, its chunks and their vectors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedDocument {
    #[serde(flatten)]
    pub info: DocumentInfo,
    pub chunks: Vec<ExportedChunk>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedChunk {
    #[serde(flatten)]
    pub chunk: ChunkInfo,
    pub embedding: Vec<f32>,
}

/// Counts a tenant holds (API.md §7 stats).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Statistics {
    pub document_count: u64,
    pub chunk_count: u64,
    pub total_size_bytes: u64,
    pub total_tokens: u64,
    pub by_type: std::collections::BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_api_type_parses_and_unknown_types_are_named() {
        for t in DocumentType::ALL {
            assert_eq!(t.as_str().parse::<DocumentType>().unwrap(), t);
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
        }
        let err = "spreadsheet".parse::<DocumentType>().unwrap_err();
        assert_eq!(err.field, "type");
        assert!(err.message.contains("spreadsheet"));
    }
}
