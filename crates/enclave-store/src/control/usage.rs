//! Per-tenant, per-day usage counters.

use serde::{Deserialize, Serialize};

/// Usage of one tenant on one day (UTC), as counted by the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageCounts {
    pub requests: u64,
    pub searches: u64,
    pub documents_added: u64,
    pub tokens_embedded: u64,
}

impl UsageCounts {
    pub fn add(&mut self, o: &UsageCounts) {
        self.requests += o.requests;
        self.searches += o.searches;
        self.documents_added += o.documents_added;
        self.tokens_embedded += o.tokens_embedded;
    }
    pub fn is_zero(&self) -> bool {
        *self == UsageCounts::default()
    }
}
