//! Behaviour every backend must show, run against each one from one source.

mod common;

use common::{backends, tenant, text_doc};
use enclave::core::{
    ChunkStrategy, ChunkingOptions, DocumentBody, DocumentId, DocumentPatch, DocumentType,
    NewDocument, Origin, ProvidedChunk, SearchMode, SearchParams,
};
use enclave::{AddOutcome, Error, ListParams, WriteBudget};
use futures::TryStreamExt;
use serde_json::json;

#[tokio::test]
async fn documents_roundtrip_through_add_get_update_delete() {
    for b in backends().await {
        let t = b.tenant("acme").await;
        let doc = text_doc(
            "notes.txt",
            "Quarterly revenue grew twelve percent.\n\nCosts stayed flat.",
        )
        .with_origin(Origin::parse("user-1").unwrap())
        .with_metadata(json!({"year": 2025, "quarter": "Q4"}));
        let added = t.add_document(doc).await.unwrap();
        assert_eq!(added.outcome, AddOutcome::Created, "{}", b.name);
        assert!(added.chunks_created >= 1);
        assert!(added.tokens_embedded > 0);

        let got = t.get_document(&added.document_id, true).await.unwrap();
        assert_eq!(got.info.name, "notes.txt");
        assert_eq!(got.info.origin.as_ref().unwrap().as_str(), "user-1");
        assert_eq!(got.info.metadata["year"], 2025);
        let chunks = got.chunks.unwrap();
        assert_eq!(chunks.len() as u64, got.info.chunk_count);
        assert!(chunks
            .iter()
            .any(|c| c.content.contains("Quarterly revenue")));

        let patched = t
            .update_document(
                &added.document_id,
                DocumentPatch {
                    name: Some("renamed.txt".into()),
                    metadata: Some(json!({"year": 2026}).as_object().unwrap().clone()),
                },
            )
            .await
            .unwrap();
        assert_eq!(patched.name, "renamed.txt");
        assert_eq!(
            patched.metadata,
            *json!({"year": 2026}).as_object().unwrap()
        );
        assert!(patched.updated_at >= patched.created_at);

        t.delete_document(&added.document_id).await.unwrap();
        assert!(matches!(
            t.get_document(&added.document_id, false).await,
            Err(Error::NotFound)
        ));
        assert!(matches!(
            t.delete_document(&added.document_id).await,
            Err(Error::NotFound)
        ));
        let hits = t
            .search(SearchParams::new("quarterly revenue").mode(SearchMode::Text))
            .await
            .unwrap();
        assert!(
            hits.results.is_empty(),
            "{}: deleted chunks are not searchable",
            b.name
        );
        assert_eq!(t.statistics().await.unwrap().document_count, 0);
    }
}

#[tokio::test]
async fn a_batch_of_documents_lands_whole_or_not_at_all() {
    for b in backends().await {
        let t = b.tenant("acme").await;
        t.add_document(text_doc("old.txt", "first version about invoices"))
            .await
            .unwrap();
        // A bad document anywhere rejects the batch before anything is written.
        let err = t
            .add_documents(vec![
                text_doc("a.txt", "alpha ledger"),
                text_doc("b.txt", "beta ledger"),
                text_doc("c.txt", "   "),
            ])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Invalid(e) if e.field == "documents[2].content"),
            "{}: {err:?}",
            b.name
        );
        assert_eq!(
            t.statistics().await.unwrap().document_count,
            1,
            "{}",
            b.name
        );

        let results = t
            .add_documents(vec![
                text_doc("a.txt", "alpha ledger"),
                text_doc("old.txt", "second version about refunds"),
                text_doc("b.txt", "beta ledger"),
                text_doc("a.txt", "alpha ledger, corrected"),
            ])
            .await
            .unwrap();
        let outcomes: Vec<AddOutcome> = results.iter().map(|r| r.outcome).collect();
        assert_eq!(
            outcomes,
            [
                AddOutcome::Created,
                AddOutcome::Replaced,
                AddOutcome::Created,
                AddOutcome::Replaced
            ],
            "{}",
            b.name
        );
        assert_eq!(results[0].document_id, results[3].document_id);
        let docs: Vec<_> = t.export().try_collect().await.unwrap();
        assert_eq!(docs.len(), 3, "{}", b.name);
        let a = docs.iter().find(|d| d.info.name == "a.txt").unwrap();
        assert_eq!(
            a.chunks.len(),
            1,
            "{}: the replaced version left no chunks",
            b.name
        );
        assert_eq!(a.chunks[0].chunk.content, "alpha ledger, corrected");
        let hits = t
            .search(SearchParams::new("refunds").mode(SearchMode::Text))
            .await
            .unwrap();
        assert_eq!(hits.results.len(), 1, "{}", b.name);
        assert_eq!(hits.results[0].document_name, "old.txt");
    }
}

