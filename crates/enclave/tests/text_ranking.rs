//! Full-text search has one semantics on every store: the same terms
//! (stemmed, without stop words), BM25 over the tenant's own statistics,
//! and pruning that never leaves a query with nothing to match — and so
//! do what is built on it: hybrid search's convex fusion (each candidate
//! scored on both lists) and pseudo-relevance feedback.

mod common;

use common::{backends, text_doc};
use enclave::core::{Prf, SearchMode, SearchParams};

async fn text_hits(t: &enclave::Tenant, query: &str) -> Vec<(String, f64)> {
    t.search(SearchParams::new(query).mode(SearchMode::Text).limit(10))
        .await
        .unwrap()
        .results
        .into_iter()
        .map(|h| {
            (
                h.document_name,
                h.text_score.expect("a text hit has a text score"),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_one_document_tenant_finds_its_document_by_the_word_it_holds() {
    for b in backends().await {
        let t = b.tenant("refunds").await;
        t.add_document(text_doc(
            "refunds.md",
            "# Refunds\nRefunds are paid within 5 days.",
        ))
        .await
        .unwrap();
        // Only "refunds" occurs, and in every chunk; "long" and "take"
        // occur nowhere.
        let hits = text_hits(&t, "how long do refunds take").await;
        assert_eq!(hits.len(), 1, "{}: {hits:?}", b.name);
        assert_eq!(hits[0].0, "refunds.md", "{}", b.name);
        // Stemming: another form of the word finds it too.
        let hits = text_hits(&t, "refunded").await;
        assert_eq!(hits.len(), 1, "{}: {hits:?}", b.name);
    }
}

#[tokio::test]
async fn a_rare_query_word_outranks_a_word_every_document_holds() {
    for b in backends().await {
        let t = b.tenant("reports").await;
        for i in 0..12 {
            t.add_document(text_doc(
                &format!("report-{i}.txt"),
                &format!("Report {i}: the report of the report desk, report after report."),
            ))
            .await
            .unwrap();
        }
        t.add_document(text_doc(
            "zeppelin.txt",
            "A note on the zeppelin hangar at the old airfield, and a report on its roof.",
        ))
        .await
        .unwrap();
        let hits = text_hits(&t, "report zeppelin").await;
        assert_eq!(
            hits.first().map(|h| h.0.as_str()),
            Some("zeppelin.txt"),
            "{}: {hits:?}",
            b.name
        );
    }
}

/// A fixed corpus: support articles with overlapping vocabulary.
const CORPUS: &[&str] = &[
    "Refunds are paid to the card you used within five business days of the return.",
    "Returns are free within thirty days; print the label from your order page.",
    "Orders ship from our warehouse in Tucson and arrive in three to five days.",
    "To change a delivery address, edit the order before it leaves the warehouse.",
    "Gift cards never expire and can be combined with discount codes at checkout.",
    "You can pay with a credit card, PayPal or a bank transfer; cards are charged at shipping.",
    "Damaged parcels should be photographed and reported within 48 hours of delivery.",
    "Our support team answers chat messages from 8am to 8pm, and email within a day.",
    "Reset your password from the login page; the reset link expires after one hour.",
    "Bulk orders of more than fifty kits qualify for a fifteen percent discount.",
    "Invoices are emailed as PDF files on the first day of each month.",
    "Cancel a subscription from the billing page; it stays active until the period ends.",
    "Store credit from a promotion is added to your account balance automatically.",
    "If a payment fails we retry the charge after three days and email you about it.",
    "Price changes are announced thirty days in advance by email to every subscriber.",
    "Exchanges for a different size are free if the item is unused and in its box.",
    "Your order history lists every purchase with its receipt and its invoice.",
    "Shipping to Canada and Mexico takes seven to ten days and costs a flat fee.",
    "Express shipping arrives the next business day when ordered before noon.",
    "Refund requests for digital downloads are reviewed by the support team.",
    "A subscription renews every month; the renewal email arrives three days before.",
    "Delivery drivers leave parcels at the door unless a signature was requested.",
    "Payments in euros and pounds are converted at the daily bank rate.",
    "The warehouse is closed on public holidays; orders placed then ship the next day.",
];

const QUERIES: &[&str] = &[
    "how long do refunds take",
    "free returns label",
    "warehouse shipping days",
    "change delivery address",
    "discount codes gift cards",
    "payment failed retry",
    "subscription renewal email",
    "password reset link expired",
    "damaged parcel photo",
    "invoice pdf every month",
    "express shipping next day",
    "card charged when",
];

/// One query's hits: document name and score, best first.
type Ranked = Vec<(String, f64)>;

/// The searches every store must answer alike: text, text with feedback,
/// and hybrid with the default (convex) fusion.
fn variants(q: &str) -> Vec<(&'static str, SearchParams)> {
    let mut prf = SearchParams::new(q).mode(SearchMode::Text).limit(10);
    prf.prf = Some(Prf {
        chunks: 3,
        terms: 5,
        weight: 0.5,
    });
    vec![
        (
            "text",
            SearchParams::new(q).mode(SearchMode::Text).limit(10),
        ),
        ("text+prf", prf),
        (
            "hybrid",
            SearchParams::new(q).mode(SearchMode::Hybrid).limit(10),
        ),
    ]
}

#[tokio::test]
async fn every_store_ranks_a_fixed_corpus_alike() {
    let mut reference: Option<(&str, Vec<Ranked>)> = None;
    for b in backends().await {
        let t = b.tenant("kb").await;
        for (i, text) in CORPUS.iter().enumerate() {
            t.add_document(text_doc(&format!("kb-{i:02}"), text))
                .await
                .unwrap();
        }
        let mut ranked = Vec::new();
        let mut labels = Vec::new();
        for q in QUERIES {
            for (variant, params) in variants(q) {
                let found = t.search(params).await.unwrap();
                let mut hits: Ranked = found
                    .results
                    .iter()
                    .map(|h| (h.document_name.clone(), h.score))
                    .collect();
                assert!(
                    !hits.is_empty(),
                    "{}: {variant} {q:?} found nothing",
                    b.name
                );
                if variant == "hybrid" {
                    // Convex fusion scores every hit on both lists.
                    assert!(found.results.iter().all(|h| h.vector_score.is_some()));
                    assert!(found.results.iter().any(|h| h.text_score.is_some()));
                }
                // Up to ties: equal scores in name order.
                hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                ranked.push(hits);
                labels.push(format!("{variant} {q:?}"));
            }
        }
        match &reference {
            None => reference = Some((b.name, ranked)),
            Some((first, expected)) => {
                for (label, (want, got)) in labels.iter().zip(expected.iter().zip(&ranked)) {
                    let names =
                        |v: &[(String, f64)]| v.iter().map(|h| h.0.clone()).collect::<Vec<_>>();
                    assert_eq!(
                        names(got),
                        names(want),
                        "{label}: {} ranks otherwise than {first}",
                        b.name
                    );
                    for (g, w) in got.iter().zip(want) {
                        assert!(
                            (g.1 - w.1).abs() < 1e-6 * w.1.abs().max(1.0),
                            "{label}: {} scores {} {} where {first} scores {}",
                            b.name,
                            g.0,
                            g.1,
                            w.1
                        );
                    }
                }
            }
        }
    }
}

#[tokio::test]
async fn feedback_finds_a_chunk_that_shares_no_word_with_the_query() {
    for b in backends().await {
        let t = b.tenant("kb").await;
        for (name, text) in [
            (
                "refund-a",
                "Refunds go back to the original card within five days.",
            ),
            (
                "refund-b",
                "A refund is issued to the original card once the parcel is scanned.",
            ),
            (
                "chargeback",
                "Chargebacks on the original card are settled by the issuing bank.",
            ),
            ("warehouse", "The warehouse ships parcels on weekdays."),
            ("wrapping", "Gift wrapping costs extra at checkout."),
            ("password", "Reset a password from the login page."),
        ] {
            t.add_document(text_doc(name, text)).await.unwrap();
        }
        // "refund" finds the two refund documents only; they share
        // "original" and "card", which the chargeback document holds too.
        let plain = text_hits(&t, "refund").await;
        let plain_names: Vec<&str> = plain.iter().map(|h| h.0.as_str()).collect();
        assert_eq!(plain.len(), 2, "{}: {plain_names:?}", b.name);
        let mut params = SearchParams::new("refund").mode(SearchMode::Text).limit(10);
        params.prf = Some(Prf {
            chunks: 2,
            terms: 4,
            weight: 0.5,
        });
        let fed = t.search(params).await.unwrap().results;
        let names: Vec<&str> = fed.iter().map(|h| h.document_name.as_str()).collect();
        assert!(names.contains(&"chargeback"), "{}: {names:?}", b.name);
        // The query's own matches still come first.
        assert!(plain_names.contains(&names[0]), "{}: {names:?}", b.name);
        assert!(plain_names.contains(&names[1]), "{}: {names:?}", b.name);
    }
}

/// PostgreSQL reads the postings of a query's rarest terms only (within a
/// budget), then completes the ranking MaxScore's way: the chunks holding
/// none of those but enough of the common terms to beat the k-th score
/// found are scored too. Here the budget leaves every common word out,
/// and the best chunks hold only common words, many times.
#[tokio::test]
async fn a_budgeted_text_search_ranks_as_scoring_every_matching_chunk() {
    use common::{open_postgres_with, PgMode};
    use enclave_postgres::PgOptions;
    let mut docs = Vec::new();
    for i in 0..600 {
        let words = if i < 60 {
            "zeppelin zeppelin zeppelin"
        } else {
            ["report", "desk", "airfield", "hangar"][i % 4]
        };
        docs.push(text_doc(
            &format!("entry-{i}.txt"),
            &format!("Entry {i} of the logbook: {words}."),
        ));
    }
    for i in 0..3 {
        docs.push(text_doc(
            &format!("special-{i}.txt"),
            "Report desk airfield; report desk airfield; report desk airfield, report desk airfield.",
        ));
    }
    let mut rankings = Vec::new();
    for (exhaustive_text, budget) in [(true, 4_000), (false, 1)] {
        let options = PgOptions {
            max_connections: 4,
            tenant_pool_connections: 2,
            exhaustive_text,
            text_postings_budget: budget,
            ..PgOptions::default()
        };
        let b = open_postgres_with(
            std::sync::Arc::new(enclave::embed::HashEmbedder::new(384)),
            PgMode::Shared,
            options,
        )
        .await;
        let t = b.tenant("logbook").await;
        for batch in docs.chunks(100) {
            t.add_documents(batch.to_vec()).await.unwrap();
        }
        rankings.push(text_hits(&t, "zeppelin report desk airfield").await);
    }
    // The chunks of common words only are the best three, on both; the
    // rest tie (sixty zeppelin entries), so the scores are compared.
    for r in &rankings {
        let mut first: Vec<&str> = r.iter().take(3).map(|h| h.0.as_str()).collect();
        first.sort();
        assert_eq!(
            first,
            ["special-0.txt", "special-1.txt", "special-2.txt"],
            "{r:?}"
        );
    }
    assert_eq!(rankings[1].len(), rankings[0].len());
    for (a, b) in rankings[1].iter().zip(&rankings[0]) {
        assert!((a.1 - b.1).abs() < 1e-9, "{a:?} vs {b:?}");
    }
}
