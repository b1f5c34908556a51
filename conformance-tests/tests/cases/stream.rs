//! The stream itself: headers on HTTP/1.1 and HTTP/2, the opening flush, frame encoding and
//! heartbeats.

use std::time::Duration;

use conformance_tests::Harness;
use conformance_tests::control;
use conformance_tests::h2;
use conformance_tests::sse::{SseItem, SseStream};

use super::{
    WAIT, connect, expect_events, new_id, next_event, open_stream, send, sse_target,
    wait_conn_create, within,
};

super::registry::case_table! {
    http1_stream_headers,
    http2_stream_headers_and_delivery,
    opening_newline_arrives_at_once,
    frame_is_event_line_then_data_line,
    multiline_payloads_become_several_data_lines,
    json_message_arrives_as_json_text,
    large_payload_arrives_intact,
    heartbeat_every_three_seconds,
}

/// How soon after the response head the opening bytes must arrive.
const OPENING_LIMIT: Duration = Duration::from_secs(1);

/// How long an idle stream may take to show two heartbeats at the default 3 s interval.
const TWO_HEARTBEATS_LIMIT: Duration = Duration::from_millis(7500);

/// Comment lines this close to the last counted heartbeat belong to the same heartbeat.
const SAME_HEARTBEAT: Duration = Duration::from_secs(1);

/// Whether `content_type` is exactly `text/event-stream`, optionally with `charset=utf-8`.
pub fn is_event_stream(content_type: Option<&str>) -> bool {
    let Some(content_type) = content_type else {
        return false;
    };
    let normalised: String = content_type
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    normalised == "text/event-stream" || normalised == "text/event-stream;charset=utf-8"
}

/// On HTTP/1.1 a stream answers `200` with `Content-Type: text/event-stream`,
/// `Cache-Control: no-cache, no-transform`, `Connection: keep-alive` (or none: the same on
/// HTTP/1.1) and `X-Accel-Buffering: no`, so that neither caches nor proxies hold it back.
pub async fn http1_stream_headers(h: &Harness) {
    let (guid, client) = (new_id(), new_id());
    let stream = open_stream(h, &sse_target(&guid, &client, &["normal-event"])).await;
    let response = stream.http1_response().expect("an HTTP/1.1 stream");
    let headers = response.headers();
    assert_eq!(response.version(), "HTTP/1.1", "status line version");
    assert!(
        is_event_stream(response.header("content-type")),
        "Content-Type should be exactly text/event-stream, headers {headers:?}"
    );
    let cache_control = response.header_tokens("cache-control");
    for token in ["no-cache", "no-transform"] {
        assert!(
            cache_control.iter().any(|t| t == token),
            "Cache-Control should contain {token}, got {cache_control:?}"
        );
    }
    // HTTP/1.1 connections persist unless a side says `close`, so no `Connection` header says
    // the same as `keep-alive`; actix-web writes that header itself and never sends
    // `keep-alive` on HTTP/1.1.
    let connection = response.header_tokens("connection");
    assert!(
        connection.is_empty() || connection.iter().any(|t| t == "keep-alive"),
        "Connection should be keep-alive or absent, got {connection:?}"
    );
    assert!(
        response
            .header("x-accel-buffering")
            .is_some_and(|v| v.eq_ignore_ascii_case("no")),
        "X-Accel-Buffering should be no, headers {headers:?}"
    );
}

