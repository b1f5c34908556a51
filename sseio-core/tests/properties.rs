//! Properties that hold for every input, checked with generated inputs through the public API.
//!
//! - Any text payload crosses the wire exactly: a connection on a recording sink receives bytes
//!   that a spec-compliant SSE parser (the WHATWG event-stream interpretation: the reference
//!   parser of `sseio-test-support`) reads back as exactly one event of the handler's name, whose
//!   data is the payload with each line break (`\r\n`, `\r`, `\n`) turned into `\n`; several
//!   sends are as many events, in order.
//! - Any JSON value arrives as its JSON text, a string value verbatim.
//! - Any event name without a line break registers and is the `event:` of its frames; any name
//!   with one is refused with `RegisterError::InvalidEventName`.
//! - Any request (arbitrary method, path, query and headers) gets an answer from
//!   `Server::handle`, never a panic: not ours, a 4xx JSON error, `HEAD`'s headers, or a stream.
//!
//! The fuzz targets in `fuzz/` check the same with coverage guidance, with the same parser and
//! fixtures (`sseio-test-support`).

use std::cell::RefCell;
use std::collections::BTreeMap;

use http::{HeaderName, HeaderValue, Method, Request, Version};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};
use serde_json::Value;
use sseio_core::{HandlerOptions, Outcome, RegisterError};
use sseio_test_support::fixtures::{
    by_guid, connect_blocking, quiet_server, request_server, runtime,
};
use sseio_test_support::{check_outcome, normalise_line_breaks, parse_event_stream};

fn config() -> Config {
    Config {
        cases: 256,
        ..Config::default()
    }
}

// ----- Strategies -----

