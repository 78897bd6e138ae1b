//! The checks of a document that need no store and no model pass.

use enclave_core::{DocumentBody, NewDocument};
use serde_json::{Map, Value};

use crate::{Error, Result};

use super::Tenant;

pub(super) fn validate_name(name: &str, max: usize) -> Result<()> {
    Ok(enclave_core::check::name("name", name, max)?)
}

pub(super) fn validate_metadata(m: &Map<String, Value>, limits: &crate::Limits) -> Result<()> {
    fn depth(v: &Value) -> usize {
        match v {
            Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
            Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    let d = m.values().map(depth).max().unwrap_or(0) + 1;
    if d > limits.max_metadata_depth {
        return Err(Error::invalid(
            "metadata",
            format!(
                "nests {d} levels; the limit is {}",
                limits.max_metadata_depth
            ),
        ));
    }
    for (k, v) in m {
        enclave_core::check::text("metadata", k)?;
        enclave_core::check::json("metadata", v)?;
    }
    let size = Value::Object(m.clone()).to_string().len();
    if size > limits.max_metadata_bytes {
        return Err(Error::TooLarge {
            what: "metadata",
            actual: size,
            limit: limits.max_metadata_bytes,
        });
    }
    Ok(())
}

impl Tenant {
    /// Every check of a document that needs no store and no model pass
    /// (names, ids, metadata, dates, sizes, chunking options, the text or
    /// the given chunks and their vectors); returns it as it will be added
    /// (dates kept to the stores' years, overlap capped at half a chunk).
    /// An ingestion job runs it on each document when it is submitted.
    pub fn check_document(&self, mut doc: NewDocument) -> Result<NewDocument> {
        let limits = self.shared.limits;
        validate_name(&doc.name, limits.max_name_chars)?;
        if let Some(x) = &doc.external_id {
            if x.is_empty() || x.len() > 255 || x.chars().any(char::is_control) {
                return Err(Error::invalid(
                    "external_id",
                    "must be 1-255 characters without control characters",
                ));
            }
        }
        validate_metadata(&doc.metadata, &limits)?;
        doc.document_date =
            enclave_core::check::maybe_timestamp("document_date", doc.document_date)?;
        let bytes = doc.content_bytes();
        if bytes > limits.max_document_bytes {
            return Err(Error::TooLarge {
                what: "content",
                actual: bytes,
                limit: limits.max_document_bytes,
            });
        }
        let embedder = &self.shared.embedder;
        let dims = embedder.dimensions();
        doc.chunking = doc.chunking.validated(embedder.max_input_tokens())?;
        match &doc.body {
            DocumentBody::Text(text) => {
                if text.trim().is_empty() {
                    return Err(Error::invalid("content", "must not be empty"));
                }
                enclave_core::check::text("content", text)?;
            }
            DocumentBody::Chunks(provided) => {
                if provided.is_empty() {
                    return Err(Error::invalid("chunks", "must hold at least one chunk"));
                }
                if provided.len() > limits.max_chunks_per_document {
                    return Err(Error::invalid(
                        "chunks",
                        format!("at most {} chunks", limits.max_chunks_per_document),
                    ));
                }
                for (i, p) in provided.iter().enumerate() {
                    if p.content.trim().is_empty() {
                        return Err(Error::invalid(
                            &format!("chunks[{i}].content"),
                            "must not be empty",
                        ));
                    }
                    enclave_core::check::text(&format!("chunks[{i}].content"), &p.content)?;
                    if p.embedding.len() != dims {
                        return Err(Error::invalid(
                            &format!("chunks[{i}].embedding"),
                            format!("has {} dimensions; expected {dims}", p.embedding.len()),
                        ));
                    }
                    if p.embedding.iter().any(|x| !x.is_finite())
                        || p.embedding.iter().all(|x| *x == 0.0)
                    {
                        return Err(Error::invalid(
                            &format!("chunks[{i}].embedding"),
                            "must be finite and non-zero",
                        ));
                    }
                }
            }
        }
        Ok(doc)
    }
}
