//! The axum server: enough for every reply that keeps to HTTP.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::replies::{completion_body, Reply};
use super::shared::{answer, Shared};

pub(super) async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    json_response(StatusCode::OK, shared.stats_json(), None)
}

pub(super) async fn chat(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let answer = answer(&shared, authorization, &body).await;
    let header = shared.retry_header_of(answer.gated).to_owned();
    let (status, response) = match answer.reply {
        Reply::Hang => std::future::pending::<(u16, Response)>().await,
        Reply::Text(content) => (
            200,
            json_response(
                StatusCode::OK,
                completion_body(&answer.received, &content),
                None,
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
                retry_after.map(|after| (header, after)),
            ),
        ),
        Reply::Raw(body) => (200, json_response(StatusCode::OK, body, None)),
        Reply::Delayed(..) => unreachable!("delays are unwrapped in `answer`"),
        other => {
            assert!(other.needs_raw());
            let body = format!("{other:?} can only be served by TestServer::builder().raw_http()");
            eprintln!("test server: {body}");
            (
                500,
                json_response(StatusCode::INTERNAL_SERVER_ERROR, body, None),
            )
        }
    };
    shared.answered(answer.received.prompt.clone(), answer.start, status);
    response
}

/// A JSON response, with `retry` = (header name, wait) when given.
fn json_response(status: StatusCode, body: String, retry: Option<(String, String)>) -> Response {
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if let Some((name, after)) = retry {
        builder = builder.header(name, after);
    }
    builder
        .body(Body::from(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
