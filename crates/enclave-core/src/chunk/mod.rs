//! Token-aware, structure-aware chunking.
//!
//! Budgets are counted in the *embedding model's* tokens (through
//! [`TokenCounter`]), so a chunk never silently overflows what the model sees.
//! Chunks are contiguous byte ranges of the original text: content returned by
//! search is exactly what the caller wrote.
//!
//! Strategies:
//! - `auto`: blocks (headings, fenced code, paragraphs) are packed into chunks
//!   up to `max_tokens`; a heading starts a new chunk once the current one is a
//!   quarter full; an oversized block is split at sentence ends, an oversized
//!   sentence at token boundaries; consecutive chunks inside a section share
//!   `overlap_tokens` tokens.
//! - `fixed`: windows of exactly `max_tokens` tokens, no overlap.
//! - `sliding`: windows of `max_tokens` advancing by `max_tokens - overlap_tokens`.
//! - `hierarchical`: `auto` chunks that never cross a section, plus the
//!   sections themselves as parent chunks (split when longer than four chunks)
//!   so a hit can return its surrounding context.
//!
//! Memory is linear in the document's size, whatever its shape: a section
//! label (the heading path) is capped ([`MAX_HEADING_CHARS`] per heading,
//! [`MAX_SECTION_BYTES`] in all), built once per heading and shared by every
//! block, unit and chunk under it; units are packed as they are cut, never
//! collected; and the chunk-count limit stops the chunker as soon as it is
//! passed, before the rest is cut.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::doc_type::DocumentType;
use crate::error::InvalidInput;

mod blocks;
use blocks::{block_units, blocks, Block, BlockKind, Unit};

/// Tells where the model's tokens are in a text.
pub trait TokenCounter: Send + Sync {
    /// Byte ranges `(start, end)` of each token of `text`, in order, without
    /// special tokens.
    fn token_spans(&self, text: &str) -> Vec<(usize, usize)>;

    fn count_tokens(&self, text: &str) -> usize {
        self.token_spans(text).len()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ChunkStrategy {
    #[default]
    Auto,
    Fixed,
    Sliding,
    Hierarchical,
}

/// How a document is cut (API.md §4 `chunking`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChunkingOptions {
    pub strategy: ChunkStrategy,
    pub max_tokens: u32,
    pub overlap_tokens: u32,
}

impl Default for ChunkingOptions {
    fn default() -> Self {
        Self {
            strategy: ChunkStrategy::Auto,
            max_tokens: 256,
            overlap_tokens: 32,
        }
    }
}

/// Smallest `max_tokens` accepted.
pub const MIN_CHUNK_TOKENS: u32 = 16;

impl ChunkingOptions {
    /// Checks the options against the model's input size (in tokens, without
    /// its special tokens) and returns the ones the chunker uses: an
    /// `overlap_tokens` above half of `max_tokens` (say the default 32 with
    /// `max_tokens: 32`) is used as half, so a caller who only shrinks the
    /// chunks is never refused for the default it did not set.
    pub fn validated(self, model_max_tokens: u32) -> Result<Self, InvalidInput> {
        if self.max_tokens < MIN_CHUNK_TOKENS || self.max_tokens > model_max_tokens {
            return Err(InvalidInput::new(
                "chunking.max_tokens",
                format!("must be between {MIN_CHUNK_TOKENS} and {model_max_tokens} (the model's input size)"),
            ));
        }
        Ok(Self {
            overlap_tokens: self.overlap_tokens.min(self.max_tokens / 2),
            ..self
        })
    }
}

/// Characters of one heading's title kept in a section label; the rest is
/// cut (the heading's own text stays whole in the chunk content).
pub const MAX_HEADING_CHARS: usize = 200;
/// Bytes of a whole section label (`"Guide > Install > Linux"`) at most.
pub const MAX_SECTION_BYTES: usize = 512;

/// A section label shared by every block and chunk under one heading path.
pub type SectionLabel = Arc<str>;

/// A chunk to be embedded and indexed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkDraft {
    /// Byte range in the source text.
    pub start: usize,
    pub end: usize,
    pub token_count: u32,
    /// Heading path (`"Guide > Install"`) of the section the chunk starts in.
    pub section: Option<SectionLabel>,
    /// Index into [`Chunked::sections`] (hierarchical strategy only).
    pub parent: Option<u32>,
}

/// A parent section kept for context (hierarchical strategy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionDraft {
    pub start: usize,
    pub end: usize,
    pub token_count: u32,
    pub section: Option<SectionLabel>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chunked {
    pub chunks: Vec<ChunkDraft>,
    pub sections: Vec<SectionDraft>,
}

