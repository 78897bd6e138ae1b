//! Closing connections whose request body was refused unread.
//!
//! Limits, credentials and size checks answer before a body is read (so a
//! refused 10 MiB upload costs nothing). HTTP/1.1 cannot carry the next
//! request on that connection until the unread bytes are gone, so hyper
//! drops it after the response — but a client that was not told pools it
//! and sends its next request into a closing socket. [`close_if_unread`]
//! says `Connection: close` on exactly those answers, so well-behaved
//! clients open a fresh connection instead of failing.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};

/// Marks the response `Connection: close` when the request had a body
/// that the handler did not read to its end.
pub async fn close_if_unread(req: Request, next: Next) -> Response {
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let finished = Arc::new(AtomicBool::new(false));
    let (parts, body) = req.into_parts();
    let body = Body::new(Tracked {
        inner: body,
        finished: finished.clone(),
    });
    let mut response = next.run(Request::from_parts(parts, body)).await;
    if !finished.load(Ordering::Acquire) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A request body that records when it has been read to its end.
struct Tracked {
    inner: Body,
    finished: Arc<AtomicBool>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.finished.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use axum::Router;
    use tower::ServiceExt;

    fn app() -> Router {
        Router::new()
            .route(
                "/read",
                post(|body: Bytes| async move { body.len().to_string() }),
            )
            .route("/refuse", post(|| async { "no" }))
            .layer(axum::middleware::from_fn(close_if_unread))
    }

    async fn connection_header(path: &str, body: &'static str) -> Option<String> {
        let req = Request::post(path).body(Body::from(body)).unwrap();
        let r = app().oneshot(req).await.unwrap();
        r.headers()
            .get(header::CONNECTION)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    #[tokio::test]
    async fn a_body_refused_unread_closes_the_connection_and_a_read_one_keeps_it() {
        assert_eq!(
            connection_header("/refuse", "0123456789").await.as_deref(),
            Some("close")
        );
        assert_eq!(connection_header("/read", "0123456789").await, None);
        assert_eq!(connection_header("/refuse", "").await, None);
    }
}
