//! Black-box isolation tests of the HTTP API (API.md §1–§5, §7–§8) against
//! the server running in-process on port 0: adversarial credentials, tenant hints,
//! foreign ids on every route, filter and cursor tricks, role escalation,
//! the admin plane, injection strings and oversized bodies. Every case
//! asserts the exact status and `code`, and that nothing of the other
//! tenant is in the body.

on_both_backends!(
    usage_counts_equal_the_operations_performed_and_stay_per_tenant,
    metrics_and_the_openapi_document_carry_no_tenant_data,
    an_idempotency_key_replays_the_first_result_and_refuses_another_body,
    sessions_are_per_tenant_and_foreign_sessions_read_empty,
    missing_garbled_and_unknown_credentials_are_401,
    a_known_key_id_with_a_forged_secret_is_401,
    a_revoked_key_is_refused_on_the_next_request,
    an_expired_key_is_401,
    listed_keys_never_show_secrets,
    valid_jwts_hs256_and_rs256_select_the_claimed_tenant,
    alg_none_and_unsigned_tokens_are_401,
    hs256_signed_with_the_rsa_public_key_is_401,
    jwts_with_a_wrong_secret_expired_not_yet_valid_or_without_exp_are_401,
    jwts_with_a_wrong_issuer_audience_role_or_tenant_are_401,
    only_an_admin_plane_key_can_sign_a_platform_admin,
    an_x_tenant_id_header_naming_another_tenant_is_403_and_audited,
    a_host_of_another_tenants_subdomain_is_403,
    a_body_tenant_id_or_owner_id_never_selects_a_tenant,
    a_query_string_tenant_id_naming_another_tenant_is_403,
    another_tenants_document_is_indistinguishable_from_a_missing_one,
    patching_or_deleting_another_tenants_document_is_404_and_changes_nothing,
    batch_delete_does_not_count_or_touch_other_tenants_ids,
    another_tenants_key_cannot_be_revoked,
    search_never_returns_other_tenants_chunks_whatever_the_filters,
    injection_strings_in_queries_and_filters_are_safe,
    a_cursor_from_another_tenants_listing_shows_only_own_documents,
    stats_list_and_export_count_only_own_documents,
    a_viewer_cannot_write_and_a_member_cannot_manage,
    a_key_cannot_mint_a_key_above_its_own_role,
    tenant_credentials_are_forbidden_on_the_admin_plane,
    duplicate_tenant_ids_and_slugs_conflict_and_bad_ids_are_400,
    a_suspended_tenant_is_403_and_resumes_when_reactivated,
    purge_leaves_nothing_and_the_tenants_credentials_become_401,
    malformed_huge_and_deeply_nested_bodies_are_clear_errors,
    unknown_routes_are_problem_json_404,
    the_audit_chain_verifies_and_records_denials_and_deletes,
);

use crate::support::*;
use base64_free::b64url;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{json, Value};

