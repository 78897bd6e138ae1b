//! What the server enforces, written into the served OpenAPI document: the
//! handlers' annotations give the shapes (types, required fields), this
//! module the rules the library and the handlers check (id patterns, enums,
//! lengths, ranges, the search filter grammar), from the same constants and
//! configured limits the checks use. A client generated from the document —
//! or a fuzzer — then sends only what is accepted, and whatever the document
//! calls invalid is refused.
//!
//! Rules that JSON Schema cannot state are not checks the server makes:
//! an empty date range matches nothing, a `chunking.overlap_tokens` above
//! half of `max_tokens` is used as half, a usage period longer than
//! [`MAX_USAGE_DAYS`] starts that many days before its end (the answer's
//! `from` says so). The few that remain are said in descriptions: the
//! total number of filter conditions, metadata depth and size, and the
//! quota and rate answers (429) that depend on the tenant's state.

use serde_json::{json, Value};

use enclave_core::search::{MAX_LIMIT, MAX_LIST_FILTER, MAX_QUERY_CHARS};

/// Longest `/v1/usage` period, in days (both ends included).
pub const MAX_USAGE_DAYS: i64 = 367;

/// What the rules depend on that is configured or comes from the model.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts {
    pub max_name_chars: usize,
    pub max_metadata_depth: usize,
    pub max_metadata_bytes: usize,
    pub max_chunks_per_document: usize,
    pub max_documents_per_job: usize,
    pub dimensions: usize,
    pub model_max_tokens: u32,
    /// Whether `isolation: schema | database` can be asked for at creation.
    pub places_tenants: bool,
}

impl Facts {
    pub fn new(limits: &enclave::Limits, dimensions: usize, model_max_tokens: u32) -> Self {
        Self {
            max_name_chars: limits.max_name_chars,
            max_metadata_depth: limits.max_metadata_depth,
            max_metadata_bytes: limits.max_metadata_bytes,
            max_chunks_per_document: limits.max_chunks_per_document,
            max_documents_per_job: crate::service::ingest::MAX_JOB_DOCUMENTS,
            dimensions,
            model_max_tokens,
            places_tenants: false,
        }
    }
}

/// Control characters (Unicode `Cc`): refused in names and ids of any kind.
const CC: &str = "\\u0000-\\u001f\\u007f-\\u009f";
/// Unicode `White_Space` outside `Cc` (what `str::trim` removes besides).
const WS: &str = " \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
/// Also white space to `str::trim`: the `Cc` members of `White_Space`.
const CC_WS: &str = "\\t\\n\\u000b\\f\\r\\u0085";

/// Text that is not only white space (what the server trims away before
/// calling it empty).
fn non_blank() -> String {
    format!("[^{WS}{CC_WS}]")
}

/// A name: 1–`max` characters, not only white space, no control characters.
fn name(max: usize) -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": max,
        "pattern": format!("^[^{CC}]*[^{CC}{WS}][^{CC}]*$"),
    })
}

/// Tenant ids, origins and session ids (API.md §1).
fn name_id() -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": enclave_core::id::MAX_NAME_ID_LEN,
        "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$",
    })
}

fn nullable(mut schema: Value) -> Value {
    let t = schema["type"].clone();
    schema["type"] = match t {
        Value::String(s) => json!([s, "null"]),
        Value::Array(mut a) => {
            a.push(json!("null"));
            Value::Array(a)
        }
        _ => return json!({"anyOf": [schema, {"type": "null"}]}),
    };
    schema
}

fn uuid() -> Value {
    json!({"type": "string", "format": "uuid", "pattern": "^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"})
}

/// RFC 3339 timestamps in years 1–9999 (what both stores can hold).
fn timestamp() -> Value {
    json!({"type": "string", "format": "date-time", "pattern": "^(?!0000)[0-9]{4}-"})
}

