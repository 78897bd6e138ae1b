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
