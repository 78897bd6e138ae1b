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

use crate::document::DocumentType;
use crate::error::InvalidInput;

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

#[derive(Debug, Clone, PartialEq, Eq)]
enum BlockKind {
    Heading(usize),
    Code,
    Paragraph,
}

#[derive(Debug, Clone)]
struct Block {
    start: usize,
    end: usize,
    kind: BlockKind,
    /// Heading path in force at this block (shared, not copied).
    section: Option<SectionLabel>,
}

/// The heading path in force, and its label built once per change.
#[derive(Default)]
struct HeadingPath {
    path: Vec<(usize, String)>,
    label: Option<SectionLabel>,
}

impl HeadingPath {
    /// Enters a heading of `level` titled `title` (cut to
    /// [`MAX_HEADING_CHARS`]); the label is rebuilt once, here.
    fn enter(&mut self, level: usize, title: &str) {
        while self.path.last().is_some_and(|(l, _)| *l >= level) {
            self.path.pop();
        }
        let cut = title
            .char_indices()
            .nth(MAX_HEADING_CHARS)
            .map_or(title, |(i, _)| &title[..i]);
        self.path.push((level, cut.to_owned()));
        let mut label = String::new();
        for (i, (_, t)) in self.path.iter().enumerate() {
            if i > 0 {
                label.push_str(" > ");
            }
            label.push_str(t);
        }
        if label.len() > MAX_SECTION_BYTES {
            let mut end = MAX_SECTION_BYTES;
            while !label.is_char_boundary(end) {
                end -= 1;
            }
            label.truncate(end);
        }
        self.label = Some(Arc::from(label));
    }

    fn label(&self) -> Option<SectionLabel> {
        self.label.clone()
    }
}

/// Splits text into headings, fenced code and paragraphs.
fn blocks(text: &str, doc_type: DocumentType) -> Vec<Block> {
    let headings_allowed = doc_type != DocumentType::Code;
    let mut out: Vec<Block> = Vec::new();
    let mut path = HeadingPath::default();
    let mut para: Option<usize> = None;
    let mut fence: Option<(usize, &str)> = None;
    let mut pos = 0;
    let close_para =
        |out: &mut Vec<Block>, para: &mut Option<usize>, end: usize, path: &HeadingPath| {
            if let Some(s) = para.take() {
                out.push(Block {
                    start: s,
                    end,
                    kind: BlockKind::Paragraph,
                    section: path.label(),
                });
            }
        };
    for line in text.split_inclusive('\n') {
        let line_start = pos;
        pos += line.len();
        let body = line.trim_end_matches(['\n', '\r']);
        let content_end = line_start + body.len();
        let trimmed = body.trim_start();
        if let Some((fs, marker)) = fence {
            if trimmed.starts_with(marker) {
                out.push(Block {
                    start: fs,
                    end: content_end,
                    kind: BlockKind::Code,
                    section: path.label(),
                });
                fence = None;
            }
            continue;
        }
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            close_para(&mut out, &mut para, line_start, &path);
            fence = Some((line_start, &trimmed[..3]));
            continue;
        }
        if headings_allowed {
            if let Some(level) = heading_level(trimmed) {
                close_para(&mut out, &mut para, line_start, &path);
                let title = trimmed[level..].trim().trim_end_matches('#').trim();
                path.enter(level, title);
                out.push(Block {
                    start: line_start,
                    end: content_end,
                    kind: BlockKind::Heading(level),
                    section: path.label(),
                });
                continue;
            }
        }
        if trimmed.is_empty() {
            close_para(&mut out, &mut para, line_start, &path);
        } else if para.is_none() {
            para = Some(line_start);
        }
    }
    if let Some((fs, _)) = fence {
        out.push(Block {
            start: fs,
            end: text.len(),
            kind: BlockKind::Code,
            section: path.label(),
        });
    }
    close_para(&mut out, &mut para, text.len(), &path);
    // Trim trailing whitespace from each block so chunks end on content.
    for b in &mut out {
        b.end = b.start + text[b.start..b.end].trim_end().len();
    }
    out.retain(|b| b.end > b.start);
    out
}

fn heading_level(line: &str) -> Option<usize> {
    let hashes = line.bytes().take_while(|&b| b == b'#').count();
    ((1..=6).contains(&hashes) && line[hashes..].starts_with([' ', '\t'])).then_some(hashes)
}

/// A piece no larger than the budget, with whether a chunk should start at it.
struct Unit {
    start: usize,
    end: usize,
    heading: bool,
    section: Option<SectionLabel>,
}