mod base64_free {
    /// URL-safe base64 without padding (for hand-made JWTs such as `alg: none`).
    pub fn b64url(data: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for c in data.chunks(3) {
            let n = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            let k = c.len() + 1;
            for i in 0..k {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims(tenant: &str, role: &str) -> Value {
    json!({"sub": "u-1", "tenant_id": tenant, "role": role, "exp": now() + 600,
           "iss": "https://issuer.test", "aud": "enclave"})
}

fn hs256(c: &Value, secret: &[u8]) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        c,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn rs256(app: &App, c: &Value) -> String {
    encode(
        &Header::new(Algorithm::RS256),
        c,
        &EncodingKey::from_rsa_pem(&app.rsa_private_pem).unwrap(),
    )
    .unwrap()
}

// ---------------------------------------------------------------- credentials

async fn missing_garbled_and_unknown_credentials_are_401(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    let r = app.send(Method::GET, "/v1/stats", None, None, &[]).await;
    r.problem(401, "unauthenticated");
    assert!(r.text.contains("Bearer"));
    for header in [
        "Basic YWxhZGRpbjpvcGVuc2VzYW1l",
        "Bearer",
        "Bearer    ",
        "bearer",
    ] {
        app.send(
            Method::GET,
            "/v1/stats",
            None,
            None,
            &[("authorization", header)],
        )
        .await
        .problem(401, "unauthenticated");
    }
    for cred in [
        "ek_zz",
        "ek_0123456789abcdef01234567_nothex",
        "ek_0123456789abcdef01234567_0000000000000000000000000000000000000000000000000000000000000000",
        "not-a-jwt",
        "a.b.c",
    ] {
        let r = app.get("/v1/stats", cred).await;
        r.problem(401, "unauthenticated");
        w.nothing_foreign(&r);
    }
}

async fn a_known_key_id_with_a_forged_secret_is_401(backend: Backend) {
    let w = world(backend).await;
    let (id, _) = w
        .a_viewer
        .trim_start_matches("ek_")
        .split_once('_')
        .unwrap();
    let forged = format!("ek_{id}_{}", "ab".repeat(32));
    w.app
        .get("/v1/stats", &forged)
        .await
        .problem(401, "unauthenticated");
}

async fn a_revoked_key_is_refused_on_the_next_request(backend: Backend) {
    let w = world(backend).await;
    let (key, key_id) = w.app.key(&w.a, "member").await;
    w.app.get("/v1/stats", &key).await.ok(200);
    w.app
        .delete(&format!("/v1/keys/{key_id}"), &w.a)
        .await
        .ok(204);
    w.app
        .get("/v1/stats", &key)
        .await
        .problem(401, "unauthenticated");
    // Revoking it again is a missing key.
    w.app
        .delete(&format!("/v1/keys/{key_id}"), &w.a)
        .await
        .problem(404, "not_found");
}

async fn an_expired_key_is_401(backend: Backend) {
    let w = world(backend).await;
    let expires = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let r = w
        .app
        .post(
            "/v1/keys",
            &w.a,
            json!({"name": "short", "role": "viewer", "expires_at": expires}),
        )
        .await;
    let key = r.ok(201)["key"].as_str().unwrap().to_owned();
    w.app.get("/v1/stats", &key).await.ok(200);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    w.app
        .get("/v1/stats", &key)
        .await
        .problem(401, "unauthenticated");
}

async fn listed_keys_never_show_secrets(backend: Backend) {
    let w = world(backend).await;
    let r = w.app.get("/v1/keys", &w.a_admin).await;
    let keys = r.ok(200)["keys"].as_array().unwrap().clone();
    assert!(keys.len() >= 4);
    for secret in [&w.a, &w.a_viewer, &w.a_member, &w.a_admin] {
        let (_, s) = secret.trim_start_matches("ek_").split_once('_').unwrap();
        assert!(!r.text.contains(s));
    }
    w.nothing_foreign(&r);
}

async fn valid_jwts_hs256_and_rs256_select_the_claimed_tenant(backend: Backend) {
    let w = world(backend).await;
    let hs = hs256(&claims("acme", "viewer"), JWT_SECRET.as_bytes());
    let r = w.app.get("/v1/stats", &hs).await;
    assert_eq!(r.ok(200)["document_count"], 1);
    let rs = rs256(&w.app, &claims("acme", "viewer"));
    let r = w
        .app
        .post("/v1/search", &rs, json!({"query": "refunds"}))
        .await;
    assert_eq!(r.ok(200)["results"].as_array().unwrap().len(), 1);
    w.nothing_foreign(&r);
}

async fn alg_none_and_unsigned_tokens_are_401(backend: Backend) {
    let w = world(backend).await;
    let body = b64url(claims("acme", "owner").to_string().as_bytes());
    for header in [
        json!({"alg": "none", "typ": "JWT"}),
        json!({"alg": "None"}),
        json!({"alg": "HS512"}),
    ] {
        let h = b64url(header.to_string().as_bytes());
        for token in [format!("{h}.{body}."), format!("{h}.{body}")] {
            w.app
                .get("/v1/stats", &token)
                .await
                .problem(401, "unauthenticated");
        }
    }
}

async fn hs256_signed_with_the_rsa_public_key_is_401(backend: Backend) {
    let w = world(backend).await;
    let token = hs256(&claims("acme", "owner"), &w.app.rsa_public_pem);
    w.app
        .get("/v1/stats", &token)
        .await
        .problem(401, "unauthenticated");
}

async fn jwts_with_a_wrong_secret_expired_not_yet_valid_or_without_exp_are_401(backend: Backend) {
    let w = world(backend).await;
    let wrong = hs256(
        &claims("acme", "owner"),
        b"another-secret-another-secret-another-secret",
    );
    w.app
        .get("/v1/stats", &wrong)
        .await
        .problem(401, "unauthenticated");
    let mut c = claims("acme", "owner");
    c["exp"] = json!(now() - 3600);
    w.app
        .get("/v1/stats", &hs256(&c, JWT_SECRET.as_bytes()))
        .await
        .problem(401, "unauthenticated");
    let mut c = claims("acme", "owner");
    c.as_object_mut().unwrap().remove("exp");
    w.app
        .get("/v1/stats", &hs256(&c, JWT_SECRET.as_bytes()))
        .await
        .problem(401, "unauthenticated");
    // `nbf` an hour ahead: not valid yet (a minute ahead is clock skew).
    let mut c = claims("acme", "owner");
    c["nbf"] = json!(now() + 3600);
    w.app
        .get("/v1/stats", &hs256(&c, JWT_SECRET.as_bytes()))
        .await
        .problem(401, "unauthenticated");
    c["nbf"] = json!(now() + 30);
    w.app
        .get("/v1/stats", &hs256(&c, JWT_SECRET.as_bytes()))
        .await
        .ok(200);
}

/// The identity provider that signs tenant users in cannot make a platform
/// admin: `platform_admin` tokens verify only under the admin plane's own
/// keys and issuer, and an admin key's token is nobody on a tenant's plane.
async fn only_an_admin_plane_key_can_sign_a_platform_admin(backend: Backend) {
    let w = world(backend).await;
    let admin_claims = || {
        let mut c = claims("acme", "platform_admin");
        c.as_object_mut().unwrap().remove("tenant_id");
        c["iss"] = json!(ADMIN_JWT_ISSUER);
        c
    };
    // Signed by the tenant plane's keys (HS256 secret, RS256 key), with
    // either issuer: no valid credential on either plane.
    for iss in ["https://issuer.test", ADMIN_JWT_ISSUER] {
        let mut c = admin_claims();
        c["iss"] = json!(iss);
        for token in [hs256(&c, JWT_SECRET.as_bytes()), rs256(&w.app, &c)] {
            let r = w.app.get("/admin/v1/tenants", &token).await;
            r.problem(401, "unauthenticated");
            w.nothing_foreign(&r);
            w.app
                .get("/v1/stats", &token)
                .await
                .problem(401, "unauthenticated");
        }
    }
    // The admin key with the admin issuer is the platform admin ...
    let admin = hs256(&admin_claims(), ADMIN_JWT_SECRET.as_bytes());
    w.app.get("/admin/v1/tenants", &admin).await.ok(200);
    w.app
        .get("/v1/stats", &admin)
        .await
        .problem(403, "forbidden");
    // ... but not with another issuer, and its key signs no tenant user.
    let mut c = admin_claims();
    c["iss"] = json!("https://issuer.test");
    w.app
        .get("/admin/v1/tenants", &hs256(&c, ADMIN_JWT_SECRET.as_bytes()))
        .await
        .problem(401, "unauthenticated");
    let mut user = claims("acme", "owner");
    user["iss"] = json!(ADMIN_JWT_ISSUER);
    let user = hs256(&user, ADMIN_JWT_SECRET.as_bytes());
    w.app
        .get("/v1/stats", &user)
        .await
        .problem(401, "unauthenticated");
    w.app
        .get("/admin/v1/tenants", &user)
        .await
        .problem(401, "unauthenticated");
}

async fn jwts_with_a_wrong_issuer_audience_role_or_tenant_are_401(backend: Backend) {
    let w = world(backend).await;
    for (field, value) in [
        ("iss", json!("https://evil.test")),
        ("aud", json!("someone-else")),
        ("role", json!("superuser")),
        ("tenant_id", json!("bad tenant id")),
    ] {
        let mut c = claims("acme", "owner");
        c[field] = value;
        w.app
            .get("/v1/stats", &hs256(&c, JWT_SECRET.as_bytes()))
            .await
            .problem(401, "unauthenticated");
    }
    // A JWT for a tenant that does not exist.
    w.app
        .get(
            "/v1/stats",
            &hs256(&claims("nobody", "owner"), JWT_SECRET.as_bytes()),
        )
        .await
        .problem(401, "unauthenticated");
}

// ------------------------------------------------------------------ hints

async fn an_x_tenant_id_header_naming_another_tenant_is_403_and_audited(backend: Backend) {
    let w = world(backend).await;
    let r = w
        .app
        .send(
            Method::GET,
            "/v1/stats",
            Some(&w.a),
            None,
            &[("x-tenant-id", "globex")],
        )
        .await;
    r.problem(403, "tenant_mismatch");
    w.nothing_foreign(&r);
    w.app
        .send(
            Method::GET,
            "/v1/stats",
            Some(&w.a),
            None,
            &[("x-tenant-id", "acme")],
        )
        .await
        .ok(200);
    let audit = w
        .app
        .get("/admin/v1/audit?tenant_id=acme&limit=500", ADMIN)
        .await;
    let events = audit.ok(200)["events"].as_array().unwrap().clone();
    assert!(events
        .iter()
        .any(|e| e["action"] == "tenant.mismatch" && e["detail"]["hint"] == "X-Tenant-ID"));
}

async fn a_host_of_another_tenants_subdomain_is_403(backend: Backend) {
    let w = world(backend).await;
    let host = format!("globex.{BASE_DOMAIN}");
    w.app
        .send(
            Method::GET,
            "/v1/stats",
            Some(&w.a),
            None,
            &[("host", &host)],
        )
        .await
        .problem(403, "tenant_mismatch");
    let own = format!("acme.{BASE_DOMAIN}:8080");
    w.app
        .send(
            Method::GET,
            "/v1/stats",
            Some(&w.a),
            None,
            &[("host", &own)],
        )
        .await
        .ok(200);
}

async fn a_body_tenant_id_or_owner_id_never_selects_a_tenant(backend: Backend) {
    let w = world(backend).await;
    let mut rows = Vec::new();
    for field in ["tenant_id", "owner_id"] {
        let mut body = json!({"name": "x.txt", "type": "text", "content": "planted"});
        body[field] = json!("globex");
        rows.push(
            Refusal::new(Method::POST, "/v1/documents", &w.a, 403, "tenant_mismatch").body(body),
        );
        let mut q = json!({"query": "refunds"});
        q[field] = json!("globex");
        rows.push(Refusal::new(Method::POST, "/v1/search", &w.a, 403, "tenant_mismatch").body(q));
    }
    for r in w.app.expect_refusals(&rows).await {
        w.nothing_foreign(&r);
    }
    // Nothing was stored in either tenant.
    assert_eq!(
        w.app.get("/v1/stats", &w.a).await.ok(200)["document_count"],
        1
    );
    assert_eq!(
        w.app.get("/v1/stats", &w.b).await.ok(200)["document_count"],
        1
    );
    // Naming one's own tenant is harmless.
    let mut body = json!({"query": "refunds"});
    body["tenant_id"] = json!("acme");
    w.app.post("/v1/search", &w.a, body).await.ok(200);
}

async fn a_query_string_tenant_id_naming_another_tenant_is_403(backend: Backend) {
    let w = world(backend).await;
    let rows = [
        "/v1/documents?tenant_id=globex",
        "/v1/stats?owner_id=globex",
    ]
    .map(|path| Refusal::new(Method::GET, path, &w.a, 403, "tenant_mismatch"));
    for r in w.app.expect_refusals(&rows).await {
        w.nothing_foreign(&r);
    }
}

// ------------------------------------------------------------- foreign ids

async fn another_tenants_document_is_indistinguishable_from_a_missing_one(backend: Backend) {
    let w = world(backend).await;
    let missing = "01a2306c-0000-7000-8000-000000000000";
    let answers = w
        .app
        .expect_refusals(
            &[
                format!("/v1/documents/{missing}"),
                format!("/v1/documents/{}", w.b_doc),
                "/v1/documents/not-an-id".to_owned(),
                format!("/v1/documents/{}?include_chunks=true", w.b_doc),
            ]
            .map(|path| Refusal::new(Method::GET, path, &w.a, 404, "not_found")),
        )
        .await;
    let absent = &answers[0];
    for r in &answers {
        assert_eq!(r.body, absent.body, "the same 404 as a missing id");
        w.nothing_foreign(r);
    }
}

async fn patching_or_deleting_another_tenants_document_is_404_and_changes_nothing(
    backend: Backend,
) {
    let w = world(backend).await;
    let path = format!("/v1/documents/{}", w.b_doc);
    let patch = json!({"name": "pwned", "metadata": {"x": 1}});
    for r in w
        .app
        .expect_refusals(&[
            Refusal::new(Method::PATCH, &path, &w.a, 404, "not_found").body(patch),
            Refusal::new(Method::DELETE, &path, &w.a, 404, "not_found"),
        ])
        .await
    {
        w.nothing_foreign(&r);
    }
    let still = w.app.get(&path, &w.b).await;
    assert_eq!(still.ok(200)["name"], "secret.txt");
    assert_eq!(still.body["metadata"]["team"], "globex");
}

async fn batch_delete_does_not_count_or_touch_other_tenants_ids(backend: Backend) {
    let w = world(backend).await;
    let r = w
        .app
        .post(
            "/v1/documents/delete",
            &w.a_member,
            json!({"document_ids": [w.b_doc, "garbage", "01a2306c-0000-7000-8000-000000000000"]}),
        )
        .await;
    assert_eq!(r.ok(200)["deleted_count"], 0);
    assert_eq!(
        w.app.get("/v1/stats", &w.b).await.ok(200)["document_count"],
        1
    );
    let r = w
        .app
        .post(
            "/v1/documents/delete",
            &w.a_member,
            json!({"document_ids": [w.a_doc, w.b_doc]}),
        )
        .await;
    assert_eq!(r.ok(200)["deleted_count"], 1);
    assert_eq!(
        w.app.get("/v1/stats", &w.b).await.ok(200)["document_count"],
        1
    );
}

async fn another_tenants_key_cannot_be_revoked(backend: Backend) {
    let w = world(backend).await;
    w.app
        .delete(&format!("/v1/keys/{}", w.b_key_id), &w.a)
        .await
        .problem(404, "not_found");
    let keys = w.app.get("/v1/keys", &w.b).await;
    let k = keys.ok(200)["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == w.b_key_id.as_str())
        .cloned()
        .unwrap();
    assert!(k["revoked_at"].is_null());
}

// --------------------------------------------------- search, lists, exports

async fn search_never_returns_other_tenants_chunks_whatever_the_filters(backend: Backend) {
    let w = world(backend).await;
    for body in [
        json!({"query": "refunds globex"}),
        json!({"query": B_SECRET, "mode": "text"}),
        json!({"query": "refunds", "mode": "vector", "limit": 100}),
        json!({"query": "refunds", "origins": ["user-9"]}),
        json!({"query": "refunds", "metadata": {"team": "globex"}}),
        json!({"query": "refunds", "metadata": {"year": {"$lt": 2025}}}),
        json!({"query": "refunds", "metadata": {"team": {"$exists": true}}}),
    ] {
        let r = w.app.post("/v1/search", &w.a_viewer, body.clone()).await;
        let results = r.ok(200)["results"].as_array().unwrap().clone();
        w.nothing_foreign(&r);
        for hit in results {
            assert_eq!(hit["document_id"], w.a_doc.as_str(), "{body}");
        }
    }
}

async fn injection_strings_in_queries_and_filters_are_safe(backend: Backend) {
    let w = world(backend).await;
    for q in [
        "'; DROP TABLE documents; --",
        "\" OR 1=1 --",
        "refunds\" OR \"",
        "-(-(-",
        "NEAR(a b) * ^ : {} [] \\",
        "x' UNION SELECT content FROM chunks --",
        "\u{0000}refunds",
    ] {
        for mode in ["text", "hybrid"] {
            let r = w
                .app
                .post("/v1/search", &w.a, json!({"query": q, "mode": mode}))
                .await;
            assert_eq!(r.status, 200, "{q:?}: {}", r.text);
            w.nothing_foreign(&r);
        }
    }
    for metadata in [
        json!({"a') OR 1=1 --": 1}),
        json!({"year": "2025' OR '1'='1"}),
        json!({"$or": [{"team": "globex"}]}),
    ] {
        let r = w
            .app
            .post(
                "/v1/search",
                &w.a,
                json!({"query": "refunds", "metadata": metadata}),
            )
            .await;
        assert!(r.status == 200 || r.status == 400, "{}", r.text);
        if r.status == 400 {
            r.problem(400, "invalid_request");
        }
        w.nothing_foreign(&r);
    }
    w.app
        .post(
            "/v1/search",
            &w.a,
            json!({"query": "refunds", "metadata": {"year": {"$regex": ".*"}}}),
        )
        .await
        .problem(400, "invalid_request");
    w.app
        .post("/v1/search", &w.a, json!({"query": "   "}))
        .await
        .problem(400, "invalid_request");
    // Both tenants' data is still there.
    assert_eq!(
        w.app.get("/v1/stats", &w.b).await.ok(200)["document_count"],
        1
    );
}

async fn a_cursor_from_another_tenants_listing_shows_only_own_documents(backend: Backend) {
    let w = world(backend).await;
    for i in 0..3 {
        w.app
            .add(&w.b, &format!("b{i}.txt"), "globex page", json!({}))
            .await;
    }
    let page = w.app.get("/v1/documents?limit=1", &w.b).await;
    let cursor = page.ok(200)["next_cursor"].as_str().unwrap().to_owned();
    let r = w
        .app
        .get(&format!("/v1/documents?limit=100&cursor={cursor}"), &w.a)
        .await;
    w.nothing_foreign(&r);
    for d in r.ok(200)["documents"].as_array().unwrap() {
        assert_eq!(d["document_id"], w.a_doc.as_str());
    }
    w.app
        .get("/v1/documents?cursor=forged-cursor", &w.a)
        .await
        .problem(400, "invalid_request");
}

async fn stats_list_and_export_count_only_own_documents(backend: Backend) {
    let w = world(backend).await;
    let s = w.app.get("/v1/stats?breakdown=true", &w.a).await;
    assert_eq!(s.ok(200)["document_count"], 1);
    w.nothing_foreign(&s);
    let l = w.app.get("/v1/documents", &w.a).await;
    assert_eq!(l.ok(200)["total"], 1);
    w.nothing_foreign(&l);
    let e = w.app.get("/v1/export", &w.a_admin).await;
    assert_eq!(e.status, 200);
    assert!(e.content_type.starts_with("application/x-ndjson"));
    let lines: Vec<Value> = e
        .text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["document_id"], w.a_doc.as_str());
    w.nothing_foreign(&e);
}

// ----------------------------------------------------------------- roles

async fn a_viewer_cannot_write_and_a_member_cannot_manage(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    let doc = json!({"name": "v.txt", "type": "text", "content": "x"});
    let one = format!("/v1/documents/{}", w.a_doc);
    let (viewer, member) = (w.a_viewer.as_str(), w.a_member.as_str());
    app.expect_refusals(&[
        Refusal::new(Method::POST, "/v1/documents", viewer, 403, "forbidden").body(doc.clone()),
        Refusal::new(Method::PATCH, &one, viewer, 403, "forbidden").body(json!({"name": "n"})),
        Refusal::new(Method::DELETE, &one, viewer, 403, "forbidden"),
        Refusal::new(
            Method::POST,
            "/v1/documents/delete",
            viewer,
            403,
            "forbidden",
        )
        .body(json!({"document_ids": [w.a_doc]})),
        Refusal::new(Method::GET, "/v1/export", member, 403, "forbidden"),
        Refusal::new(Method::GET, "/v1/keys", member, 403, "forbidden"),
        Refusal::new(Method::POST, "/v1/keys", member, 403, "forbidden")
            .body(json!({"name": "k", "role": "viewer"})),
    ])
    .await;
    // The viewer still reads.
    app.get(&format!("/v1/documents/{}", w.a_doc), &w.a_viewer)
        .await
        .ok(200);
    assert_eq!(
        app.get("/v1/stats", &w.a).await.ok(200)["document_count"],
        1
    );
}

async fn a_key_cannot_mint_a_key_above_its_own_role(backend: Backend) {
    let w = world(backend).await;
    w.app
        .post(
            "/v1/keys",
            &w.a_admin,
            json!({"name": "up", "role": "owner"}),
        )
        .await
        .problem(403, "forbidden");
    w.app
        .post(
            "/v1/keys",
            &w.a_admin,
            json!({"name": "ok", "role": "member"}),
        )
        .await
        .ok(201);
    let jwt = hs256(&claims("acme", "admin"), JWT_SECRET.as_bytes());
    w.app
        .post("/v1/keys", &jwt, json!({"name": "up", "role": "owner"}))
        .await
        .problem(403, "forbidden");
}

// ------------------------------------------------------------ admin plane

async fn tenant_credentials_are_forbidden_on_the_admin_plane(backend: Backend) {
    let w = world(backend).await;
    for cred in [
        w.a.clone(),
        hs256(&claims("acme", "owner"), JWT_SECRET.as_bytes()),
    ] {
        let new = json!({"id": "x", "slug": "x", "name": "x"});
        for r in w
            .app
            .expect_refusals(&[
                Refusal::new(Method::GET, "/admin/v1/tenants", &cred, 403, "forbidden"),
                Refusal::new(Method::POST, "/admin/v1/tenants", &cred, 403, "forbidden").body(new),
                Refusal::new(
                    Method::DELETE,
                    "/admin/v1/tenants/globex",
                    &cred,
                    403,
                    "forbidden",
                ),
            ])
            .await
        {
            w.nothing_foreign(&r);
        }
    }
    w.app
        .send(Method::GET, "/admin/v1/tenants", None, None, &[])
        .await
        .problem(401, "unauthenticated");
    w.app
        .get("/admin/v1/tenants", "wrong-admin-token-0123456789")
        .await
        .problem(401, "unauthenticated");
    // A platform_admin JWT is the other way in; it has no tenant on /v1.
    let mut c = claims("acme", "platform_admin");
    c.as_object_mut().unwrap().remove("tenant_id");
    c["iss"] = json!(ADMIN_JWT_ISSUER);
    let admin_jwt = hs256(&c, ADMIN_JWT_SECRET.as_bytes());
    w.app.get("/admin/v1/tenants", &admin_jwt).await.ok(200);
    w.app
        .get("/v1/stats", &admin_jwt)
        .await
        .problem(403, "forbidden");
}

async fn duplicate_tenant_ids_and_slugs_conflict_and_bad_ids_are_400(backend: Backend) {
    let w = world(backend).await;
    w.app
        .post(
            "/admin/v1/tenants",
            ADMIN,
            json!({"id": "acme", "slug": "new-slug", "name": "x"}),
        )
        .await
        .problem(409, "conflict");
    w.app
        .post(
            "/admin/v1/tenants",
            ADMIN,
            json!({"id": "newco", "slug": "globex", "name": "x"}),
        )
        .await
        .problem(409, "conflict");
    for (id, slug) in [("-bad", "ok"), ("ok", "Not_A_Label"), ("has space", "ok2")] {
        w.app
            .post(
                "/admin/v1/tenants",
                ADMIN,
                json!({"id": id, "slug": slug, "name": "x"}),
            )
            .await
            .problem(400, "invalid_request");
    }
}

async fn a_suspended_tenant_is_403_and_resumes_when_reactivated(backend: Backend) {
    let w = world(backend).await;
    w.app
        .patch(
            "/admin/v1/tenants/acme",
            ADMIN,
            json!({"status": "suspended"}),
        )
        .await
        .ok(200);
    w.app
        .get("/v1/stats", &w.a)
        .await
        .problem(403, "tenant_suspended");
    w.app.get("/v1/stats", &w.b).await.ok(200);
    w.app
        .patch("/admin/v1/tenants/acme", ADMIN, json!({"status": "active"}))
        .await
        .ok(200);
    w.app.get("/v1/stats", &w.a).await.ok(200);
}

async fn purge_leaves_nothing_and_the_tenants_credentials_become_401(backend: Backend) {
    let w = world(backend).await;
    for i in 0..5 {
        w.app
            .add(&w.b, &format!("more{i}.txt"), "globex more text", json!({}))
            .await;
    }
    let r = w.app.delete("/admin/v1/tenants/globex", ADMIN).await;
    let receipt = r.ok(200).clone();
    assert_eq!(receipt["tenant_id"], "globex");
    assert_eq!(receipt["documents_deleted"], 6);
    assert_eq!(receipt["verified_empty"], true);
    assert!(receipt["keys_revoked"].as_u64().unwrap() >= 2);
    w.app
        .get("/v1/stats", &w.b)
        .await
        .problem(401, "unauthenticated");
    w.app
        .get("/admin/v1/tenants/globex", ADMIN)
        .await
        .problem(404, "not_found");
    // The other tenant is untouched.
    assert_eq!(
        w.app.get("/v1/stats", &w.a).await.ok(200)["document_count"],
        1
    );
    // A new tenant with the same id starts empty and the old key stays dead.
    let fresh = w.app.tenant("globex").await;
    assert_eq!(
        w.app.get("/v1/stats", &fresh).await.ok(200)["document_count"],
        0
    );
    w.app
        .get("/v1/stats", &w.b)
        .await
        .problem(401, "unauthenticated");
}

// ----------------------------------------------------------------- bodies

async fn malformed_huge_and_deeply_nested_bodies_are_clear_errors(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    // A fresh client per raw request: a connection the server closes after
    // refusing an unread oversized body must not be reused.
    let raw = |body: String, ct: &'static str| {
        let c = reqwest::Client::new();
        let url = app.url("/v1/documents");
        let key = w.a.clone();
        async move {
            let r = c
                .post(url)
                .header("authorization", format!("Bearer {key}"))
                .header("content-type", ct)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null);
            (status, v)
        }
    };
    let (s, v) = raw("{\"name\": ".into(), "application/json").await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalid_request")));
    let (s, v) = raw("{\"name\": 5, \"content\": []}".into(), "application/json").await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalid_request")));
    let (s, v) = raw("name=x".into(), "application/x-www-form-urlencoded").await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalid_request")));
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    let (s, v) = raw(
        format!("{{\"name\":\"d\",\"content\":\"x\",\"metadata\":{{\"a\":{deep}}}}}"),
        "application/json",
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalid_request")));
    let nested = format!(
        "{}{}",
        "{\"a\":".repeat(20),
        "1".to_owned() + &"}".repeat(20)
    );
    let r = app
        .post("/v1/documents", &w.a, json!({"name": "n", "content": "x", "metadata": serde_json::from_str::<Value>(&nested).unwrap()}))
        .await;
    r.problem(400, "invalid_request");
    let huge = "x".repeat(2 * 1024 * 1024);
    let (s, v) = raw(
        json!({"name": "big", "content": huge}).to_string(),
        "application/json",
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (413, Some("payload_too_large")));
    let r = app
        .post(
            "/v1/documents",
            &w.a,
            json!({"name": "n", "type": "spreadsheet", "content": "x"}),
        )
        .await;
    r.problem(400, "invalid_request");
    let r = app
        .post(
            "/v1/documents",
            &w.a,
            json!({"name": "n", "content": "x", "unknown_field": 1}),
        )
        .await;
    r.problem(400, "invalid_request");
    // Nothing was stored by any of these.
    assert_eq!(
        app.get("/v1/stats", &w.a).await.ok(200)["document_count"],
        1
    );
}

async fn unknown_routes_are_problem_json_404(backend: Backend) {
    let w = world(backend).await;
    w.app
        .get("/v1/nothing-here", &w.a)
        .await
        .problem(404, "not_found");
    let h = w.app.send(Method::GET, "/healthz", None, None, &[]).await;
    assert_eq!(h.ok(200)["status"], "ok");
    let r = w.app.send(Method::GET, "/readyz", None, None, &[]).await;
    assert_eq!(r.ok(200)["status"], "ready");
    w.nothing_foreign(&r);
}

async fn the_audit_chain_verifies_and_records_denials_and_deletes(backend: Backend) {
    let w = world(backend).await;
    w.app
        .get("/v1/export", &w.a_member)
        .await
        .problem(403, "forbidden");
    w.app
        .delete(&format!("/v1/documents/{}", w.a_doc), &w.a)
        .await
        .ok(204);
    let r = w
        .app
        .get("/admin/v1/audit?tenant_id=acme&limit=500", ADMIN)
        .await;
    let events = r.ok(200)["events"].as_array().unwrap().clone();
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"role.denied"), "{actions:?}");
    assert!(actions.contains(&"document.delete"), "{actions:?}");
    assert!(actions.contains(&"key.create"), "{actions:?}");
    for pair in events.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"]);
    }
    w.nothing_foreign(&r);
    assert!(w.app.verify_audit().await.contains("acme:"));
}