/// Text that is hard to frame: arbitrary characters (controls included, which `any::<String>()`
/// leaves out) mixed with line breaks, field look-alikes and characters that only look special.
fn tricky_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => any::<char>().prop_map(String::from),
        1 => "[\\x00-\\x7f]{0,8}",
        2 => prop::sample::select(vec![
            "\r", "\n", "\r\n", "\n\r", "\r\r\n", "\n\n", "", " ", ":", ": ", "data:", "data: x",
            "event:", "event: evil", "id: 1", "retry: 0", "\u{feff}", "\0", "é", "\u{1d11e}",
            "\u{2028}", "\u{85}", "\\", "\"",
        ])
        .prop_map(str::to_owned),
    ];
    prop_oneof![
        1 => any::<String>(),
        3 => prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat()),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Non-finite numbers have no JSON text; `Value::from` makes them `null`.
        any::<f64>().prop_map(Value::from),
        tricky_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((tricky_text(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

// ----- Frames -----

/// Sends each payload to the connection's room and returns what the reference parser reads.
fn send_and_parse(payloads: &[String]) -> Vec<(String, String)> {
    let rt = runtime();
    let server = quiet_server();
    let handler = server
        .register_event_handler("e", HandlerOptions::new(by_guid))
        .unwrap();
    let (_connection, sink) = connect_blocking(&rt, &server, "e");
    for payload in payloads {
        handler.send("g", payload).expect("a string always sends");
    }
    parse_event_stream(&sink.bytes())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_payload_is_exactly_one_event_with_normalised_line_breaks(payload in tricky_text()) {
        let events = send_and_parse(std::slice::from_ref(&payload));
        prop_assert_eq!(events, vec![("e".to_owned(), normalise_line_breaks(&payload))]);
    }

    #[test]
    fn a_sequence_of_payloads_is_as_many_events_in_order(
        payloads in prop::collection::vec(tricky_text(), 0..8),
    ) {
        let events = send_and_parse(&payloads);
        let expected: Vec<_> = payloads
            .iter()
            .map(|p| ("e".to_owned(), normalise_line_breaks(p)))
            .collect();
        prop_assert_eq!(events, expected);
    }

    #[test]
    fn json_values_arrive_as_json_text_and_strings_verbatim(value in json_value()) {
        let rt = runtime();
        let server = quiet_server();
        let handler = server
            .register_event_handler("e", HandlerOptions::new(by_guid))
            .unwrap();
        let (_connection, sink) = connect_blocking(&rt, &server, "e");
        handler.send("g", &value).expect("a JSON value always serializes");
        let data = match &value {
            Value::String(text) => normalise_line_breaks(text),
            other => serde_json::to_string(other).unwrap(),
        };
        prop_assert_eq!(parse_event_stream(&sink.bytes()), vec![("e".to_owned(), data)]);
    }

    #[test]
    fn event_names_without_line_breaks_register_and_round_trip(
        name in tricky_text().prop_filter("a usable name", |n| {
            !n.is_empty() && !n.contains(['\r', '\n'])
        }),
        payload in tricky_text(),
    ) {
        let rt = runtime();
        let server = quiet_server();
        let handler = server
            .register_event_handler(name.as_str(), HandlerOptions::new(by_guid))
            .unwrap_or_else(|e| panic!("{name:?} should register: {e}"));
        prop_assert_eq!(handler.event(), name.as_str());
        let (_connection, sink) = connect_blocking(&rt, &server, &name);
        handler.send("g", &payload).unwrap();
        prop_assert_eq!(
            parse_event_stream(&sink.bytes()),
            vec![(name, normalise_line_breaks(&payload))]
        );
    }

    #[test]
    fn event_names_with_a_line_break_are_refused(
        before in tricky_text(),
        line_break in prop::sample::select(vec!["\r", "\n", "\r\n"]),
        after in tricky_text(),
    ) {
        let name = format!("{before}{line_break}{after}");
        let refused =
            quiet_server().register_event_handler(name.as_str(), HandlerOptions::new(by_guid));
        prop_assert!(
            matches!(&refused, Err(RegisterError::InvalidEventName { name: n, .. }) if *n == name),
            "{:?} was not refused as an invalid name: {:?}", name, refused
        );
    }
}

#[test]
fn the_empty_event_name_is_refused() {
    let refused = quiet_server().register_event_handler("", HandlerOptions::new(by_guid));
    assert!(matches!(
        refused,
        Err(RegisterError::InvalidEventName { .. })
    ));
}

// ----- Requests -----

/// Pieces of paths and queries: the protocol's words, escapes good and broken (some decoding to
/// bytes that are not UTF-8), separators, and any character (an ASCII one that `http` would
/// refuse in a URI escaped, so that most requests get through).
fn uri_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "clientId", "events", "e", "q", "h", "fetched", "unknown", "room", "x", "42", "é",
            "=", "&", "+", ".", "..", "/", ":", "{", "}", "\"", "",
        ])
        .prop_map(str::to_owned),
        2 => prop::sample::select(vec![
            "%", "%2", "%zz", "%20", "%2F", "%26", "%3D", "%FF", "%C3%28", "%E0%A4%A",
            "%ED%A0%80", "%C0%AF", "%00", "%0A", "%0D", "%C3%A9", "?", "#",
        ])
        .prop_map(str::to_owned),
        1 => any::<char>().prop_map(|c| match c {
            '\0'..=' ' | '<' | '>' | '`' | '^' | '\x7f' => format!("%{:02X}", c as u32),
            c => c.to_string(),
        }),
    ]
}

fn uri_text() -> impl Strategy<Value = String> {
    prop::collection::vec(uri_piece(), 0..6).prop_map(|pieces| pieces.concat())
}

/// A query of `key=value` pairs built from [`uri_piece`]s, often after a well-formed `clientId`
/// and `events` so that streams open too.
fn query() -> impl Strategy<Value = String> {
    let pair = (uri_text(), prop::option::of(uri_text()))
        .prop_map(|(key, value)| value.map_or(key.clone(), |value| format!("{key}={value}")));
    let prefix = prop_oneof![
        Just(""),
        Just("clientId=c&events=e&events=q&events=h&events=fetched&room=r"),
    ];
    let pairs = prop_oneof![Just(Vec::new()), prop::collection::vec(pair, 1..4)];
    (prefix, pairs).prop_map(|(prefix, pairs)| {
        let mut query = prefix.to_owned();
        for pair in pairs {
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str(&pair);
        }
        query
    })
}

