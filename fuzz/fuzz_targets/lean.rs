//! Fuzzes the standalone server's request-head parser: `sseio-hyper`'s lean path, which reads the
//! first request head of every connection itself and answers a plain HTTP/1.1 `GET` on the SSE
//! path without hyper (`sseio-hyper/src/lean.rs`, reached through `sseio_hyper::__fuzz`).
//!
//! The input is the bytes a connection has sent so far, given to `first_head` as the server
//! gives them after a read. Whatever the input, `first_head` must not panic, and:
//!
//! - it takes a request for the lean path exactly when an independent reading of the bytes says
//!   it qualifies: one complete head per `httparse`, starting at the first byte (the empty lines
//!   RFC 9112 lets a server skip before a request line are left to hyper) with nothing after it,
//!   `GET`, `HTTP/1.1`, at most `MAX_HEADERS` headers, a target `http` accepts whose path is the SSE path, header names
//!   that are RFC 9110 tokens and values of visible ASCII, space, tab or obs-text, and no
//!   `Content-Length`, `Transfer-Encoding`, `Expect` or `Upgrade` in any letter case;
//! - the request it takes carries the head's target and every header, as `httparse` read them;
//!   written back out as a head, it parses to the same request again;
//! - the core answers it (a stream or a rejection, never "not ours", which the lean path would
//!   turn into a `404`);
//! - "read more" only for a prefix of a `GET`-like head that `httparse` says is incomplete and
//!   that is still under `HEAD_LIMIT`;
//! - a head it takes whole is "read more" at every shorter prefix, so a request that arrives in
//!   pieces is served the same way.

#![no_main]

use http::{Method, Request, StatusCode, Version, header};
use libfuzzer_sys::fuzz_target;
use sseio_core::{HandlerOptions, Outcome, Server};
use sseio_fuzz::runtime;
use sseio_hyper::__fuzz::{HEAD_LIMIT, MAX_HEADERS, Parse, first_head};
use sseio_test_support::fixtures::{by_guid, is_sse_path, quiet_server};

fuzz_target!(|data: &[u8]| {
    let server = server();
    let parse = first_head(data, &server);
    let qualifies = qualifies(data);
    match parse {
        Parse::Complete(request) => {
            let Some(head) = qualifies else {
                panic!("took a head that does not qualify: {request:?}");
            };
            check_request(&request, &head);
            check_round_trip(&request, &server);
            check_core_answers(request, &server);
            check_prefixes(data, &server);
        }
        Parse::Partial => {
            assert!(
                data.starts_with(b"G"),
                "read more after a first byte that is not G"
            );
            assert!(data.len() < HEAD_LIMIT, "read more past the limit");
            let mut headers = vec![httparse::EMPTY_HEADER; data.len()];
            assert!(
                matches!(
                    httparse::Request::new(&mut headers).parse(data),
                    Ok(httparse::Status::Partial)
                ),
                "read more after a head httparse calls complete or invalid"
            );
        }
        Parse::NotLean => assert!(
            qualifies.is_none(),
            "a qualifying head went to hyper: {qualifies:?}"
        ),
    }
});

/// A fresh server on the fuzz crate's SSE path, with one event whose room is the path's `guid`.
fn server() -> Server {
    let server = quiet_server();
    server
        .register_event_handler("e", HandlerOptions::new(by_guid))
        .expect("the event is valid");
    server
}

/// A head as an independent reading of the bytes sees it.
#[derive(Debug)]
struct Head {
    target: String,
    /// `(lower-case name, value)`, sorted.
    headers: Vec<(String, Vec<u8>)>,
}

/// The head in `data` when it qualifies for the lean path, by the rules in the module docs,
/// checked here without the lean parser's code.
fn qualifies(data: &[u8]) -> Option<Head> {
    // Room for any number of headers: the limit is checked below, not by `httparse`'s error.
    let mut headers = vec![httparse::EMPTY_HEADER; data.len() / 2 + 1];
    let mut parsed = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(len)) = parsed.parse(data) else {
        return None;
    };
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let is_value_byte = |b: u8| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80;
    let unusual = ["content-length", "transfer-encoding", "expect", "upgrade"];
    let qualifies = len == data.len()
        && data.starts_with(b"GET ")
        && parsed.method == Some("GET")
        && parsed.version == Some(1)
        && parsed.headers.len() <= MAX_HEADERS
        && parsed.headers.iter().all(|h| {
            !h.name.is_empty()
                && h.name.bytes().all(is_tchar)
                && h.value.iter().all(|&b| is_value_byte(b))
                && !unusual.iter().any(|u| h.name.eq_ignore_ascii_case(u))
        });
    let target = parsed.path?;
    let uri = target.parse::<http::Uri>().ok()?;
    if !qualifies || !is_sse_path(uri.path()) {
        return None;
    }
    let mut headers: Vec<_> = parsed
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect();
    headers.sort();
    Some(Head {
        target: target.to_owned(),
        headers,
    })
}

fn sorted_headers(request: &Request<()>) -> Vec<(String, Vec<u8>)> {
    let mut headers: Vec<_> = request
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect();
    headers.sort();
    headers
}

/// The request says what the head says.
fn check_request(request: &Request<()>, head: &Head) {
    assert_eq!(request.method(), Method::GET);
    assert_eq!(request.version(), Version::HTTP_11);
    assert_eq!(request.uri(), &head.target.parse::<http::Uri>().unwrap());
    assert!(is_sse_path(request.uri().path()));
    assert_eq!(sorted_headers(request), head.headers, "the headers changed");
}

/// Written back out as a head, the request parses to the same request.
fn check_round_trip(request: &Request<()>, server: &Server) {
    let mut head = format!("GET {} HTTP/1.1\r\n", request.uri()).into_bytes();
    for (name, value) in request.headers() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    if head.len() >= HEAD_LIMIT {
        return; // the same head with longer line ends: over the limit is hyper's, rightly
    }
    let Parse::Complete(again) = first_head(&head, server) else {
        panic!(
            "the request written back out is not lean: {:?}",
            String::from_utf8_lossy(&head)
        );
    };
    assert_eq!(again.uri(), request.uri());
    assert_eq!(sorted_headers(&again), sorted_headers(request));
}

/// The core answers every request the lean path takes.
fn check_core_answers(request: Request<()>, server: &Server) {
    match runtime().block_on(server.handle((&request).into())) {
        Outcome::NotOurs => panic!("the core left a lean request to the application: {request:?}"),
        Outcome::Stream(response) => {
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                "text/event-stream"
            );
        }
        Outcome::Reply(response) => {
            let status = response.status();
            assert!(status.is_client_error(), "{status} for {request:?}");
        }
    }
}

/// Every shorter prefix of a head taken whole is "read more", up to the limit (a sample of
/// them: all would make each input quadratic).
fn check_prefixes(data: &[u8], server: &Server) {
    let step = (data.len() / 8).max(1);
    let mut ends: Vec<usize> = (1..data.len()).step_by(step).collect();
    ends.extend([data.len().saturating_sub(2), data.len() - 1]);
    for end in ends.into_iter().filter(|&end| 0 < end && end < HEAD_LIMIT) {
        let prefix = &data[..end];
        assert!(
            matches!(first_head(prefix, server), Parse::Partial),
            "the prefix {:?} of a lean head is not 'read more'",
            String::from_utf8_lossy(prefix)
        );
    }
}
