//! The chunker's memory is linear in the document's size whatever its shape
//! (security review finding 1: a huge heading over many paragraphs was copied
//! into every block, unit and chunk). Measured in bytes allocated, not time:
//! a counting allocator records the peak of live bytes on this thread while
//! the chunker runs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use enclave_core::chunk::{chunk_text, ChunkStrategy, ChunkingOptions, WordCounter};
use enclave_core::DocumentType;

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    // `try_with`: the thread's locals may already be gone at thread exit.
    let _ = LIVE.try_with(|l| {
        let now = l.get() + delta;
        l.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        track(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        track(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak bytes live above the starting point while `f` runs.
fn peak_bytes<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let out = f();
    (out, (PEAK.with(Cell::get) - start).max(0) as usize)
}

/// The reproduction of the review: one 60,000-character heading followed by
/// 8,000 short paragraphs (a 114 KB markdown document).
fn heading_document(heading_chars: usize, paragraphs: usize) -> String {
    format!(
        "# {}\n\n{}",
        "x".repeat(heading_chars),
        "a few words here.\n\n".repeat(paragraphs)
    )
}

#[test]
fn a_document_with_a_huge_heading_is_chunked_in_linear_memory() {
    for strategy in [ChunkStrategy::Auto, ChunkStrategy::Hierarchical] {
        let opts = ChunkingOptions {
            strategy,
            ..ChunkingOptions::default()
        };
        let mut per_input_byte = Vec::new();
        for (heading, paragraphs) in [(60_000, 8_000), (600_000, 80_000)] {
            let text = heading_document(heading, paragraphs);
            let (chunked, peak) = peak_bytes(|| {
                chunk_text(&text, DocumentType::Markdown, &opts, &WordCounter, 20_000)
                    .expect("within the chunk limit")
            });
            assert!(chunked.chunks.len() > 100);
            // What the chunks hold: byte ranges and one shared label.
            let ratio = peak as f64 / text.len() as f64;
            eprintln!(
                "{strategy:?}: {} bytes in, {} chunks, peak {} bytes ({ratio:.1}x)",
                text.len(),
                chunked.chunks.len(),
                peak
            );
            assert!(
                ratio < 64.0,
                "{strategy:?}: peak {peak} bytes for a {} byte document",
                text.len()
            );
            per_input_byte.push(ratio);
        }
        // Ten times the document, about the same bytes per input byte.
        assert!(
            per_input_byte[1] < per_input_byte[0] * 1.5 + 1.0,
            "{strategy:?}: not linear: {per_input_byte:?}"
        );
    }
}

#[test]
fn a_document_over_the_chunk_limit_is_refused_before_it_is_all_cut() {
    // 2,000,000 one-word paragraphs under one heading: the old chunker cut
    // all of them before the limit was looked at.
    let text = heading_document(1_000, 200_000);
    let opts = ChunkingOptions {
        max_tokens: 16,
        overlap_tokens: 0,
        ..ChunkingOptions::default()
    };
    let (result, peak) =
        peak_bytes(|| chunk_text(&text, DocumentType::Markdown, &opts, &WordCounter, 1_000));
    let err = result.expect_err("over the limit");
    assert_eq!(err.field, "content");
    assert!(peak < text.len() * 64, "peak {peak} bytes");
}
