//! all-MiniLM-L6-v2: WordPiece tokenization, the BERT encoder of [`crate::bert`],
//! mean pooling over real tokens and L2 normalisation, as sentence-transformers
//! does.
//!
//! Inputs are tokenized in parallel, sorted by length and cut into batches of
//! about `max_batch_tokens` real tokens (no padding: the encoder concatenates
//! sequences); the batches run in parallel, one per core.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use enclave_core::TokenCounter;
use rayon::prelude::*;
use tokenizers::{Tokenizer, TruncationParams};

use crate::bert::{Bert, BertConfig};
use crate::{EmbedError, Embedder};

/// How to load and run the local model.
#[derive(Debug, Clone)]
pub struct MiniLmOptions {
    /// Directory holding `config.json`, `tokenizer.json` and `model.safetensors`.
    pub model_dir: PathBuf,
    /// Real tokens per forward pass (a batch holds at least one sequence).
    pub max_batch_tokens: usize,
}

impl MiniLmOptions {
    pub fn new(model_dir: impl Into<PathBuf>) -> Self {
        Self {
            model_dir: model_dir.into(),
            max_batch_tokens: 512,
        }
    }
}

/// The local all-MiniLM-L6-v2 embedder (384 dimensions).
#[derive(Clone)]
pub struct MiniLm {
    inner: Arc<Inner>,
}

struct Inner {
    model: Bert,
    /// Tokenizer truncating to the model's input size.
    tokenizer: Tokenizer,
    /// Same vocabulary, no truncation: for counting tokens of whole documents.
    counter: Arc<MiniLmTokens>,
    opts: MiniLmOptions,
    dims: usize,
    max_sequence: usize,
}

/// Token spans from the model's own WordPiece tokenizer.
pub struct MiniLmTokens {
    tokenizer: Tokenizer,
}

/// Bytes tokenized at once. The tokenizer keeps tens of bytes of alignment
/// and token text per input byte while it works, so a whole 10 MiB document
/// in one call would hold hundreds of MiB; pieces cut after a whitespace
/// character give the same tokens (BERT's pre-tokenizer splits there anyway)
/// with memory bounded by the piece.
const TOKENIZE_PIECE_BYTES: usize = 16 * 1024;

impl TokenCounter for MiniLmTokens {
    fn token_spans(&self, text: &str) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut start = 0;
        while start < text.len() {
            let end = piece_end(text, start, TOKENIZE_PIECE_BYTES);
            if let Ok(enc) = self.tokenizer.encode(&text[start..end], false) {
                out.extend(
                    enc.get_offsets()
                        .iter()
                        .map(|&(s, e)| (s + start, e + start)),
                );
            }
            start = end;
        }
        out
    }
}

/// End of the piece of `text` that starts at `start`: at most `max` bytes,
/// just after its last whitespace character when it has one, always on a
/// character boundary and past `start`.
fn piece_end(text: &str, start: usize, max: usize) -> usize {
    if text.len() - start <= max {
        return text.len();
    }
    let mut end = start + max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    if let Some((i, c)) = text[start..end]
        .char_indices()
        .rev()
        .find(|(_, c)| c.is_whitespace())
    {
        return start + i + c.len_utf8();
    }
    if end == start {
        // One character longer than `max`.
        end = start + text[start..].chars().next().map_or(1, char::len_utf8);
    }
    end
}

fn model_err(path: &Path, e: impl std::fmt::Display) -> EmbedError {
    EmbedError::Model(format!("{}: {e}", path.display()))
}

