//! Search requests and results (API.md §5). `SearchParams` is what a caller
//! fills in; `Search` is the validated form the engine runs, only obtainable
//! through `Search::parse`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::document::{DocumentInfo, DocumentType};
use crate::error::InvalidInput;
use crate::filter::MetadataFilter;
use crate::id::{ChunkId, DocumentId, Origin};
use crate::query::TextQuery;

/// Longest query accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 4096;
/// Largest `limit`.
pub const MAX_LIMIT: u32 = 100;
/// Most origins or types one search may list.
pub const MAX_LIST_FILTER: usize = 100;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SearchMode {
    Vector,
    Text,
    #[default]
    Hybrid,
}

impl SearchMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vector => "vector",
            Self::Text => "text",
            Self::Hybrid => "hybrid",
        }
    }
    pub fn uses_vectors(self) -> bool {
        matches!(self, Self::Vector | Self::Hybrid)
    }
    pub fn uses_text(self) -> bool {
        matches!(self, Self::Text | Self::Hybrid)
    }
}

/// How hybrid search fuses its vector and text lists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Fusion {
    /// Reciprocal rank fusion (k = 60): ranks only. The default: convex
    /// fusion is better on SciFact train (+0.020 nDCG@10) but lets
    /// keyword-only distractors outrank a paraphrase on a small tenant
    /// (`tests/retrieval.rs`), so it is opt-in (docs/QUALITY.md).
    #[default]
    Rrf,
    /// Convex combination of min–max normalised scores, weighted by
    /// `alpha` (default [`DEFAULT_CONVEX_ALPHA`]).
    Convex,
}

/// The vector list's weight in convex fusion when a request gives none,
/// chosen on the SciFact train split (docs/QUALITY.md).
pub const DEFAULT_CONVEX_ALPHA: f64 = 0.5;

impl Fusion {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rrf => "rrf",
            Self::Convex => "convex",
        }
    }
}

impl std::str::FromStr for Fusion {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rrf" => Ok(Self::Rrf),
            "convex" => Ok(Self::Convex),
            _ => Err(InvalidInput::new("fusion", "must be rrf or convex")),
        }
    }
}

impl std::str::FromStr for SearchMode {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "vector" => Ok(Self::Vector),
            "text" => Ok(Self::Text),
            "hybrid" => Ok(Self::Hybrid),
            _ => Err(InvalidInput::new(
                "mode",
                format!("unknown mode {s:?}; expected vector, text or hybrid"),
            )),
        }
    }
}

/// A search as a caller writes it (the API body, minus transport concerns).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchParams {
    pub query: String,
    pub mode: SearchMode,
    pub limit: Option<u32>,
    pub origins: Vec<String>,
    pub types: Vec<String>,
    pub metadata: serde_json::Value,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub document_date_after: Option<DateTime<Utc>>,
    pub document_date_before: Option<DateTime<Utc>>,
    pub include_documents: bool,
    pub min_score: Option<f64>,
    /// Weight of the vector list in hybrid fusion (0–1). Unset: equal
    /// weights for RRF, [`DEFAULT_CONVEX_ALPHA`] for convex fusion.
    pub alpha: Option<f64>,
    /// How hybrid search fuses its two lists; unset: the store's default.
    pub fusion: Option<Fusion>,
}

impl SearchParams {
    pub fn new(query: impl Into<String>) -> Self {
        Self {
            query: query.into(),
            ..Default::default()
        }
    }
    pub fn mode(mut self, mode: SearchMode) -> Self {
        self.mode = mode;
        self
    }
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }
    pub fn fusion(mut self, fusion: Fusion) -> Self {
        self.fusion = Some(fusion);
        self
    }
}

/// Filters that narrow which documents a search (or a listing) may return.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DocumentFilter {
    pub origins: Vec<Origin>,
    pub types: Vec<DocumentType>,
    pub metadata: MetadataFilter,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub document_date_after: Option<DateTime<Utc>>,
    pub document_date_before: Option<DateTime<Utc>>,
}

impl DocumentFilter {
    pub fn is_empty(&self) -> bool {
        self.origins.is_empty()
            && self.types.is_empty()
            && self.metadata.is_empty()
            && self.created_after.is_none()
            && self.created_before.is_none()
            && self.document_date_after.is_none()
            && self.document_date_before.is_none()
    }

