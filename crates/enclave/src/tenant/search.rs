//! Vector, full-text and hybrid search over the tenant's chunks: the
//! backends return candidates (and, for convex fusion, each candidate's
//! exact score in the other list), the library fuses and ranks once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use enclave_core::fusion::{aggregate, convex, rrf, Scales};
use enclave_core::search::DEFAULT_CONVEX_ALPHA;
use enclave_core::{
    Aggregation, Fusion, Search, SearchHit, SearchMode, SearchParams, SearchResults,
};
use enclave_store::{Candidate, ChunkKey, HitRow};

use crate::{Error, Result};

use super::Tenant;

/// What the candidate queries found: the ranked lists and every score
/// known for a chunk.
#[derive(Default)]
struct Found {
    vector: Vec<Candidate>,
    text: Vec<Candidate>,
    cosine: HashMap<ChunkKey, f64>,
    bm25: HashMap<ChunkKey, f64>,
    text_ceiling: f64,
}

impl Tenant {
    /// Vector, full-text or hybrid search over this tenant's chunks.
    pub async fn search(&self, params: SearchParams) -> Result<SearchResults> {
        let started = Instant::now();
        let search = Search::parse(&params)?;
        let depth = (search.limit as usize * 4).clamp(40, 400);
        let fusion = search.fusion.unwrap_or_default();
        let found = self.candidates(&search, fusion, depth).await?;
        let ranked: Vec<(ChunkKey, f64)> = match search.mode {
            SearchMode::Vector => found.vector.iter().map(|c| (c.key, c.score)).collect(),
            SearchMode::Text => found.text.iter().map(|c| (c.key, c.score)).collect(),
            _ => {
                let vk: Vec<ChunkKey> = found.vector.iter().map(|c| c.key).collect();
                let tk: Vec<ChunkKey> = found.text.iter().map(|c| c.key).collect();
                let fused = match fusion {
                    Fusion::Rrf => rrf(&vk, &tk, search.alpha),
                    _ => convex(
                        &vk,
                        &tk,
                        &found.cosine,
                        &found.bm25,
                        Scales {
                            text_ceiling: found.text_ceiling,
                            similarity_floor: self.shared.embedder.similarity_floor() as f64,
                        },
                        search.alpha.unwrap_or(DEFAULT_CONVEX_ALPHA),
                    ),
                };
                fused.into_iter().map(|f| (f.item, f.score)).collect()
            }
        };
        let (ranked, mut rows) = self.rank(&search, ranked).await?;
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
                vector_score: found.cosine.get(&key).copied(),
                text_score: found.bm25.get(&key).copied(),
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

    /// The candidate lists of the search's mode, `depth` each; for hybrid
    /// search with convex fusion, completed so that every candidate has
    /// both scores.
    async fn candidates(&self, search: &Search, fusion: Fusion, depth: usize) -> Result<Found> {
        // Both candidate queries run at once when the tenant's slots allow
        // two; they are taken together (two searches never each hold one
        // and wait for the other's).
        let both = search.mode.uses_vectors() && search.mode.uses_text();
        let held = self.slotted.hold(if both { 2 } else { 1 }).await?;
        let store = held.store();
        // The query is embedded while the text candidates are found.
        let vector_fut = async {
            if !search.mode.uses_vectors() {
                return Ok::<_, Error>((None, Vec::new()));
            }
            let q = self.query_vector(&search.query).await?;
            let found = store.vector_candidates(&q, &search.filter, depth).await?;
            Ok((Some(q), found))
        };
        let text_fut = async {
            if !search.mode.uses_text() {
                return Ok::<_, Error>((search.text.clone(), Vec::new()));
            }
            let found = store
                .text_candidates(&search.text, &search.filter, depth)
                .await?;
            match &search.prf {
                Some(prf) if !found.is_empty() => {
                    self.feedback(store.as_ref(), search, prf, depth, found)
                        .await
                }
                _ => Ok((search.text.clone(), found)),
            }
        };
        let ((q, vector), (text_query, text)) = if held.count() >= 2 || !both {
            futures::try_join!(vector_fut, text_fut)?
        } else {
            (vector_fut.await?, text_fut.await?)
        };
        let mut found = Found {
            cosine: vector.iter().map(|c| (c.key, c.score)).collect(),
            bm25: text.iter().map(|c| (c.key, c.score)).collect(),
            vector,
            text,
            text_ceiling: 0.0,
        };
        if let (true, Fusion::Convex, Some(q)) = (both, fusion, &q) {
            let vector_keys: Vec<ChunkKey> = found
                .text
                .iter()
                .map(|c| c.key)
                .filter(|k| !found.cosine.contains_key(k))
                .collect();
            let text_keys: Vec<ChunkKey> = found
                .vector
                .iter()
                .map(|c| c.key)
                .filter(|k| !found.bm25.contains_key(k))
                .collect();
            let done = store
                .complete_scores(q, &vector_keys, &text_query, &text_keys)
                .await?;
            found
                .cosine
                .extend(done.vector.iter().map(|c| (c.key, c.score)));
            found
                .bm25
                .extend(done.text.iter().map(|c| (c.key, c.score)));
            found.text_ceiling = done.text_ceiling;
        }
        Ok(found)
    }

    /// Pseudo-relevance feedback: the query with the expansion terms of the
    /// first `prf.chunks` text candidates (`enclave_core::bm25::feedback_terms`,
    /// analyzed as the store indexes), and the text candidates it finds.
    async fn feedback(
        &self,
        store: &dyn enclave_store::TenantStore,
        search: &Search,
        prf: &enclave_core::Prf,
        depth: usize,
        first: Vec<Candidate>,
    ) -> Result<(enclave_core::query::TextQuery, Vec<Candidate>)> {
        let top: Vec<&Candidate> = first.iter().take(prf.chunks as usize).collect();
        let keys: Vec<ChunkKey> = top.iter().map(|c| c.key).collect();
        let rows: HashMap<ChunkKey, HitRow> = store
            .hydrate(&keys)
            .await?
            .into_iter()
            .map(|r| (r.key, r))
            .collect();
        let analyzer = self.shared.store.analyzer();
        let feedback: Vec<(Vec<String>, f64)> = top
            .iter()
            .filter_map(|c| Some((analyzer.terms(&rows.get(&c.key)?.content), c.score)))
            .collect();
        let own = analyzer.query(&search.text);
        let own_terms: Vec<&str> = own.positive_terms().collect();
        let expansion = enclave_core::bm25::feedback_terms(
            &feedback,
            &own_terms,
            prf.terms as usize,
            prf.weight,
        );
        if expansion.is_empty() {
            return Ok((search.text.clone(), first));
        }
        let mut expanded = search.text.clone();
        expanded.expansion = expansion;
        let found = store
            .text_candidates(&expanded, &search.filter, depth)
            .await?;
        Ok((expanded, found))
    }

    /// The first `limit` hits of `ranked` above `min_score` with their
    /// rows: chunks as ranked, or documents (each once) when the search
    /// aggregates — which needs every candidate's document, so all of
    /// them are loaded first.
    async fn rank(
        &self,
        search: &Search,
        ranked: Vec<(ChunkKey, f64)>,
    ) -> Result<(Vec<(ChunkKey, f64)>, HashMap<ChunkKey, HitRow>)> {
        let keep = |list: Vec<(ChunkKey, f64)>| -> Vec<(ChunkKey, f64)> {
            list.into_iter()
                .filter(|(_, s)| search.min_score.is_none_or(|m| *s >= m))
                .take(search.limit as usize)
                .collect()
        };
        let load = |keys: Vec<ChunkKey>| async move {
            Ok::<_, Error>(
                self.store
                    .hydrate(&keys)
                    .await?
                    .into_iter()
                    .map(|r| (r.key, r))
                    .collect::<HashMap<_, _>>(),
            )
        };
        if search.aggregation == Aggregation::Chunk {
            let ranked = keep(ranked);
            let rows = load(ranked.iter().map(|(k, _)| *k).collect()).await?;
            return Ok((ranked, rows));
        }
        let mut rows = load(ranked.iter().map(|(k, _)| *k).collect()).await?;
        let with_docs: Vec<(ChunkKey, enclave_core::DocumentId, f64)> = ranked
            .iter()
            .filter_map(|(k, s)| Some((*k, rows.get(k)?.document.document_id, *s)))
            .collect();
        let ranked = keep(
            aggregate(&with_docs, search.decay)
                .into_iter()
                .map(|(k, _, s)| (k, s))
                .collect(),
        );
        rows.retain(|k, _| ranked.iter().any(|(r, _)| r == k));
        Ok((ranked, rows))
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
