//! The OpenAPI document, generated from the handlers' `#[utoipa::path]`
//! annotations as the router is built (one source for routes and spec), and
//! the interactive docs page.

use axum::response::Html;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// An RFC 9457 problem (API.md §3); `application/problem+json`.
#[derive(Serialize, ToSchema)]
pub struct Problem {
    /// `urn:enclave:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// One of API.md §3's codes.
    pub code: String,
    pub detail: String,
}

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key `ek_<public-id>_<secret>` or a JWT (tenant routes); the platform admin token or a `platform_admin` JWT signed by an admin-plane key (/admin/v1).",
                    ))
                    .build(),
            ),
        );
    }
}

/// The answers every credentialed operation can give whatever its handler
/// does (API.md §3), added to each after the routes are merged instead of
/// in every handler's annotation: 400 (a malformed query string is refused
/// before any handler runs), 401, 403, 429 (request rate, quotas, queues,
/// failed-credential buckets) and 503; 404 where the path names a
/// resource; 413 where there is a body.
pub(crate) fn add_common_responses(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let problem = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build()
    };
    let always = [
        ("400", "invalid_request"),
        ("401", "unauthenticated"),
        ("403", "forbidden, tenant_mismatch or tenant_suspended"),
        ("429", "rate_limited (with Retry-After): over the tenant's request rate (a body spends one request per started 256 KiB), a full queue of the tenant's, its data connections all busy, another export of the tenant's still streaming, or too many failed credentials from this address; or quota_exceeded"),
        ("503", "unavailable (with Retry-After): a backing store cannot be reached; nothing was changed"),
    ];
    for (path, item) in api.paths.paths.iter_mut() {
        if !(path.starts_with("/v1/") || path.starts_with("/admin/") || path == "/metrics") {
            continue;
        }
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            let has_path_param = op
                .parameters
                .iter()
                .flatten()
                .any(|p| matches!(p, utoipa::openapi::RefOr::T(p) if p.parameter_in == ParameterIn::Path));
            let mut add = always.to_vec();
            if path.starts_with("/admin/") {
                add[2] = (
                    "403",
                    "forbidden: a tenant credential on the platform plane",
                );
            }
            if has_path_param {
                add.push((
                    "404",
                    "not_found: no such resource in this tenant (another tenant's id is the same 404)",
                ));
            }
            if op.request_body.is_some() {
                add.push(("413", "payload_too_large"));
            }
            for (status, description) in add {
                op.responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| problem(description).into());
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Enclave",
        description = "Multi-tenant memory and hybrid search. The tenant of every /v1 request comes only from its credential.",
        version = "1"
    ),
    modifiers(&Bearer),
    components(schemas(Problem))
)]
pub struct ApiDoc;

/// This document, as built with the router.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "the OpenAPI 3.1 document of this server", body = serde_json::Value)))]
pub async fn openapi_json(
    axum::Extension(api): axum::Extension<std::sync::Arc<serde_json::Value>>,
) -> axum::Json<serde_json::Value> {
    axum::Json(api.as_ref().clone())
}

/// The Scalar release the docs page loads, and the SHA-384 of its
/// `dist/browser/standalone.js` as npm publishes it (jsDelivr serves the
/// package's files unchanged): the browser runs that exact file or none, so
/// a changed or compromised CDN copy never sees keys typed into the page's
/// console. To upgrade: `npm pack @scalar/api-reference@<version>`, then
/// `openssl dgst -sha384 -binary package/dist/browser/standalone.js | base64`.
pub const SCALAR_VERSION: &str = "1.76.0";
pub const SCALAR_SRI: &str =
    "sha384-oH1C0RwqcwbVXkC+r8A+4qRoyEUQdtxAzOwumkxZtQBBcsy61FOoPt7B50OVJYYQ";

/// The docs page: the served `/openapi.json` rendered by Scalar (loaded by
/// the reader's browser, pinned by version and integrity hash; the server
/// itself fetches nothing).
#[utoipa::path(get, path = "/docs", tag = "operations", responses((status = 200, description = "interactive API documentation", body = String, content_type = "text/html")))]
pub async fn docs_page() -> Html<String> {
    Html(format!(
        r#"<!doctype html>
<html><head><title>Enclave API</title><meta charset="utf-8"></head>
<body>
<script id="api-reference" data-url="/openapi.json"></script>
<script src="https://cdn.jsdelivr.net/npm/@scalar/api-reference@{SCALAR_VERSION}/dist/browser/standalone.js" integrity="{SCALAR_SRI}" crossorigin="anonymous" referrerpolicy="no-referrer"></script>
<noscript>The API description is at <a href="/openapi.json">/openapi.json</a>.</noscript>
</body></html>"#
    ))
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_docs_page_loads_one_pinned_script_and_only_with_its_integrity_hash() {
        let page = super::docs_page().await.0;
        let scripts: Vec<&str> = page.split("<script").skip(1).collect();
        let external: Vec<&&str> = scripts.iter().filter(|s| s.contains("src=")).collect();
        assert_eq!(external.len(), 1, "{page}");
        let tag = external[0];
        assert!(tag.contains(&format!(
            "@scalar/api-reference@{}/dist/browser/standalone.js",
            super::SCALAR_VERSION
        )));
        assert!(super::SCALAR_VERSION
            .split('.')
            .all(|p| p.parse::<u32>().is_ok()));
        assert!(tag.contains(&format!("integrity=\"{}\"", super::SCALAR_SRI)));
        assert!(super::SCALAR_SRI.starts_with("sha384-") && super::SCALAR_SRI.len() == 71);
        assert!(tag.contains("crossorigin=\"anonymous\""));
    }
}