// --------------------------------------------------------------- sessions

async fn sessions_are_per_tenant_and_foreign_sessions_read_empty(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    for (key, text) in [(&w.a_member, "acme says hi"), (&w.b, B_SECRET)] {
        let r = app
            .post(
                "/v1/sessions/thread-1/messages",
                key,
                json!({"role": "user", "content": text}),
            )
            .await;
        assert_eq!(r.ok(201)["seq"], 1);
    }
    app.post(
        "/v1/sessions/thread-1/messages",
        &w.a_member,
        json!({"role": "assistant", "content": "hello", "metadata": {"turn": 2}}),
    )
    .await
    .ok(201);
    let r = app.get("/v1/sessions/thread-1/messages", &w.a_viewer).await;
    let msgs = r.ok(200)["messages"].as_array().unwrap().clone();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0]["content"], "acme says hi");
    assert_eq!(msgs[1]["seq"], 2);
    w.nothing_foreign(&r);
    let r = app
        .get("/v1/sessions/thread-1/messages?limit=1&before_seq=2", &w.a)
        .await;
    assert_eq!(r.ok(200)["messages"][0]["seq"], 1);
    // Another tenant's session (here one A never wrote) reads as empty and
    // deletes as 404.
    let r = app.get("/v1/sessions/only-b-side/messages", &w.a).await;
    assert!(r.ok(200)["messages"].as_array().unwrap().is_empty());
    app.post(
        "/v1/sessions/only-b-side/messages",
        &w.b,
        json!({"role": "user", "content": B_SECRET}),
    )
    .await
    .ok(201);
    let r = app.get("/v1/sessions/only-b-side/messages", &w.a).await;
    assert!(r.ok(200)["messages"].as_array().unwrap().is_empty());
    w.nothing_foreign(&r);
    app.delete("/v1/sessions/only-b-side", &w.a_member)
        .await
        .problem(404, "not_found");
    assert_eq!(
        app.get("/v1/sessions/only-b-side/messages", &w.b)
            .await
            .ok(200)["messages"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Roles and bad input.
    app.post(
        "/v1/sessions/thread-1/messages",
        &w.a_viewer,
        json!({"role": "user", "content": "x"}),
    )
    .await
    .problem(403, "forbidden");
    app.delete("/v1/sessions/thread-1", &w.a_viewer)
        .await
        .problem(403, "forbidden");
    app.post(
        "/v1/sessions/thread-1/messages",
        &w.a,
        json!({"role": "robot", "content": "x"}),
    )
    .await
    .problem(400, "invalid_request");
    app.post(
        "/v1/sessions/bad%20id/messages",
        &w.a,
        json!({"role": "user", "content": "x"}),
    )
    .await
    .problem(400, "invalid_request");
    app.get("/v1/sessions/thread-1/messages?limit=0", &w.a)
        .await
        .problem(400, "invalid_request");
    // Deleting A's session leaves B's same-named session.
    app.delete("/v1/sessions/thread-1", &w.a_member)
        .await
        .ok(204);
    assert!(app
        .get("/v1/sessions/thread-1/messages", &w.a)
        .await
        .ok(200)["messages"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(
        app.get("/v1/sessions/thread-1/messages", &w.b)
            .await
            .ok(200)["messages"][0]["content"],
        B_SECRET
    );
    // A purge removes the messages and counts them.
    let receipt = app.delete("/admin/v1/tenants/globex", ADMIN).await;
    assert_eq!(receipt.ok(200)["messages_deleted"], 2);
    assert_eq!(receipt.body["verified_empty"], true);
}

// ------------------------------------------------------------ idempotency

async fn an_idempotency_key_replays_the_first_result_and_refuses_another_body(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    let body = json!({"name": "idem.txt", "type": "text", "content": "Refunds, once."});
    let send = |b: Value, key: &'static str, cred: String| {
        let app = &w.app;
        async move {
            app.send(
                Method::POST,
                "/v1/documents",
                Some(&cred),
                Some(b),
                &[("idempotency-key", key)],
            )
            .await
        }
    };
    let first = send(body.clone(), "key-1", w.a_member.clone()).await;
    let first_id = first.ok(201)["document_id"].clone();
    let again = send(body.clone(), "key-1", w.a_member.clone()).await;
    assert_eq!(again.ok(201)["document_id"], first_id);
    assert_eq!(again.body, first.body, "the first response, replayed");
    assert_eq!(
        app.get("/v1/stats", &w.a).await.ok(200)["document_count"],
        2
    );
    let other = json!({"name": "other.txt", "type": "text", "content": "something else"});
    send(other.clone(), "key-1", w.a_member.clone())
        .await
        .problem(409, "conflict");
    assert_eq!(
        app.get("/v1/stats", &w.a).await.ok(200)["document_count"],
        2
    );
    // Keys are per tenant: the same key in another tenant is a new request.
    let b = send(body.clone(), "key-1", w.b.clone()).await;
    assert_ne!(b.ok(201)["document_id"], first_id);
    w.nothing_foreign(&again);
    // A failed request releases its key.
    let bad = json!({"name": "bad.txt", "type": "spreadsheet", "content": "x"});
    send(bad, "key-2", w.a_member.clone())
        .await
        .problem(400, "invalid_request");
    send(other, "key-2", w.a_member.clone()).await.ok(201);
    app.send(
        Method::POST,
        "/v1/documents",
        Some(&w.a),
        Some(body),
        &[("idempotency-key", "has space")],
    )
    .await
    .problem(400, "invalid_request");
}

// ------------------------------------------------- usage, metrics, openapi

async fn usage_counts_equal_the_operations_performed_and_stay_per_tenant(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    // A fresh tenant, so setup traffic does not count.
    let key = app.tenant("initech").await;
    for i in 0..3 {
        app.add(&key, &format!("u{i}.txt"), "usage counting text", json!({}))
            .await;
    }
    for _ in 0..4 {
        app.post("/v1/search", &key, json!({"query": "usage"}))
            .await
            .ok(200);
    }
    app.get("/v1/stats", &key).await.ok(200);
    let r = app.get("/v1/usage", &key).await;
    let u = r.ok(200).clone();
    // 3 adds + 4 searches + 1 stats + this usage request.
    assert_eq!(u["requests"], 9, "{u}");
    assert_eq!(u["searches"], 4);
    assert_eq!(u["documents_added"], 3);
    assert!(u["tokens_embedded"].as_u64().unwrap() > 0);
    assert!(u["storage_bytes"].as_u64().unwrap() > 0);
    assert_eq!(u["by_day"].as_array().unwrap().len(), 1);
    w.nothing_foreign(&r);
    // Another tenant's usage is its own.
    let other = app.get("/v1/usage", &w.b).await;
    assert_ne!(other.ok(200)["requests"], u["requests"]);
    app.get("/v1/usage?from=2026-13-01", &key)
        .await
        .problem(400, "invalid_request");
    app.get("/v1/usage?tenant_id=globex", &key)
        .await
        .problem(403, "tenant_mismatch");
}

async fn metrics_and_the_openapi_document_carry_no_tenant_data(backend: Backend) {
    let w = world(backend).await;
    w.app
        .get(&format!("/v1/documents/{}", w.a_doc), &w.a)
        .await
        .ok(200);
    // Platform-wide activity is the operator's: no credential is 401 and a
    // tenant's key is 403; the admin credential reads it.
    w.app
        .send(Method::GET, "/metrics", None, None, &[])
        .await
        .problem(401, "unauthenticated");
    w.app.get("/metrics", &w.a).await.problem(403, "forbidden");
    let m = w.app.get("/metrics", ADMIN).await;
    assert_eq!(m.status, 200);
    assert!(m.text.contains("enclave_http_requests_total{method=\"GET\",route=\"/v1/documents/{id}\",status=\"200\"}"), "{}", m.text);
    assert!(!m.text.contains(&w.a_doc), "ids never become labels");
    assert!(!m.text.contains("acme"));
    w.nothing_foreign(&m);
    let doc = w
        .app
        .send(Method::GET, "/openapi.json", None, None, &[])
        .await;
    assert!(doc.ok(200)["paths"]["/v1/search"]["post"].is_object());
    let page = w.app.send(Method::GET, "/docs", None, None, &[]).await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("/openapi.json"));
}

/// A JWKS file configures RS256 keys by `kid`: a token naming the key
/// verifies, one naming an unknown key or signed by another key does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_keys_verify_by_kid() {
    let probe = spawn_app(Backend::Embedded).await;
    let out = std::process::Command::new("openssl")
        .args(["rsa", "-pubin", "-noout", "-modulus", "-in"])
        .arg(probe.dir.path().join("rsa.pub.pem"))
        .output()
        .unwrap();
    let hex = String::from_utf8(out.stdout).unwrap();
    let hex = hex.trim().trim_start_matches("Modulus=");
    let n: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let jwks = json!({"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig",
                                "n": b64url(&n), "e": "AQAB"}]});
    let path = probe.dir.path().join("jwks.json");
    std::fs::write(&path, jwks.to_string()).unwrap();
    // The same key pair, now configured only through the JWKS file.
    let app = crate::support::spawn_app_with_keys(
        Backend::Embedded,
        probe.dir.path(),
        &[
            ("ENCLAVE_JWT_JWKS", path.to_str().unwrap()),
            ("ENCLAVE_JWT_PUBLIC_KEY", ""),
        ],
    )
    .await;
    app.tenant("acme").await;
    let sign = |kid: &str| {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(kid.into());
        encode(
            &h,
            &claims("acme", "viewer"),
            &EncodingKey::from_rsa_pem(&app.rsa_private_pem).unwrap(),
        )
        .unwrap()
    };
    app.get("/v1/stats", &sign("k1")).await.ok(200);
    app.get("/v1/stats", &sign("unknown"))
        .await
        .problem(401, "unauthenticated");
    // A token of a different key pair, claiming k1.
    let other = &probe.rsa_private_pem;
    let fresh = spawn_app(Backend::Embedded).await;
    assert_ne!(other, &fresh.rsa_private_pem);
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("k1".into());
    let forged = encode(
        &h,
        &claims("acme", "viewer"),
        &EncodingKey::from_rsa_pem(&fresh.rsa_private_pem).unwrap(),
    )
    .unwrap();
    app.get("/v1/stats", &forged)
        .await
        .problem(401, "unauthenticated");
}

