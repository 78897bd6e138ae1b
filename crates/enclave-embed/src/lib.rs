//! Embedders turn text into vectors.
//!
//! - [`Embedder`]: the trait the library calls (async, batched);
//! - [`MiniLm`]: all-MiniLM-L6-v2 run locally on candle (mean pooling + L2
//!   normalisation, 384 dimensions), loaded from a model directory;
//! - [`HashEmbedder`]: a deterministic feature-hashing embedder for fast
//!   tests of logic that does not depend on semantic quality.

mod bert;
mod hash;
mod minilm;

use std::sync::Arc;

pub use hash::HashEmbedder;
pub use minilm::{MiniLm, MiniLmOptions};

use enclave_core::TokenCounter;

/// Why embedding failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbedError {
    #[error("model files unavailable: {0}")]
    Model(String),
    #[error("embedding failed: {0}")]
    Compute(String),
    #[error("invalid input: {0}")]
    Input(String),
}

/// Something that embeds text. Implementations batch internally; callers may
/// pass any number of texts.
#[async_trait::async_trait]
pub trait Embedder: Send + Sync + 'static {
    /// Stable identifier of the model (stored with vectors so a model change is
    /// detectable).
    fn model_id(&self) -> &str;
    /// Length of every vector produced.
    fn dimensions(&self) -> usize;
    /// Most content tokens (without special tokens) one input may hold; longer
    /// inputs are truncated, so chunkers keep below this.
    fn max_input_tokens(&self) -> u32;
    /// The tokenizer whose tokens `max_input_tokens` counts.
    fn token_counter(&self) -> Arc<dyn TokenCounter>;
    /// The cosine similarity at or below which this model's vectors say
    /// nothing about relevance: sentence models put unrelated text well
    /// above 0 (all-MiniLM-L6-v2 scores most unrelated pairs 0.1–0.3).
    /// Hybrid search's convex fusion counts `(cos − floor) / (1 − floor)`,
    /// so the vector half of a score starts where the model's evidence
    /// does. 0 (the cosine as it is) unless the model says otherwise.
    fn similarity_floor(&self) -> f32 {
        0.0
    }
    /// Embeds `texts`, returning one unit-length vector per text, in order.
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError>;
    /// For embedders that compute on the CPU: embeds on the calling thread
    /// (any parallelism uses the caller's rayon pool), so a scheduler can
    /// choose the threads, and their priority, that the work runs on.
    /// `None` for embedders that only wait (HTTP providers): the scheduler
    /// then calls [`Embedder::embed`].
    fn embed_blocking(&self, texts: &[&str]) -> Option<Result<Vec<Vec<f32>>, EmbedError>> {
        let _ = texts;
        None
    }
}

/// Scales `v` to unit length (leaves a zero vector alone).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}
