//! Fuzzes request handling: path matching, path parameters, query parsing and headers.
//!
//! The input is split on `\n` (which `http` refuses in every part, so no valid input is lost):
//! the first line is the method, the second the path and query, each further line a header
//! `name:value`. The request goes to `Server::handle` on a fresh server with handlers whose rooms
//! come from the path, the query and a header, and one with a `fetch`. Whatever the input,
//! `handle` must not panic and must answer by its rules (`sseio_test_support::check_outcome`):
//!
//! - not the SSE path (or `OPTIONS`): `Outcome::NotOurs`;
//! - a bad request on the SSE path: a 4xx with `Content-Type: application/json` and a body
//!   `{"message": string}`; `405` for a method other than `GET` and `HEAD`;
//! - `HEAD` with a valid query: `200` with the stream's headers and no body;
//! - `GET` with a valid query: a `200` `text/event-stream` that opens with a line break.

#![no_main]

use http::{HeaderName, HeaderValue, Method, Request};
use libfuzzer_sys::fuzz_target;
use sseio_fuzz::runtime;
use sseio_test_support::check_outcome;
use sseio_test_support::fixtures::request_server;

fuzz_target!(|data: &[u8]| {
    let Some(request) = request(data) else {
        return;
    };
    let server = request_server();
    let outcome = runtime().block_on(server.handle((&request).into()));
    if let Err(broken) = check_outcome(&request, outcome) {
        panic!("{broken}");
    }
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
