//! A deterministic embedder for tests: feature hashing of words and word
//! bigrams into a fixed number of dimensions, L2-normalised. Texts sharing
//! words get similar vectors; nothing here is semantic.

use std::sync::Arc;

use enclave_core::chunk::WordCounter;
use enclave_core::query::words;
use enclave_core::TokenCounter;

use crate::{l2_normalize, EmbedError, Embedder};

#[derive(Debug, Clone)]
pub struct HashEmbedder {
    dims: usize,
    model_id: String,
}

impl HashEmbedder {
    pub fn new(dims: usize) -> Self {
        Self {
            dims,
            model_id: format!("hash-{dims}"),
        }
    }

    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0f32; self.dims];
        let ws = words(text);
        let mut add = |feature: &str, weight: f32| {
            let h = fnv1a(feature.as_bytes());
            let idx = (h % self.dims as u64) as usize;
            let sign = if (h >> 63) == 0 { 1.0 } else { -1.0 };
            v[idx] += sign * weight;
        };
        for w in &ws {
            add(w, 1.0);
        }
        for pair in ws.windows(2) {
            add(&format!("{} {}", pair[0], pair[1]), 0.5);
        }
        if ws.is_empty() {
            add("\u{0}empty", 1.0);
        }
        l2_normalize(&mut v);
        v
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

#[async_trait::async_trait]
impl Embedder for HashEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }
    fn dimensions(&self) -> usize {
        self.dims
    }
    fn max_input_tokens(&self) -> u32 {
        2048
    }
    fn token_counter(&self) -> Arc<dyn TokenCounter> {
        Arc::new(WordCounter)
    }
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts.iter().map(|t| self.embed_one(t)).collect())
    }
    fn embed_blocking(&self, texts: &[&str]) -> Option<Result<Vec<Vec<f32>>, EmbedError>> {
        Some(Ok(texts.iter().map(|t| self.embed_one(t)).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_deterministic_normalised_and_word_sensitive() {
        let e = HashEmbedder::new(384);
        let a = e.embed_one("quarterly revenue report");
        assert_eq!(a, e.embed_one("Quarterly revenue, report!"));
        assert!((a.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5);
        let b = e.embed_one("quarterly revenue forecast");
        let c = e.embed_one("holiday schedule");
        let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(a, b)| a * b).sum::<f32>();
        assert!(dot(&a, &b) > dot(&a, &c));
    }
}
