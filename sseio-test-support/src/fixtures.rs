//! The servers, requests and connections that several tests build the same way.
//!
//! The SSE path is [`PATTERN`], `/files/:guid/pull`, the harness contract's; a connection's
//! room is usually its path parameter ([`by_guid`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use sseio_core::{Connection, Context, HandlerOptions, Server};
use tokio::runtime::Runtime;

use crate::sink::RecordingSink;

/// The SSE path pattern of the test servers.
pub const PATTERN: &str = "/files/:guid/pull";

/// Whether `path` is one of [`PATTERN`]'s: `/files/<one non-empty segment>/pull`.
pub fn is_sse_path(path: &str) -> bool {
    path.strip_prefix("/files/")
        .and_then(|rest| rest.strip_suffix("/pull"))
        .is_some_and(|guid| !guid.is_empty() && !guid.contains('/'))
}

/// The room of a connection: its path parameter `guid`.
pub fn by_guid(ctx: &Context) -> String {
    ctx.param("guid").unwrap_or_default().to_owned()
}

/// A fresh server on [`PATTERN`] without heartbeats, so that a recording sink holds message
/// frames only, whatever the test's timing.
///
/// # Panics
///
/// Never: the pattern is valid.
pub fn quiet_server() -> Server {
    Server::builder()
        .path(PATTERN)
        .heartbeat_interval(Duration::ZERO)
        .build()
        .expect("the pattern is valid")
}

/// A [`quiet_server`] with the handlers that request tests need, one per way of choosing a room:
/// `e` by the path, `q` by the query parameter `room`, `h` by the header `x-room` (which need not
/// be UTF-8), and `fetched`, by the path, with a `fetch` that answers the query's keys.
///
/// # Panics
///
/// Never: the event names are valid.
pub fn request_server() -> Server {
    let server = quiet_server();
    let handlers = [
        ("e", HandlerOptions::new(by_guid)),
        (
            "q",
            HandlerOptions::new(|ctx: &Context| ctx.query("room").unwrap_or_default().to_owned()),
        ),
        (
            "h",
            HandlerOptions::new(|ctx: &Context| {
                ctx.headers()
                    .get("x-room")
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .unwrap_or_default()
            }),
        ),
        (
            "fetched",
            HandlerOptions::new(by_guid).fetch(|ctx: Context| async move {
                let keys: Vec<String> = ctx.query_pairs().map(|(k, _)| k.to_owned()).collect();
                Ok::<_, Infallible>(keys)
            }),
        ),
    ];
    for (event, options) in handlers {
        server
            .register_event_handler(event, options)
            .expect("the events are valid");
    }
    server
}

/// `GET uri` without a body.
///
/// # Panics
///
/// When `uri` is not a valid request target.
pub fn get(uri: impl AsRef<str>) -> Request<()> {
    let uri = uri.as_ref();
    Request::get(uri)
        .body(())
        .unwrap_or_else(|e| panic!("GET {uri:?} is not a valid request: {e}"))
}

/// The SSE target of client `c` in room `g` of `event` (percent-encoded into the query).
pub fn event_target(event: &str) -> String {
    let events = utf8_percent_encode(event, NON_ALPHANUMERIC);
    format!("/files/g/pull?clientId=c&events={events}")
}

/// Opens a connection for `GET uri` on a fresh [`RecordingSink`].
///
/// # Panics
///
/// When `uri` is not a valid request target or the server refuses the connection.
pub async fn connect(server: &Server, uri: &str) -> (Connection, Arc<RecordingSink>) {
    connect_request(server, &get(uri)).await
}

/// Opens a connection for `request` (with headers of its own, such as `Last-Event-ID`) on a
/// fresh [`RecordingSink`].
///
/// # Panics
///
/// When the server refuses the connection.
pub async fn connect_request(
    server: &Server,
    request: &Request<()>,
) -> (Connection, Arc<RecordingSink>) {
    let sink = Arc::new(RecordingSink::default());
    let connection = server
        .connect(request.into(), sink.clone())
        .await
        .expect("the connection opens");
    (connection, sink)
}

/// Connects a recording sink to room `g` of `event` ([`event_target`]) from outside any
/// runtime, by blocking on `runtime`.
///
/// # Panics
///
/// When the server refuses the connection.
pub fn connect_blocking(
    runtime: &Runtime,
    server: &Server,
    event: &str,
) -> (Connection, Arc<RecordingSink>) {
    runtime.block_on(connect(server, &event_target(event)))
}

/// A current-thread runtime with every driver this build of tokio has, for tests that drive the
/// server from plain (non-async) code.
///
/// # Panics
///
/// When the runtime cannot be built (the process is out of resources).
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime starts")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_paths_are_one_non_empty_segment_between_files_and_pull() {
        assert!(is_sse_path("/files/g/pull"));
        assert!(!is_sse_path("/files//pull"));
        assert!(!is_sse_path("/files/a/b/pull"));
        assert!(!is_sse_path("/files/g/pull/extra"));
    }

    #[test]
    fn event_names_are_percent_encoded_into_the_target() {
        assert_eq!(
            event_target("a b&c"),
            "/files/g/pull?clientId=c&events=a%20b%26c"
        );
        let request = get(event_target("é\n"));
        assert_eq!(request.uri().query(), Some("clientId=c&events=%C3%A9%0A"));
    }

    #[test]
    fn a_connection_on_the_request_server_gets_what_its_room_is_sent() {
        let runtime = runtime();
        let server = request_server();
        let (_connection, sink) = connect_blocking(&runtime, &server, "e");
        let handler = server.handler("e").expect("registered");
        handler.send("g", "hi").unwrap();
        assert_eq!(sink.text(), "event: e\ndata: hi\n\n");
    }
}
