//! `enclave demo`: two tenants, one store, isolated hybrid search.

use std::path::PathBuf;

use anyhow::Result;
use enclave::core::{DocumentType, NewDocument, SearchParams, SearchResults, TenantId};

use crate::StoreArgs;

/// The bundled sample corpus, compiled in so the demo runs from anywhere.
const CORPUS: &[(&str, &str, &str)] = &[
    (
        "acme",
        "refund-policy.md",
        include_str!("../../../examples/corpus/acme/refund-policy.md"),
    ),
    (
        "acme",
        "launch-checklist.md",
        include_str!("../../../examples/corpus/acme/launch-checklist.md"),
    ),
    (
        "acme",
        "q3-results.md",
        include_str!("../../../examples/corpus/acme/q3-results.md"),
    ),
    (
        "acme",
        "careers.txt",
        include_str!("../../../examples/corpus/acme/careers.txt"),
    ),
    (
        "globex",
        "returns.md",
        include_str!("../../../examples/corpus/globex/returns.md"),
    ),
    (
        "globex",
        "security.md",
        include_str!("../../../examples/corpus/globex/security.md"),
    ),
    (
        "globex",
        "earnings.md",
        include_str!("../../../examples/corpus/globex/earnings.md"),
    ),
    (
        "globex",
        "onboarding.txt",
        include_str!("../../../examples/corpus/globex/onboarding.txt"),
    ),
];

const QUERIES: &[&str] = &[
    "how do I get my money back?",
    "how much did we earn this year",
    "is my data safe",
];

pub async fn run(store: &StoreArgs, corpus: Option<PathBuf>) -> Result<()> {
    let memory = store.open().await?;
    println!("data directory: {}", store.data_dir().display());
    let docs: Vec<(String, String, String)> = match corpus {
        None => CORPUS
            .iter()
            .map(|(t, n, c)| (t.to_string(), n.to_string(), c.to_string()))
            .collect(),
        Some(dir) => {
            let mut v = Vec::new();
            for t in std::fs::read_dir(&dir)? {
                let t = t?.path();
                if !t.is_dir() {
                    continue;
                }
                for f in crate::files::expand(&[t.display().to_string()])? {
                    let name = f
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned();
                    v.push((
                        t.file_name()
                            .unwrap_or_default()
                            .to_string_lossy()
                            .into_owned(),
                        name,
                        std::fs::read_to_string(&f)?,
                    ));
                }
            }
            v
        }
    };
    let mut tenants: Vec<String> = docs.iter().map(|d| d.0.clone()).collect();
    tenants.sort();
    tenants.dedup();
    for (tenant, name, content) in &docs {
        let ty = crate::files::type_of(std::path::Path::new(name)).unwrap_or(DocumentType::Text);
        let added = memory
            .tenant(&TenantId::parse(tenant)?)
            .add_document(NewDocument::text(name.clone(), ty, content.clone()))
            .await?;
        println!(
            "[{tenant}] {name}: {} chunks ({:?})",
            added.chunks_created, added.outcome
        );
    }
    for q in QUERIES {
        println!("\nquery: {q:?}");
        for tenant in &tenants {
            let results = memory
                .tenant(&TenantId::parse(tenant)?)
                .search(SearchParams::new(*q).limit(2))
                .await?;
            println!("  as {tenant}:");
            print_hits(&results);
        }
    }
    println!("\nEach tenant's hybrid search only ever returns its own documents.");
    Ok(())
}

pub fn print_hits(results: &SearchResults) {
    if results.results.is_empty() {
        println!("    (no results)");
    }
    for h in &results.results {
        let snippet: String = h
            .content
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(90)
            .collect();
        println!(
            "    {}. {:<22} score {:.4} (vector {} text {})  {snippet}",
            h.rank,
            h.document_name,
            h.score,
            h.vector_score.map_or("-".into(), |s| format!("{s:.3}")),
            h.text_score.map_or("-".into(), |s| format!("{s:.3}")),
        );
    }
    println!(
        "    ({} mode, {:.1} ms)",
        results.mode.as_str(),
        results.took_ms
    );
}
