//! Requests on the SSE path that must not open a stream: missing or empty parameters, broken
//! percent-encoding, other methods, and `HEAD`.

use conformance_tests::Harness;
use conformance_tests::control;
use conformance_tests::http1::{Request, Response};

use super::{WAIT, log, new_id, request, settle, within};

super::registry::case_table! {
    missing_client_id_is_400,
    missing_events_is_400,
    empty_client_id_is_400,
    empty_events_is_400,
    malformed_percent_encoding_is_400,
    invalid_utf8_after_decoding_is_400,
    other_methods_are_405_with_allow,
    head_answers_headers_without_stream,
}

/// Whether `content_type` is JSON (`application/json`, parameters allowed).
fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    })
}

/// Asserts the response is a JSON error: `Content-Type: application/json` and a body that is a
/// JSON object with a string `message`.
fn assert_json_error(response: &Response, body: &[u8], what: &str) {
    assert!(
        is_json(response.header("content-type")),
        "{what}: Content-Type should be application/json, headers {:?}",
        response.headers()
    );
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "{what}: the body should be JSON ({e}): {:?}",
            String::from_utf8_lossy(body)
        )
    });
    assert!(
        value
            .get("message")
            .is_some_and(serde_json::Value::is_string),
        "{what}: the body should be {{\"message\": \"...\"}}, got {value}"
    );
}

/// Sends `method target` (asking the server to close after answering), asserts the status
/// before reading on (a stream opened by mistake would never end), and returns the response and
/// its whole body.
async fn exchange(h: &Harness, method: &str, target: &str, status: u16) -> (Response, Vec<u8>) {
    let mut response = request(
        h,
        Request::new(method, target).header("Connection", "close"),
    )
    .await;
    assert_eq!(
        response.status(),
        status,
        "{method} {target} should answer {status}; headers {:?}",
        response.headers()
    );
    let body = within(
        WAIT,
        &format!("the body of {method} {target}"),
        response.read_to_end(),
    )
    .await
    .unwrap_or_else(|e| panic!("reading the body of {method} {target}: {e}"));
    (response, body)
}

/// Asserts that no stream was opened for `client_id` / on room `guid` of `normal-event`.
async fn assert_no_stream(h: &Harness, what: &str, guid: &str, client_id: Option<&str>) {
    let log = log(h).await;
    if let Some(client_id) = client_id {
        assert_eq!(
            control::count_conn(&log, "conn:create", client_id),
            0,
            "{what}: no connection may be created"
        );
    }
    assert!(
        !log.iter()
            .any(|r| r.is_room("room:create", "normal-event", guid)),
        "{what}: no room may be joined"
    );
}

/// `GET target` must answer `400` with a JSON error and open no stream.
async fn expect_bad_request(h: &Harness, target: &str, guid: &str, client_id: Option<&str>) {
    let what = format!("GET {target}");
    let (response, body) = exchange(h, "GET", target, 400).await;
    assert_json_error(&response, &body, &what);
    assert_no_stream(h, &what, guid, client_id).await;
}

/// A request without `clientId` is a `400` JSON error and opens no stream.
pub async fn missing_client_id_is_400(h: &Harness) {
    let guid = new_id();
    expect_bad_request(
        h,
        &format!("/files/{guid}/pull?events=normal-event"),
        &guid,
        None,
    )
    .await;
}

/// A request without `events` is a `400` JSON error and opens no stream.
pub async fn missing_events_is_400(h: &Harness) {
    let (guid, client) = (new_id(), new_id());
    expect_bad_request(
        h,
        &format!("/files/{guid}/pull?clientId={client}"),
        &guid,
        Some(&client),
    )
    .await;
}

/// `clientId=` with an empty value counts as missing.
pub async fn empty_client_id_is_400(h: &Harness) {
    let guid = new_id();
    expect_bad_request(
        h,
        &format!("/files/{guid}/pull?clientId=&events=normal-event"),
        &guid,
        None,
    )
    .await;
}

/// `events=` with an empty value counts as missing.
pub async fn empty_events_is_400(h: &Harness) {
    let (guid, client) = (new_id(), new_id());
    expect_bad_request(
        h,
        &format!("/files/{guid}/pull?clientId={client}&events="),
        &guid,
        Some(&client),
    )
    .await;
}