/// Request targets: mostly around the SSE path, sometimes arbitrary bytes.
fn target() -> impl Strategy<Value = Vec<u8>> {
    let guid = prop_oneof![
        2 => "[a-zA-Z0-9._~-]{1,12}",
        1 => "[^/?#<>`\\x00-\\x20\\x7f]{1,8}",
        2 => uri_text(),
    ];
    let path = prop_oneof![
        6 => guid.prop_map(|guid| format!("/files/{guid}/pull")),
        1 => uri_text().prop_map(|rest| format!("/{rest}")),
        1 => (uri_text(), uri_text()).prop_map(|(a, b)| format!("/files/{a}/pull/{b}")),
        1 => Just("/files//pull".to_owned()),
    ];
    prop_oneof![
        16 => (path, prop::option::weighted(0.8, query())).prop_map(|(path, query)| {
            match query {
                Some(query) => format!("{path}?{query}").into_bytes(),
                None => path.into_bytes(),
            }
        }),
        1 => prop::collection::vec(any::<u8>(), 0..48),
        1 => prop::collection::vec(any::<u8>(), 0..48).prop_map(|bytes| {
            [b"/files/g/pull?clientId=c&events=e&".as_slice(), &bytes].concat()
        }),
    ]
}

fn method() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        20 => Just(b"GET".to_vec()),
        3 => prop::sample::select(vec![
            "HEAD", "OPTIONS", "POST", "PUT", "DELETE", "PATCH", "TRACE", "CONNECT", "get",
            "PROPFIND",
        ])
        .prop_map(|m| m.as_bytes().to_vec()),
        1 => "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,10}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..12),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
    let name = prop_oneof![
        3 => prop::sample::select(vec!["x-room", "accept", "last-event-id", "cookie", "host"])
            .prop_map(|n| n.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..12),
    ];
    let value = prop_oneof![
        2 => uri_text().prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..32),
    ];
    prop::collection::vec((name, value), 0..4)
}

fn version() -> impl Strategy<Value = Version> {
    prop::sample::select(vec![Version::HTTP_10, Version::HTTP_11, Version::HTTP_2])
}

/// The request `http` builds from these parts, or `None` when it refuses them (the framework
/// would have answered such a request itself). A header `http` refuses is left out.
fn build_request(
    method: &[u8],
    target: &[u8],
    headers: &[(Vec<u8>, Vec<u8>)],
    version: Version,
) -> Option<Request<()>> {
    let mut request = Request::builder()
        .method(Method::from_bytes(method).ok()?)
        .uri(target)
        .version(version)
        .body(())
        .ok()?;
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            request.headers_mut().append(name, value);
        }
    }
    Some(request)
}

#[test]
fn handle_never_panics_and_answers_by_the_rules() {
    let rt = runtime();
    let server = request_server();
    // How many requests ended how, to check that the generators reach every kind of answer.
    let seen: RefCell<BTreeMap<String, usize>> = RefCell::default();
    proptest!(config(), |(
        method in method(),
        target in target(),
        headers in headers(),
        version in version(),
    )| {
        // A request `http` refuses never reaches sseio: the framework answers it.
        let Some(request) = build_request(&method, &target, &headers, version) else {
            *seen.borrow_mut().entry("refused by http".to_owned()).or_default() += 1;
            return Ok(());
        };
        let outcome = rt.block_on(server.handle((&request).into()));
        let kind = match &outcome {
            Outcome::NotOurs => "not ours".to_owned(),
            Outcome::Stream(_) => "stream".to_owned(),
            Outcome::Reply(response) => response.status().as_u16().to_string(),
        };
        *seen.borrow_mut().entry(kind).or_default() += 1;
        check_outcome(&request, outcome).map_err(TestCaseError::fail)?;
        // Let the `fetch` of an opened stream run, on whatever the query was.
        rt.block_on(tokio::task::yield_now());
    });
    let seen = seen.into_inner();
    for kind in ["not ours", "stream", "400", "405", "refused by http"] {
        assert!(
            seen.contains_key(kind),
            "no request ended as {kind}: {seen:?}"
        );
    }
}