#[tokio::test]
async fn re_adding_the_same_identity_reindexes_in_place() {
    for b in backends().await {
        let t = b.tenant("acme").await;
        let first = t
            .add_document(text_doc("a.txt", "alpha beta gamma"))
            .await
            .unwrap();
        let same = t
            .add_document(text_doc("a.txt", "alpha beta gamma").with_metadata(json!({"v": 2})))
            .await
            .unwrap();
        assert_eq!(same.document_id, first.document_id);
        assert_eq!(same.outcome, AddOutcome::Unchanged, "{}", b.name);
        assert_eq!(same.tokens_embedded, 0);
        assert_eq!(
            t.get_document(&first.document_id, false)
                .await
                .unwrap()
                .info
                .metadata["v"],
            2
        );

        let changed = t
            .add_document(text_doc("a.txt", "delta epsilon"))
            .await
            .unwrap();
        assert_eq!(changed.document_id, first.document_id);
        assert_eq!(changed.outcome, AddOutcome::Replaced);
        let old = t
            .search(SearchParams::new("gamma").mode(SearchMode::Text))
            .await
            .unwrap();
        assert!(old.results.is_empty(), "{}: old chunks are gone", b.name);
        let new = t
            .search(SearchParams::new("epsilon").mode(SearchMode::Text))
            .await
            .unwrap();
        assert_eq!(new.results.len(), 1);
        assert_eq!(t.statistics().await.unwrap().document_count, 1);

        // Same name in another origin, or with an external id, is another document.
        let other = t
            .add_document(text_doc("a.txt", "x").with_origin(Origin::parse("o2").unwrap()))
            .await
            .unwrap();
        assert_ne!(other.document_id, first.document_id);
        let ext1 = t
            .add_document(text_doc("b.txt", "one").with_external_id("crm-1"))
            .await
            .unwrap();
        let ext2 = t
            .add_document(text_doc("renamed-b.txt", "two").with_external_id("crm-1"))
            .await
            .unwrap();
        assert_eq!(ext1.document_id, ext2.document_id);
        assert_eq!(
            t.get_document(&ext1.document_id, false)
                .await
                .unwrap()
                .info
                .name,
            "renamed-b.txt"
        );
    }
}

#[tokio::test]
async fn a_foreign_document_id_behaves_exactly_like_a_missing_one() {
    for b in backends().await {
        let a = b.tenant("tenant-a").await;
        let other = b.tenant("tenant-b").await;
        let doc = a
            .add_document(text_doc("secret.txt", "the launch code is swordfish"))
            .await
            .unwrap();
        let missing = DocumentId::new();
        for id in [doc.document_id, missing] {
            let get = other.get_document(&id, true).await.unwrap_err();
            assert!(matches!(get, Error::NotFound), "{}: {get:?}", b.name);
            assert_eq!(get.to_string(), "not found");
            assert!(matches!(
                other
                    .update_document(
                        &id,
                        DocumentPatch {
                            name: Some("x".into()),
                            metadata: None
                        }
                    )
                    .await,
                Err(Error::NotFound)
            ));
            assert!(matches!(
                other.delete_document(&id).await,
                Err(Error::NotFound)
            ));
            assert_eq!(other.delete_documents(&[id]).await.unwrap(), 0);
        }
        // Still intact for its owner.
        assert_eq!(
            a.get_document(&doc.document_id, false)
                .await
                .unwrap()
                .info
                .name,
            "secret.txt"
        );
        for mode in [SearchMode::Text, SearchMode::Vector, SearchMode::Hybrid] {
            let hits = other
                .search(SearchParams::new("launch code swordfish").mode(mode))
                .await
                .unwrap();
            assert!(hits.results.is_empty(), "{} {mode:?}", b.name);
        }
    }
}

