//! Export: every document with its chunks and vectors, streamed a page at
//! a time.

use enclave_core::{DocumentId, DocumentInfo, ExportedDocument};
use futures::Stream;

use crate::{Error, Result};

use futures::{StreamExt, TryStreamExt};

use super::Tenant;

/// One piece of an export ([`Tenant::export_pieces`]).
#[derive(Debug, Clone, PartialEq)]
pub enum ExportPiece {
    /// A document begins (its record, without chunks).
    Document(DocumentInfo),
    /// The next chunks of the current document, in index order.
    Chunks(Vec<enclave_core::ExportedChunk>),
    /// The current document is complete.
    End,
}

impl ExportPiece {
    /// Appends this piece's part of the NDJSON export to `out`: one line per
    /// document, `{…its record…,"chunks":[…]}`, the same line a whole
    /// [`ExportedDocument`] serializes to. `first_chunk` carries, from
    /// piece to piece, whether the current document has had a chunk yet.
    pub fn write_ndjson(&self, first_chunk: &mut bool, out: &mut Vec<u8>) -> Result<()> {
        let json = |e: serde_json::Error| Error::Internal(format!("export: {e}"));
        match self {
            ExportPiece::Document(info) => {
                *first_chunk = true;
                let start = out.len();
                serde_json::to_writer(&mut *out, info).map_err(json)?;
                // `{…}` → `{…,"chunks":[`
                if out.len() > start && out.last() == Some(&b'}') {
                    out.pop();
                }
                out.extend_from_slice(b",\"chunks\":[");
            }
            ExportPiece::Chunks(chunks) => {
                for c in chunks {
                    if !std::mem::take(first_chunk) {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut *out, c).map_err(json)?;
                }
            }
            ExportPiece::End => out.extend_from_slice(b"]}\n"),
        }
        Ok(())
    }
}

/// Chunks read (and held) at once by an export.
pub const EXPORT_CHUNK_PAGE: u32 = 256;

const EXPORT_PAGE: u32 = 64;

impl Tenant {
    /// Every document with its chunks and vectors, in id order, one whole
    /// document at a time (a document's chunks are held together: for
    /// bounded memory whatever the documents, use [`Tenant::export_pieces`]).
    pub fn export(&self) -> impl Stream<Item = Result<ExportedDocument>> + Send + 'static {
        futures::stream::try_unfold(
            (self.export_pieces().boxed(), None::<ExportedDocument>),
            |(mut pieces, mut current)| async move {
                while let Some(piece) = pieces.try_next().await? {
                    match piece {
                        ExportPiece::Document(info) => {
                            current = Some(ExportedDocument {
                                info,
                                chunks: Vec::new(),
                            })
                        }
                        ExportPiece::Chunks(c) => {
                            if let Some(d) = current.as_mut() {
                                d.chunks.extend(c);
                            }
                        }
                        ExportPiece::End => {
                            if let Some(d) = current.take() {
                                return Ok(Some((d, (pieces, None))));
                            }
                        }
                    }
                }
                Ok::<_, Error>(None)
            },
        )
    }

    /// Every document with its chunks and vectors, in id order, as pieces:
    /// a document's record, its chunks a page ([`EXPORT_CHUNK_PAGE`]) at a
    /// time, its end. What is held at once is one page of documents'
    /// records or one page of chunks, however large the documents. Each page
    /// is read in its own snapshot: a document changed while it is exported
    /// may come out as a mix of before and after (export a quiet tenant, or
    /// compare with `/v1/stats`).
    pub fn export_pieces(&self) -> impl Stream<Item = Result<ExportPiece>> + Send + 'static {
        let store = self.store.clone();
        let documents = futures::stream::try_unfold(
            (store.clone(), None::<DocumentId>, false),
            |(store, after, done)| async move {
                if done {
                    return Ok(None);
                }
                let page = store.export_documents(after, EXPORT_PAGE).await?;
                let done = page.len() < EXPORT_PAGE as usize;
                let next = page.last().map(|d| d.document_id);
                Ok::<_, Error>(Some((
                    futures::stream::iter(page.into_iter().map(Ok::<_, Error>)),
                    (store, next, done),
                )))
            },
        )
        .try_flatten();
        documents
            .map_ok(move |info| {
                let store = store.clone();
                let id = info.document_id;
                let chunks = futures::stream::try_unfold(
                    (store, None::<u32>, false),
                    move |(store, after, done)| async move {
                        if done {
                            return Ok(None);
                        }
                        let page = store.export_chunks(id, after, EXPORT_CHUNK_PAGE).await?;
                        let done = page.len() < EXPORT_CHUNK_PAGE as usize;
                        let next = page.last().map(|c| c.chunk.index);
                        if page.is_empty() {
                            return Ok(None);
                        }
                        Ok::<_, Error>(Some((ExportPiece::Chunks(page), (store, next, done))))
                    },
                );
                futures::stream::once(async move { Ok(ExportPiece::Document(info)) })
                    .chain(chunks)
                    .chain(futures::stream::once(async { Ok(ExportPiece::End) }))
            })
            .try_flatten()
    }
}
