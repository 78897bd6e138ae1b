//! The `enclave` binary end to end: ingest files into two tenants, then
//! search, list, get, stats, export and delete print the API's JSON shapes
//! and never show the other tenant's documents.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn enclave(data: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_enclave"))
        .args(["--embedder", "hash", "--data-dir"])
        .arg(data)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn json(data: &Path, args: &[&str]) -> Value {
    let (ok, out, err) = enclave(data, args);
    assert!(ok, "enclave {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out}"))
}

#[test]
fn cli_ingests_searches_and_manages_documents_per_tenant() {
    let data = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let f = |name: &str, body: &str| {
        let p = files.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.display().to_string()
    };
    let guide = f(
        "guide.md",
        "# Guide\n\nThe rocket launch checklist lives here.\n",
    );
    let page = f(
        "page.html",
        "<html><body><p>Refund <b>policy</b> for rocket kits</p></body></html>",
    );
    let code = f("lib.rs", "fn launch() { println!(\"rocket\"); }\n");
    let other = f("other.txt", "globex rocket secrets");

    let (ok, _, err) = enclave(
        data.path(),
        &["ingest", "--tenant", "acme", &guide, &page, &code],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = enclave(data.path(), &["ingest", "--tenant", "globex", &other]);
    assert!(ok, "{err}");

    let hits = json(
        data.path(),
        &[
            "search", "--tenant", "acme", "--mode", "text", "--json", "rocket",
        ],
    );
    assert_eq!(hits["mode"], "text");
    let results = hits["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    for h in results {
        for field in [
            "chunk_id",
            "document_id",
            "document_name",
            "type",
            "content",
            "score",
            "rank",
            "metadata",
        ] {
            assert!(h.get(field).is_some(), "search hit lacks {field}: {h}");
        }
        assert!(!h["content"].as_str().unwrap().contains("globex"));
    }
    let html = results
        .iter()
        .find(|h| h["type"] == "html")
        .expect("the HTML file was ingested as text");
    assert!(!html["content"].as_str().unwrap().contains("<b>"));

    let list = json(data.path(), &["list", "--tenant", "acme", "--json"]);
    assert_eq!(list["total"], 3);
    let id = list["documents"][0]["document_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let doc = json(data.path(), &["get", "--tenant", "acme", "--chunks", &id]);
    assert_eq!(doc["document_id"], id.as_str());
    assert!(!doc["chunks"].as_array().unwrap().is_empty());

    // Another tenant cannot see or delete it: the same answer as a missing id.
    let (ok, _, foreign) = enclave(data.path(), &["get", "--tenant", "globex", &id]);
    assert!(!ok);
    let (_, _, missing) = enclave(
        data.path(),
        &[
            "get",
            "--tenant",
            "globex",
            "0190c8a2-aaaa-7bbb-8ccc-dddddddddddd",
        ],
    );
    assert_eq!(foreign, missing);
    assert!(foreign.contains("not found"));
    let deleted = json(data.path(), &["delete", "--tenant", "globex", &id]);
    assert_eq!(deleted["deleted_count"], 0);

    let stats = json(data.path(), &["stats", "--tenant", "acme", "--json"]);
    assert_eq!(stats["document_count"], 3);
    assert_eq!(stats["by_type"]["code"], 1);

    let (ok, export, _) = enclave(data.path(), &["export", "--tenant", "acme"]);
    assert!(ok);
    let lines: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines
        .iter()
        .all(|d| d["chunks"][0]["embedding"].as_array().unwrap().len() == 384));

    let deleted = json(data.path(), &["delete", "--tenant", "acme", &id]);
    assert_eq!(deleted["deleted_count"], 1);
    assert_eq!(
        json(data.path(), &["stats", "--tenant", "acme", "--json"])["document_count"],
        2
    );
    assert_eq!(
        json(data.path(), &["stats", "--tenant", "globex", "--json"])["document_count"],
        1
    );

    // Bad input is refused with a message naming the problem.
    let (ok, _, err) = enclave(data.path(), &["search", "--tenant", "bad tenant", "x"]);
    assert!(!ok && err.contains("tenant_id"), "{err}");
    let (ok, _, err) = enclave(
        data.path(),
        &[
            "search",
            "--tenant",
            "acme",
            "--filter",
            "{\"y\": {\"$regex\": 1}}",
            "x",
        ],
    );
    assert!(!ok && err.contains("metadata.y"), "{err}");
}

#[test]
fn serve_refuses_one_jwt_key_for_tenant_users_and_platform_admins() {
    let data = tempfile::tempdir().unwrap();
    let secret = "one-secret-for-both-planes-of-at-least-32-bytes";
    let out = Command::new(env!("CARGO_BIN_EXE_enclave"))
        .args(["--embedder", "hash", "--data-dir"])
        .arg(data.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("ENCLAVE_ADMIN_TOKEN", "test-admin-token-0123456789")
        .env("ENCLAVE_JWT_SECRET", secret)
        .env("ENCLAVE_JWT_ADMIN_SECRET", secret)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the server started: {err}");
    assert!(err.contains("admin plane needs keys of its own"), "{err}");
}
