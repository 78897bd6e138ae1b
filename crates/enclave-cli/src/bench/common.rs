//! What every benchmark shares: a small vocabulary for generated text and
//! percentiles of sorted samples.

pub(crate) const WORDS: &[&str] = &[
    "the",
    "quarterly",
    "revenue",
    "report",
    "shows",
    "growth",
    "across",
    "regions",
    "while",
    "costs",
    "stayed",
    "flat",
    "customers",
    "asked",
    "about",
    "refunds",
    "shipping",
    "delays",
    "and",
    "pricing",
    "engineers",
    "deployed",
    "a",
    "new",
    "search",
    "service",
    "that",
    "indexes",
    "documents",
    "for",
    "every",
    "tenant",
    "in",
    "real",
    "time",
    "with",
    "strict",
    "isolation",
    "between",
    "accounts",
    "support",
    "team",
    "answered",
    "tickets",
    "within",
    "two",
    "business",
    "days",
];

/// The `p` quantile (0–1) of ascending `sorted` samples; NaN when empty.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}