#[tokio::test]
async fn search_filters_agree_with_the_reference_evaluator() {
    for b in backends().await {
        let t = b.tenant("acme").await;
        let metas = [
            json!({"year": 2024, "quarter": "Q4", "tags": {"team": "sales"}}),
            json!({"year": 2025, "quarter": "Q1"}),
            json!({"year": 2025, "quarter": "Q3", "draft": true}),
            json!({"year": "2025", "quarter": "Q4"}),
            json!({"quarter": "Q2", "score": 4.5}),
        ];
        let mut infos = Vec::new();
        for (i, m) in metas.iter().enumerate() {
            let doc = NewDocument::text(
                format!("r{i}.md"),
                if i % 2 == 0 {
                    DocumentType::Report
                } else {
                    DocumentType::Markdown
                },
                format!("revenue report number {i}"),
            )
            .with_origin(Origin::parse(if i < 3 { "east" } else { "west" }).unwrap())
            .with_metadata(m.clone());
            let id = t.add_document(doc).await.unwrap().document_id;
            infos.push(t.get_document(&id, false).await.unwrap().info);
        }
        let filters = [
            json!({"year": 2025}),
            json!({"year": {"$gte": 2025}}),
            json!({"quarter": {"$in": ["Q3", "Q4"]}}),
            json!({"year": {"$ne": 2025}}),
            json!({"draft": {"$exists": true}}),
            json!({"draft": {"$exists": false}, "year": {"$lt": 2026}}),
            json!({"tags": {"team": "sales"}}),
            json!({"tags.team": {"$ne": "sales"}}),
            json!({"score": {"$gt": 4, "$lte": 4.5}}),
            json!({"quarter": {"$gt": "Q2"}}),
            json!({"draft": true}),
            json!({"draft": {"$ne": false}}),
        ];
        for f in filters {
            let parsed = enclave::core::MetadataFilter::parse(&f).unwrap();
            let mut want: Vec<String> = infos
                .iter()
                .filter(|d| parsed.matches(&d.metadata))
                .map(|d| d.name.clone())
                .collect();
            want.sort();
            for mode in [SearchMode::Text, SearchMode::Vector, SearchMode::Hybrid] {
                let mut p = SearchParams::new("revenue report").mode(mode).limit(50);
                p.metadata = f.clone();
                let mut got: Vec<String> = t
                    .search(p)
                    .await
                    .unwrap()
                    .results
                    .into_iter()
                    .map(|h| h.document_name)
                    .collect();
                got.sort();
                got.dedup();
                assert_eq!(got, want, "{} {mode:?} filter {f}", b.name);
            }
            let listed = t
                .list_documents(ListParams {
                    metadata: Some(f.clone()),
                    limit: Some(100),
                    ..Default::default()
                })
                .await
                .unwrap();
            let mut got: Vec<String> = listed.documents.into_iter().map(|d| d.name).collect();
            got.sort();
            assert_eq!(got, want, "{} list filter {f}", b.name);
            assert_eq!(listed.total as usize, want.len());
        }
        let mut p = SearchParams::new("revenue").limit(50);
        p.origins = vec!["west".into()];
        p.types = vec!["markdown".into()];
        let got: Vec<String> = t
            .search(p)
            .await
            .unwrap()
            .results
            .into_iter()
            .map(|h| h.document_name)
            .collect();
        assert_eq!(got, ["r3.md"], "{}", b.name);
    }
}

