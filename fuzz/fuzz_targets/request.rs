//! Fuzzes request handling: path matching, path parameters, query parsing and headers.
//!
//! The input is split on `\n` (which `http` refuses in every part, so no valid input is lost):
//! the first line is the method, the second the path and query, each further line a header
//! `name:value`. The request goes to `Server::handle` on a fresh server with handlers whose rooms
//! come from the path, the query and a header, and one with a `fetch`. Whatever the input,
//! `handle` must not panic and must answer by its rules:
//!
//! - not the SSE path (or `OPTIONS`): `Outcome::NotOurs`;
//! - a bad request on the SSE path: a 4xx with `Content-Type: application/json` and a body
//!   `{"message": string}`; `405` for a method other than `GET` and `HEAD`;
//! - `HEAD` with a valid query: `200` with the stream's headers and no body;
//! - `GET` with a valid query: a `200` `text/event-stream` that opens with a line break.

#![no_main]

use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, Waker};

use http::{HeaderName, HeaderValue, Method, Request, StatusCode, header};
use libfuzzer_sys::fuzz_target;
use sseio_core::Outcome;
use sseio_fuzz::runtime;
use sseio_test_support::fixtures::{is_sse_path, request_server};

fuzz_target!(|data: &[u8]| {
    let Some(request) = request(data) else {
        return;
    };
    let server = request_server();
    let outcome = runtime().block_on(server.handle((&request).into()));
    check(&request, outcome);
    // Let the `fetch` of an opened stream run, on whatever the query was.
    runtime().block_on(tokio::task::yield_now());
});

/// The request the input describes, or `None` when `http` refuses its method or target (the
/// framework would have answered such a request itself). A header `http` refuses is left out.
fn request(data: &[u8]) -> Option<Request<()>> {
    let mut lines = data.split(|&b| b == b'\n');
    let method = Method::from_bytes(lines.next()?).ok()?;
    let target = lines.next()?;
    let mut request = Request::builder()
        .method(method)
        .uri(target)
        .body(())
        .ok()?;
    for line in lines {
        let colon = line.iter().position(|&b| b == b':').unwrap_or(line.len());
        let (name, value) = (&line[..colon], line.get(colon + 1..).unwrap_or_default());
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            request.headers_mut().append(name, value);
        }
    }
    Some(request)
}

fn check(request: &Request<()>, outcome: Outcome) {
    let (method, path) = (request.method(), request.uri().path());
    match outcome {
        Outcome::NotOurs => assert!(
            method == Method::OPTIONS || !is_sse_path(path),
            "{method} {path} is on the SSE path but was left to the application"
        ),
        Outcome::Stream(response) => {
            assert!(is_sse_path(path), "a stream opened on {path}");
            assert_eq!(method, Method::GET, "a stream opened for {method}");
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                "text/event-stream"
            );
            let mut stream = response.into_body();
            let mut cx = TaskContext::from_waker(Waker::noop());
            let first = futures_core::Stream::poll_next(Pin::new(&mut stream), &mut cx);
            assert!(
                matches!(&first, Poll::Ready(Some(Ok(chunk))) if chunk.starts_with(b"\n")),
                "the stream did not open with a line break: {first:?}"
            );
        }
        Outcome::Reply(response) => {
            assert!(is_sse_path(path), "{method} {path} was answered by sseio");
            let status = response.status();
            if method == Method::HEAD && status == StatusCode::OK {
                assert_eq!(
                    response.headers()[header::CONTENT_TYPE],
                    "text/event-stream"
                );
                assert!(response.body().is_empty(), "HEAD answered with a body");
                return;
            }
            assert!(status.is_client_error(), "{method} {path}: status {status}");
            if method != Method::GET && method != Method::HEAD {
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            }
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
            let body: serde_json::Value =
                serde_json::from_slice(response.body()).expect("the body is JSON");
            assert!(
                body.as_object()
                    .is_some_and(|o| o.len() == 1 && o["message"].is_string()),
                "the body is not {{\"message\": string}}: {body}"
            );
        }
    }
}
