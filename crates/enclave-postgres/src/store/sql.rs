//! Rendering of typed filters and text queries into PostgreSQL SQL (the
//! twin of the embedded store's `sqlite/sql.rs`). Caller values are always
//! bound as parameters; only operator shapes are written into SQL.

use enclave_core::filter::{Condition, FilterOp, Scalar};
use enclave_core::query::TextQuery;
use enclave_core::DocumentFilter;
use sqlx::{Postgres, QueryBuilder};

/// Appends ` AND …` for `filter` on documents alias `d`, with typed metadata
/// comparisons matching `MetadataFilter::matches`.
pub(super) fn push_filter(qb: &mut QueryBuilder<'_, Postgres>, filter: &DocumentFilter) {
    if !filter.origins.is_empty() {
        qb.push(" AND d.origin = ANY(")
            .push_bind(
                filter
                    .origins
                    .iter()
                    .map(|o| o.as_str().to_owned())
                    .collect::<Vec<_>>(),
            )
            .push(")");
    }
    if !filter.types.is_empty() {
        qb.push(" AND d.doc_type = ANY(")
            .push_bind(
                filter
                    .types
                    .iter()
                    .map(|t| t.as_str().to_owned())
                    .collect::<Vec<_>>(),
            )
            .push(")");
    }
    for (col, op, t) in [
        ("created_at", ">=", filter.created_after),
        ("created_at", "<", filter.created_before),
        ("document_date", ">=", filter.document_date_after),
        ("document_date", "<", filter.document_date_before),
    ] {
        if let Some(t) = t {
            qb.push(format!(" AND d.{col} {op} ")).push_bind(t);
        }
    }
    for c in &filter.metadata.conditions {
        qb.push(" AND ");
        push_condition(qb, c);
    }
}

pub(super) fn push_compare(
    qb: &mut QueryBuilder<'_, Postgres>,
    path: &[String],
    op: &str,
    s: &Scalar,
) {
    let path = path.to_vec();
    qb.push("COALESCE(CASE WHEN jsonb_typeof(d.metadata #> ")
        .push_bind(path.clone());
    match s {
        Scalar::String(v) => {
            qb.push(") = 'string' THEN (d.metadata #>> ")
                .push_bind(path)
                .push(format!(") COLLATE \"C\" {op} "))
                .push_bind(v.clone())
                .push(" COLLATE \"C\"");
        }
        Scalar::Number(n) => {
            qb.push(") = 'number' THEN (d.metadata #>> ")
                .push_bind(path)
                .push(format!(")::float8 {op} "))
                .push_bind(*n);
        }
        Scalar::Bool(b) => {
            qb.push(") = 'boolean' THEN (d.metadata #>> ")
                .push_bind(path)
                .push(format!(")::boolean {op} "))
                .push_bind(*b);
        }
    }
    qb.push(" END, false)");
}

pub(super) fn push_condition(qb: &mut QueryBuilder<'_, Postgres>, c: &Condition) {
    match &c.op {
        FilterOp::Eq(s) => push_compare(qb, &c.path, "=", s),
        FilterOp::Ne(s) => {
            qb.push("NOT ");
            push_compare(qb, &c.path, "=", s);
        }
        FilterOp::Gt(s) => push_compare(qb, &c.path, ">", s),
        FilterOp::Gte(s) => push_compare(qb, &c.path, ">=", s),
        FilterOp::Lt(s) => push_compare(qb, &c.path, "<", s),
        FilterOp::Lte(s) => push_compare(qb, &c.path, "<=", s),
        FilterOp::In(list) => {
            qb.push("(");
            for (i, s) in list.iter().enumerate() {
                if i > 0 {
                    qb.push(" OR ");
                }
                push_compare(qb, &c.path, "=", s);
            }
            qb.push(")");
        }
        FilterOp::Exists(want) => {
            qb.push("COALESCE(jsonb_typeof(d.metadata #> ")
                .push_bind(c.path.clone());
            qb.push(if *want {
                ") <> 'null', false)"
            } else {
                ") = 'null', true)"
            });
        }
        _ => {
            qb.push("false");
        }
    }
}

/// One lexeme quoted for a `tsquery`.
pub(super) fn lexeme(t: &str) -> String {
    format!("'{}'", t.replace('\\', "\\\\").replace('\'', "''"))
}

/// Renders an analyzed text query as `tsquery` input (cast with
/// `::tsquery`, taken as written: every term a quoted lexeme, so nothing
/// the caller typed is tsquery syntax and nothing is analyzed twice).
pub(super) fn tsquery(q: &TextQuery) -> Option<String> {
    let phrase = |ws: &[String]| {
        format!(
            "({})",
            ws.iter()
                .map(|w| lexeme(w))
                .collect::<Vec<_>>()
                .join(" <-> ")
        )
    };
    if q.is_empty() {
        return None;
    }
    let mut e = if q.must.is_empty() {
        format!(
            "({})",
            q.should
                .iter()
                .chain(q.expansion.iter().map(|(t, _)| t))
                .map(|t| lexeme(t))
                .collect::<Vec<_>>()
                .join(" | ")
        )
    } else {
        q.must
            .iter()
            .map(|p| phrase(p))
            .collect::<Vec<_>>()
            .join(" & ")
    };
    for n in &q.must_not {
        e.push_str(&format!(" & !{}", phrase(n)));
    }
    Some(e)
}
