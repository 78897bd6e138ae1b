//! Rendering of typed filters and text queries into SQLite SQL. Caller values
//! are always bound as parameters; only operator shapes are written into SQL.

use chrono::{DateTime, SecondsFormat, Utc};
use enclave_core::filter::{Condition, FilterOp, Scalar};
use enclave_core::query::TextQuery;
use enclave_core::DocumentFilter;
use rusqlite::types::Value as SqlValue;

/// Timestamps are stored in one fixed-width form so text order is time order.
pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A stored timestamp read from a row (a malformed one is a conversion error).
pub(crate) fn row_ts(s: &str) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })
}

/// An optional stored timestamp read from a row.
pub(crate) fn opt_row_ts(s: Option<String>) -> rusqlite::Result<Option<DateTime<Utc>>> {
    s.as_deref().map(row_ts).transpose()
}

/// Appends ` AND column IN (?, …)` for a non-empty list of values.
fn in_list<'a>(
    sql: &mut String,
    params: &mut Vec<SqlValue>,
    column: &str,
    values: impl Iterator<Item = &'a str>,
) {
    let start = params.len();
    params.extend(values.map(|v| SqlValue::Text(v.to_owned())));
    let n = params.len() - start;
    if n > 0 {
        sql.push_str(&format!(" AND {column} IN ({})", vec!["?"; n].join(",")));
    }
}

/// Appends `AND …` clauses for `filter` on the documents alias `d`.
pub fn document_filter(filter: &DocumentFilter, sql: &mut String, params: &mut Vec<SqlValue>) {
    in_list(
        sql,
        params,
        "d.origin",
        filter.origins.iter().map(|o| o.as_str()),
    );
    in_list(
        sql,
        params,
        "d.doc_type",
        filter.types.iter().map(|t| t.as_str()),
    );
    let mut range = |col: &str, op: &str, t: Option<DateTime<Utc>>| {
        if let Some(t) = t {
            sql.push_str(&format!(" AND d.{col} {op} ?"));
            params.push(SqlValue::Text(ts(t)));
        }
    };
    range("created_at", ">=", filter.created_after);
    range("created_at", "<", filter.created_before);
    range("document_date", ">=", filter.document_date_after);
    range("document_date", "<", filter.document_date_before);
    for c in &filter.metadata.conditions {
        sql.push_str(" AND ");
        condition(c, sql, params);
    }
}

fn json_path(path: &[String]) -> String {
    // Keys were checked to hold no quotes or backslashes; quote every segment.
    let mut p = String::from("$");
    for seg in path {
        p.push_str(".\"");
        p.push_str(seg);
        p.push('"');
    }
    p
}

/// `1` when the value at `path` equals / compares to the scalar, with typed
/// semantics matching `MetadataFilter::matches`; never NULL.
fn compare(path: &str, op: &str, s: &Scalar, sql: &mut String, params: &mut Vec<SqlValue>) {
    match s {
        Scalar::String(v) => {
            sql.push_str(&format!(
                "COALESCE(json_type(d.metadata, ?) = 'text' AND json_extract(d.metadata, ?) {op} ?, 0)"
            ));
            params.push(SqlValue::Text(path.to_owned()));
            params.push(SqlValue::Text(path.to_owned()));
            params.push(SqlValue::Text(v.clone()));
        }
        Scalar::Number(n) => {
            sql.push_str(&format!(
                "COALESCE(json_type(d.metadata, ?) IN ('integer', 'real') AND json_extract(d.metadata, ?) {op} ?, 0)"
            ));
            params.push(SqlValue::Text(path.to_owned()));
            params.push(SqlValue::Text(path.to_owned()));
            params.push(SqlValue::Real(*n));
        }
        Scalar::Bool(b) => {
            // JSON booleans order false < true, as Rust's bool does.
            sql.push_str(&format!(
                "COALESCE(json_type(d.metadata, ?) IN ('true', 'false') AND (json_type(d.metadata, ?) = 'true') {op} ?, 0)"
            ));
            params.push(SqlValue::Text(path.to_owned()));
            params.push(SqlValue::Text(path.to_owned()));
            params.push(SqlValue::Integer(*b as i64));
        }
    }
}

