//! Full-text query syntax (API.md §5 `text` mode): web-search style input
//! parsed into a small tree that each backend renders for its own engine.
//!
//! - bare words are *optional*: a chunk matching any of them is a candidate and
//!   the ranking function rewards matching more of them (like a search engine,
//!   unlike SQL `AND`);
//! - `"quoted phrases"` are required;
//! - `-word` and `-"a phrase"` exclude;
//! - `OR` between words is accepted (words are alternatives already).
//!
//! Every input parses: punctuation is a separator, never syntax a backend could
//! choke on. Terms are lower-cased runs of letters and digits.

/// A parsed text query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TextQuery {
    /// Words of which any may match.
    pub should: Vec<String>,
    /// Phrases (one or more words in order) that must all match.
    pub must: Vec<Vec<String>>,
    /// Words or phrases that must not match.
    pub must_not: Vec<Vec<String>>,
    /// Terms a query-side stage added (pseudo-relevance feedback), already
    /// analyzed (a store's analyzer passes them through as they are), each
    /// optional like `should` and weighted in (0, 1] in the score.
    pub expansion: Vec<(String, f64)>,
}

/// Longest term kept; longer runs are cut (no real word is this long).
const MAX_TERM_CHARS: usize = 64;
/// Most terms a query keeps.
const MAX_TERMS: usize = 64;

impl TextQuery {
    pub fn parse(input: &str) -> Self {
        let mut q = TextQuery::default();
        let mut rest = input;
        while let Some(c) = rest.chars().next() {
            if c.is_whitespace() {
                rest = &rest[c.len_utf8()..];
                continue;
            }
            let negated =
                c == '-' && rest[1..].starts_with(|n: char| n == '"' || n.is_alphanumeric());
            if negated {
                rest = &rest[1..];
            }
            if rest.starts_with('"') {
                let body = &rest[1..];
                let end = body.find('"').unwrap_or(body.len());
                let words = words(&body[..end]);
                rest = body.get(end + 1..).unwrap_or("");
                if words.is_empty() {
                    continue;
                }
                if negated {
                    q.must_not.push(words);
                } else {
                    q.must.push(words);
                }
            } else {
                let end = rest
                    .find(|ch: char| ch.is_whitespace() || ch == '"')
                    .unwrap_or(rest.len());
                let token = &rest[..end];
                rest = &rest[end..];
                if token == "OR" && !negated {
                    continue;
                }
                let ws = words(token);
                if negated {
                    if !ws.is_empty() {
                        q.must_not.push(ws);
                    }
                } else {
                    // "e-mail", "foo.bar" become their words.
                    q.should.extend(ws);
                }
            }
        }
        dedup(&mut q.should);
        // Function words match nearly every chunk and only add noise to the
        // ranking; drop them unless nothing else is left.
        if q.should.iter().any(|w| !is_stopword(w)) {
            q.should.retain(|w| !is_stopword(w));
        }
        q.should.truncate(MAX_TERMS);
        q.must.truncate(MAX_TERMS);
        q.must_not.truncate(MAX_TERMS);
        q
    }

    /// True when nothing positive remains: such a query matches nothing.
    pub fn is_empty(&self) -> bool {
        self.should.is_empty() && self.must.is_empty() && self.expansion.is_empty()
    }

    /// Every positive term (expansion terms included), for highlighting or
    /// query-side statistics.
    pub fn positive_terms(&self) -> impl Iterator<Item = &str> {
        self.weighted_terms().map(|(t, _)| t)
    }

    /// Every positive term with its weight in the score: 1 for the
    /// query's own words, the stage's weight for expansion terms.
    pub fn weighted_terms(&self) -> impl Iterator<Item = (&str, f64)> {
        self.should
            .iter()
            .map(|t| (t.as_str(), 1.0))
            .chain(self.must.iter().flatten().map(|t| (t.as_str(), 1.0)))
            .chain(self.expansion.iter().map(|(t, w)| (t.as_str(), *w)))
    }
}

fn dedup(v: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    v.retain(|s| seen.insert(s.clone()));
}

/// English function words (a short list: only words that carry no topic).
const STOPWORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be",
    "because", "been", "before", "being", "between", "both", "but", "by", "can", "could", "did",
    "do", "does", "doing", "down", "during", "each", "few", "for", "from", "further", "had", "has",
    "have", "having", "he", "her", "here", "hers", "him", "his", "how", "i", "if", "in", "into",
    "is", "it", "its", "itself", "just", "me", "more", "most", "my", "myself", "no", "nor", "not",
    "now", "of", "off", "on", "once", "only", "or", "other", "our", "ours", "out", "over", "own",
    "same", "she", "should", "so", "some", "such", "than", "that", "the", "their", "theirs",
    "them", "then", "there", "these", "they", "this", "those", "through", "to", "too", "under",
    "until", "up", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who",
    "whom", "why", "will", "with", "would", "you", "your", "yours",
];

/// Whether `w` (lower-case) is an English function word.
pub fn is_stopword(w: &str) -> bool {
    STOPWORDS.binary_search(&w).is_ok()
}

/// Splits text into lower-cased alphanumeric words.
pub fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            w.chars()
                .take(MAX_TERM_CHARS)
                .flat_map(char::to_lowercase)
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_search_syntax_is_understood() {
        let q = TextQuery::parse(r#"quarterly "net revenue" -draft OR forecast -"old plan""#);
        assert_eq!(q.should, ["quarterly", "forecast"]);
        assert_eq!(q.must, [vec!["net".to_string(), "revenue".to_string()]]);
        assert_eq!(
            q.must_not,
            [
                vec!["draft".to_string()],
                vec!["old".to_string(), "plan".to_string()]
            ]
        );
    }

    #[test]
    fn hostile_input_parses_to_plain_words() {
        for s in [
            "'; DROP TABLE chunks; --",
            "NEAR(a b) * ^ : {} AND NOT",
            "\"unterminated phrase",
            "a\u{0}b",
            "-- - \"\" -\"\"",
            "title:secret col:* \\\"",
        ] {
            let q = TextQuery::parse(s);
            for w in q.positive_terms() {
                assert!(w.chars().all(char::is_alphanumeric), "{s:?} -> {w:?}");
            }
        }
        assert!(TextQuery::parse("-- - \"\" -\"\"").is_empty());
        assert_eq!(TextQuery::parse("\"unterminated phrase").must.len(), 1);
        assert_eq!(
            TextQuery::parse("Überweisung ÄRGER").should,
            ["überweisung", "ärger"]
        );
    }

    #[test]
    fn function_words_are_dropped_unless_nothing_else_is_left() {
        assert_eq!(
            TextQuery::parse("how do I get my money back?").should,
            ["get", "money", "back"]
        );
        assert_eq!(
            TextQuery::parse("to be or not to be").should,
            ["to", "be", "or", "not"]
        );
        assert_eq!(
            TextQuery::parse("\"the who\" tour").must,
            [vec!["the".to_string(), "who".to_string()]]
        );
        assert!(
            STOPWORDS.windows(2).all(|w| w[0] < w[1]),
            "sorted for binary search"
        );
    }
}