type Emit<'e> = dyn FnMut(Unit) -> Result<(), InvalidInput> + 'e;

/// Cuts one block into units that each fit the budget, handing each to
/// `emit` as it is cut.
fn block_units(
    text: &str,
    toks: &Tokens,
    b: &Block,
    max: usize,
    overlap: usize,
    emit: &mut Emit<'_>,
) -> Result<(), InvalidInput> {
    // Pieces of a split block leave room for the overlap carried into them.
    let piece_max = max - overlap.min(max / 2);
    let heading = matches!(b.kind, BlockKind::Heading(_));
    if toks.count(b.start, b.end) <= max {
        return emit(Unit {
            start: b.start,
            end: b.end,
            heading,
            section: b.section.clone(),
        });
    }
    // Sentences (or lines for code), packed greedily; oversized ones are
    // cut at token boundaries.
    let mut cur: Option<(usize, usize)> = None;
    let mut piece = |s: usize, e: usize| -> Result<(), InvalidInput> {
        cur = match cur {
            Some((cs, _)) if toks.count(cs, e) <= piece_max => Some((cs, e)),
            Some((cs, ce)) => {
                emit(Unit {
                    start: cs,
                    end: ce,
                    heading: false,
                    section: b.section.clone(),
                })?;
                Some((s, e))
            }
            None => Some((s, e)),
        };
        Ok(())
    };
    for (s, e) in sentences(text, b.start, b.end, b.kind == BlockKind::Code) {
        if toks.count(s, e) <= piece_max {
            piece(s, e)?;
        } else {
            let (i, j) = (toks.first_at(s), toks.end_at(e));
            let mut k = i;
            while k < j {
                let l = (k + piece_max).min(j);
                piece(toks.spans[k].0, toks.spans[l - 1].1)?;
                k = l;
            }
        }
    }
    if let Some((cs, ce)) = cur {
        emit(Unit {
            start: cs,
            end: ce,
            heading: false,
            section: b.section.clone(),
        })?;
    }
    Ok(())
}

/// Sentence (or, for code, line) ranges inside `[start, end)`.
fn sentences(text: &str, start: usize, end: usize, code: bool) -> Vec<(usize, usize)> {
    let s = &text[start..end];
    let mut out = Vec::new();
    let mut from = 0;
    let bytes = s.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let boundary = if code {
            b == b'\n'
        } else {
            b == b'\n'
                || (matches!(b, b'.' | b'!' | b'?')
                    && bytes.get(i + 1).is_some_and(|n| n.is_ascii_whitespace()))
        };
        if boundary {
            let piece = &s[from..=i];
            if !piece.trim().is_empty() {
                let lead = piece.len() - piece.trim_start().len();
                out.push((start + from + lead, start + from + piece.trim_end().len()));
            }
            from = i + 1;
        }
    }
    let piece = &s[from..];
    if !piece.trim().is_empty() {
        let lead = piece.len() - piece.trim_start().len();
        out.push((start + from + lead, start + from + piece.trim_end().len()));
    }
    out
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
mod tests {
    use super::*;

    const GUIDE: &str = "# Enclave operator guide

Enclave stores documents for many tenants. Every query is scoped to one tenant, and the database refuses to cross that line.

## Installing

Download the binary and run it. The first start creates a data directory, fetches the embedding model and prints an admin token.

```sh
enclave serve --listen 127.0.0.1:8080
enclave ingest --tenant acme docs/*.md
```

## Backups

Back up the data directory while the server is stopped, or use the export command, which streams every document of a tenant as NDJSON. Restores are imports of that stream.

### Verifying a backup

Count the documents in the export and compare them with the stats endpoint. A purge receipt proves a tenant is gone.
";

    fn chunk(text: &str, doc_type: DocumentType, opts: &ChunkingOptions) -> Chunked {
        chunk_text(text, doc_type, opts, &WordCounter, 20_000).expect("within the chunk limit")
    }

    fn opts(strategy: ChunkStrategy, max: u32, overlap: u32) -> ChunkingOptions {
        ChunkingOptions {
            strategy,
            max_tokens: max,
            overlap_tokens: overlap,
        }
    }

