//! The axum server: enough for every reply that keeps to HTTP; a stream is
//! a body paced by `stream`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::apis::whole_body;
use super::replies::Reply;
use super::shared::{answer, Shared};
use super::stream::{paced, Script};

pub(super) async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    json_response(StatusCode::OK, shared.stats_json(), Vec::new())
}

/// `POST` on any of the APIs' paths.
pub(super) async fn complete(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let headers = headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect();
    let answer = answer(&shared, uri.path(), headers, &body).await;
    if let Some(script) = Script::of(&shared, &answer) {
        let recorder = Arc::clone(&shared);
        let whole = move || {
            // The whole answer, not just the fields used: its guard keeps the
            // request in flight until the stream is over.
            let answer = answer;
            recorder.answered(answer.received.prompt, answer.start, 200);
        };
        return Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(Body::from_stream(paced(script, whole)))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    let header = shared.retry_header_of(answer.gated).to_owned();
    let api = answer.api();
    let (status, response) = match answer.reply {
        Reply::Hang => std::future::pending::<(u16, Response)>().await,
        Reply::Text(content) => (
            200,
            json_response(
                StatusCode::OK,
                whole_body(api, &answer.received, &content, shared.tokens),
                Vec::new(),
            ),
        ),
        Reply::Status {
            code,
            body,
            retry_after,
        } => (
            code,
            json_response(
                StatusCode::from_u16(code).expect("valid status"),
                body,
                retry_after
                    .map(|after| (header, after))
                    .into_iter()
                    .collect(),
            ),
        ),
        Reply::StatusWithHeaders {
            code,
            body,
            headers,
        } => (
            code,
            json_response(
                StatusCode::from_u16(code).expect("valid status"),
                body,
                headers,
            ),
        ),
        Reply::Raw(body) => (200, json_response(StatusCode::OK, body, Vec::new())),
        Reply::RawEvents(body) => (
            200,
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "text/event-stream")
                .body(Body::from(body))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
        ),
        Reply::Delayed(..) => unreachable!("delays are unwrapped in `answer`"),
        Reply::StreamCut { .. } | Reply::StreamError { .. } | Reply::StreamStall { .. } => {
            unreachable!("a stream fault is a stream, or a text if no stream was asked")
        }
        other => {
            assert!(other.needs_raw());
            let body = format!("{other:?} can only be served by TestServer::builder().raw_http()");
            eprintln!("test server: {body}");
            (
                500,
                json_response(StatusCode::INTERNAL_SERVER_ERROR, body, Vec::new()),
            )
        }
    };
    shared.answered(answer.received.prompt.clone(), answer.start, status);
    response
}

/// A JSON response with these extra headers (a 429's wait, for one; a
/// content type of their own replaces JSON's).
fn json_response(status: StatusCode, body: String, headers: Vec<(String, String)>) -> Response {
    let mut builder = Response::builder().status(status);
    if !headers.iter().any(|(n, _)| n == "content-type") {
        builder = builder.header("content-type", "application/json");
    }
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    builder
        .body(Body::from(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
