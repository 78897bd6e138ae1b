//! all-MiniLM-L6-v2 on candle: BERT forward pass, attention-masked mean
//! pooling and L2 normalisation, as sentence-transformers does.
//!
//! Throughput comes from how work is fed to the model, not from a different
//! model: inputs are tokenized in parallel, sorted by length and cut into
//! batches of similar length (so little compute is spent on padding), and the
//! batches run on a pool of workers sized to the machine's cores.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use enclave_core::TokenCounter;
use tokenizers::{Tokenizer, TruncationParams};

use crate::{l2_normalize, EmbedError, Embedder};

/// The model's position embeddings: the longest sequence it can take,
/// including `[CLS]` and `[SEP]`.
const MAX_SEQUENCE: usize = 512;

/// How to load and run the local model.
#[derive(Debug, Clone)]
pub struct MiniLmOptions {
    /// Directory holding `config.json`, `tokenizer.json` and `model.safetensors`.
    pub model_dir: PathBuf,
    /// Upper bound on `batch_size × sequence_length` per forward pass.
    pub max_batch_tokens: usize,
    /// Most sequences in one forward pass.
    pub max_batch_size: usize,
}

impl MiniLmOptions {
    pub fn new(model_dir: impl Into<PathBuf>) -> Self {
        Self {
            model_dir: model_dir.into(),
            max_batch_tokens: 4096,
            max_batch_size: 64,
        }
    }
}

/// The local all-MiniLM-L6-v2 embedder (384 dimensions).
#[derive(Clone)]
pub struct MiniLm {
    inner: Arc<Inner>,
}

struct Inner {
    model: BertModel,
    /// Tokenizer truncating to the model's input size.
    tokenizer: Tokenizer,
    /// Same vocabulary, no truncation: for counting tokens of whole documents.
    counter: Arc<MiniLmTokens>,
    opts: MiniLmOptions,
    dims: usize,
}

/// Token spans from the model's own WordPiece tokenizer.
pub struct MiniLmTokens {
    tokenizer: Tokenizer,
}

impl TokenCounter for MiniLmTokens {
    fn token_spans(&self, text: &str) -> Vec<(usize, usize)> {
        match self.tokenizer.encode(text, false) {
            Ok(enc) => enc.get_offsets().to_vec(),
            Err(_) => Vec::new(),
        }
    }
}

fn model_err(path: &Path, e: impl std::fmt::Display) -> EmbedError {
    EmbedError::Model(format!("{}: {e}", path.display()))
}

impl MiniLm {
    /// Loads weights and tokenizer from `opts.model_dir`.
    pub fn load(opts: MiniLmOptions) -> Result<Self, EmbedError> {
        let dir = &opts.model_dir;
        let config_path = dir.join("config.json");
        let config: Config = serde_json::from_str(
            &std::fs::read_to_string(&config_path).map_err(|e| model_err(&config_path, e))?,
        )
        .map_err(|e| model_err(&config_path, e))?;
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
                max_length: MAX_SEQUENCE,
                ..Default::default()
            }))
            .map_err(|e| model_err(&tok_path, e))?;
        let weights = dir.join("model.safetensors");
        if !weights.exists() {
            return Err(model_err(
                &weights,
                "missing (run the setup step to fetch the model)",
            ));
        }
        // SAFETY: the weights file is memory-mapped read-only; it is not
        // modified while the process runs (it lives in the model cache).
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &Device::Cpu)
                .map_err(|e| model_err(&weights, e))?
        };
        let model = BertModel::load(vb, &config).map_err(|e| model_err(&weights, e))?;
        let dims = config.hidden_size;
        Ok(Self {
            inner: Arc::new(Inner {
                model,
                tokenizer,
                counter,
                opts,
                dims,
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
        // Longest first, so each batch pads to its own first element.
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let mut batches: Vec<&[usize]> = Vec::new();
        let mut start = 0;
        while start < order.len() {
            let len = ids[order[start]].len().max(1);
            let fit = (inner.opts.max_batch_tokens / len).clamp(1, inner.opts.max_batch_size);
            let end = (start + fit).min(order.len());
            batches.push(&order[start..end]);
            start = end;
        }
        use rayon::prelude::*;
        let results: Vec<Vec<Vec<f32>>> = batches
            .par_iter()
            .map(|batch| self.forward(batch.iter().map(|&i| ids[i]).collect()))
            .collect::<Result<_, _>>()?;
        let mut out = vec![Vec::new(); ids.len()];
        for (batch, vectors) in batches.iter().zip(results) {
            for (&i, v) in batch.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    fn forward(&self, seqs: Vec<&[u32]>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let compute = |e: candle_core::Error| EmbedError::Compute(e.to_string());
        let b = seqs.len();
        let l = seqs.iter().map(|s| s.len()).max().unwrap_or(1);
        let mut input = vec![0u32; b * l];
        let mut mask = vec![0u32; b * l];
        for (r, s) in seqs.iter().enumerate() {
            input[r * l..r * l + s.len()].copy_from_slice(s);
            mask[r * l..r * l + s.len()].iter_mut().for_each(|m| *m = 1);
        }
        let dev = &Device::Cpu;
        let input = Tensor::from_vec(input, (b, l), dev).map_err(compute)?;
        let mask_t = Tensor::from_vec(mask, (b, l), dev).map_err(compute)?;
        let types = input.zeros_like().map_err(compute)?;
        let hidden = self
            .inner
            .model
            .forward(&input, &types, Some(&mask_t))
            .map_err(compute)?;
        // Mean over real tokens only.
        let m = mask_t
            .to_dtype(DType::F32)
            .map_err(compute)?
            .unsqueeze(2)
            .map_err(compute)?;
        let summed = hidden
            .broadcast_mul(&m)
            .map_err(compute)?
            .sum(1)
            .map_err(compute)?;
        let counts = m.sum(1).map_err(compute)?;
        let mean = summed.broadcast_div(&counts).map_err(compute)?;
        let mut rows: Vec<Vec<f32>> = mean.to_vec2().map_err(compute)?;
        rows.iter_mut().for_each(|r| l2_normalize(r));
        Ok(rows)
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
        (MAX_SEQUENCE - 2) as u32
    }
    fn token_counter(&self) -> Arc<dyn TokenCounter> {
        self.inner.counter.clone()
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
}