    /// Parses origin and type lists, checking their sizes.
    pub fn parse_lists(
        origins: &[String],
        types: &[String],
    ) -> Result<(Vec<Origin>, Vec<DocumentType>), InvalidInput> {
        if origins.len() > MAX_LIST_FILTER {
            return Err(InvalidInput::new(
                "origins",
                format!("at most {MAX_LIST_FILTER} origins"),
            ));
        }
        if types.len() > MAX_LIST_FILTER {
            return Err(InvalidInput::new(
                "types",
                format!("at most {MAX_LIST_FILTER} types"),
            ));
        }
        let origins = origins
            .iter()
            .map(|o| Origin::parse(o).map_err(|e| InvalidInput::new("origins", e.message)))
            .collect::<Result<Vec<_>, _>>()?;
        let types = types
            .iter()
            .map(|t| {
                t.parse::<DocumentType>()
                    .map_err(|e| InvalidInput::new("types", e.message))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((origins, types))
    }

    /// Evaluates the filter in memory (the reference semantics backends match).
    pub fn matches(&self, doc: &DocumentInfo) -> bool {
        (self.origins.is_empty()
            || doc
                .origin
                .as_ref()
                .is_some_and(|o| self.origins.contains(o)))
            && (self.types.is_empty() || self.types.contains(&doc.doc_type))
            && self.created_after.is_none_or(|t| doc.created_at >= t)
            && self.created_before.is_none_or(|t| doc.created_at < t)
            && self
                .document_date_after
                .is_none_or(|t| doc.document_date.is_some_and(|d| d >= t))
            && self
                .document_date_before
                .is_none_or(|t| doc.document_date.is_some_and(|d| d < t))
            && self.metadata.matches(&doc.metadata)
    }
}

/// A validated search.
#[derive(Debug, Clone)]
pub struct Search {
    pub query: String,
    pub text: TextQuery,
    pub mode: SearchMode,
    pub limit: u32,
    pub filter: DocumentFilter,
    pub include_documents: bool,
    pub min_score: Option<f64>,
    pub alpha: Option<f64>,
    pub fusion: Option<Fusion>,
}

impl Search {
    pub fn parse(p: &SearchParams) -> Result<Self, InvalidInput> {
        let query = p.query.trim();
        if query.is_empty() {
            return Err(InvalidInput::new("query", "must not be empty"));
        }
        if query.chars().count() > MAX_QUERY_CHARS {
            return Err(InvalidInput::new(
                "query",
                format!("must be at most {MAX_QUERY_CHARS} characters"),
            ));
        }
        let limit = p.limit.unwrap_or(10);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(InvalidInput::new(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            ));
        }
        if let Some(a) = p.alpha {
            if !(0.0..=1.0).contains(&a) {
                return Err(InvalidInput::new("alpha", "must be between 0 and 1"));
            }
        }
        if let Some(s) = p.min_score {
            if !s.is_finite() {
                return Err(InvalidInput::new("min_score", "must be a finite number"));
            }
        }
        let (created_after, created_before) =
            check_range("created", p.created_after, p.created_before)?;
        let (document_date_after, document_date_before) = check_range(
            "document_date",
            p.document_date_after,
            p.document_date_before,
        )?;
        let (origins, types) = DocumentFilter::parse_lists(&p.origins, &p.types)?;
        Ok(Search {
            query: query.to_owned(),
            text: TextQuery::parse(query),
            mode: p.mode,
            limit,
            filter: DocumentFilter {
                origins,
                types,
                metadata: MetadataFilter::parse(&p.metadata)?,
                created_after,
                created_before,
                document_date_after,
                document_date_before,
            },
            include_documents: p.include_documents,
            min_score: p.min_score,
            alpha: p.alpha,
            fusion: p.fusion,
        })
    }
}

/// The bounds of a date range, kept to the stores' years; an empty range
/// (`after` not before `before`) is no error: it matches nothing, as the
/// same filter would in SQL.
type Range = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

fn check_range(
    name: &str,
    after: Option<DateTime<Utc>>,
    before: Option<DateTime<Utc>>,
) -> Result<Range, InvalidInput> {
    Ok((
        crate::check::maybe_timestamp(&format!("{name}_after"), after)?,
        crate::check::maybe_timestamp(&format!("{name}_before"), before)?,
    ))
}

/// One search result (API.md §5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    pub chunk_id: ChunkId,
    pub document_id: DocumentId,
    pub document_name: String,
    #[serde(rename = "type")]
    pub doc_type: DocumentType,
    pub origin: Option<Origin>,
    pub content: String,
    /// The ranking score: RRF in hybrid mode, cosine similarity in vector
    /// mode, BM25 in text mode. Higher is better.
    pub score: f64,
    /// Cosine similarity with the query, when the chunk was a vector candidate.
    pub vector_score: Option<f64>,
    /// BM25 score (higher is better), when the chunk was a text candidate.
    pub text_score: Option<f64>,
    /// 1-based position in the results.
    pub rank: u32,
    /// The document's metadata.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Index of the chunk in its document.
    pub chunk_index: u32,
    /// For hierarchical chunking: the enclosing section's text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<DocumentInfo>,
}

/// The answer to a search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResults {
    pub results: Vec<SearchHit>,
    pub mode: SearchMode,
    pub took_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bad_searches_are_refused_with_the_field_named() {
        let field = |p: SearchParams| Search::parse(&p).unwrap_err().field;
        assert_eq!(field(SearchParams::new("   ")), "query");
        assert_eq!(field(SearchParams::new("x".repeat(5000))), "query");
        assert_eq!(field(SearchParams::new("q").limit(0)), "limit");
        assert_eq!(field(SearchParams::new("q").limit(101)), "limit");
        let mut p = SearchParams::new("q");
        p.origins = vec!["bad origin".into()];
        assert_eq!(field(p), "origins");
        let mut p = SearchParams::new("q");
        p.types = vec!["xls".into()];
        assert_eq!(field(p), "types");
        let mut p = SearchParams::new("q");
        p.metadata = json!({"y": {"$bad": 1}});
        assert_eq!(field(p), "metadata.y");
        let mut p = SearchParams::new("q");
        p.alpha = Some(1.5);
        assert_eq!(field(p), "alpha");
    }

    #[test]
    fn params_deserialize_from_the_api_body() {
        let p: SearchParams = serde_json::from_value(json!({
            "query": "quarterly revenue", "mode": "hybrid", "limit": 10,
            "origins": ["user-123"], "types": ["pdf"],
            "metadata": {"year": 2025, "quarter": {"$in": ["Q3", "Q4"]}},
            "created_after": "2025-01-01T00:00:00Z", "created_before": null,
            "include_documents": false, "min_score": null
        }))
        .unwrap();
        let s = Search::parse(&p).unwrap();
        assert_eq!(s.filter.metadata.conditions.len(), 2);
        assert_eq!(s.filter.origins[0].as_str(), "user-123");
        assert!(
            serde_json::from_value::<SearchParams>(json!({"query": "q", "tenant": "x"})).is_err()
        );
    }
}