fn day_or_timestamp() -> Value {
    json!({
        "description": "a day (YYYY-MM-DD) or an RFC 3339 timestamp (its UTC day), years 1-9999",
        "anyOf": [
            {"type": "string", "format": "date", "pattern": "^(?!0000)[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
            timestamp(),
        ],
    })
}

fn limit(max: u32) -> Value {
    json!({"type": "integer", "minimum": 1, "maximum": max})
}

fn metadata(f: &Facts) -> Value {
    json!({
        "type": ["object", "null"],
        "description": format!(
            "a JSON object, nesting at most {} levels and at most {} bytes serialized (larger: 413); no NUL characters",
            f.max_metadata_depth, f.max_metadata_bytes
        ),
    })
}

fn doc_types() -> Vec<&'static str> {
    enclave_core::DocumentType::ALL
        .iter()
        .map(|t| t.as_str())
        .collect()
}

const ROLES: [&str; 4] = ["viewer", "member", "admin", "owner"];
const MESSAGE_ROLES: [&str; 4] = ["user", "assistant", "system", "tool"];

/// The search `metadata` filter grammar (API.md §5, `enclave_core::filter`):
/// `FilterLevel{d}` is an object of conditions with `d` key segments left
/// (a dotted key spends one per segment, a nested object continues with
/// what is left), so the schema refuses exactly the paths deeper than
/// `MAX_PATH_DEPTH`.
fn filter_schemas() -> Value {
    use enclave_core::filter::{MAX_IN_VALUES, MAX_KEY_LEN, MAX_PATH_DEPTH};
    let seg = format!("[^{CC}\"\\\\.]{{1,{MAX_KEY_LEN}}}");
    let mut out = serde_json::Map::new();
    out.insert(
        "FilterScalar".into(),
        json!({"type": ["string", "number", "boolean"]}),
    );
    let scalar = || json!({"$ref": "#/components/schemas/FilterScalar"});
    out.insert(
        "FilterOperators".into(),
        json!({
            "type": "object",
            "minProperties": 1,
            "additionalProperties": false,
            "properties": {
                "$eq": scalar(), "$ne": scalar(), "$gt": scalar(),
                "$gte": scalar(), "$lt": scalar(), "$lte": scalar(),
                "$in": {"type": "array", "minItems": 1, "maxItems": MAX_IN_VALUES, "items": scalar()},
                "$exists": {"type": "boolean"},
            },
        }),
    );
    for left in 1..=MAX_PATH_DEPTH {
        let mut patterns = serde_json::Map::new();
        for k in 1..=left {
            let key = format!("^(?!\\$){seg}(\\.{seg}){{{}}}$", k - 1);
            let mut value = vec![
                scalar(),
                json!({"$ref": "#/components/schemas/FilterOperators"}),
            ];
            if k < left {
                value
                    .push(json!({"$ref": format!("#/components/schemas/FilterLevel{}", left - k)}));
            }
            patterns.insert(key, json!({"anyOf": value}));
        }
        out.insert(
            format!("FilterLevel{left}"),
            json!({
                "type": "object",
                "minProperties": 1,
                "additionalProperties": false,
                "patternProperties": patterns,
            }),
        );
    }
    let mut top = out[&format!("FilterLevel{MAX_PATH_DEPTH}")].clone();
    top["minProperties"] = json!(0);
    out.insert(
        "MetadataFilter".into(),
        json!({
            "description": format!(
                "conditions on document metadata, ANDed: `key: value` (equality), `key: {{\"$gt\": value, ...}}`, nested objects or dotted keys for nested keys (at most {MAX_PATH_DEPTH} levels); at most {} conditions in all",
                enclave_core::filter::MAX_CONDITIONS
            ),
            "anyOf": [{"type": "null"}, top],
        }),
    );
    Value::Object(out)
}