/// A query whose percent-encoding is broken (`%zz`, a truncated `%A`) is a `400` JSON error,
/// not a stream for a mangled client id or event name.
pub async fn malformed_percent_encoding_is_400(h: &Harness) {
    for query in [
        "clientId=%zz&events=normal-event",
        "clientId=%E0%A4%A&events=normal-event",
        "clientId=abc%&events=normal-event",
        "clientId={client}&events=%zz&events=normal-event",
        "clientId={client}&events=normal-event&other=%zz",
    ] {
        expect_bad_query(h, query).await;
    }
}

/// A query that decodes to bytes that are not UTF-8 (`%FF`) is a `400` JSON error.
pub async fn invalid_utf8_after_decoding_is_400(h: &Harness) {
    for query in [
        "clientId=%FF&events=normal-event",
        "clientId=%C3%28&events=normal-event",
        "clientId={client}&events=normal-event&events=%FF",
    ] {
        expect_bad_query(h, query).await;
    }
}

/// A method other than `GET`/`HEAD` on the SSE path is `405` with `Allow: GET, HEAD` and a JSON
/// body, and opens no stream.
pub async fn other_methods_are_405_with_allow(h: &Harness) {
    for method in ["POST", "PUT", "DELETE"] {
        let (guid, client) = (new_id(), new_id());
        let target = format!("/files/{guid}/pull?clientId={client}&events=normal-event");
        let what = format!("{method} {target}");
        let (response, body) = exchange(h, method, &target, 405).await;
        let allow = response.header_tokens("allow");
        assert!(
            allow.iter().any(|m| m == "get") && allow.iter().any(|m| m == "head"),
            "{what}: Allow should list GET and HEAD, got {allow:?}"
        );
        assert_json_error(&response, &body, &what);
        assert_no_stream(h, &what, &guid, Some(&client)).await;
    }
}

/// `HEAD` with valid parameters answers `200` with the stream's headers and no body, and opens
/// no stream (no `conn:create`).
pub async fn head_answers_headers_without_stream(h: &Harness) {
    let (guid, client) = (new_id(), new_id());
    let target = format!("/files/{guid}/pull?clientId={client}&events=normal-event");
    let mut response = request(
        h,
        Request::new("HEAD", &target).header("Connection", "close"),
    )
    .await;
    assert_eq!(
        response.status(),
        200,
        "HEAD {target}: {:?}",
        response.headers()
    );
    assert!(
        super::stream::is_event_stream(response.header("content-type")),
        "HEAD {target}: Content-Type should be text/event-stream, headers {:?}",
        response.headers()
    );
    let cache_control = response.header_tokens("cache-control");
    assert!(
        cache_control.iter().any(|t| t == "no-cache"),
        "HEAD {target}: Cache-Control should contain no-cache, got {cache_control:?}"
    );
    let rest = within(
        WAIT,
        "the server to close the connection after its answer to HEAD (it may be streaming)",
        response.bytes_until_close(),
    )
    .await
    .unwrap_or_else(|e| panic!("HEAD {target}: {e}"));
    assert!(
        rest.is_empty(),
        "HEAD {target}: no body may follow the head, got {:?}",
        String::from_utf8_lossy(&rest)
    );
    // A connection raised asynchronously would land before the marker.
    let log = settle(h).await;
    assert_eq!(
        control::count_conn(&log, "conn:create", &client),
        0,
        "HEAD {target} must not create a connection"
    );
    assert!(
        !log.iter()
            .any(|r| r.is_room("room:create", "normal-event", &guid)),
        "HEAD {target} must not join a room"
    );
}

/// `expect_bad_request` for one query, with `{client}` replaced by a fresh client id.
async fn expect_bad_query(h: &Harness, query: &str) {
    let (guid, client) = (new_id(), new_id());
    let query = query.replace("{client}", &client);
    expect_bad_request(
        h,
        &format!("/files/{guid}/pull?{query}"),
        &guid,
        Some(&client),
    )
    .await;
}