#[tokio::test]
async fn cursor_pagination_visits_every_document_once_newest_first() {
    for b in backends().await {
        let t = b.tenant("acme").await;
        for i in 0..23 {
            t.add_document(text_doc(&format!("d{i:02}"), &format!("document {i}")))
                .await
                .unwrap();
        }
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = t
                .list_documents(ListParams {
                    limit: Some(5),
                    cursor: cursor.clone(),
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(page.total, 23);
            seen.extend(page.documents.iter().map(|d| d.name.clone()));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let want: Vec<String> = (0..23).rev().map(|i| format!("d{i:02}")).collect();
        assert_eq!(seen, want, "{}", b.name);
        let offset = t
            .list_documents(ListParams {
                limit: Some(3),
                offset: Some(20),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            offset
                .documents
                .iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>(),
            ["d02", "d01", "d00"]
        );
        let bad = t
            .list_documents(ListParams {
                cursor: Some("garbage".into()),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(
            matches!(&bad, Error::Invalid(e) if e.field == "cursor"),
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn statistics_and_export_cover_exactly_the_tenants_documents() {
    for b in backends().await {
        let t = b.tenant("acme").await;
        t.add_document(NewDocument::text(
            "a.md",
            DocumentType::Markdown,
            "# A\n\nalpha text",
        ))
        .await
        .unwrap();
        t.add_document(NewDocument::text(
            "b.md",
            DocumentType::Markdown,
            "# B\n\nbeta text",
        ))
        .await
        .unwrap();
        t.add_document(NewDocument::text("c.pdf", DocumentType::Pdf, "gamma text"))
            .await
            .unwrap();
        b.tenant("other")
            .await
            .add_document(text_doc("x", "other tenant"))
            .await
            .unwrap();
        let s = t.statistics().await.unwrap();
        assert_eq!(s.document_count, 3, "{}", b.name);
        assert_eq!(s.by_type.get("markdown"), Some(&2));
        assert_eq!(s.by_type.get("pdf"), Some(&1));
        assert!(s.total_size_bytes > 0 && s.chunk_count >= 3);
        let exported: Vec<_> = t.export().try_collect().await.unwrap();
        let mut names: Vec<_> = exported.iter().map(|d| d.info.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["a.md", "b.md", "c.pdf"]);
        for d in &exported {
            assert_eq!(d.chunks.len() as u64, d.info.chunk_count);
            assert!(d.chunks.iter().all(|c| c.embedding.len() == 384));
        }
    }
}

#[tokio::test]
async fn hierarchical_chunks_return_their_parent_section() {
    for b in backends().await {
        let t = b.tenant("acme").await;
        let body = "# Handbook\n\n## Travel\n\nBook flights through the portal. Economy class for trips under six hours. \
                    Hotels up to the city rate. Receipts within thirty days.\n\n## Equipment\n\nLaptops are replaced every three years.";
        let mut doc = NewDocument::text("handbook.md", DocumentType::Markdown, body);
        doc.chunking = ChunkingOptions {
            strategy: ChunkStrategy::Hierarchical,
            max_tokens: 16,
            overlap_tokens: 0,
        };
        t.add_document(doc).await.unwrap();
        let hits = t
            .search(SearchParams::new("receipts thirty days").mode(SearchMode::Text))
            .await
            .unwrap();
        let top = &hits.results[0];
        assert!(top.content.contains("Receipts"), "{}", b.name);
        let parent = top.parent_content.as_deref().expect("parent section");
        assert!(parent.contains("Book flights") || parent.contains("Receipts"));
        assert!(!parent.contains("Laptops"), "parent stops at its section");
    }
}

#[tokio::test]
async fn precomputed_vectors_are_accepted_and_checked() {
    for b in backends().await {
        let t = b.tenant("acme").await;
        let mut v = vec![0.0f32; 384];
        v[7] = 2.0;
        let mut doc = text_doc("pre", "");
        doc.body = DocumentBody::Chunks(vec![ProvidedChunk {
            content: "precomputed chunk".into(),
            embedding: v.clone(),
        }]);
        let added = t.add_document(doc).await.unwrap();
        assert_eq!(added.tokens_embedded, 0);
        let exported: Vec<_> = t.export().try_collect().await.unwrap();
        assert!(
            (exported[0].chunks[0].embedding[7] - 1.0).abs() < 1e-6,
            "normalised"
        );

        let mut bad = text_doc("bad", "");
        bad.body = DocumentBody::Chunks(vec![ProvidedChunk {
            content: "x".into(),
            embedding: vec![1.0; 3],
        }]);
        let err = t.add_document(bad).await.unwrap_err();
        assert!(
            matches!(&err, Error::Invalid(e) if e.field == "chunks[0].embedding"),
            "{}: {err:?}",
            b.name
        );
    }
}

#[tokio::test]
async fn bad_input_gets_a_typed_error_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = enclave::MemoryConfig::new(
        enclave::StoreConfig::embedded(dir.path(), enclave::Layout::SharedFile),
        enclave::EmbedderConfig::Hash { dimensions: 384 },
    );
    cfg.limits.max_document_bytes = 1000;
    let memory = enclave::Memory::open(cfg).await.unwrap();
    let t = memory.tenant(&tenant("acme"));

    assert_eq!(
        enclave::core::TenantId::parse("bad tenant!")
            .unwrap_err()
            .field,
        "tenant_id"
    );
    assert_eq!(DocumentId::parse("123").unwrap_err().field, "document_id");

    let err = t.search(SearchParams::new("  ")).await.unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(e) if e.field == "query"),
        "{err:?}"
    );

    let err = t
        .add_document(text_doc("big", &"x ".repeat(600)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooLarge {
                what: "content",
                actual: 1200,
                limit: 1000
            }
        ),
        "{err:?}"
    );

    let mut p = SearchParams::new("q");
    p.metadata = json!({"year": {"$regex": ".*"}});
    let err = t.search(p).await.unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(e) if e.field == "metadata.year" && e.message.contains("$regex")),
        "{err:?}"
    );

    for (doc, field) in [
        (text_doc("", "x"), "name"),
        (text_doc("n", "   "), "content"),
        (text_doc("n", "x").with_external_id(""), "external_id"),
    ] {
        let err = t.add_document(doc).await.unwrap_err();
        assert!(
            matches!(&err, Error::Invalid(e) if e.field == field),
            "{field}: {err:?}"
        );
    }
    let mut doc = text_doc("n", "x");
    doc.chunking.max_tokens = 4;
    let err = t.add_document(doc).await.unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(e) if e.field == "chunking.max_tokens"),
        "{err:?}"
    );
    let deep = json!({"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}});
    let err = t
        .add_document(text_doc("n", "x").with_metadata(deep))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(e) if e.field == "metadata"),
        "{err:?}"
    );
    // Nothing was stored by any of the refused calls.
    assert_eq!(t.statistics().await.unwrap().document_count, 0);
}

#[tokio::test]
async fn conversation_messages_are_numbered_per_session_and_scoped_to_the_tenant() {
    use enclave::core::{MessageRole, NewMessage, SessionId};
    let msg = |content: &str| NewMessage {
        role: MessageRole::User,
        content: content.into(),
        origin: None,
        metadata: Default::default(),
    };
    for b in backends().await {
        let acme = b.tenant("acme").await;
        let globex = b.tenant("globex").await;
        let s = SessionId::parse("thread-1").unwrap();
        for i in 1..=5 {
            let m = acme
                .add_message(&s, msg(&format!("acme {i}")))
                .await
                .unwrap();
            assert_eq!(m.seq, i, "{}", b.name);
        }
        // The same session id in another tenant is another session.
        let g = globex.add_message(&s, msg("globex 1")).await.unwrap();
        assert_eq!(g.seq, 1, "{}", b.name);

        let all = acme.messages(&s, None, 50).await.unwrap();
        let texts: Vec<&str> = all.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(
            texts,
            ["acme 1", "acme 2", "acme 3", "acme 4", "acme 5"],
            "{}",
            b.name
        );
        let page = acme.messages(&s, Some(4), 2).await.unwrap();
        let seqs: Vec<i64> = page.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [2, 3], "{}", b.name);
        assert_eq!(acme.message_count().await.unwrap(), 5);

        assert_eq!(globex.delete_session(&s).await.unwrap(), 1);
        assert!(matches!(
            globex.delete_session(&s).await,
            Err(Error::NotFound)
        ));
        assert_eq!(
            acme.messages(&s, None, 50).await.unwrap().len(),
            5,
            "{}",
            b.name
        );
        assert!(globex.messages(&s, None, 50).await.unwrap().is_empty());
        assert!(matches!(
            acme.messages(&s, None, 0).await,
            Err(Error::Invalid(_))
        ));

        let (docs, _, messages) = acme.delete_everything().await.unwrap();
        assert_eq!((docs, messages), (0, 5), "{}", b.name);
        assert_eq!(acme.message_count().await.unwrap(), 0);
    }
}

