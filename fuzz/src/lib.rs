//! What the fuzz targets share: a reference SSE parser, a recording sink, and a runtime.
//!
//! The parser is the oracle of the frame target: it follows the WHATWG HTML "event stream
//! interpretation" to the letter, independently of `sseio-core`'s encoder, so a frame that a
//! browser's `EventSource` would read differently from what was sent fails the target.
//! (`sseio-core/tests/properties.rs` repeats it, as a test there cannot depend on this crate.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use sseio_core::{CloseReason, Connection, Context, Server, SinkError, SseSink};
use tokio::runtime::Runtime;

/// The events that the WHATWG HTML "event stream interpretation" dispatches for a whole stream,
/// as `(type, data)`: UTF-8 decoded, one leading byte order mark dropped, lines ended by CRLF,
/// LF or CR, `field: value` with one leading space stripped from the value, `data` values joined
/// with `\n`, dispatch on an empty line when some data was seen, comments and other fields
/// ignored, and an unterminated last line or event discarded.
pub fn parse_event_stream(stream: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(stream);
    let mut rest = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let (mut events, mut event, mut data) = (Vec::new(), String::new(), String::new());
    while let Some(end) = rest.find(['\r', '\n']) {
        let line = &rest[..end];
        rest = &rest[end
            + if rest[end..].starts_with("\r\n") {
                2
            } else {
                1
            }..];
        if line.is_empty() {
            if let Some(joined) = data.strip_suffix('\n') {
                let name = if event.is_empty() { "message" } else { &event };
                events.push((name.to_owned(), joined.to_owned()));
            }
            event.clear();
            data.clear();
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => value.clone_into(&mut event),
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            _ => {}
        }
    }
    events
}

/// `text` with every line break (`\r\n`, `\r`, `\n`) written as `\n`, as an `EventSource` sees
/// a payload.
pub fn normalise_line_breaks(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// A sink that records every frame.
#[derive(Debug, Default)]
pub struct RecordingSink {
    frames: Mutex<Vec<Bytes>>,
    closed: AtomicBool,
}

impl RecordingSink {
    /// Everything sent so far, in order.
    pub fn bytes(&self) -> Vec<u8> {
        self.frames.lock().unwrap().concat()
    }
}

impl SseSink for RecordingSink {
    fn send(&self, frame: Bytes) -> Result<(), SinkError> {
        if self.is_closed() {
            return Err(SinkError::Closed);
        }
        self.frames.lock().unwrap().push(frame);
        Ok(())
    }

    fn close(&self, _reason: CloseReason) {
        self.closed.store(true, Ordering::SeqCst);
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// The SSE path pattern of the fuzzed servers.
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

/// A fresh server on [`PATTERN`] without heartbeats (one per input, so that an input's outcome
/// never depends on the inputs before it).
pub fn server() -> Server {
    Server::builder()
        .path(PATTERN)
        .heartbeat_interval(Duration::ZERO)
        .build()
        .expect("the pattern is valid")
}

/// The process's current-thread runtime.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime starts")
    })
}

/// Connects a recording sink to room `g` of `event` (which is percent-encoded into the query).
pub fn connect(server: &Server, event: &str) -> (Connection, Arc<RecordingSink>) {
    let sink = Arc::new(RecordingSink::default());
    let events = utf8_percent_encode(event, NON_ALPHANUMERIC);
    let request = Request::get(format!("/files/g/pull?clientId=c&events={events}"))
        .body(())
        .expect("the request is valid");
    let connection = runtime()
        .block_on(server.connect((&request).into(), sink.clone()))
        .expect("the connection opens");
    (connection, sink)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_parser_follows_the_spec_examples() {
        let parse = |s: &str| parse_event_stream(s.as_bytes());
        let event = |e: &str, d: &str| (e.to_owned(), d.to_owned());
        assert_eq!(
            parse("data: a\ndata:b\r\ndata:  c\r\r"),
            [event("message", "a\nb\n c")]
        );
        assert_eq!(parse("\u{feff}event: e\ndata\n\n"), [event("e", "")]);
        assert_eq!(
            parse(": c\nevent: x\n\nid: 1\ndata: y\n\n"),
            [event("message", "y")]
        );
        assert_eq!(parse("data: unterminated\n"), []);
        assert_eq!(parse("event\ndata: z\n\n"), [event("message", "z")]);
    }
}
