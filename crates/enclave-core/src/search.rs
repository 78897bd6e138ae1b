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
    /// Reciprocal rank fusion (k = 60): ranks only.
    Rrf,
    /// The default: `alpha` × cosine + (1 − `alpha`) × BM25 ÷ the query's
    /// ceiling, every candidate scored exactly in both
    /// ([`crate::fusion::convex`]; `alpha` default [`DEFAULT_CONVEX_ALPHA`]).
    /// Better than RRF on SciFact train (docs/QUALITY.md).
    #[default]
    Convex,
}

/// Whether a search ranks chunks or documents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Aggregation {
    /// Every chunk ranks on its own score; a document may have several hits.
    #[default]
    Chunk,
    /// Each document once, at its best chunk's score, represented by it.
    BestChunk,
    /// Each document once, represented by its best chunk, scored by the
    /// decayed sum of its chunks' scores (s₁ + d·s₂ + d²·s₃ …, `d` =
    /// `aggregation_decay`, default [`DEFAULT_AGGREGATION_DECAY`]): a
    /// document with several good chunks can outrank one with a single
    /// slightly better one.
    DecayedSum,
}

/// Pseudo-relevance feedback for the text half (a query-side stage,
/// opt-in per request): the first `chunks` chunks the query's text search
/// finds are taken as relevant, the `terms` words that best characterise
/// them (`crate::bm25::feedback_terms`) are added to the query at `weight`
/// (the best of them; the others in proportion), and the text search runs
/// again with them. Measured on SciFact train it does not raise nDCG@10
/// (docs/QUALITY.md), so it is not a default.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Prf {
    /// Feedback chunks (1–20).
    pub chunks: u32,
    /// Expansion terms (1–32).
    pub terms: u32,
    /// The best expansion term's weight in the score (above 0, at most 1;
    /// the query's own words weigh 1).
    pub weight: f64,
}

impl Default for Prf {
    fn default() -> Self {
        Self {
            chunks: 5,
            terms: 10,
            weight: 0.5,
        }
    }
}

impl Prf {
    fn check(&self) -> Result<(), InvalidInput> {
        if !(1..=20).contains(&self.chunks) {
            return Err(InvalidInput::new("prf.chunks", "must be between 1 and 20"));
        }
        if !(1..=32).contains(&self.terms) {
            return Err(InvalidInput::new("prf.terms", "must be between 1 and 32"));
        }
        if !(self.weight > 0.0 && self.weight <= 1.0) {
            return Err(InvalidInput::new(
                "prf.weight",
                "must be above 0 and at most 1",
            ));
        }
        Ok(())
    }
}

/// The decay of [`Aggregation::DecayedSum`] when a request gives none.
pub const DEFAULT_AGGREGATION_DECAY: f64 = 0.5;

impl Aggregation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chunk => "chunk",
            Self::BestChunk => "best_chunk",
            Self::DecayedSum => "decayed_sum",
        }
    }
}

impl std::str::FromStr for Aggregation {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "chunk" => Ok(Self::Chunk),
            "best_chunk" => Ok(Self::BestChunk),
            "decayed_sum" => Ok(Self::DecayedSum),
            _ => Err(InvalidInput::new(
                "aggregation",
                "must be chunk, best_chunk or decayed_sum",
            )),
        }
    }
}

/// The vector half's weight in convex fusion when a request gives none,
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
    /// How hybrid search fuses its two lists; unset: [`Fusion::Convex`].
    pub fusion: Option<Fusion>,
    /// Whether chunks or documents are ranked; unset: [`Aggregation::Chunk`].
    pub aggregation: Option<Aggregation>,
    /// The decay of `decayed_sum` aggregation (above 0, at most 1; other
    /// aggregations have no later chunks to weigh and leave it unused).
    pub aggregation_decay: Option<f64>,
    /// Pseudo-relevance feedback for the text half (text and hybrid
    /// modes); unset: none.
    pub prf: Option<Prf>,
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
    pub fn aggregation(mut self, aggregation: Aggregation) -> Self {
        self.aggregation = Some(aggregation);
        self
    }
}

/// A tenant's defaults for the fusion and aggregation fields a search
/// leaves unset (the tenant record's `search`, set by the platform admin):
/// a request's own value always wins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchDefaults {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fusion: Option<Fusion>,
    /// Used when the request gives no `alpha` and fuses as the tenant does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregation: Option<Aggregation>,
    /// Used when the search aggregates by `decayed_sum` and gives no decay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregation_decay: Option<f64>,
}

impl SearchDefaults {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Refuses values no search could use, naming the field
    /// (`search.alpha`, …).
    pub fn check(&self) -> Result<(), InvalidInput> {
        let mut p = SearchParams::new("x");
        p.fusion = self.fusion;
        p.alpha = self.alpha;
        p.aggregation = self.aggregation;
        p.aggregation_decay = self.aggregation_decay;
        Search::parse(&p)
            .map(|_| ())
            .map_err(|e| InvalidInput::new(format!("search.{}", e.field), e.message))
    }

