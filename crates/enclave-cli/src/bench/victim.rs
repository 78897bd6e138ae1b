//! What the HTTP benchmarks share: tenants made through the admin API and
//! the measured tenant's rounds (a small upload, then a search that must
//! find it), so `bench-fairness` and `bench-abuse` time the same thing.

use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::{json, Value};

const WORDS: &[&str] = &[
    "invoice", "shipment", "warranty", "refund", "customer", "ledger", "quarter", "forecast",
    "contract", "renewal", "support", "ticket", "latency", "outage", "deploy", "release", "budget",
    "hiring", "review", "roadmap", "pricing", "discount", "partner", "region",
];

/// A 48-word paragraph, the same for the same `(seed, n)`.
pub fn paragraph(seed: u64, n: usize) -> String {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(n as u64);
    let mut words = Vec::with_capacity(48);
    for _ in 0..48 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        words.push(WORDS[(x % WORDS.len() as u64) as usize]);
    }
    format!("{}.", words.join(" "))
}

/// Creates tenant `id`; `fields` (an object: plan, limits, …) are added to
/// the request.
pub async fn create_tenant(
    http: &reqwest::Client,
    base: &str,
    admin: &str,
    id: &str,
    fields: Value,
) -> Result<()> {
    let mut body = json!({"id": id, "slug": id, "name": id});
    if let (Some(b), Some(f)) = (body.as_object_mut(), fields.as_object()) {
        b.extend(f.clone());
    }
    let r = http
        .post(format!("{base}/admin/v1/tenants"))
        .bearer_auth(admin)
        .json(&body)
        .send()
        .await?;
    anyhow::ensure!(r.status() == 201, "creating a tenant: {}", r.text().await?);
    Ok(())
}

/// A new API key of `tenant` with `role`.
pub async fn key(
    http: &reqwest::Client,
    base: &str,
    admin: &str,
    tenant: &str,
    role: &str,
) -> Result<String> {
    let r = http
        .post(format!("{base}/admin/v1/tenants/{tenant}/keys"))
        .bearer_auth(admin)
        .json(&json!({"name": "bench", "role": role}))
        .send()
        .await?;
    anyhow::ensure!(r.status() == 201, "creating a key: {}", r.text().await?);
    let r: Value = r.json().await?;
    Ok(r["key"].as_str().context("no key")?.to_owned())
}

/// The measured tenant's `n` rounds: add a small unique document, then
/// search for its marker (sequential; it never competes with itself).
/// Returns the sorted upload and search latencies in seconds.
pub async fn rounds(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    phase: &str,
    n: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let (mut add, mut search) = (Vec::new(), Vec::new());
    for i in 0..n {
        let marker = format!("zb{}{i:04}", phase.replace('-', ""));
        let t0 = Instant::now();
        let r = http
            .post(format!("{base}/v1/documents"))
            .bearer_auth(key)
            .json(&json!({"name": format!("{marker}.md"), "type": "markdown",
                "content": format!("# Note {marker}\n\n{} {marker}\n\n{}", paragraph(7, i), paragraph(9, i))}))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "the upload: {}", r.text().await?);
        add.push(t0.elapsed().as_secs_f64());
        let t0 = Instant::now();
        let r = http
            .post(format!("{base}/v1/search"))
            .bearer_auth(key)
            .json(&json!({"query": marker.clone(), "limit": 5}))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 200, "the search: {}", r.text().await?);
        let body: Value = r.json().await?;
        search.push(t0.elapsed().as_secs_f64());
        let found = body["results"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|h| h["document_name"].as_str() == Some(&format!("{marker}.md")));
        anyhow::ensure!(
            found,
            "the search for {marker} did not find its new document: {body}"
        );
    }
    add.sort_by(f64::total_cmp);
    search.sort_by(f64::total_cmp);
    Ok((add, search))
}