fn search_body() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["query"],
        "properties": {
            "query": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_QUERY_CHARS,
                "pattern": non_blank(),
                "description": "what to search for; not only white space",
            },
            "mode": {"type": "string", "enum": ["vector", "text", "hybrid"], "default": "hybrid"},
            "limit": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_LIMIT, "default": 10},
            "origins": {"type": "array", "maxItems": MAX_LIST_FILTER, "items": name_id()},
            "types": {"type": "array", "maxItems": MAX_LIST_FILTER, "items": {"type": "string", "enum": doc_types()}},
            "metadata": {"$ref": "#/components/schemas/MetadataFilter"},
            "created_after": nullable(timestamp()),
            "created_before": nullable(timestamp()),
            "document_date_after": nullable(timestamp()),
            "document_date_before": nullable(timestamp()),
            "include_documents": {"type": "boolean", "default": false},
            "min_score": {"type": ["number", "null"]},
            "alpha": {"type": ["number", "null"], "minimum": 0, "maximum": 1,
                      "description": "weight of the vector half in hybrid fusion; unset: the tenant's default, else 0.5 (convex) or equal weights (rrf)"},
            "fusion": {"type": ["string", "null"], "enum": ["rrf", "convex", null],
                       "description": "how hybrid search fuses its lists: convex (cosine above the model's floor and BM25 over the query's ceiling, weighted by alpha) or rrf (ranks only); unset: the tenant's default, else convex"},
            "aggregation": {"type": ["string", "null"], "enum": ["chunk", "best_chunk", "decayed_sum", null],
                            "description": "rank chunks, or documents (each once, at its best chunk or by the decayed sum of its chunks' scores); unset: the tenant's default, else chunk"},
            "aggregation_decay": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1,
                                  "description": "the decay of decayed_sum aggregation (unused by the others); unset: the tenant's default, else 0.5"},
            "prf": {
                "type": ["object", "null"],
                "additionalProperties": false,
                "description": "pseudo-relevance feedback for the text half (opt-in): the first `chunks` text hits' `terms` most telling words are added to the query at up to `weight` and the text search runs again",
                "properties": {
                    "chunks": {"type": "integer", "minimum": 1, "maximum": 20, "default": 5},
                    "terms": {"type": "integer", "minimum": 1, "maximum": 32, "default": 10},
                    "weight": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.5},
                },
            },
        },
        "description": "An empty date range (after not before before) matches nothing.",
    })
}

/// A document as `POST /v1/documents` (and each job item) takes it:
/// `content`, or `chunks` with their vectors, never both.
fn create_body(f: &Facts) -> Value {
    let common = json!({
        "name": name(f.max_name_chars),
        "type": {"type": "string", "enum": doc_types(), "default": "text"},
        "origin": nullable(name_id()),
        "external_id": {
            "type": ["string", "null"],
            "minLength": 1,
            "maxLength": 255,
            "pattern": format!("^[^{CC}]*$"),
        },
        "metadata": metadata(f),
        "chunking": {
            "type": ["object", "null"],
            "additionalProperties": false,
            "properties": {
                "strategy": {"type": "string", "enum": ["auto", "fixed", "sliding", "hierarchical"], "default": "auto"},
                "max_tokens": {"type": "integer", "minimum": enclave_core::chunk::MIN_CHUNK_TOKENS, "maximum": f.model_max_tokens, "default": 256},
                "overlap_tokens": {"type": "integer", "minimum": 0, "maximum": u32::MAX, "default": 32,
                                   "description": "at most half of max_tokens is used (a larger value counts as half)"},
            },
        },
        "document_date": nullable(timestamp()),
    });
    let with = |extra: Value| {
        let mut p = common.as_object().cloned().unwrap_or_default();
        p.extend(extra.as_object().cloned().unwrap_or_default());
        Value::Object(p)
    };
    let text = json!({
        "content": {"type": "string", "minLength": 1, "pattern": non_blank(),
                    "description": "the text to chunk and embed; not only white space"},
        "chunks": {"type": "null"},
        "embeddings": {"type": "null"},
    });
    let chunk = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["content", "embedding"],
        "properties": {
            "content": {"type": "string", "minLength": 1, "pattern": non_blank()},
            "embedding": {
                "type": "array",
                "minItems": f.dimensions,
                "maxItems": f.dimensions,
                // f32: finite, and not all zero once stored as f32.
                "items": {"type": "number", "minimum": -3.4028234e38, "maximum": 3.4028234e38},
                "contains": {"anyOf": [{"type": "number", "minimum": 1e-45}, {"type": "number", "maximum": -1e-45}]},
            },
        },
    });
    let vectors = json!({
        "content": {"type": "null"},
        "chunks": {"type": "array", "minItems": 1, "maxItems": f.max_chunks_per_document, "items": chunk},
        "embeddings": {"description": "accepted for API.md's shape and ignored; the vectors travel inside `chunks`"},
    });
    json!({
        "description": "A document: `content` (chunked and embedded here) or `chunks` with precomputed vectors, not both. No text may hold NUL characters.",
        "oneOf": [
            {"type": "object", "additionalProperties": false, "required": ["name", "content"], "properties": with(text)},
            {"type": "object", "additionalProperties": false, "required": ["name", "chunks"], "properties": with(vectors)},
        ],
    })
}

