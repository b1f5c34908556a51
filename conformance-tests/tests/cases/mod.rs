//! The conformance cases, each written once as `pub async fn case(h: &Harness)` and listed, with
//! what it needs, in its module's table (`case_table!`, see [`registry`]); `tests/conformance.rs`
//! runs every case of [`all`] against every adapter.
//!
//! Every case uses fresh random guids and client ids and looks only at its own log records, so
//! the suite also runs against one shared long-running server (`SERVER_URL`). Every wait has a
//! deadline and a message saying what was awaited; nothing sleeps hoping for an order.

pub mod auth;
pub mod bad_input;
pub mod cluster;
pub mod cors;
pub mod drain;
pub mod fetch;
pub mod history;
pub mod js_client;
pub mod lifecycle;
pub mod limits;
pub mod malformed;
pub mod metrics;
pub mod registry;
pub mod rooms;
pub mod routing;
pub mod startup;
pub mod stream;

use std::future::Future;
use std::time::Duration;

use conformance_tests::Harness;
use conformance_tests::control::{self, LogRecord};
use conformance_tests::http1::{Request, Response};
use conformance_tests::sse::{SseEvent, SseStream};

use registry::Case;
pub use registry::note;

/// Every case run against each adapter, module by module (the cluster cases, which run on
/// clusters rather than on one harness, are [`cluster::CASES`]). A new module is one line here.
pub fn all() -> impl Iterator<Item = &'static Case> {
    [
        bad_input::CASES,
        malformed::CASES,
        stream::CASES,
        routing::CASES,
        rooms::CASES,
        lifecycle::CASES,
        fetch::CASES,
        history::CASES,
        auth::CASES,
        cors::CASES,
        drain::CASES,
        limits::CASES,
        metrics::CASES,
        js_client::CASES,
    ]
    .into_iter()
    .flatten()
}

/// How long any single expected thing (a response, an event, a log record) may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// How long a whole case may take before it is failed as hung. Every wait inside a case has its
/// own, much shorter deadline; this backstop only catches a case that keeps busy forever (and
/// leaves room for the JavaScript suite, which bounds its own run at 300 s plus `npm ci`).
pub const CASE_LIMIT: Duration = Duration::from_secs(600);

/// Runs a case under [`CASE_LIMIT`], so a case that waits forever fails instead of hanging.
pub async fn run_case(h: &Harness, name: &str, case: impl Future<Output = ()>) {
    if tokio::time::timeout(CASE_LIMIT, case).await.is_err() {
        panic!(
            "{}::{name} did not finish within {CASE_LIMIT:?} (against {})",
            h.adapter(),
            h.base_url()
        );
    }
}

/// Awaits `fut` for at most `limit`, panicking with "timed out after ..: `what`" otherwise.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// A fresh random id (UUID v4), for guids, rooms and client ids.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The SSE path of the harness for `guid`, with `clientId` and one `events` key per event.
pub fn sse_target(guid: &str, client_id: &str, events: &[&str]) -> String {
    let mut target = format!("/files/{guid}/pull?clientId={client_id}");
    for event in events {
        target.push_str("&events=");
        target.push_str(event);
    }
    target
}

/// Sends `request` and returns the response head, failing the case on a transport error.
pub async fn request(h: &Harness, request: Request) -> Response {
    let what = format!("{} {}", request.method(), request.target());
    within(
        WAIT,
        &format!("the response head to {what}"),
        request.send(h.base_url()),
    )
    .await
    .unwrap_or_else(|e| panic!("{what} to {} failed: {e}", h.base_url()))
}

/// `GET target` and the whole response body (the request asks the server to close after it).
pub async fn get_body(h: &Harness, target: &str) -> (Response, Vec<u8>) {
    let mut response = request(h, Request::get(target).header("Connection", "close")).await;
    let body = within(
        WAIT,
        &format!("the body of GET {target}"),
        response.read_to_end(),
    )
    .await
    .unwrap_or_else(|e| panic!("reading the body of GET {target}: {e}"));
    (response, body)
}

/// Opens an SSE stream with the headers the official client sends; asserts status `200`.
pub async fn open_stream(h: &Harness, target: &str) -> SseStream {
    let response = request(
        h,
        Request::get(target)
            .header("Accept", "text/event-stream")
            .header("Cache-Control", "no-cache"),
    )
    .await;
    assert_eq!(
        response.status(),
        200,
        "GET {target} should open a stream; headers {:?}",
        response.headers()
    );
    SseStream::http1(response)
}