    /// Fills the fields `p` leaves unset.
    pub fn apply(&self, p: &mut SearchParams) {
        let tenant_fusion = self.fusion.unwrap_or_default();
        if p.alpha.is_none() && p.fusion.is_none_or(|f| f == tenant_fusion) {
            p.alpha = self.alpha;
        }
        p.fusion = p.fusion.or(self.fusion);
        if p.aggregation.is_none() {
            p.aggregation = self.aggregation;
        }
        if p.aggregation == Some(Aggregation::DecayedSum) && p.aggregation_decay.is_none() {
            p.aggregation_decay = self.aggregation_decay;
        }
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
    pub aggregation: Aggregation,
    /// The decay of [`Aggregation::DecayedSum`] (None for the others).
    pub decay: Option<f64>,
    pub prf: Option<Prf>,
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
        let aggregation = p.aggregation.unwrap_or_default();
        if let Some(d) = p.aggregation_decay {
            if !(d > 0.0 && d <= 1.0) {
                return Err(InvalidInput::new(
                    "aggregation_decay",
                    "must be above 0 and at most 1",
                ));
            }
        }
        // The decay weighs a decayed sum's later chunks; other rankings
        // have none to weigh.
        let decay = (aggregation == Aggregation::DecayedSum)
            .then(|| p.aggregation_decay.unwrap_or(DEFAULT_AGGREGATION_DECAY));
        if let Some(prf) = &p.prf {
            prf.check()?;
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
            aggregation,
            decay,
            prf: p.prf,
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
    /// The ranking score: the fused score in hybrid mode (convex or RRF),
    /// cosine similarity in vector mode, BM25 in text mode; with document
    /// aggregation, the document's. Higher is better.
    pub score: f64,
    /// Cosine similarity with the query: in vector mode, and in hybrid
    /// mode with convex fusion for every hit (with RRF, when the chunk was
    /// a vector candidate).
    pub vector_score: Option<f64>,
    /// BM25 score (higher is better): in text mode, and in hybrid mode for
    /// every hit that holds a query term (with RRF, when the chunk was a
    /// text candidate).
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
        let mut p = SearchParams::new("q").aggregation(Aggregation::DecayedSum);
        p.aggregation_decay = Some(0.0);
        assert_eq!(field(p), "aggregation_decay");
        let mut p = SearchParams::new("q");
        p.prf = Some(Prf {
            terms: 0,
            ..Default::default()
        });
        assert_eq!(field(p), "prf.terms");
        let p: SearchParams =
            serde_json::from_value(json!({"query": "q", "prf": {"chunks": 3}})).unwrap();
        assert_eq!(p.prf.unwrap().terms, 10, "unset fields take their defaults");
        let mut p = SearchParams::new("q").aggregation(Aggregation::BestChunk);
        p.aggregation_decay = Some(1.5);
        assert_eq!(field(p), "aggregation_decay");
    }

    #[test]
    fn a_tenants_defaults_fill_only_what_the_request_leaves_unset() {
        let defaults = SearchDefaults {
            fusion: Some(Fusion::Convex),
            alpha: Some(0.7),
            aggregation: Some(Aggregation::DecayedSum),
            aggregation_decay: Some(0.3),
        };
        defaults.check().unwrap();
        let mut p = SearchParams::new("q");
        defaults.apply(&mut p);
        let s = Search::parse(&p).unwrap();
        assert_eq!(
            (s.fusion, s.alpha, s.aggregation, s.decay),
            (
                Some(Fusion::Convex),
                Some(0.7),
                Aggregation::DecayedSum,
                Some(0.3)
            )
        );
        // The request's own choices win; the tenant's alpha is for its
        // fusion, its decay for decayed sums.
        let mut p = SearchParams::new("q")
            .fusion(Fusion::Rrf)
            .aggregation(Aggregation::BestChunk);
        defaults.apply(&mut p);
        let s = Search::parse(&p).unwrap();
        assert_eq!(
            (s.fusion, s.alpha, s.aggregation, s.decay),
            (Some(Fusion::Rrf), None, Aggregation::BestChunk, None)
        );
        let mut p = SearchParams::new("q");
        p.alpha = Some(0.2);
        defaults.apply(&mut p);
        assert_eq!(p.alpha, Some(0.2));
        // Values no search could use are refused by name.
        let bad = SearchDefaults {
            alpha: Some(2.0),
            ..Default::default()
        };
        assert_eq!(bad.check().unwrap_err().field, "search.alpha");
        let bad = SearchDefaults {
            aggregation_decay: Some(-0.5),
            ..Default::default()
        };
        assert_eq!(bad.check().unwrap_err().field, "search.aggregation_decay");
        assert!(serde_json::from_value::<SearchDefaults>(json!({"limit": 5})).is_err());
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
