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
                        "An API key `ek_<public-id>_<secret>` or a JWT (tenant routes); the platform admin token or a `platform_admin` JWT (/admin/v1).",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every `/v1` operation can be refused by the tenant's or the credential's
/// request rate limit or by a quota (API.md §3): one 429 entry added to each
/// after the routes are merged, instead of in every handler's annotation.
pub(crate) fn add_limit_responses(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let response = ResponseBuilder::new()
        .description("rate_limited (with Retry-After): over the tenant's request rate, or too many failed credentials from this address; or quota_exceeded")
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build();
    for (path, item) in api.paths.paths.iter_mut() {
        // Every operation that takes a credential: a tenant's rate and
        // quotas, and the failed-credential buckets of the admin plane.
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
            op.responses
                .responses
                .entry("429".to_owned())
                .or_insert_with(|| response.clone().into());
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
    axum::Extension(api): axum::Extension<std::sync::Arc<utoipa::openapi::OpenApi>>,
) -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(api.as_ref().clone())
}

/// The docs page: the served `/openapi.json` rendered by Scalar (loaded by
/// the reader's browser; the server itself fetches nothing).
#[utoipa::path(get, path = "/docs", tag = "operations", responses((status = 200, description = "interactive API documentation", body = String, content_type = "text/html")))]
pub async fn docs_page() -> Html<&'static str> {
    Html(
        r#"<!doctype html>
<html><head><title>Enclave API</title><meta charset="utf-8"></head>
<body>
<script id="api-reference" data-url="/openapi.json"></script>
<script src="https://cdn.jsdelivr.net/npm/@scalar/api-reference"></script>
<noscript>The API description is at <a href="/openapi.json">/openapi.json</a>.</noscript>
</body></html>"#,
    )
}