/// A tenant's search defaults (docs/API-EXTENSIONS.md).
fn search_defaults_schema() -> Value {
    json!({
        "type": ["object", "null"],
        "additionalProperties": false,
        "description": "the fusion, alpha and aggregation this tenant's searches use when a request names none; a PATCH replaces the object ({} clears it)",
        "properties": {
            "fusion": {"type": ["string", "null"], "enum": ["rrf", "convex", null]},
            "alpha": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
            "aggregation": {"type": ["string", "null"], "enum": ["chunk", "best_chunk", "decayed_sum", null]},
            "aggregation_decay": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1},
        },
    })
}

fn limits_schema() -> Value {
    let amount = json!({"type": ["number", "null"], "minimum": 0,
                        "maximum": crate::service::tenants::MAX_LIMIT_VALUE});
    json!({
        "type": ["object", "null"],
        "additionalProperties": false,
        "properties": {
            "requests_per_second": {"type": ["number", "null"], "minimum": 0.000001, "maximum": 1000000},
            "burst": {"type": ["integer", "null"], "minimum": 1, "maximum": u32::MAX},
            "max_documents": amount,
            "max_storage_bytes": amount,
            "embedding_tokens_per_day": amount,
            "monthly_budget_usd": amount,
        },
    })
}

/// Component schemas replaced or added whole.
fn components(f: &Facts) -> Vec<(String, Value)> {
    let out = vec![
        ("CreateBody", create_body(f)),
        ("SearchBody", search_body()),
        (
            "NewKeyBody",
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["name", "role"],
                "properties": {
                    "name": name(enclave_core::check::MAX_LABEL_CHARS),
                    "role": {"type": "string", "enum": ROLES,
                             "description": "at most the creating credential's own role (higher: 403)"},
                    "expires_at": nullable(timestamp()),
                },
                "description": "A key whose expires_at has passed is created expired: it authenticates nothing.",
            }),
        ),
        (
            "NewMessageBody",
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["role", "content"],
                "properties": {
                    "role": {"type": "string", "enum": MESSAGE_ROLES},
                    "content": {"type": "string"},
                    "origin": nullable(name_id()),
                    "metadata": metadata(f),
                },
            }),
        ),
        (
            "JobBody",
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["documents"],
                "properties": {
                    "documents": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": f.max_documents_per_job,
                        "items": {"$ref": "#/components/schemas/CreateBody"},
                        "description": "document bodies, each as `POST /v1/documents` takes it",
                    },
                },
            }),
        ),
        (
            "PatchBody",
            json!({
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "name": nullable(name(f.max_name_chars)),
                    "metadata": metadata(f),
                },
            }),
        ),
        (
            "DeleteMany",
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["document_ids"],
                "properties": {
                    "document_ids": {"type": "array", "maxItems": 1000, "items": {"type": "string"},
                                     "description": "ids that are not this tenant's documents are not counted"},
                },
            }),
        ),
        (
            "CreateTenant",
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["id", "slug", "name"],
                "properties": {
                    "id": name_id(),
                    "slug": {"type": "string", "minLength": 1, "maxLength": 63, "pattern": "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"},
                    "name": name(enclave_core::check::MAX_LABEL_CHARS),
                    "plan": {"type": ["string", "null"], "description": "a configured plan; an unknown one gets free's limits"},
                    "isolation": if f.places_tenants {
                        json!({"type": ["string", "null"], "enum": ["shared", "schema", "database", null]})
                    } else {
                        json!({"type": ["string", "null"], "enum": ["shared", null],
                               "description": "this server does not place tenants: they start shared and move with `enclave move-tenant`"})
                    },
                    "limits": limits_schema(),
                    "search": search_defaults_schema(),
                },
            }),
        ),
        (
            "PatchTenant",
            json!({
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "status": {"type": ["string", "null"], "enum": ["active", "suspended", null]},
                    "plan": {"type": ["string", "null"]},
                    "limits": limits_schema(),
                    "search": search_defaults_schema(),
                },
            }),
        ),
    ];
    let mut out: Vec<(String, Value)> = out.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    if let Value::Object(m) = filter_schemas() {
        out.extend(m);
    }
    out
}