impl Chunked {
    pub fn content<'t>(&self, text: &'t str, i: usize) -> &'t str {
        &text[self.chunks[i].start..self.chunks[i].end]
    }
}

/// Cuts `text` into at most `max_chunks` chunks (leaves; hierarchical
/// parents are not counted). Options must have been validated. A text that
/// would give more is refused as soon as the limit is passed, so the work and
/// memory spent on it are bounded by the limit, not by the text.
pub fn chunk_text(
    text: &str,
    doc_type: DocumentType,
    opts: &ChunkingOptions,
    counter: &dyn TokenCounter,
    max_chunks: usize,
) -> Result<Chunked, InvalidInput> {
    let toks = Tokens::new(valid_spans(text, counter.token_spans(text)));
    if toks.spans.is_empty() {
        return Ok(Chunked::default());
    }
    let max = opts.max_tokens as usize;
    let overlap = opts.overlap_tokens as usize;
    let mut out = Chunks::new(max_chunks);
    let sections = match opts.strategy {
        ChunkStrategy::Fixed => {
            windows(&toks, max, max, &mut out)?;
            vec![]
        }
        ChunkStrategy::Sliding => {
            windows(&toks, max, max - overlap.min(max - 1), &mut out)?;
            vec![]
        }
        ChunkStrategy::Auto => {
            let blocks = blocks(text, doc_type);
            pack(text, &toks, &blocks, max, overlap, &mut out)?;
            vec![]
        }
        ChunkStrategy::Hierarchical => hierarchical(text, doc_type, &toks, max, overlap, &mut out)?,
    };
    Ok(Chunked {
        chunks: out.chunks,
        sections,
    })
}

/// The spans a tokenizer gave that can be trusted as byte ranges of `text`:
/// non-empty, inside it, on character boundaries and in order. A tokenizer
/// whose normalisation misaligns offsets (exotic Unicode) would otherwise
/// make slicing panic; such tokens are dropped (their text stays inside
/// the neighbouring chunks' ranges).
fn valid_spans(text: &str, spans: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    let mut last_end = 0;
    let mut out = Vec::with_capacity(spans.len());
    for (s, e) in spans {
        if s < e
            && e <= text.len()
            && s >= last_end
            && text.is_char_boundary(s)
            && text.is_char_boundary(e)
        {
            out.push((s, e));
            last_end = e;
        }
    }
    out
}

/// The chunks cut so far, refusing the one past the limit.
struct Chunks {
    chunks: Vec<ChunkDraft>,
    limit: usize,
}

impl Chunks {
    fn new(limit: usize) -> Self {
        Self {
            chunks: Vec::new(),
            limit,
        }
    }

    fn push(&mut self, c: ChunkDraft) -> Result<(), InvalidInput> {
        if c.token_count == 0 {
            return Ok(());
        }
        if self.chunks.len() >= self.limit {
            return Err(InvalidInput::new(
                "content",
                format!(
                    "produces more than {} chunks, the limit per document; split it or raise chunking.max_tokens",
                    self.limit
                ),
            ));
        }
        self.chunks.push(c);
        Ok(())
    }
}

struct Tokens {
    spans: Vec<(usize, usize)>,
}

impl Tokens {
    fn new(spans: Vec<(usize, usize)>) -> Self {
        Self { spans }
    }
    /// Index of the first token starting at or after `byte`.
    fn first_at(&self, byte: usize) -> usize {
        self.spans.partition_point(|s| s.0 < byte)
    }
    /// Index one past the last token ending at or before `byte`.
    fn end_at(&self, byte: usize) -> usize {
        self.spans.partition_point(|s| s.1 <= byte)
    }
    fn count(&self, start: usize, end: usize) -> usize {
        self.end_at(end).saturating_sub(self.first_at(start))
    }
}

fn windows(toks: &Tokens, size: usize, step: usize, out: &mut Chunks) -> Result<(), InvalidInput> {
    let n = toks.spans.len();
    let mut i = 0;
    loop {
        let j = (i + size).min(n);
        out.push(ChunkDraft {
            start: toks.spans[i].0,
            end: toks.spans[j - 1].1,
            token_count: (j - i) as u32,
            section: None,
            parent: None,
        })?;
        if j == n {
            break;
        }
        i += step.max(1);
    }
    Ok(())
}

/// Greedy packing of units into chunks with overlap inside a section.
struct Packer<'t> {
    toks: &'t Tokens,
    max: usize,
    overlap: usize,
    min_fill: usize,
    cur: Option<(usize, usize, Option<SectionLabel>)>,
}