/// An EC P-256 public key configures ES256; RS256 and HS256 tokens are then
/// refused unless their own keys are configured too (here HS256 is).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_tokens_verify_with_a_configured_ec_key() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = (dir.path().join("ec.pem"), dir.path().join("ec.pub.pem"));
    for args in [
        vec![
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            key.to_str().unwrap(),
        ],
        vec![
            "pkey",
            "-pubout",
            "-in",
            key.to_str().unwrap(),
            "-out",
            public.to_str().unwrap(),
        ],
    ] {
        assert!(std::process::Command::new("openssl")
            .args(&args)
            .status()
            .unwrap()
            .success());
    }
    let app = spawn_app_with(
        Backend::Embedded,
        &[("ENCLAVE_JWT_PUBLIC_KEY", public.to_str().unwrap())],
    )
    .await;
    app.tenant("acme").await;
    let pem = std::fs::read(&key).unwrap();
    let es = encode(
        &Header::new(Algorithm::ES256),
        &claims("acme", "viewer"),
        &EncodingKey::from_ec_pem(&pem).unwrap(),
    )
    .unwrap();
    app.get("/v1/stats", &es).await.ok(200);
    // The RSA pair the helper made is not configured any more: refused.
    app.get("/v1/stats", &rs256(&app, &claims("acme", "viewer")))
        .await
        .problem(401, "unauthenticated");
    // An ES256 token signed by another EC key: refused.
    let other = dir.path().join("other.pem");
    assert!(std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            other.to_str().unwrap()
        ])
        .status()
        .unwrap()
        .success());
    let forged = encode(
        &Header::new(Algorithm::ES256),
        &claims("acme", "owner"),
        &EncodingKey::from_ec_pem(&std::fs::read(&other).unwrap()).unwrap(),
    )
    .unwrap();
    app.get("/v1/stats", &forged)
        .await
        .problem(401, "unauthenticated");
}
