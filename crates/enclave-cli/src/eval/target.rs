//! Where `enclave eval` sends documents and queries: the library on the
//! store the global flags name, or a running server over HTTP.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use enclave::core::{DocumentType, NewDocument, SearchParams, TenantId};
use enclave::{Memory, Tenant};
use serde_json::{json, Value};

use crate::StoreArgs;

pub enum Target {
    Library {
        tenant: Tenant,
        /// Kept so a scratch data directory lives as long as the run.
        memory: Memory,
        _scratch: Option<tempfile::TempDir>,
        describe: String,
    },
    Http {
        client: reqwest::Client,
        base: String,
        key: String,
        added: Mutex<Vec<String>>,
    },
}

impl Target {
    /// A scratch tenant of the library (or `tenant`, when given); without
    /// `--data-dir` or `--database-url` the embedded store lives in a
    /// temporary directory.
    pub async fn library(store: &StoreArgs, tenant: Option<&str>) -> Result<Self> {
        let mut store = store.clone();
        let scratch = if store.data_dir.is_none() && store.database_url.is_none() {
            let dir = tempfile::tempdir()?;
            store.data_dir = Some(dir.path().to_owned());
            Some(dir)
        } else {
            None
        };
        let memory = store.open().await?;
        let id = match tenant {
            Some(t) => TenantId::parse(t)?,
            None => TenantId::parse(&format!("eval-{:08x}", rand::random::<u32>()))?,
        };
        let describe = match (&store.database_url, &scratch) {
            (Some(_), _) => format!("PostgreSQL (library, tenant {id})"),
            (None, Some(_)) => format!("embedded store in a scratch directory (tenant {id})"),
            (None, None) => format!(
                "embedded store in {} (tenant {id})",
                store.data_dir().display()
            ),
        };
        Ok(Self::Library {
            tenant: memory.tenant(&id),
            memory,
            _scratch: scratch,
            describe,
        })
    }

    pub fn http(url: &str, key: Option<&str>) -> Result<Self> {
        let key = key.context("--url needs --api-key (or ENCLAVE_API_KEY): a member key")?;
        Ok(Self::Http {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()?,
            base: url.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
            added: Mutex::new(Vec::new()),
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Library { describe, .. } => describe.clone(),
            Self::Http { base, .. } => format!("the server at {base} (the key's tenant)"),
        }
    }

    /// Adds one corpus document named by its id; returns its chunk count.
    pub async fn add(&self, name: &str, content: String) -> Result<u64> {
        match self {
            Self::Library { tenant, .. } => {
                let mut doc = NewDocument::text(name, DocumentType::Text, content);
                doc.external_id = Some(name.to_owned());
                let added = tenant
                    .add_document(doc)
                    .await
                    .with_context(|| format!("document {name}"))?;
                Ok(added.chunks_created)
            }
            Self::Http { added, .. } => {
                let body =
                    json!({"name": name, "type": "text", "content": content, "external_id": name});
                let v = self
                    .post("/v1/documents", &body)
                    .await
                    .with_context(|| format!("document {name}"))?;
                if let Some(id) = v["document_id"].as_str() {
                    added.lock().expect("not poisoned").push(id.to_owned());
                }
                Ok(v["chunks_created"].as_u64().unwrap_or(0))
            }
        }
    }

    /// Embeds `query` once, so the modes' searches find its vector in the
    /// query cache and time the search alone; returns what the first
    /// embedding cost: the model's call itself (library), or a vector
    /// search of one hit that embeds it (a server).
    pub async fn warm(&self, query: &str) -> Result<Duration> {
        match self {
            Self::Library { tenant, memory, .. } => {
                let started = std::time::Instant::now();
                memory.embedder().embed(vec![query.to_owned()]).await?;
                let took = started.elapsed();
                tenant
                    .search(
                        SearchParams::new(query)
                            .mode(enclave::core::SearchMode::Vector)
                            .limit(1),
                    )
                    .await?;
                Ok(took)
            }
            Self::Http { .. } => {
                let started = std::time::Instant::now();
                self.post(
                    "/v1/search",
                    &json!({"query": query, "mode": "vector", "limit": 1}),
                )
                .await?;
                Ok(started.elapsed())
            }
        }
    }

    /// What [`Self::warm`] timed.
    pub fn warm_describes(&self) -> &'static str {
        match self {
            Self::Library { .. } => {
                "the model embedding the query (once per new query; later searches find it cached)"
            }
            Self::Http { .. } => {
                "a first vector search of limit 1 over HTTP, which embeds the query"
            }
        }
    }

    /// The document names of the first chunks found, best first.
    pub async fn search(
        &self,
        query: &str,
        variant: &super::Variant,
        limit: u32,
    ) -> Result<Vec<String>> {
        let mode = variant.mode;
        match self {
            Self::Library { tenant, .. } => {
                let mut params = SearchParams::new(query).mode(mode).limit(limit);
                params.fusion = variant.fusion;
                params.alpha = variant.alpha;
                params.aggregation = variant.aggregation;
                params.prf = variant.prf.then(Default::default);
                let found = tenant.search(params).await?;
                Ok(found.results.into_iter().map(|h| h.document_name).collect())
            }
            Self::Http { .. } => {
                let mut body = json!({"query": query, "mode": mode.as_str(), "limit": limit,
                    "fusion": variant.fusion.map(|f| f.as_str()), "alpha": variant.alpha,
                    "aggregation": variant.aggregation.map(|a| a.as_str())});
                if variant.prf {
                    body["prf"] = json!({});
                }
                let v = self.post("/v1/search", &body).await?;
                let Some(hits) = v["results"].as_array() else {
                    bail!("search answered without results: {v}");
                };
                Ok(hits
                    .iter()
                    .filter_map(|h| h["document_name"].as_str().map(str::to_owned))
                    .collect())
            }
        }
    }

    /// The tenant's chunk count (what a re-run that found every document
    /// unchanged did not create again).
    pub async fn chunk_count(&self) -> Result<u64> {
        match self {
            Self::Library { tenant, .. } => Ok(tenant.statistics().await?.chunk_count),
            Self::Http {
                client, base, key, ..
            } => {
                let v: Value = client
                    .get(format!("{base}/v1/stats"))
                    .bearer_auth(key)
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                v["chunk_count"]
                    .as_u64()
                    .with_context(|| format!("/v1/stats answered without chunk_count: {v}"))
            }
        }
    }

    /// Removes what this run added.
    pub async fn clean_up(&self) -> Result<()> {
        match self {
            Self::Library { tenant, .. } => {
                tenant.delete_everything().await?;
                Ok(())
            }
            Self::Http { added, .. } => {
                let ids = std::mem::take(&mut *added.lock().expect("not poisoned"));
                for batch in ids.chunks(100) {
                    self.post("/v1/documents/delete", &json!({"document_ids": batch}))
                        .await?;
                }
                Ok(())
            }
        }
    }

    /// POSTs JSON with the key, waiting out 429s as `Retry-After` says.
    async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let Self::Http {
            client, base, key, ..
        } = self
        else {
            unreachable!("only the HTTP target posts");
        };
        loop {
            let resp = client
                .post(format!("{base}{path}"))
                .bearer_auth(key)
                .json(body)
                .send()
                .await
                .with_context(|| format!("POST {base}{path}"))?;
            let status = resp.status();
            if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                let wait = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .unwrap_or(1);
                tokio::time::sleep(Duration::from_secs(wait.clamp(1, 60))).await;
                continue;
            }
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                bail!("POST {path}: {status}: {v}");
            }
            return Ok(v);
        }
    }
}
