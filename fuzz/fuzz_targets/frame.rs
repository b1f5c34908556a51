//! Fuzzes frame encoding: whatever is sent, a spec-compliant SSE parser reads back exactly what
//! was meant, and never an extra or a missing event.
//!
//! The first byte picks what the rest of the input is:
//!
//! - `0`: one payload (text, invalid UTF-8 replaced), sent to a connection on a recording sink:
//!   exactly one event of the handler's name, whose data is the payload with each line break
//!   (`\r\n`, `\r`, `\n`) written as `\n`;
//! - `1`: several payloads separated by NUL: as many events, in order;
//! - `2`: an event name and a payload separated by the first NUL: a name with a line break (or an
//!   empty one) is refused at registration, any other registers and names the event;
//! - `3`: a JSON document: a string value arrives verbatim (line breaks normalised), any other
//!   value as exactly `serde_json::to_string` of it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sseio_core::{HandlerOptions, RegisterError};
use sseio_fuzz::connect;
use sseio_test_support::fixtures::{by_guid, quiet_server};
use sseio_test_support::{normalise_line_breaks, parse_event_stream};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match mode % 4 {
        0 => payloads(&[&text]),
        1 => payloads(&text.split('\0').collect::<Vec<_>>()),
        2 => {
            let (name, payload) = text.split_once('\0').unwrap_or((&text, ""));
            event_name(name, payload);
        }
        _ => {
            if let Ok(value) = serde_json::from_slice::<serde_json::Value>(rest) {
                json(&value);
            }
        }
    }
});

/// Sends `payloads` to event `e` and checks they arrive as as many events, in order.
fn payloads(payloads: &[&str]) {
    let server = quiet_server();
    let handler = server
        .register_event_handler("e", HandlerOptions::new(by_guid))
        .expect("`e` is a valid name");
    let (_connection, sink) = connect(&server, "e");
    for payload in payloads {
        handler.send("g", payload).expect("a string always sends");
    }
    let expected: Vec<_> = payloads
        .iter()
        .map(|p| ("e".to_owned(), normalise_line_breaks(p)))
        .collect();
    assert_eq!(parse_event_stream(&sink.bytes()), expected);
}

/// Registers `name` and, when that is allowed, checks a frame of it carries that name.
fn event_name(name: &str, payload: &str) {
    let server = quiet_server();
    let registered = server.register_event_handler(name, HandlerOptions::new(by_guid));
    if name.is_empty() || name.contains(['\r', '\n']) {
        assert!(
            matches!(&registered, Err(RegisterError::InvalidEventName { name: n, .. }) if n == name),
            "{name:?} should be refused as an invalid name: {registered:?}"
        );
        return;
    }
    let handler = registered.unwrap_or_else(|e| panic!("{name:?} should register: {e}"));
    assert_eq!(handler.event(), name);
    let (_connection, sink) = connect(&server, name);
    handler.send("g", payload).expect("a string always sends");
    assert_eq!(
        parse_event_stream(&sink.bytes()),
        [(name.to_owned(), normalise_line_breaks(payload))]
    );
}

/// Sends a JSON value and checks it arrives as its JSON text, or verbatim for a string.
fn json(value: &serde_json::Value) {
    let server = quiet_server();
    let handler = server
        .register_event_handler("e", HandlerOptions::new(by_guid))
        .expect("`e` is a valid name");
    let (_connection, sink) = connect(&server, "e");
    handler
        .send("g", value)
        .expect("a JSON value always serializes");
    let data = match value {
        serde_json::Value::String(text) => normalise_line_breaks(text),
        other => serde_json::to_string(other).expect("a JSON value always serializes"),
    };
    assert_eq!(parse_event_stream(&sink.bytes()), [("e".to_owned(), data)]);
}
