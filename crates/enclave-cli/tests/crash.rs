//! A process killed (SIGKILL) while ingesting leaves every completed document
//! whole and no partial one: the document, its chunks, vectors and full-text
//! rows commit together.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use enclave::core::{SearchMode, SearchParams, TenantId};
use enclave::{EmbedderConfig, Layout, ListParams, Memory, MemoryConfig, StoreConfig};

const DOCS: usize = 1500;

fn write_corpus(dir: &Path) {
    for d in 0..DOCS {
        // ~40 paragraphs of ~60 words: dozens of chunks per document, so a
        // kill is likely to land inside a write.
        let body: String = (0..40)
            .map(|p| {
                format!(
                    "marker{d:04} paragraph {p} {}\n\n",
                    "lorem ipsum dolor sit amet consectetur ".repeat(10)
                )
            })
            .collect();
        std::fs::write(dir.join(format!("doc{d:04}.txt")), body).unwrap();
    }
}

/// Where the ingesting process writes: its store flags.
enum Target<'a> {
    Embedded(&'a Path, Layout, &'a str),
    Postgres(String),
}

impl Target<'_> {
    fn args(&self) -> Vec<String> {
        let mut a = vec!["--embedder".to_string(), "hash".to_string()];
        match self {
            Target::Embedded(data, _, layout) => {
                a.extend([
                    "--layout".into(),
                    layout.to_string(),
                    "--data-dir".into(),
                    data.display().to_string(),
                ]);
            }
            Target::Postgres(url) => a.extend(["--database-url".into(), url.clone()]),
        }
        a
    }

    async fn memory(&self) -> Memory {
        match self {
            Target::Embedded(data, layout, _) => Memory::open(MemoryConfig::new(
                StoreConfig::embedded(data, *layout),
                EmbedderConfig::Hash { dimensions: 384 },
            ))
            .await
            .unwrap(),
            Target::Postgres(url) => {
                let store = enclave_postgres::PgStore::connect(url, 384, 4)
                    .await
                    .unwrap();
                Memory::from_parts(
                    std::sync::Arc::new(store),
                    std::sync::Arc::new(enclave::embed::HashEmbedder::new(384)),
                    Default::default(),
                    0,
                )
            }
        }
    }
}

fn count_documents(target: &Target<'_>) -> u64 {
    let out = Command::new(env!("CARGO_BIN_EXE_enclave"))
        .args(target.args())
        .args(["stats", "--tenant", "crash", "--json"])
        .output()
        .unwrap();
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .map(|v| v["document_count"].as_u64().unwrap_or(0))
        .unwrap_or(0)
}