    #[test]
    fn auto_follows_headings_and_keeps_code_blocks_whole() {
        let c = chunk(
            GUIDE,
            DocumentType::Markdown,
            &opts(ChunkStrategy::Auto, 40, 8),
        );
        assert!(c.chunks.len() >= 3, "{:#?}", c.chunks);
        for (i, ch) in c.chunks.iter().enumerate() {
            assert!(
                ch.token_count <= 40,
                "chunk {i} has {} tokens",
                ch.token_count
            );
            assert_eq!(
                ch.token_count as usize,
                WordCounter.count_tokens(c.content(GUIDE, i))
            );
        }
        let code = c
            .chunks
            .iter()
            .position(|ch| {
                c.content(GUIDE, c.chunks.iter().position(|x| x == ch).unwrap())
                    .contains("```sh")
            })
            .unwrap();
        assert!(
            c.content(GUIDE, code).contains("enclave ingest"),
            "fence split: {:?}",
            c.content(GUIDE, code)
        );
        let backups = c
            .chunks
            .iter()
            .find(|ch| GUIDE[ch.start..ch.end].starts_with("## Backups"))
            .expect("a chunk starts at the Backups heading");
        assert_eq!(
            backups.section.as_deref(),
            Some("Enclave operator guide > Backups")
        );
        let verify = c
            .chunks
            .iter()
            .find(|ch| GUIDE[ch.start..ch.end].contains("purge receipt"))
            .unwrap();
        assert!(verify
            .section
            .as_deref()
            .unwrap()
            .ends_with("Verifying a backup"));
    }

    #[test]
    fn small_budget_splits_long_paragraphs_at_sentences_with_overlap() {
        let para = "Revenue grew in the fourth quarter. Costs stayed flat across regions. \
                    The board approved the plan for next year. Hiring resumes in March. \
                    Margins improved for the third quarter in a row.";
        let c = chunk(para, DocumentType::Text, &opts(ChunkStrategy::Auto, 16, 4));
        assert!(c.chunks.len() >= 3);
        for w in c.chunks.windows(2) {
            assert!(w[1].start < w[0].end, "consecutive chunks overlap: {w:?}");
            assert!(w[1].start > w[0].start);
        }
        for ch in &c.chunks {
            assert!(ch.token_count <= 16);
        }
        // Every sentence survives somewhere.
        for s in para.split(". ") {
            let s = s.trim().trim_end_matches('.');
            assert!(
                c.chunks.iter().any(|ch| para[ch.start..ch.end].contains(s)),
                "{s}"
            );
        }
    }

    #[test]
    fn a_single_huge_word_run_is_cut_at_token_boundaries() {
        let text = "alpha ".repeat(1000);
        let c = chunk(
            &text,
            DocumentType::Text,
            &opts(ChunkStrategy::Auto, 100, 0),
        );
        assert_eq!(c.chunks.len(), 10);
        assert!(c.chunks.iter().all(|ch| ch.token_count == 100));
        let c = chunk(
            &text,
            DocumentType::Text,
            &opts(ChunkStrategy::Auto, 100, 20),
        );
        assert!(c.chunks.iter().all(|ch| ch.token_count <= 100));
        assert!(
            c.chunks.windows(2).all(|w| w[1].start < w[0].end),
            "overlap carried"
        );
    }

    #[test]
    fn fixed_and_sliding_windows_cover_every_token() {
        let text = (0..95)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let f = chunk(
            &text,
            DocumentType::Text,
            &opts(ChunkStrategy::Fixed, 20, 5),
        );
        assert_eq!(
            f.chunks.iter().map(|c| c.token_count).collect::<Vec<_>>(),
            [20, 20, 20, 20, 15]
        );
        assert!(f.chunks.windows(2).all(|w| w[1].start > w[0].end));
        let s = chunk(
            &text,
            DocumentType::Text,
            &opts(ChunkStrategy::Sliding, 20, 5),
        );
        assert_eq!(s.chunks.len(), 6);
        assert!(s.chunks.windows(2).all(|w| w[1].start < w[0].end));
        assert_eq!(s.chunks.last().unwrap().end, text.len());
    }

    #[test]
    fn hierarchical_keeps_sections_as_parents() {
        let c = chunk(
            GUIDE,
            DocumentType::Markdown,
            &opts(ChunkStrategy::Hierarchical, 24, 4),
        );
        assert!(!c.sections.is_empty());
        for ch in &c.chunks {
            let p = &c.sections[ch.parent.unwrap() as usize];
            assert!(
                p.start <= ch.start && ch.end <= p.end,
                "leaf inside its parent"
            );
            assert!(ch.token_count <= 24);
        }
        // No leaf crosses a heading.
        for ch in &c.chunks {
            let inner = &GUIDE[ch.start + 1..ch.end];
            assert!(!inner.contains("\n#"), "{inner:?}");
        }
    }