/// Query, path and header parameters: (method, path, name, schema).
fn parameters() -> Vec<(&'static str, &'static str, &'static str, Value)> {
    let doc_cursor = json!({"type": "string", "pattern": "^(c1\\.[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})?$",
                            "description": "`next_cursor` of the previous page"});
    let tenant_cursor = json!({"anyOf": [{"type": "string", "maxLength": 0}, name_id()],
                               "description": "`next_cursor` of the previous page"});
    vec![
        ("get", "/v1/documents", "limit", limit(100)),
        ("get", "/v1/documents", "cursor", doc_cursor),
        (
            "get",
            "/v1/documents",
            "offset",
            json!({"type": "integer", "minimum": 0, "maximum": enclave::MAX_OFFSET}),
        ),
        ("get", "/v1/documents", "origin", name_id()),
        (
            "get",
            "/v1/documents",
            "type",
            json!({"type": "string", "enum": doc_types()}),
        ),
        ("get", "/v1/documents", "created_after", timestamp()),
        ("get", "/v1/documents", "created_before", timestamp()),
        (
            "post",
            "/v1/documents",
            "Idempotency-Key",
            json!({"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"}),
        ),
        ("get", "/v1/documents/{id}", "id", uuid()),
        ("patch", "/v1/documents/{id}", "id", uuid()),
        ("delete", "/v1/documents/{id}", "id", uuid()),
        ("get", "/v1/jobs/{job_id}", "job_id", uuid()),
        (
            "delete",
            "/v1/keys/{key_id}",
            "key_id",
            json!({"type": "string"}),
        ),
        (
            "post",
            "/v1/sessions/{session_id}/messages",
            "session_id",
            name_id(),
        ),
        (
            "get",
            "/v1/sessions/{session_id}/messages",
            "session_id",
            name_id(),
        ),
        (
            "get",
            "/v1/sessions/{session_id}/messages",
            "limit",
            limit(500),
        ),
        (
            "get",
            "/v1/sessions/{session_id}/messages",
            "before_seq",
            json!({"type": "integer", "format": "int64"}),
        ),
        (
            "delete",
            "/v1/sessions/{session_id}",
            "session_id",
            name_id(),
        ),
        ("get", "/v1/usage", "from", day_or_timestamp()),
        ("get", "/v1/usage", "to", day_or_timestamp()),
        ("get", "/admin/v1/usage", "from", day_or_timestamp()),
        ("get", "/admin/v1/usage", "to", day_or_timestamp()),
        ("get", "/admin/v1/usage", "limit", limit(100)),
        ("get", "/admin/v1/usage", "cursor", tenant_cursor.clone()),
        ("get", "/admin/v1/tenants", "limit", limit(100)),
        ("get", "/admin/v1/tenants", "cursor", tenant_cursor),
        ("get", "/admin/v1/tenants/{id}", "id", name_id()),
        ("patch", "/admin/v1/tenants/{id}", "id", name_id()),
        ("delete", "/admin/v1/tenants/{id}", "id", name_id()),
        ("post", "/admin/v1/tenants/{id}/keys", "id", name_id()),
        (
            "get",
            "/admin/v1/audit",
            "tenant_id",
            json!({"anyOf": [{"type": "string", "maxLength": 0}, name_id()]}),
        ),
        ("get", "/admin/v1/audit", "limit", limit(500)),
        (
            "get",
            "/admin/v1/audit",
            "cursor",
            json!({"anyOf": [{"type": "string", "maxLength": 0}, {"type": "integer", "format": "int64"}],
                                                    "description": "`next_cursor` of the previous page"}),
        ),
    ]
}