impl MiniLm {
    /// Loads weights and tokenizer from `opts.model_dir`.
    pub fn load(opts: MiniLmOptions) -> Result<Self, EmbedError> {
        let dir = &opts.model_dir;
        let config_path = dir.join("config.json");
        let config: BertConfig = serde_json::from_str(
            &std::fs::read_to_string(&config_path).map_err(|e| model_err(&config_path, e))?,
        )
        .map_err(|e| model_err(&config_path, e))?;
        let weights = dir.join("model.safetensors");
        if !weights.exists() {
            return Err(model_err(
                &weights,
                "missing (run the setup step to fetch the model)",
            ));
        }
        let model = Bert::load(&weights, config)?;
        let dims = model.hidden_size();
        // The longest sequence the position embeddings allow, with [CLS]/[SEP].
        let max_sequence = model.max_positions();
        let tok_path = dir.join("tokenizer.json");
        let mut base = Tokenizer::from_file(&tok_path).map_err(|e| model_err(&tok_path, e))?;
        base.with_padding(None);
        base.with_truncation(None)
            .map_err(|e| model_err(&tok_path, e))?;
        let counter = Arc::new(MiniLmTokens {
            tokenizer: base.clone(),
        });
        let mut tokenizer = base;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_sequence,
                ..Default::default()
            }))
            .map_err(|e| model_err(&tok_path, e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                model,
                tokenizer,
                counter,
                opts,
                dims,
                max_sequence,
            }),
        })
    }

    /// Embeds on the calling thread (blocking). Order of results follows input.
    pub fn embed_sync(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let inner = &self.inner;
        let encodings = inner
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EmbedError::Input(e.to_string()))?;
        let ids: Vec<&[u32]> = encodings.iter().map(|e| e.get_ids()).collect();
        // Similar lengths together; batches of about max_batch_tokens tokens,
        // and at least one batch per core when there is enough input.
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let total: usize = ids.iter().map(|s| s.len()).sum();
        let workers = rayon::current_num_threads().max(1);
        let budget = inner
            .opts
            .max_batch_tokens
            .min(total.div_ceil(workers))
            .max(1);
        let mut batches: Vec<&[usize]> = Vec::new();
        let mut start = 0;
        while start < order.len() {
            let mut end = start;
            let mut tokens = 0;
            while end < order.len() && (end == start || tokens + ids[order[end]].len() <= budget) {
                tokens += ids[order[end]].len();
                end += 1;
            }
            batches.push(&order[start..end]);
            start = end;
        }
        let results: Vec<Vec<Vec<f32>>> = batches
            .par_iter()
            .map(|batch| {
                let seqs: Vec<&[u32]> = batch.iter().map(|&i| ids[i]).collect();
                inner.model.embed_batch(&seqs)
            })
            .collect();
        let mut out = vec![Vec::new(); ids.len()];
        for (batch, vectors) in batches.iter().zip(results) {
            for (&i, v) in batch.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// The model input for `text`: token ids with `[CLS]`/`[SEP]`, truncated
    /// to the model's input size.
    pub fn input_ids(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        let enc = self
            .inner
            .tokenizer
            .encode(text, true)
            .map_err(|e| EmbedError::Input(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn tokens(&self) -> Arc<MiniLmTokens> {
        self.inner.counter.clone()
    }
}

#[async_trait::async_trait]
impl Embedder for MiniLm {
    fn model_id(&self) -> &str {
        "sentence-transformers/all-MiniLM-L6-v2"
    }
    fn dimensions(&self) -> usize {
        self.inner.dims
    }
    fn max_input_tokens(&self) -> u32 {
        (self.inner.max_sequence - 2) as u32
    }
    fn token_counter(&self) -> Arc<dyn TokenCounter> {
        self.inner.counter.clone()
    }
    /// 0.3, chosen with the fusion weight on the SciFact train split
    /// (docs/QUALITY.md): below it, a chunk's cosine with a claim does not
    /// tell relevant abstracts from others.
    fn similarity_floor(&self) -> f32 {
        0.3
    }
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            this.embed_sync(&refs)
        })
        .await
        .map_err(|e| EmbedError::Compute(e.to_string()))?
    }
    fn embed_blocking(&self, texts: &[&str]) -> Option<Result<Vec<Vec<f32>>, EmbedError>> {
        Some(self.embed_sync(texts))
    }
}

#[cfg(test)]
mod tests {
    use super::piece_end;

    #[test]
    fn pieces_end_after_whitespace_on_char_boundaries() {
        let text = "ab cd éé ff";
        assert_eq!(piece_end(text, 0, 100), text.len());
        // "ab cd " fits in 7 bytes; the cut falls after the space.
        assert_eq!(piece_end(text, 0, 7), 6);
        // No whitespace in reach: a char boundary, never inside "é".
        let solid = "éééé";
        assert_eq!(piece_end(solid, 0, 3), 2);
        assert_eq!(piece_end(solid, 0, 1), 2, "always past start");
        let mut start = 0;
        let mut pieces = Vec::new();
        while start < text.len() {
            let end = piece_end(text, start, 4);
            assert!(end > start);
            pieces.push(&text[start..end]);
            start = end;
        }
        assert_eq!(pieces.concat(), text);
    }
}
