//! Reading files for `enclave ingest`: globs, type by extension, HTML to text.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use enclave::core::{DocumentType, NewDocument, Origin};
use enclave::Tenant;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

/// The document type for a file, or `None` for files we cannot read as text.
pub fn type_of(path: &Path) -> Option<DocumentType> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "md" | "markdown" | "mdx" => DocumentType::Markdown,
        "txt" | "text" | "rst" | "log" => DocumentType::Text,
        "html" | "htm" | "xhtml" => DocumentType::Html,
        "eml" => DocumentType::Email,
        "json" | "jsonl" | "ndjson" => DocumentType::Json,
        "rs" | "py" | "js" | "ts" | "tsx" | "jsx" | "go" | "java" | "kt" | "c" | "h" | "cc"
        | "cpp" | "hpp" | "rb" | "php" | "cs" | "swift" | "scala" | "sh" | "bash" | "sql"
        | "toml" | "yaml" | "yml" | "css" | "scss" => DocumentType::Code,
        _ => return None,
    })
}

/// Expands arguments (files, directories, globs) into files, in order.
pub fn expand(args: &[String]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for a in args {
        let p = PathBuf::from(a);
        if p.is_dir() {
            let mut stack = vec![p];
            while let Some(d) = stack.pop() {
                let mut entries: Vec<PathBuf> = std::fs::read_dir(&d)?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .collect();
                entries.sort();
                for e in entries {
                    if e.is_dir() {
                        stack.push(e);
                    } else if type_of(&e).is_some() {
                        out.push(e);
                    }
                }
            }
        } else if p.is_file() {
            out.push(p);
        } else {
            let matches: Vec<PathBuf> = glob::glob(a)
                .with_context(|| format!("bad pattern {a}"))?
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect();
            if matches.is_empty() {
                bail!("{a}: no such file, and no file matches it as a pattern");
            }
            out.extend(matches);
        }
    }
    Ok(out)
}

/// Reads a file into a document: HTML becomes text; names are the path given.
pub fn read_document(path: &Path) -> Result<NewDocument> {
    let ty = type_of(path).unwrap_or(DocumentType::Text);
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    let content = if ty == DocumentType::Html {
        html2text::from_read(&bytes[..], 100)
            .with_context(|| format!("{}: not readable HTML", path.display()))?
    } else {
        String::from_utf8(bytes).with_context(|| format!("{}: not UTF-8 text", path.display()))?
    };
    Ok(NewDocument::text(path.display().to_string(), ty, content))
}

pub async fn ingest(
    t: &Tenant,
    origin: Option<Origin>,
    args: &[String],
    jobs: usize,
) -> Result<()> {
    let paths = expand(args)?;
    let bar = ProgressBar::new(paths.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}").expect("static template"),
    );
    let mut chunks = 0u64;
    let mut failures = 0usize;
    let mut stream = futures::stream::iter(paths.into_iter().map(|p| {
        let origin = origin.clone();
        async move {
            let r = async {
                let mut doc = read_document(&p)?;
                doc.origin = origin;
                Ok::<_, anyhow::Error>(t.add_document(doc).await?)
            }
            .await;
            (p, r)
        }
    }))
    .buffer_unordered(jobs);
    while let Some((p, r)) = stream.next().await {
        match r {
            Ok(added) => {
                chunks += added.chunks_created;
                bar.set_message(format!("{chunks} chunks"));
            }
            Err(e) => {
                failures += 1;
                let line = format!("skipped {}: {e:#}", p.display());
                // Without a terminal the bar is hidden and would drop the line.
                if bar.is_hidden() {
                    eprintln!("{line}");
                } else {
                    bar.println(line);
                }
            }
        }
        bar.inc(1);
    }
    bar.finish_with_message(format!("{chunks} chunks"));
    if failures > 0 {
        bail!("{failures} file(s) could not be ingested");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_follow_extensions_and_html_becomes_text() {
        assert_eq!(
            type_of(Path::new("a/README.md")),
            Some(DocumentType::Markdown)
        );
        assert_eq!(type_of(Path::new("x.RS")), Some(DocumentType::Code));
        assert_eq!(type_of(Path::new("x.bin")), None);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("page.html");
        std::fs::write(
            &p,
            "<html><body><h1>Title</h1><p>Hello <b>world</b></p><script>x()</script></body></html>",
        )
        .unwrap();
        let doc = read_document(&p).unwrap();
        let enclave::core::DocumentBody::Text(t) = doc.body else {
            panic!()
        };
        assert!(
            t.contains("Title") && t.contains("Hello") && !t.contains("<p>"),
            "{t}"
        );
    }
}
