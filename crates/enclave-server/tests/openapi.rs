//! The served OpenAPI document is well formed and agrees with API.md: the
//! same routes (method and path), and each operation documents the status
//! API.md gives it.

use std::collections::BTreeSet;
use std::path::PathBuf;

/// The contract, `shared/API.md`, which sits beside the repository (the
/// nearest `shared/API.md` up from this crate).
fn api_md() -> String {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let found = crate_dir
        .ancestors()
        .map(|d| d.join("shared/API.md"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no shared/API.md beside {} or any folder above it: the contract must be there",
                crate_dir.display()
            )
        });
    std::fs::read_to_string(&found).unwrap()
}

/// The routes this project adds where API.md is silent,
/// `docs/API-EXTENSIONS.md` of this repository.
fn extensions_md() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/API-EXTENSIONS.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `{anything}` → `{}` so parameter names do not matter.
fn normalize(path: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in path.chars() {
        match c {
            '{' => {
                inside = true;
                out.push_str("{}");
            }
            '}' => inside = false,
            _ if !inside => out.push(c),
            _ => {}
        }
    }
    out
}

/// Every `` `METHOD /path` `` in API.md.
fn documented_routes(md: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for piece in md.split('`').skip(1).step_by(2) {
        let mut words = piece.split_whitespace();
        let (Some(method), Some(path)) = (words.next(), words.next()) else {
            continue;
        };
        if !["GET", "POST", "PATCH", "DELETE", "PUT"].contains(&method) || !path.starts_with('/') {
            continue;
        }
        let path = path.split('?').next().unwrap();
        out.insert((method.to_owned(), normalize(path)));
    }
    out
}

#[test]
fn the_openapi_document_lists_exactly_the_routes_of_api_md() {
    let doc = serde_json::to_value(enclave_server::openapi_document(384, 256)).unwrap();
    // Well formed: an independent OpenAPI 3.1 parser reads it, and every
    // $ref names a component schema.
    let parsed = oas3::from_json(doc.to_string()).expect("a valid OpenAPI 3.1 document");
    assert!(parsed.openapi.starts_with("3.1"));
    let text = doc.to_string();
    for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = r.split('"').next().unwrap();
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling $ref {name}"
        );
    }

    let mut served = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            served.insert((method.to_uppercase(), normalize(path)));
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path} documents no response"
            );
            if path.starts_with("/v1/") || path.starts_with("/admin/") {
                assert!(
                    op["responses"]["401"].is_object(),
                    "{method} {path} lacks 401"
                );
                assert!(op["security"].is_array(), "{method} {path} lacks security");
            }
        }
    }
    let contract = documented_routes(&api_md());
    assert!(contract.len() >= 28, "{contract:?}");
    let extensions = documented_routes(&extensions_md());
    assert!(
        contract.is_disjoint(&extensions),
        "docs/API-EXTENSIONS.md repeats API.md routes"
    );
    let documented: BTreeSet<_> = contract.union(&extensions).cloned().collect();
    let missing: Vec<_> = documented.difference(&served).collect();
    let extra: Vec<_> = served.difference(&documented).collect();
    assert!(missing.is_empty(), "in API.md but not served: {missing:?}");
    assert!(
        extra.is_empty(),
        "served but neither in API.md nor docs/API-EXTENSIONS.md: {extra:?}"
    );
}

#[test]
fn each_operation_documents_the_status_api_md_gives_it() {
    let doc = serde_json::to_value(enclave_server::openapi_document(384, 256)).unwrap();
    // The success statuses API.md states (§4–§8).
    for (method, path, status) in [
        ("post", "/v1/documents", "201"),
        ("get", "/v1/documents", "200"),
        ("delete", "/v1/documents/{id}", "204"),
        ("post", "/v1/documents/delete", "200"),
        ("post", "/v1/search", "200"),
        ("post", "/v1/sessions/{session_id}/messages", "201"),
        ("delete", "/v1/sessions/{session_id}", "204"),
        ("post", "/v1/keys", "201"),
        ("delete", "/v1/keys/{key_id}", "204"),
        ("post", "/admin/v1/tenants", "201"),
        ("post", "/admin/v1/tenants/{id}/keys", "201"),
        ("delete", "/admin/v1/tenants/{id}", "200"),
        // docs/API-EXTENSIONS.md
        ("post", "/v1/jobs/documents", "202"),
        ("get", "/v1/jobs/{job_id}", "200"),
    ] {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} missing");
        assert!(
            op["responses"][status].is_object(),
            "{method} {path} lacks {status}"
        );
    }
    // Error statuses of API.md §3 where they apply.
    let create = &doc["paths"]["/v1/documents"]["post"]["responses"];
    for s in ["400", "401", "403", "409", "413", "503"] {
        assert!(create[s].is_object(), "POST /v1/documents lacks {s}");
    }
    assert!(doc["paths"]["/v1/documents/{id}"]["get"]["responses"]["404"].is_object());
    // Every operation that takes a credential may be rate limited (a
    // tenant's rate or quota on /v1, failed credentials from the address
    // everywhere); the unauthenticated operations are not.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let has = op["responses"]["429"].is_object();
            assert_eq!(
                has,
                path.starts_with("/v1/") || path.starts_with("/admin/") || path == "/metrics",
                "{method} {path}: 429 documented = {has}"
            );
        }
    }
}