/// Over HTTP/2 (h2c with prior knowledge, on the same port) a stream answers `200` with
/// `Content-Type: text/event-stream` and no `Connection` header (forbidden in HTTP/2), opens at
/// once and delivers messages.
pub async fn http2_stream_headers_and_delivery(h: &Harness) {
    let (guid, client) = (new_id(), new_id());
    let target = sse_target(&guid, &client, &["normal-event"]);
    let response = within(
        WAIT,
        "an HTTP/2 response head",
        h2::get(h.base_url(), &target),
    )
    .await
    .unwrap_or_else(|e| panic!("HTTP/2 (h2c prior knowledge) GET {target} failed: {e}"));
    assert_eq!(response.status(), 200, "HTTP/2 GET {target}");
    let headers = response.headers().clone();
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok());
    assert!(
        is_event_stream(content_type),
        "HTTP/2: Content-Type should be exactly text/event-stream, headers {headers:?}"
    );
    assert!(
        headers.get("connection").is_none(),
        "HTTP/2 responses must not carry Connection, headers {headers:?}"
    );
    let cache_control = headers
        .get_all("cache-control")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    assert!(
        cache_control.contains("no-cache"),
        "HTTP/2: Cache-Control should contain no-cache, got {cache_control:?}"
    );
    let mut stream = SseStream::http2(response);
    let opening = within(
        OPENING_LIMIT,
        "the opening bytes of an HTTP/2 stream",
        stream.next_raw(),
    )
    .await;
    assert!(
        matches!(&opening, Ok(Some(bytes)) if !bytes.is_empty()),
        "HTTP/2: the stream should open with some bytes at once, got {opening:?}"
    );
    wait_conn_create(h, &client).await;
    let payload = format!("over-h2-{}", new_id());
    send(h, "normal-event", &guid, &payload).await;
    expect_events(&mut stream, "HTTP/2 client", &[("normal-event", &payload)]).await;
}

/// The stream flushes its opening bytes (the original sends a lone `\n`) right after the head,
/// before any message, so clients and proxies see the stream open at once.
pub async fn opening_newline_arrives_at_once(h: &Harness) {
    let (guid, client) = (new_id(), new_id());
    let mut stream = open_stream(h, &sse_target(&guid, &client, &["normal-event"])).await;
    let opening = within(
        OPENING_LIMIT,
        "the opening bytes of the stream (nothing was sent yet)",
        stream.next_raw(),
    )
    .await
    .unwrap_or_else(|e| panic!("reading the opening bytes: {e}"))
    .unwrap_or_else(|| panic!("the stream ended instead of opening"));
    assert!(
        opening.starts_with(b"\n") || opening.starts_with(b":"),
        "the stream should open with a blank line (or a comment), got {:?}",
        String::from_utf8_lossy(&opening)
    );
}

/// A string sent to a room arrives as exactly `event: E\ndata: P\n\n`.
pub async fn frame_is_event_line_then_data_line(h: &Harness) {
    let (guid, client) = (new_id(), new_id());
    let mut stream = connect(h, &guid, &client, &["normal-event"]).await;
    let payload = format!("plain {}", new_id());
    send(h, "normal-event", &guid, &payload).await;
    expect_events(&mut stream, "client", &[("normal-event", &payload)]).await;
    let frame = format!("\nevent: normal-event\ndata: {payload}\n\n");
    let raw = String::from_utf8_lossy(stream.raw()).into_owned();
    assert!(
        raw.contains(&frame),
        "the raw stream should contain the frame {frame:?}, got {raw:?}"
    );
}

/// Regression: `multiline_payload_corrupts_stream` (original server).
///
/// The original wrote `data: <payload>` with the payload as is, so a line break inside it ended
/// the `data` field early, a blank line inside it dispatched a truncated event, and a payload
/// could inject a whole event of another name. Each line break (`\n`, `\r\n`, `\r`) must start a
/// new `data:` line, so the client gets back exactly one event whose data is the payload with
/// its line breaks as `\n`.
pub async fn multiline_payloads_become_several_data_lines(h: &Harness) {
    let (guid, client) = (new_id(), new_id());
    let mut stream = connect(h, &guid, &client, &["normal-event"]).await;
    let payloads = [
        "two\nlines",
        "crlf\r\nline",
        "cr\rline",
        "trailing newline\n",
        "\nleading newline",
        "blank\n\nline",
        "x\n\nevent: evil\ndata: y",
        "a\r\n\r\nb\r",
        ": not a comment\nid: 7\nretry: 1",
    ];
    for payload in payloads {
        send(h, "normal-event", &guid, payload).await;
    }
    let end = format!("end {}", new_id());
    send(h, "normal-event", &guid, &end).await;
    let normalised: Vec<String> = payloads
        .iter()
        .map(|p| p.replace("\r\n", "\n").replace('\r', "\n"))
        .collect();
    let mut expected: Vec<(&str, &str)> = normalised
        .iter()
        .map(|p| ("normal-event", p.as_str()))
        .collect();
    expected.push(("normal-event", &end));
    expect_events(&mut stream, "client", &expected).await;
}