/// Request bodies whose handler takes untyped JSON: (method, path, schema).
fn bodies() -> Vec<(&'static str, &'static str, Value)> {
    vec![(
        "post",
        "/v1/search",
        json!({"$ref": "#/components/schemas/SearchBody"}),
    )]
}

/// Writes the rules into `doc` (the generated OpenAPI document as JSON).
/// Returns the rules that named nothing in it (a renamed route or
/// parameter); a test keeps that list empty.
pub(crate) fn apply(doc: &mut Value, f: &Facts) -> Vec<String> {
    let mut missed = Vec::new();
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        for (name, schema) in components(f) {
            schemas.insert(name, schema);
        }
    } else {
        missed.push("components.schemas".to_owned());
    }
    for (method, path, name, schema) in parameters() {
        let params = doc
            .get_mut("paths")
            .and_then(|p| p.get_mut(path))
            .and_then(|p| p.get_mut(method))
            .and_then(|op| op.get_mut("parameters"))
            .and_then(Value::as_array_mut);
        let found = params.and_then(|ps| {
            ps.iter_mut()
                .find(|p| p["name"] == name)
                .and_then(Value::as_object_mut)
        });
        match found {
            Some(p) => {
                p.insert("schema".into(), schema);
            }
            None => missed.push(format!("{method} {path} parameter {name}")),
        }
    }
    for (method, path, schema) in bodies() {
        match doc.pointer_mut(&format!(
            "/paths/{}/{method}/requestBody/content/application~1json",
            path.replace('~', "~0").replace('/', "~1")
        )) {
            Some(Value::Object(content)) => {
                content.insert("schema".into(), schema);
            }
            _ => missed.push(format!("{method} {path} body")),
        }
    }
    if let Some(info) = doc.get_mut("info").and_then(Value::as_object_mut) {
        let d = info
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        info.insert(
            "description".into(),
            Value::String(format!(
                "{d} Text and JSON fields may not hold NUL (\\u0000) characters; every other rule the server checks is in this document's schemas."
            )),
        );
    }
    missed
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_rule_names_an_operation_parameter_or_schema_of_the_document() {
        let api = crate::api_router().into_openapi();
        let mut doc = serde_json::to_value(&api).unwrap();
        let facts = super::Facts::new(&enclave::Limits::default(), 384, 256);
        assert_eq!(super::apply(&mut doc, &facts), Vec::<String>::new());
        assert_eq!(
            doc["paths"]["/v1/search"]["post"]["requestBody"]["content"]["application/json"]
                ["schema"]["$ref"],
            "#/components/schemas/SearchBody"
        );
        assert!(doc["components"]["schemas"]["FilterLevel8"].is_object());
    }
}
