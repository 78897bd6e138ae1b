//! The server's lifecycle promises, against the real binary over raw TCP (so
//! a request can be held provably in flight): SIGTERM lets an in-flight
//! write finish and be acknowledged, refuses new connections and exits
//! cleanly with the write stored; a request that runs past the time limit
//! gets 503 `unavailable` and changes nothing.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{spawn_app, spawn_app_with, App, Backend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens a connection and sends a POST /v1/documents whose body stops
/// `held_back` bytes short of its Content-Length.
async fn start_upload(app: &App, key: &str, body: &[u8], held_back: usize) -> TcpStream {
    let addr = app.base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/documents HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body[..body.len() - held_back]).await.unwrap();
    s.flush().await.unwrap();
    s
}

/// Reads the whole response (the server closes the connection) into status
/// and JSON body.
async fn read_response(mut s: TcpStream) -> (u16, Value) {
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut raw))
        .await
        .expect("response within 20 s")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let (_, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    // Chunked or not, the JSON object is the part between the braces.
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) => serde_json::from_str(&body[a..=b]).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    (status, json)
}

fn document(name: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "name": name,
        "type": "text",
        "content": "The quarterly ledger was reconciled before the shutdown. ".repeat(50),
    }))
    .unwrap()
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_write_finish_then_refuses_connections_and_exits_cleanly() {
    let mut app = spawn_app(Backend::Embedded).await;
    let key = app.tenant("acme").await;
    let body = document("in-flight.txt");
    let upload = start_upload(&app, &key, &body, 10).await;
    // The request is in flight (its body is incomplete) when the signal lands.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &app.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    // The listener closes: new connections are refused (within a second).
    let addr = app.base.trim_start_matches("http://").to_owned();
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect(&addr).await {
            Err(_) => break,
            Ok(_) if Instant::now() > until => {
                panic!("still accepting connections 5 s after SIGTERM")
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    // The held request completes and is acknowledged.
    let mut upload = upload;
    upload.write_all(&body[body.len() - 10..]).await.unwrap();
    let (status, b) = read_response(upload).await;
    assert_eq!(status, 201, "{b}");
    let id = b["document_id"].as_str().unwrap().to_owned();
    let exit = app
        .wait_exit(Duration::from_secs(20))
        .expect("the server exits after its last request");
    assert!(exit.success(), "{exit:?}");
    // The acknowledged write is in the store (read by the CLI, server gone).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_enclave"))
        .args(&app.store_args)
        .args(["list", "--tenant", "acme", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains(&id), "{listed}");
    assert!(listed.contains("in-flight.txt"), "{listed}");
}

#[tokio::test]
async fn a_request_past_the_time_limit_gets_503_unavailable_and_changes_nothing() {
    for backend in [Backend::Embedded, Backend::Postgres] {
        let app = spawn_app_with(backend, &[("ENCLAVE_REQUEST_TIMEOUT_SECS", "1")]).await;
        let key = app.tenant("acme").await;
        let started = Instant::now();
        // The body never completes: the handler is still reading it at 1 s.
        let upload = start_upload(&app, &key, &document("too-slow.txt"), 10).await;
        let (status, b) = read_response(upload).await;
        assert_eq!(status, 503, "{backend:?}: {b}");
        assert_eq!(b["code"], "unavailable", "{backend:?}: {b}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{backend:?}: the limit did not end the request"
        );
        // Nothing was stored, and the server still serves.
        let r = app.get("/v1/documents", &key).await;
        assert_eq!(r.ok(200)["total"], 0, "{backend:?}");
        let r = app
            .post(
                "/v1/documents",
                &key,
                json!({"name": "quick.txt", "type": "text", "content": "fast enough"}),
            )
            .await;
        r.ok(201);
    }
}