/// A JSON body sent to `/_control/send` arrives as its JSON text.
pub async fn json_message_arrives_as_json_text(h: &Harness) {
    let (guid, client) = (new_id(), new_id());
    let mut stream = connect(h, &guid, &client, &["normal-event"]).await;
    let outcome = within(
        WAIT,
        "POST /_control/send (JSON)",
        control::send_json(h, "normal-event", &guid, r#"{"a":[1,2]}"#),
    )
    .await
    .unwrap_or_else(|e| panic!("POST /_control/send failed: {e}"));
    assert_eq!(outcome.status, 200, "JSON send");
    let event = next_event(&mut stream, "the JSON message").await;
    assert_eq!(event.event, "normal-event");
    let value: serde_json::Value = serde_json::from_str(&event.data)
        .unwrap_or_else(|e| panic!("data should be JSON text ({e}): {:?}", event.data));
    assert_eq!(
        value,
        serde_json::json!({"a": [1, 2]}),
        "data {:?}",
        event.data
    );
}

/// A 200 KiB payload arrives intact, as one event.
pub async fn large_payload_arrives_intact(h: &Harness) {
    let (guid, client) = (new_id(), new_id());
    let mut stream = connect(h, &guid, &client, &["normal-event"]).await;
    let mut payload = String::with_capacity(200 * 1024);
    let mut i = 0u32;
    while payload.len() < 200 * 1024 {
        payload.push_str(&format!("{i:08x} "));
        i += 1;
    }
    payload.truncate(200 * 1024);
    send(h, "normal-event", &guid, &payload).await;
    let event = next_event(&mut stream, "the 200 KiB message").await;
    assert_eq!(event.event, "normal-event");
    if event.data != payload {
        let first_difference = event
            .data
            .bytes()
            .zip(payload.bytes())
            .position(|(a, b)| a != b);
        panic!(
            "the 200 KiB payload arrived altered: {} bytes instead of {}, first difference at {:?}",
            event.data.len(),
            payload.len(),
            first_difference
        );
    }
}

/// An idle stream gets a comment frame (heartbeat) every 3 seconds: at least two within 7.5 s,
/// and no event.
///
/// A heartbeat frame may hold several comment lines (the original sends `:\n:\n:\n\n`), so
/// comment lines that arrive within [`SAME_HEARTBEAT`] of the last counted heartbeat count as
/// the same one: what is checked is the cadence, not the number of lines.
pub async fn heartbeat_every_three_seconds(h: &Harness) {
    let (guid, client) = (new_id(), new_id());
    let mut stream = open_stream(h, &sse_target(&guid, &client, &["normal-event"])).await;
    let start = tokio::time::Instant::now();
    let deadline = start + TWO_HEARTBEATS_LIMIT;
    let mut heartbeats: Vec<tokio::time::Instant> = Vec::new();
    while heartbeats.len() < 2 {
        match tokio::time::timeout_at(deadline, stream.next_item()).await {
            Err(_) => panic!(
                "an idle stream should see two heartbeats within {TWO_HEARTBEATS_LIMIT:?}, saw {} (at {:?}); raw {:?}",
                heartbeats.len(),
                heartbeats.iter().map(|t| *t - start).collect::<Vec<_>>(),
                String::from_utf8_lossy(stream.raw())
            ),
            Ok(Ok(Some(SseItem::Comment(_)))) => {
                let now = tokio::time::Instant::now();
                if heartbeats
                    .last()
                    .is_none_or(|last| now - *last > SAME_HEARTBEAT)
                {
                    heartbeats.push(now);
                }
            }
            Ok(Ok(Some(SseItem::Event(event)))) => {
                panic!("an idle stream should carry no event, got {event:?}")
            }
            Ok(Ok(None)) => panic!(
                "the idle stream ended after {} heartbeats",
                heartbeats.len()
            ),
            Ok(Err(e)) => panic!(
                "the idle stream failed after {} heartbeats: {e}",
                heartbeats.len()
            ),
        }
    }
}