    #[test]
    fn empty_and_whitespace_text_yield_no_chunks() {
        for t in ["", "   \n\n\t "] {
            assert!(chunk(t, DocumentType::Text, &ChunkingOptions::default())
                .chunks
                .is_empty());
        }
    }

    #[test]
    fn a_huge_heading_is_one_shared_capped_label() {
        let text = format!("# {}\n\n{}", "h".repeat(60_000), "a b c\n\n".repeat(2_000));
        let c = chunk(
            &text,
            DocumentType::Markdown,
            &opts(ChunkStrategy::Auto, 64, 8),
        );
        assert!(c.chunks.len() > 10);
        let first = c.chunks[0].section.clone().expect("a section");
        assert_eq!(first.chars().count(), MAX_HEADING_CHARS);
        for ch in &c.chunks {
            let s = ch
                .section
                .as_ref()
                .expect("every chunk is under the heading");
            assert!(Arc::ptr_eq(s, &first), "the label is shared, not copied");
        }
        // A deep path of long titles is cut to MAX_SECTION_BYTES on a char
        // boundary.
        let deep: String = (1..=6)
            .map(|l| format!("{} {}\n\nbody\n\n", "#".repeat(l), "é".repeat(300)))
            .collect();
        let c = chunk(
            &deep,
            DocumentType::Markdown,
            &opts(ChunkStrategy::Hierarchical, 16, 0),
        );
        let longest = c
            .chunks
            .iter()
            .filter_map(|c| c.section.as_deref())
            .map(str::len)
            .max();
        assert!(longest.unwrap() <= MAX_SECTION_BYTES);
    }

    #[test]
    fn the_chunk_limit_stops_the_chunker_for_every_strategy() {
        let text = "word. ".repeat(5_000);
        for strategy in [
            ChunkStrategy::Auto,
            ChunkStrategy::Fixed,
            ChunkStrategy::Sliding,
            ChunkStrategy::Hierarchical,
        ] {
            let o = opts(strategy, 16, 4);
            let all = chunk_text(&text, DocumentType::Text, &o, &WordCounter, usize::MAX)
                .unwrap()
                .chunks
                .len();
            assert!(all > 100, "{strategy:?}: {all}");
            let exact = chunk_text(&text, DocumentType::Text, &o, &WordCounter, all).unwrap();
            assert_eq!(exact.chunks.len(), all);
            let err = chunk_text(&text, DocumentType::Text, &o, &WordCounter, all - 1).unwrap_err();
            assert_eq!(err.field, "content");
            assert!(
                err.message.contains(&format!("more than {}", all - 1)),
                "{err}"
            );
        }
    }

    /// A tokenizer whose offsets are wrong (mid-character, out of range,
    /// out of order, empty) cannot make the chunker panic.
    #[test]
    fn misaligned_token_offsets_are_dropped_not_sliced() {
        struct Broken;
        impl TokenCounter for Broken {
            fn token_spans(&self, text: &str) -> Vec<(usize, usize)> {
                let mut s = WordCounter.token_spans(text);
                s.extend([(1, 2), (0, text.len() + 5), (3, 3), (0, 1)]);
                s.insert(1, (2, 1));
                s
            }
        }
        let text = "é ü ñ ".repeat(200) + "東京 café";
        for strategy in [
            ChunkStrategy::Auto,
            ChunkStrategy::Fixed,
            ChunkStrategy::Sliding,
            ChunkStrategy::Hierarchical,
        ] {
            let c = chunk_text(
                &text,
                DocumentType::Text,
                &opts(strategy, 16, 4),
                &Broken,
                20_000,
            )
            .unwrap();
            assert!(!c.chunks.is_empty());
            for i in 0..c.chunks.len() {
                let _ = c.content(&text, i);
            }
        }
    }

    #[test]
    fn options_are_validated_against_the_model_and_overlap_is_capped_at_half() {
        let d = ChunkingOptions::default();
        assert_eq!(d.validated(510).unwrap(), d);
        let bad = ChunkingOptions {
            max_tokens: 600,
            ..Default::default()
        };
        assert_eq!(bad.validated(510).unwrap_err().field, "chunking.max_tokens");
        let small = ChunkingOptions {
            max_tokens: 64,
            overlap_tokens: 40,
            ..Default::default()
        };
        assert_eq!(small.validated(510).unwrap().overlap_tokens, 32);
        let tiny = ChunkingOptions {
            max_tokens: 17,
            ..Default::default()
        };
        assert_eq!(tiny.validated(510).unwrap().overlap_tokens, 8);
    }
}