/// Opens a stream on `guid` for `events` and waits until its `conn:create` is in the log, so a
/// send made afterwards reaches it.
pub async fn connect(h: &Harness, guid: &str, client_id: &str, events: &[&str]) -> SseStream {
    let stream = open_stream(h, &sse_target(guid, client_id, events)).await;
    wait_conn_create(h, client_id).await;
    stream
}

/// Waits until the log holds a `conn:create` for `client_id`.
pub async fn wait_conn_create(h: &Harness, client_id: &str) -> Vec<LogRecord> {
    wait_log(h, &format!("conn:create for {client_id}"), |log| {
        control::count_conn(log, "conn:create", client_id) >= 1
    })
    .await
}

/// The next event on `stream`; fails the case if the stream ends or nothing comes in time.
pub async fn next_event(stream: &mut SseStream, what: &str) -> SseEvent {
    match within(WAIT, what, stream.next_event()).await {
        Ok(Some(event)) => event,
        Ok(None) => panic!("the stream ended while waiting for {what}"),
        Err(e) => panic!("the stream failed while waiting for {what}: {e}"),
    }
}

/// Asserts that the next events on `stream` are exactly `expected` (event name, data), in order.
pub async fn expect_events(stream: &mut SseStream, who: &str, expected: &[(&str, &str)]) {
    for (i, (event, data)) in expected.iter().enumerate() {
        let what = format!("{who}: event #{i} ({event} {data:?})");
        let got = next_event(stream, &what).await;
        assert_eq!(
            (got.event.as_str(), got.data.as_str()),
            (*event, *data),
            "{who}: event #{i} differs"
        );
    }
}

/// Reads `stream` until its body ends; fails the case if it does not end in time.
pub async fn expect_end(stream: &mut SseStream, what: &str) {
    within(WAIT, what, async {
        loop {
            match stream.next_raw().await {
                Ok(Some(_)) => {}
                // A clean end of body and a connection closed mid-body both end the stream for
                // an `EventSource`.
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
}

/// `POST /_control/send` of a string; asserts `200`.
pub async fn send(h: &Harness, event: &str, room: &str, body: &str) {
    let outcome = within(
        WAIT,
        "POST /_control/send",
        control::send_text(h, event, room, body),
    )
    .await
    .unwrap_or_else(|e| panic!("POST /_control/send failed: {e}"));
    assert_eq!(
        outcome.status,
        200,
        "POST /_control/send?event={event}&room={room} answered {}: {}",
        outcome.status,
        String::from_utf8_lossy(&outcome.body)
    );
}

/// The lifecycle log so far.
pub async fn log(h: &Harness) -> Vec<LogRecord> {
    within(WAIT, "GET /_control/log", control::log(h))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Polls the log until `done` holds for it (within [`WAIT`]) and returns that log.
pub async fn wait_log(
    h: &Harness,
    what: &str,
    done: impl Fn(&[LogRecord]) -> bool,
) -> Vec<LogRecord> {
    wait_log_within(h, WAIT, what, done).await
}

/// Polls the log until `done` holds for it (within `limit`) and returns that log.
pub async fn wait_log_within(
    h: &Harness,
    limit: Duration,
    what: &str,
    done: impl Fn(&[LogRecord]) -> bool,
) -> Vec<LogRecord> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let log = log(h).await;
        if done(&log) {
            return log;
        }
        if tokio::time::Instant::now() >= deadline {
            let tail: Vec<_> = log.iter().rev().take(20).rev().collect();
            panic!("timed out after {limit:?} waiting for {what} in the log; its end: {tail:#?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Puts a marker in the log after everything the server has already started doing: opens a
/// stream with a fresh client id, waits for its `conn:create`, closes it, and returns the log up
/// to and including that marker. Records that the server raises together with an earlier
/// action land before the marker.
pub async fn settle(h: &Harness) -> Vec<LogRecord> {
    let marker = new_id();
    let stream = open_stream(h, &sse_target(&new_id(), &marker, &["normal-event"])).await;
    let mut log = wait_conn_create(h, &marker).await;
    stream.close().await;
    let end = log
        .iter()
        .position(|r| r.is_conn("conn:create", &marker))
        .expect("the marker's conn:create is in the log");
    log.truncate(end + 1);
    log
}

/// Whether the suite has the server to itself (it started the harness) rather than sharing one
/// named by `SERVER_URL`.
pub fn server_is_exclusive() -> bool {
    std::env::var_os("SERVER_URL").is_none()
}
