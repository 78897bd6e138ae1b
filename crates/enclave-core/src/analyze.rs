//! Text analysis, done once here for every store: a chunk's text and a
//! query's words become the same *terms* on SQLite and on PostgreSQL, so the
//! two stores index, match and count exactly the same things and rank alike.
//!
//! A term is a lower-cased run of letters and digits (as `query::words`
//! splits it), not a stop word of the language, reduced by the language's
//! Snowball stemmer — the analysis of Lucene's and bm25s' English pipeline
//! ("studies" and "studied" are both `studi`). The stores never analyze text
//! themselves: SQLite's FTS5 and PostgreSQL's tsvector receive these terms.

use std::borrow::Cow;

use rust_stemmers::{Algorithm, Stemmer};

use crate::query::{words, TextQuery};
use crate::InvalidInput;

/// Languages a store can analyze text in (the `text_search_config` setting).
/// `simple` lower-cases and splits only: no stop words, no stemming.
pub const LANGUAGES: &[&str] = &[
    "simple",
    "arabic",
    "danish",
    "dutch",
    "english",
    "finnish",
    "french",
    "german",
    "greek",
    "hungarian",
    "italian",
    "norwegian",
    "portuguese",
    "romanian",
    "russian",
    "spanish",
    "swedish",
    "tamil",
    "turkish",
];

/// English stop words: Lucene's `EnglishAnalyzer` set, which bm25s uses too.
/// Only English has a stop list; other languages are stemmed only.
const ENGLISH_STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with",
];

/// The analysis of one language.
pub struct Analyzer {
    language: &'static str,
    stemmer: Option<Stemmer>,
    stopwords: &'static [&'static str],
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer")
            .field("language", &self.language)
            .finish()
    }
}

impl Analyzer {
    /// The analyzer of `language` (one of [`LANGUAGES`], case-insensitive).
    pub fn new(language: &str) -> Result<Self, InvalidInput> {
        let lower = language.trim().to_ascii_lowercase();
        let Some(&name) = LANGUAGES.iter().find(|l| **l == lower) else {
            return Err(InvalidInput::new(
                "text_search_config",
                format!(
                    "unknown language {language:?}; one of {}",
                    LANGUAGES.join(", ")
                ),
            ));
        };
        let algorithm = match name {
            "simple" => None,
            "arabic" => Some(Algorithm::Arabic),
            "danish" => Some(Algorithm::Danish),
            "dutch" => Some(Algorithm::Dutch),
            "english" => Some(Algorithm::English),
            "finnish" => Some(Algorithm::Finnish),
            "french" => Some(Algorithm::French),
            "german" => Some(Algorithm::German),
            "greek" => Some(Algorithm::Greek),
            "hungarian" => Some(Algorithm::Hungarian),
            "italian" => Some(Algorithm::Italian),
            "norwegian" => Some(Algorithm::Norwegian),
            "portuguese" => Some(Algorithm::Portuguese),
            "romanian" => Some(Algorithm::Romanian),
            "russian" => Some(Algorithm::Russian),
            "spanish" => Some(Algorithm::Spanish),
            "swedish" => Some(Algorithm::Swedish),
            "tamil" => Some(Algorithm::Tamil),
            "turkish" => Some(Algorithm::Turkish),
            _ => unreachable!("every listed language is matched"),
        };
        Ok(Self {
            language: name,
            stemmer: algorithm.map(Stemmer::create),
            stopwords: if name == "english" {
                ENGLISH_STOPWORDS
            } else {
                &[]
            },
        })
    }

    pub fn language(&self) -> &'static str {
        self.language
    }

    /// Whether `word` (lower-case) is a stop word of this language.
    pub fn is_stopword(&self, word: &str) -> bool {
        self.stopwords.contains(&word)
    }

    /// The term of one lower-cased word, or `None` for a stop word.
    pub fn term(&self, word: &str) -> Option<String> {
        if self.is_stopword(word) {
            return None;
        }
        Some(match &self.stemmer {
            Some(s) => match s.stem(word) {
                // A stemmer never empties a word; keep the word if it did.
                Cow::Borrowed("") => word.to_owned(),
                stem => stem.into_owned(),
            },
            None => word.to_owned(),
        })
    }

    /// The terms of a text, in order (stop words leave no gap: a phrase
    /// matches across them, as in Lucene).
    pub fn terms(&self, text: &str) -> Vec<String> {
        words(text).iter().filter_map(|w| self.term(w)).collect()
    }

    /// The query with every word replaced by its term. Stop words leave
    /// phrases; an optional word that is a stop word is dropped, unless
    /// every optional word is one (then it matches what it can, unstemmed
    /// words never: it stays empty and the query matches by its phrases).
    pub fn query(&self, q: &TextQuery) -> TextQuery {
        let phrase = |p: &Vec<String>| -> Vec<String> {
            p.iter().filter_map(|w| self.term(w)).collect::<Vec<_>>()
        };
        let mut should: Vec<String> = Vec::new();
        for w in &q.should {
            if let Some(t) = self.term(w) {
                if !should.contains(&t) {
                    should.push(t);
                }
            }
        }
        TextQuery {
            must: q
                .must
                .iter()
                .map(phrase)
                .filter(|p| !p.is_empty())
                .collect(),
            must_not: q
                .must_not
                .iter()
                .map(phrase)
                .filter(|p| !p.is_empty())
                .collect(),
            expansion: q
                .expansion
                .iter()
                .filter(|(t, w)| *w > 0.0 && !should.contains(t))
                .cloned()
                .collect(),
            should,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_terms_are_stemmed_without_stop_words() {
        let a = Analyzer::new("English").unwrap();
        assert_eq!(
            a.terms("The studies of running cells, and Refunds."),
            ["studi", "run", "cell", "refund"]
        );
        assert_eq!(a.term("studied").as_deref(), Some("studi"));
        assert_eq!(a.term("the"), None);
    }

    #[test]
    fn simple_only_splits_and_lowercases() {
        let a = Analyzer::new("simple").unwrap();
        assert_eq!(a.terms("The Studies"), ["the", "studies"]);
    }

    #[test]
    fn an_unknown_language_is_refused_with_the_list() {
        let e = Analyzer::new("klingon").unwrap_err();
        assert_eq!(e.field, "text_search_config");
        assert!(e.message.contains("english"), "{}", e.message);
    }

    #[test]
    fn a_query_is_analyzed_like_the_text_it_searches() {
        let a = Analyzer::new("english").unwrap();
        let q = a.query(&TextQuery::parse(
            r#"how long do refunds take "studies of cells" -running"#,
        ));
        assert_eq!(q.should, ["long", "refund", "take"]);
        assert_eq!(q.must, [vec!["studi".to_string(), "cell".to_string()]]);
        assert_eq!(q.must_not, [vec!["run".to_string()]]);
    }
}
