//! What [`Server::handle`](sseio_core::Server::handle) promises for any request: the oracle of
//! the request property test and the `request` fuzz target.

use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, Waker};

use futures_core::Stream;
use http::{Method, Request, StatusCode, header};
use sseio_core::Outcome;

use crate::fixtures::is_sse_path;

/// Returns `Err(message)` from the enclosing function unless `condition` holds.
macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err(format!($($message)+));
        }
    };
}

/// Checks the outcome of `request` on a server whose SSE path is
/// [`PATTERN`](crate::fixtures::PATTERN) against what `Server::handle` promises, whatever the
/// request; a description of the first broken promise otherwise:
///
/// - not the SSE path (or `OPTIONS`): `Outcome::NotOurs`;
/// - a bad request on the SSE path: a 4xx with `Content-Type: application/json` and a body
///   `{"message": string}`; `405` for a method other than `GET` and `HEAD`;
/// - `HEAD` with a valid query: `200` with the stream's headers and no body;
/// - `GET` with a valid query: a `200` `text/event-stream` that opens with a line break.
pub fn check_outcome(request: &Request<()>, outcome: Outcome) -> Result<(), String> {
    let (method, path) = (request.method(), request.uri().path());
    match outcome {
        Outcome::NotOurs => ensure!(
            method == Method::OPTIONS || !is_sse_path(path),
            "{method} {path} is on the SSE path but was left to the application"
        ),
        Outcome::Stream(response) => {
            ensure!(is_sse_path(path), "a stream opened on {path}");
            ensure!(method == Method::GET, "a stream opened for {method}");
            let status = response.status();
            ensure!(status == StatusCode::OK, "a stream opened with {status}");
            let content_type = response.headers().get(header::CONTENT_TYPE);
            ensure!(
                content_type.is_some_and(|v| v == "text/event-stream"),
                "a stream opened with Content-Type {content_type:?}"
            );
            let mut stream = response.into_body();
            let mut cx = TaskContext::from_waker(Waker::noop());
            let first = Pin::new(&mut stream).poll_next(&mut cx);
            ensure!(
                matches!(&first, Poll::Ready(Some(Ok(chunk))) if chunk.starts_with(b"\n")),
                "the stream did not open with a line break: {first:?}"
            );
        }
        Outcome::Reply(response) => {
            ensure!(is_sse_path(path), "{method} {path} was answered by sseio");
            let status = response.status();
            let content_type = response.headers().get(header::CONTENT_TYPE);
            if method == Method::HEAD && status == StatusCode::OK {
                ensure!(
                    content_type.is_some_and(|v| v == "text/event-stream"),
                    "HEAD answered with Content-Type {content_type:?}"
                );
                ensure!(response.body().is_empty(), "HEAD answered with a body");
                return Ok(());
            }
            ensure!(status.is_client_error(), "{method} {path}: status {status}");
            if method != Method::GET && method != Method::HEAD {
                ensure!(
                    status == StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path}: status {status}, not 405"
                );
            }
            ensure!(
                content_type.is_some_and(|v| v == "application/json"),
                "{method} {path}: a refusal with Content-Type {content_type:?}"
            );
            let body: serde_json::Value = serde_json::from_slice(response.body())
                .map_err(|e| format!("the body is not JSON: {e}"))?;
            ensure!(
                body.as_object()
                    .is_some_and(|o| o.len() == 1 && o["message"].is_string()),
                "the body is not {{\"message\": string}}: {body}"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{get, request_server, runtime};

    fn check(request: Request<()>) -> Result<(), String> {
        let outcome = runtime().block_on(request_server().handle((&request).into()));
        check_outcome(&request, outcome)
    }

    #[test]
    fn the_request_server_keeps_every_promise_for_each_kind_of_answer() {
        let post = Request::post("/files/g/pull?clientId=c&events=e")
            .body(())
            .unwrap();
        let head = Request::head("/files/g/pull?clientId=c&events=e")
            .body(())
            .unwrap();
        for request in [
            get("/elsewhere"),
            get("/files/g/pull?clientId=c&events=e"),
            get("/files/g/pull?events=e"),
            post,
            head,
        ] {
            let what = format!("{} {}", request.method(), request.uri());
            assert_eq!(check(request), Ok(()), "{what}");
        }
    }

    #[test]
    fn a_broken_promise_is_described() {
        // A stream on a path that is not the SSE path breaks the first promise.
        let request = get("/elsewhere");
        let outcome = runtime()
            .block_on(request_server().handle((&get("/files/g/pull?clientId=c&events=e")).into()));
        assert_eq!(
            check_outcome(&request, outcome),
            Err("a stream opened on /elsewhere".to_owned())
        );
    }
}