async fn check(target: Target<'_>) -> u64 {
    let corpus = tempfile::tempdir().unwrap();
    write_corpus(corpus.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_enclave"))
        .args(target.args())
        .args(["ingest", "--tenant", "crash", "--jobs", "4"])
        .arg(corpus.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Let it commit some documents, then kill it mid-stream.
    let deadline = Instant::now() + Duration::from_secs(120);
    while count_documents(&target) < 10 {
        assert!(Instant::now() < deadline, "ingest made no progress");
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            panic!("ingest ended ({status}) before it could be killed: {err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let memory = target.memory().await;
    let t = memory.tenant(&TenantId::parse("crash").unwrap());
    // PostgreSQL may still commit a transaction whose COMMIT it received
    // just before the client died: read once the store has settled.
    let stats = loop {
        let before = t.statistics().await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = t.statistics().await.unwrap();
        if (before.document_count, before.chunk_count) == (after.document_count, after.chunk_count)
        {
            break after;
        }
    };
    assert!(
        stats.document_count >= 10 && (stats.document_count as usize) < DOCS,
        "killed mid-ingest: {stats:?}"
    );
    let mut total_chunks = 0;
    let mut cursor = None;
    loop {
        let page = t
            .list_documents(ListParams {
                limit: Some(100),
                cursor,
                ..Default::default()
            })
            .await
            .unwrap();
        for info in &page.documents {
            let doc = t.get_document(&info.document_id, true).await.unwrap();
            let chunks = doc.chunks.unwrap();
            assert!(info.chunk_count > 10);
            assert_eq!(
                chunks.len() as u64,
                info.chunk_count,
                "{}: every chunk of a committed document is there",
                info.name
            );
            let marker = chunks[0]
                .content
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned();
            let hits = t
                .search(
                    SearchParams::new(marker.clone())
                        .mode(SearchMode::Text)
                        .limit(100),
                )
                .await
                .unwrap();
            assert_eq!(
                hits.results.len() as u64,
                info.chunk_count,
                "{marker}: every chunk is in the text index"
            );
            assert!(hits
                .results
                .iter()
                .all(|h| h.document_id == info.document_id));
            total_chunks += chunks.len() as u64;
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(total_chunks, stats.chunk_count);
    stats.chunk_count
}

/// No orphans in the file: chunks, vectors and text rows all belong to a
/// committed document, and SQLite finds the file intact.
fn check_sqlite_file(data: &Path, layout: Layout, chunk_count: u64) {
    let file = match layout {
        Layout::SharedFile => data.join("enclave.sqlite"),
        _ => enclave_store::sqlite::SqliteStore::tenant_file(
            data,
            &TenantId::parse("crash").unwrap(),
        ),
    };
    let conn = rusqlite::Connection::open(file).unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let q = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!(q("SELECT COUNT(*) FROM chunks WHERE document_id NOT IN (SELECT document_id FROM documents)"), 0);
    assert_eq!(q("SELECT COUNT(*) FROM vectors"), chunk_count as i64);
    assert_eq!(
        q("SELECT COUNT(*) FROM chunks WHERE kind = 0"),
        chunk_count as i64
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_ingest_leaves_only_whole_documents_shared_file() {
    let data = tempfile::tempdir().unwrap();
    let chunks = check(Target::Embedded(data.path(), Layout::SharedFile, "shared")).await;
    check_sqlite_file(data.path(), Layout::SharedFile, chunks);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_ingest_leaves_only_whole_documents_file_per_tenant() {
    let data = tempfile::tempdir().unwrap();
    let chunks = check(Target::Embedded(
        data.path(),
        Layout::FilePerTenant,
        "per-tenant",
    ))
    .await;
    check_sqlite_file(data.path(), Layout::FilePerTenant, chunks);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_ingest_leaves_only_whole_documents_postgres() {
    let admin_url = std::env::var("ENCLAVE_TEST_DATABASE_URL")
        .expect("run through scripts/test, which starts PostgreSQL");
    let (scratch, app) = enclave_postgres::scratch::ScratchDatabase::migrated(&admin_url)
        .await
        .unwrap();
    let chunks = check(Target::Postgres(scratch.url_as(&app))).await;
    // Seen by the superuser (no row-level security): nothing but whole documents.
    let su = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(scratch.superuser.clone())
        .await
        .unwrap();
    let orphans: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM chunks c WHERE NOT EXISTS \
         (SELECT 1 FROM documents d WHERE d.tenant_id = c.tenant_id AND d.document_id = c.document_id)",
    )
    .fetch_one(&su)
    .await
    .unwrap();
    assert_eq!(orphans, 0);
    let mismatched: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM documents d WHERE chunk_count <> \
         (SELECT COUNT(*) FROM chunks c WHERE c.tenant_id = d.tenant_id AND c.document_id = d.document_id AND c.kind = 0 AND c.embedding IS NOT NULL)",
    )
    .fetch_one(&su)
    .await
    .unwrap();
    assert_eq!(mismatched, 0, "a document with missing chunks or vectors");
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM chunks WHERE kind = 0")
        .fetch_one(&su)
        .await
        .unwrap();
    assert_eq!(total as u64, chunks);
}
