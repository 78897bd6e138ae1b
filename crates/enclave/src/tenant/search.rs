//! Vector, full-text and hybrid (RRF) search over the tenant's chunks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use enclave_core::fusion::{convex, rrf};
use enclave_core::search::DEFAULT_CONVEX_ALPHA;
use enclave_core::{Fusion, Search, SearchHit, SearchMode, SearchParams, SearchResults};

use crate::{Error, Result};

use super::Tenant;

impl Tenant {
    /// Vector, full-text or hybrid (RRF) search over this tenant's chunks.
    pub async fn search(&self, params: SearchParams) -> Result<SearchResults> {
        let started = Instant::now();
        let search = Search::parse(&params)?;
        let depth = (search.limit as usize * 4).clamp(40, 400);
        // Both candidate queries run at once when the tenant's slots allow
        // two; they are taken together (two searches never each hold one
        // and wait for the other's).
        let both = search.mode.uses_vectors() && search.mode.uses_text();
        let held = self.slotted.hold(if both { 2 } else { 1 }).await?;
        let store = held.store();
        let vector_fut = async {
            if !search.mode.uses_vectors() {
                return Ok::<_, Error>(Vec::new());
            }
            let q = self.query_vector(&search.query).await?;
            Ok(store.vector_candidates(&q, &search.filter, depth).await?)
        };
        let text_fut = async {
            if !search.mode.uses_text() {
                return Ok::<_, Error>(Vec::new());
            }
            Ok(store
                .text_candidates(&search.text, &search.filter, depth)
                .await?)
        };
        let (vector, text) = if held.count() >= 2 || !both {
            futures::try_join!(vector_fut, text_fut)?
        } else {
            (vector_fut.await?, text_fut.await?)
        };
        drop(held);
        let vscore: HashMap<i64, f64> = vector.iter().map(|c| (c.key, c.score)).collect();
        let tscore: HashMap<i64, f64> = text.iter().map(|c| (c.key, c.score)).collect();
        let ranked: Vec<(i64, f64)> = match search.mode {
            SearchMode::Vector => vector.iter().map(|c| (c.key, c.score)).collect(),
            SearchMode::Text => text.iter().map(|c| (c.key, c.score)).collect(),
            _ => match search.fusion.unwrap_or_default() {
                Fusion::Rrf => {
                    let vk: Vec<i64> = vector.iter().map(|c| c.key).collect();
                    let tk: Vec<i64> = text.iter().map(|c| c.key).collect();
                    rrf(&vk, &tk, search.alpha)
                        .into_iter()
                        .map(|f| (f.item, f.score))
                        .collect()
                }
                _ => {
                    let vs: Vec<(i64, f64)> = vector.iter().map(|c| (c.key, c.score)).collect();
                    let ts: Vec<(i64, f64)> = text.iter().map(|c| (c.key, c.score)).collect();
                    convex(&vs, &ts, search.alpha.unwrap_or(DEFAULT_CONVEX_ALPHA))
                        .into_iter()
                        .map(|f| (f.item, f.score))
                        .collect()
                }
            },
        };
        let ranked: Vec<(i64, f64)> = ranked
            .into_iter()
            .filter(|(_, s)| search.min_score.is_none_or(|m| *s >= m))
            .take(search.limit as usize)
            .collect();
        let keys: Vec<i64> = ranked.iter().map(|(k, _)| *k).collect();
        let mut rows: HashMap<i64, _> = self
            .store
            .hydrate(&keys)
            .await?
            .into_iter()
            .map(|r| (r.key, r))
            .collect();
        let mut results = Vec::with_capacity(ranked.len());
        for (key, score) in ranked {
            let Some(row) = rows.remove(&key) else {
                continue;
            };
            let doc = row.document;
            results.push(SearchHit {
                chunk_id: row.chunk_id,
                document_id: doc.document_id,
                document_name: doc.name.clone(),
                doc_type: doc.doc_type,
                origin: doc.origin.clone(),
                content: row.content,
                score,
                vector_score: vscore.get(&key).copied(),
                text_score: tscore.get(&key).copied(),
                rank: results.len() as u32 + 1,
                metadata: doc.metadata.clone(),
                chunk_index: row.index,
                parent_content: row.parent_content,
                document: search.include_documents.then_some(doc),
            });
        }
        Ok(SearchResults {
            results,
            mode: search.mode,
            took_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    /// `search` with each hit's document attached.
    pub async fn search_with_documents(&self, mut params: SearchParams) -> Result<SearchResults> {
        params.include_documents = true;
        self.search(params).await
    }

    async fn query_vector(&self, query: &str) -> Result<Arc<Vec<f32>>> {
        let key = (self.id.clone(), query.to_owned());
        if let Some(cache) = &self.shared.query_cache {
            if let Some(v) = cache.lock().get(&key) {
                return Ok(v.clone());
            }
        }
        let v = Arc::new(
            self.shared
                .scheduler
                .embed_query(query.to_owned())
                .await?
                .pop()
                .ok_or_else(|| Error::Internal("embedder returned nothing".into()))?,
        );
        if let Some(cache) = &self.shared.query_cache {
            cache.lock().put(key, v.clone());
        }
        Ok(v)
    }
}
