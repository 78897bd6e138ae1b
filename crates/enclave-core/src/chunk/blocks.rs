//! A text as blocks (headings, code fences, paragraphs) with the heading
//! path in force, and blocks as units (sentences, or lines of code) that
//! the packer puts into chunks.

use std::sync::Arc;

use super::{SectionLabel, Tokens, MAX_HEADING_CHARS, MAX_SECTION_BYTES};
use crate::doc_type::DocumentType;
use crate::error::InvalidInput;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum BlockKind {
    Heading(usize),
    Code,
    Paragraph,
}

#[derive(Debug, Clone)]
pub(super) struct Block {
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) kind: BlockKind,
    /// Heading path in force at this block (shared, not copied).
    pub(super) section: Option<SectionLabel>,
}

/// The heading path in force, and its label built once per change.
#[derive(Default)]
pub(super) struct HeadingPath {
    pub(super) path: Vec<(usize, String)>,
    pub(super) label: Option<SectionLabel>,
}

impl HeadingPath {
    /// Enters a heading of `level` titled `title` (cut to
    /// [`MAX_HEADING_CHARS`]); the label is rebuilt once, here.
    pub(super) fn enter(&mut self, level: usize, title: &str) {
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

    pub(super) fn label(&self) -> Option<SectionLabel> {
        self.label.clone()
    }
}

/// Splits text into headings, fenced code and paragraphs.
pub(super) fn blocks(text: &str, doc_type: DocumentType) -> Vec<Block> {
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

pub(super) fn heading_level(line: &str) -> Option<usize> {
    let hashes = line.bytes().take_while(|&b| b == b'#').count();
    ((1..=6).contains(&hashes) && line[hashes..].starts_with([' ', '\t'])).then_some(hashes)
}

/// A piece no larger than the budget, with whether a chunk should start at it.
pub(super) struct Unit {
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) heading: bool,
    pub(super) section: Option<SectionLabel>,
}

type Emit<'e> = dyn FnMut(Unit) -> Result<(), InvalidInput> + 'e;

/// Cuts one block into units that each fit the budget, handing each to
/// `emit` as it is cut.
pub(super) fn block_units(
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
pub(super) fn sentences(text: &str, start: usize, end: usize, code: bool) -> Vec<(usize, usize)> {
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