#[tokio::test]
async fn a_batch_over_its_write_budget_is_refused_whole_before_anything_is_stored() {
    for b in backends().await {
        let t = b.tenant("acme").await;
        t.add_document(text_doc("kept.txt", "already here"))
            .await
            .unwrap();
        let batch = || {
            vec![
                text_doc("kept.txt", "already here, re-indexed"),
                text_doc("new-1.txt", "one new document"),
                text_doc("new-2.txt", "another new document"),
            ]
        };
        // Two new documents against a budget of one: the whole call fails.
        let err = t
            .add_documents_within(
                batch(),
                WriteBudget {
                    documents: Some(1),
                    ..WriteBudget::default()
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::QuotaExceeded(m) if m.contains("max_documents")),
            "{}: {err:?}",
            b.name
        );
        let tokens_err = t
            .add_documents_within(
                batch(),
                WriteBudget {
                    embedding_tokens: Some(3),
                    ..WriteBudget::default()
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&tokens_err, Error::QuotaExceeded(m) if m.contains("embedding_tokens")),
            "{}: {tokens_err:?}",
            b.name
        );
        let s = t.statistics().await.unwrap();
        assert_eq!(s.document_count, 1, "{}", b.name);
        let kept = t.list_documents(Default::default()).await.unwrap();
        assert_eq!(kept.documents[0].name, "kept.txt");
        // The re-index costs no document: a budget of two fits the batch.
        let done = t
            .add_documents_within(
                batch(),
                WriteBudget {
                    documents: Some(2),
                    ..WriteBudget::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(done.len(), 3, "{}", b.name);
        assert_eq!(t.statistics().await.unwrap().document_count, 3);
    }
}

/// Export holds a page of chunks at a time, never a whole document (security
/// review finding 7: a page of 64 documents of 20,000 chunks each was ~2.3
/// GB): a 600-chunk document comes out in pages of at most
/// EXPORT_CHUNK_PAGE, and the NDJSON written from the pieces is exactly the
/// whole documents' lines.
#[tokio::test]
async fn export_streams_a_page_of_chunks_at_a_time_and_writes_the_same_lines() {
    use enclave::{ExportPiece, EXPORT_CHUNK_PAGE};
    for b in backends().await {
        let t = b.tenant("acme").await;
        let chunks: Vec<ProvidedChunk> = (0..600)
            .map(|i| {
                let mut embedding = vec![0.0f32; 384];
                embedding[i % 384] = 1.0;
                ProvidedChunk {
                    content: format!("chunk number {i}"),
                    embedding,
                }
            })
            .collect();
        let mut big = text_doc("big", "x");
        big.body = DocumentBody::Chunks(chunks);
        t.add_document(big).await.unwrap();
        t.add_document(text_doc("small", "one small document"))
            .await
            .unwrap();
        let pieces: Vec<ExportPiece> = t.export_pieces().try_collect().await.unwrap();
        let pages: Vec<usize> = pieces
            .iter()
            .filter_map(|p| match p {
                ExportPiece::Chunks(c) => Some(c.len()),
                _ => None,
            })
            .collect();
        assert!(
            pages.iter().all(|n| *n <= EXPORT_CHUNK_PAGE as usize),
            "{}: {pages:?}",
            b.name
        );
        assert_eq!(pages.iter().sum::<usize>(), 601, "{}", b.name);
        assert!(pages.len() >= 4, "{}: {pages:?}", b.name);
        let (mut first, mut streamed) = (true, Vec::new());
        for p in &pieces {
            p.write_ndjson(&mut first, &mut streamed).unwrap();
        }
        let whole: Vec<_> = t.export().try_collect().await.unwrap();
        let mut lines = Vec::new();
        for d in &whole {
            serde_json::to_writer(&mut lines, d).unwrap();
            lines.push(b'\n');
        }
        assert_eq!(
            String::from_utf8(streamed).unwrap(),
            String::from_utf8(lines).unwrap(),
            "{}",
            b.name
        );
        let big = whole.iter().find(|d| d.info.name == "big").unwrap();
        let idx: Vec<u32> = big.chunks.iter().map(|c| c.chunk.index).collect();
        assert_eq!(idx, (0..600).collect::<Vec<_>>(), "{}", b.name);
    }
}