impl<'t> Packer<'t> {
    fn new(toks: &'t Tokens, max: usize, overlap: usize) -> Self {
        Self {
            toks,
            max,
            overlap,
            min_fill: max / 4,
            cur: None,
        }
    }

    fn add(&mut self, u: Unit, out: &mut Chunks) -> Result<(), InvalidInput> {
        let toks = self.toks;
        let Some((cs, ce, sec)) = self.cur.take() else {
            self.cur = Some((u.start, u.end, u.section));
            return Ok(());
        };
        let cur_tokens = toks.count(cs, ce);
        let fits = toks.count(cs, u.end) <= self.max;
        let heading_break = u.heading && cur_tokens >= self.min_fill;
        if fits && !heading_break {
            self.cur = Some((cs, u.end, sec));
            return Ok(());
        }
        out.push(ChunkDraft {
            start: cs,
            end: ce,
            token_count: cur_tokens as u32,
            section: sec,
            parent: None,
        })?;
        // Carry the tail of the previous chunk unless a heading starts a
        // new section or the overlap would not leave room for the unit.
        let mut start = u.start;
        if !u.heading && self.overlap > 0 {
            let last = toks.end_at(ce);
            let first = last.saturating_sub(self.overlap).max(toks.first_at(cs));
            if first < last {
                let os = toks.spans[first].0;
                if toks.count(os, u.end) <= self.max {
                    start = os;
                }
            }
        }
        self.cur = Some((start, u.end, u.section));
        Ok(())
    }

    fn finish(self, out: &mut Chunks) -> Result<(), InvalidInput> {
        if let Some((cs, ce, sec)) = self.cur {
            out.push(ChunkDraft {
                start: cs,
                end: ce,
                token_count: self.toks.count(cs, ce) as u32,
                section: sec,
                parent: None,
            })?;
        }
        Ok(())
    }
}

/// Packs `blocks` into chunks appended to `out`.
fn pack(
    text: &str,
    toks: &Tokens,
    blocks: &[Block],
    max: usize,
    overlap: usize,
    out: &mut Chunks,
) -> Result<(), InvalidInput> {
    let mut packer = Packer::new(toks, max, overlap);
    for b in blocks {
        block_units(text, toks, b, max, overlap, &mut |u| packer.add(u, out))?;
    }
    packer.finish(out)
}

fn hierarchical(
    text: &str,
    doc_type: DocumentType,
    toks: &Tokens,
    max: usize,
    overlap: usize,
    out: &mut Chunks,
) -> Result<Vec<SectionDraft>, InvalidInput> {
    let all = blocks(text, doc_type);
    let parent_max = max * 4;
    let mut sections = Vec::new();
    // Sections: a heading opens a new one.
    let mut from = 0;
    while from < all.len() {
        let mut to = from + 1;
        while to < all.len() && !matches!(all[to].kind, BlockKind::Heading(_)) {
            to += 1;
        }
        let first_leaf = out.chunks.len();
        pack(text, toks, &all[from..to], max, overlap, out)?;
        from = to;
        // Split a long section into parents of at most four chunks' worth.
        let leaves = &mut out.chunks[first_leaf..];
        let mut i = 0;
        while i < leaves.len() {
            let mut j = i + 1;
            while j < leaves.len() && toks.count(leaves[i].start, leaves[j].end) <= parent_max {
                j += 1;
            }
            let (ps, pe) = (leaves[i].start, leaves[j - 1].end);
            let parent = sections.len() as u32;
            sections.push(SectionDraft {
                start: ps,
                end: pe,
                token_count: toks.count(ps, pe) as u32,
                section: leaves[i].section.clone(),
            });
            for leaf in &mut leaves[i..j] {
                leaf.parent = Some(parent);
            }
            i = j;
        }
    }
    Ok(sections)
}

/// A whitespace-and-punctuation token counter: one token per word or
/// punctuation mark. Used by the deterministic test embedder and in tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct WordCounter;

impl TokenCounter for WordCounter {
    fn token_spans(&self, text: &str) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut start: Option<usize> = None;
        for (i, c) in text.char_indices() {
            if c.is_alphanumeric() {
                start.get_or_insert(i);
            } else {
                if let Some(s) = start.take() {
                    out.push((s, i));
                }
                if !c.is_whitespace() {
                    out.push((i, i + c.len_utf8()));
                }
            }
        }
        if let Some(s) = start {
            out.push((s, text.len()));
        }
        out
    }
}

#[cfg(test)]
mod tests;
