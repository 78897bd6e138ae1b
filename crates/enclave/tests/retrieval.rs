//! Retrieval quality with the real model (all-MiniLM-L6-v2): hybrid search
//! ranks the document that *means* the query above documents that merely
//! share its words.

mod common;

use common::{model_backends, model_dir, open, text_doc};
use enclave::core::{SearchMode, SearchParams};
use enclave::{EmbedderConfig, Layout};

const TARGET: &str = "Refunds: if you are not happy with a purchase, send it back within 30 days \
                      and we will return the full amount to the card you paid with.";
/// Share the query's words, not its meaning.
const DISTRACTORS: &[&str] = &[
    "The bus to get to the office leaves from the back of the station; the fare is little money.",
    "Get the latest release notes: the back end now caches money formatting for every locale.",
    "My team will get back to you about the conference schedule next week.",
    "Back up your laptop before you get the new operating system; money cannot buy lost files.",
];
/// The rest of a support knowledge base.
const OTHER: &[&str] = &[
    "Orders ship from our warehouse in Tucson Monday to Friday and arrive in three to five days.",
    "To change your delivery address, edit the order before it leaves the warehouse.",
    "Gift cards never expire and can be combined with discount codes at checkout.",
    "You can pay with a credit card, PayPal or a bank transfer.",
    "Damaged parcels should be photographed and reported within 48 hours of delivery.",
    "Our support team answers chat messages from 8am to 8pm Eastern time.",
    "Reset your password from the login page; the link expires after one hour.",
    "Bulk orders of more than 50 kits qualify for a 15 percent discount.",
    "Invoices are emailed as PDF files on the first day of each month.",
    "Cancel your subscription from the billing page; it stays active until the period ends.",
    "Store credit from a promotion is added to your account balance automatically.",
    "If a payment fails, we retry the charge after three days and email you.",
    "Price changes are announced thirty days in advance by email.",
    "Exchanges for a different size are free if the item is unused.",
    "Your order history lists every purchase with its receipt.",
    "We do not charge your card until the order ships.",
];

#[tokio::test]
async fn hybrid_search_ranks_a_paraphrase_above_keyword_only_distractors() {
    for b in model_backends().await {
        let t = b.tenant("acme").await;
        t.add_document(text_doc("refund-policy.txt", TARGET))
            .await
            .unwrap();
        for (i, d) in DISTRACTORS.iter().enumerate() {
            t.add_document(text_doc(&format!("distractor-{i}.txt"), d))
                .await
                .unwrap();
        }
        for (i, d) in OTHER.iter().enumerate() {
            t.add_document(text_doc(&format!("other-{i}.txt"), d))
                .await
                .unwrap();
        }
        // A second tenant holding the same target must not interfere.
        b.tenant("globex")
            .await
            .add_document(text_doc("refund-policy.txt", TARGET))
            .await
            .unwrap();

        let query = "how do I get my money back?";
        let text = t
            .search(SearchParams::new(query).mode(SearchMode::Text))
            .await
            .unwrap();
        assert!(
            text.results[0].document_name.starts_with("distractor"),
            "{}: keyword search alone is fooled (that is what the distractors are for): {:?}",
            b.name,
            text.results
                .iter()
                .map(|h| &h.document_name)
                .collect::<Vec<_>>()
        );
        let hybrid = t
            .search(SearchParams::new(query).mode(SearchMode::Hybrid))
            .await
            .unwrap();
        let names: Vec<&str> = hybrid
            .results
            .iter()
            .map(|h| h.document_name.as_str())
            .collect();
        assert_eq!(
            names[0],
            "refund-policy.txt",
            "{}: hybrid ranking {:?}",
            b.name,
            hybrid
                .results
                .iter()
                .map(|h| (&h.document_name, h.score, h.vector_score, h.text_score))
                .collect::<Vec<_>>()
        );
        assert!(hybrid.results[0].vector_score.unwrap() > 0.3);
        let vector = t
            .search(SearchParams::new(query).mode(SearchMode::Vector))
            .await
            .unwrap();
        assert_eq!(vector.results[0].document_name, "refund-policy.txt");
        assert_eq!(
            hybrid
                .results
                .iter()
                .filter(|h| h.document_name == "refund-policy.txt")
                .count(),
            1,
            "one tenant's copy only"
        );
    }
}

#[tokio::test]
async fn semantic_search_finds_documents_across_wording() {
    let b = open(
        Layout::SharedFile,
        EmbedderConfig::Local {
            model_dir: model_dir(),
        },
    )
    .await;
    let t = b.tenant("acme").await;
    let docs = [
        (
            "security.md",
            "Customer volumes are encrypted with AES-256 and keys rotate every 90 days.",
        ),
        (
            "earnings.md",
            "Annual recurring revenue reached 310 million dollars, up 22 percent.",
        ),
        (
            "launch.md",
            "Do not launch when the wind is stronger than 20 miles per hour.",
        ),
        (
            "hiring.md",
            "We are hiring propulsion engineers and a support lead.",
        ),
    ];
    for (n, c) in docs {
        t.add_document(text_doc(n, c)).await.unwrap();
    }
    for (q, want) in [
        ("is my data protected", "security.md"),
        ("how much money did the company make", "earnings.md"),
        ("is it too windy to fly", "launch.md"),
        ("open jobs", "hiring.md"),
    ] {
        let r = t
            .search(SearchParams::new(q).mode(SearchMode::Hybrid).limit(4))
            .await
            .unwrap();
        assert_eq!(r.results[0].document_name, want, "{q}");
    }
}