fn condition(c: &Condition, sql: &mut String, params: &mut Vec<SqlValue>) {
    let path = json_path(&c.path);
    match &c.op {
        FilterOp::Eq(s) => compare(&path, "=", s, sql, params),
        FilterOp::Ne(s) => {
            sql.push_str("NOT ");
            compare(&path, "=", s, sql, params);
        }
        FilterOp::Gt(s) => compare(&path, ">", s, sql, params),
        FilterOp::Gte(s) => compare(&path, ">=", s, sql, params),
        FilterOp::Lt(s) => compare(&path, "<", s, sql, params),
        FilterOp::Lte(s) => compare(&path, "<=", s, sql, params),
        FilterOp::In(list) => {
            sql.push('(');
            for (i, s) in list.iter().enumerate() {
                if i > 0 {
                    sql.push_str(" OR ");
                }
                compare(&path, "=", s, sql, params);
            }
            sql.push(')');
        }
        FilterOp::Exists(want) => {
            sql.push_str(if *want {
                "COALESCE(json_type(d.metadata, ?) NOT IN ('null'), 0)"
            } else {
                "COALESCE(json_type(d.metadata, ?) = 'null', 1)"
            });
            params.push(SqlValue::Text(path));
        }
        _ => sql.push('0'),
    }
}

fn fts_phrase(words: &[String]) -> String {
    // Words are alphanumeric runs; quoting makes every one a literal.
    let mut s = String::from("\"");
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&w.replace('"', "\"\""));
    }
    s.push('"');
    s
}

/// Renders a query for FTS5 MATCH, or `None` when it can match nothing.
///
/// Optional words are ORed; required phrases are ANDed, with the optional
/// words ORed alongside the first phrase so they still count in BM25.
pub fn fts_query(q: &TextQuery) -> Option<String> {
    if q.is_empty() {
        return None;
    }
    let should: Vec<String> = q
        .should
        .iter()
        .chain(q.expansion.iter().map(|(t, _)| t))
        .map(|w| fts_phrase(std::slice::from_ref(w)))
        .collect();
    let mut expr = if q.must.is_empty() {
        format!("({})", should.join(" OR "))
    } else {
        let musts: Vec<String> = q.must.iter().map(|p| fts_phrase(p)).collect();
        let mut e = musts.join(" AND ");
        if !should.is_empty() {
            e = format!("{e} AND ({} OR {})", should.join(" OR "), musts[0]);
        }
        format!("({e})")
    };
    for n in &q.must_not {
        expr.push_str(" NOT ");
        expr.push_str(&fts_phrase(n));
    }
    Some(expr)
}

/// The weight of each phrase of [`fts_query`]'s expression, in the order
/// FTS5 numbers them (left to right), as `enclave_bm25` takes them
/// (`"1,1,0.4"`); `None` when every weight is 1.
pub fn fts_weights(q: &TextQuery) -> Option<String> {
    if q.expansion.is_empty() {
        return None;
    }
    let mut w: Vec<f64> = Vec::new();
    w.extend(q.must.iter().map(|_| 1.0));
    w.extend(q.should.iter().map(|_| 1.0));
    w.extend(q.expansion.iter().map(|(_, x)| *x));
    if !q.must.is_empty() {
        // `musts[0]` closes the optional group again.
        w.push(1.0);
    }
    w.extend(q.must_not.iter().map(|_| 1.0));
    Some(
        w.iter()
            .map(|x| format!("{x:?}"))
            .collect::<Vec<_>>()
            .join(","),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fts_queries_quote_everything() {
        let q = TextQuery::parse(r#"revenue growth "net margin" -draft"#);
        assert_eq!(
            fts_query(&q).unwrap(),
            r#"("net margin" AND ("revenue" OR "growth" OR "net margin")) NOT "draft""#
        );
        assert_eq!(
            fts_query(&TextQuery::parse("NEAR OR column:x")).unwrap(),
            r#"("near" OR "column" OR "x")"#
        );
        assert!(fts_query(&TextQuery::parse("-only")).is_none());
    }

    #[test]
    fn expansion_terms_are_optional_phrases_with_their_weights() {
        let mut q = TextQuery::parse(r#"revenue "net margin" -draft"#);
        q.expansion = vec![("profit".into(), 0.5)];
        assert_eq!(
            fts_query(&q).unwrap(),
            r#"("net margin" AND ("revenue" OR "profit" OR "net margin")) NOT "draft""#
        );
        // Phrases in order: "net margin", revenue, profit, "net margin", draft.
        assert_eq!(fts_weights(&q).unwrap(), "1.0,1.0,0.5,1.0,1.0");
        assert_eq!(fts_weights(&TextQuery::parse("revenue")), None);
    }
}
