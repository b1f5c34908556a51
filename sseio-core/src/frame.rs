//! SSE frame encoding: the only place that turns messages into bytes on the wire.
//!
//! A message for event `E` with payload `P` becomes `event: E\ndata: P\n\n`. A payload with line
//! breaks becomes one `data:` line per line, where `\r\n`, `\r` and `\n` each count as one break,
//! so an `EventSource` joins the lines back with `\n` and no payload can end a frame early or
//! inject a field or an event of its own.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use crate::position::Position;

/// The first bytes of every stream: a lone line break, flushed at once so that clients and
/// proxies see the stream open before the first message, then the `retry:` field that tells an
/// `EventSource` how many milliseconds to wait before it reconnects once the stream ends.
pub(crate) fn opening(reconnect: Duration) -> Bytes {
    Bytes::from(format!("\nretry: {}\n\n", reconnect.as_millis()))
}

/// The last field of a stream that a drain closes: when to reconnect, so that an `EventSource`
/// comes back once the draining server is gone (to its successor, or to a port that refuses
/// and makes it retry again) instead of to a server that answers `503`, which it treats as
/// final.
pub(crate) fn retry(reconnect: Duration) -> Bytes {
    Bytes::from(format!("retry: {}\n\n", reconnect.as_millis()))
}

/// The heartbeat: one comment line. Every `EventSource` ignores it; it keeps idle connections
/// alive through proxies and makes a dead peer show up as a failed write.
pub(crate) const HEARTBEAT: Bytes = Bytes::from_static(b":\n\n");

/// Encodes one message frame for `event`, splitting `payload` into one `data:` line per line.
///
/// `event` must already be validated (no line breaks); [`crate::Server::register_event_handler`]
/// guarantees that for every handler.
pub(crate) fn encode(event: &str, payload: &str) -> Bytes {
    encode_into(
        BytesMut::with_capacity(event.len() + payload.len() + 16),
        event,
        payload,
    )
}

/// Encodes one message frame with an `id:` line first (`id` has no line break: it is a history
/// position).
pub(crate) fn encode_with_id(id: &str, event: &str, payload: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(id.len() + event.len() + payload.len() + 21);
    buf.put_slice(b"id: ");
    buf.put_slice(id.as_bytes());
    buf.put_u8(b'\n');
    encode_into(buf, event, payload)
}

/// Several frames as one chunk; `None` for none.
pub(crate) fn concat(frames: &[Bytes]) -> Option<Bytes> {
    match frames {
        [] => None,
        [one] => Some(one.clone()),
        many => {
            let mut chunk = BytesMut::with_capacity(many.iter().map(Bytes::len).sum());
            many.iter().for_each(|frame| chunk.put_slice(frame));
            Some(chunk.freeze())
        }
    }
}

/// Of a chunk of whole frames (each ends with a blank line) of which the first `written` bytes
/// went out, the position of the first numbered frame not wholly written: a client dispatches
/// an event only at its blank line. `None` when every numbered frame went out whole.
pub(crate) fn first_unwritten(chunk: &[u8], written: usize) -> Option<Position> {
    let written = written.min(chunk.len());
    // The frame of the first byte not written starts after the last blank line before it.
    let start = memchr::memmem::rfind(&chunk[..written], b"\n\n").map_or(0, |end| end + 2);
    let mut rest = &chunk[start..];
    while !rest.is_empty() {
        if let Some(at) = position_of(rest) {
            return Some(at);
        }
        rest = &rest[memchr::memmem::find(rest, b"\n\n")? + 2..];
    }
    None
}

/// The position a frame from [`encode_with_id`] carries; `None` for any other frame.
pub(crate) fn position_of(frame: &[u8]) -> Option<Position> {
    let rest = frame.strip_prefix(b"id: ")?;
    let line = &rest[..memchr::memchr(b'\n', rest)?];
    Position::parse(std::str::from_utf8(line).ok()?)
}

fn encode_into(mut buf: BytesMut, event: &str, payload: &str) -> Bytes {
    buf.put_slice(b"event: ");
    buf.put_slice(event.as_bytes());
    buf.put_u8(b'\n');
    for line in Lines::new(payload.as_bytes()) {
        buf.put_slice(b"data: ");
        buf.put_slice(line);
        buf.put_u8(b'\n');
    }
    buf.put_u8(b'\n');
    buf.freeze()
}

/// Splits on `\r\n`, `\r` and `\n`, each one line break, as the SSE specification's parser does.
/// An empty input is one empty line; a trailing break yields a trailing empty line.
struct Lines<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> Lines<'a> {
    fn new(input: &'a [u8]) -> Self {
        Self { rest: Some(input) }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        match memchr::memchr2(b'\r', b'\n', rest) {
            None => {
                self.rest = None;
                Some(rest)
            }
            Some(i) => {
                let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                self.rest = Some(&rest[i + skip..]);
                Some(&rest[..i])
            }
        }
    }
}

/// Why an event name cannot be used on the wire, if it cannot.
pub(crate) fn invalid_event_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.contains(['\r', '\n']) {
        Some("it contains a line break")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &str) -> String {
        String::from_utf8(encode("e", payload).to_vec()).unwrap()
    }

    #[test]
    fn single_line_payload_is_one_data_line() {
        assert_eq!(frame("hello"), "event: e\ndata: hello\n\n");
    }

    #[test]
    fn multiline_payload_becomes_several_data_lines() {
        assert_eq!(frame("a\nb\nc"), "event: e\ndata: a\ndata: b\ndata: c\n\n");
    }

    #[test]
    fn crlf_counts_as_one_line_break() {
        assert_eq!(frame("a\r\nb"), "event: e\ndata: a\ndata: b\n\n");
    }

    #[test]
    fn lone_cr_is_a_line_break() {
        assert_eq!(frame("a\rb"), "event: e\ndata: a\ndata: b\n\n");
    }

    #[test]
    fn cr_cr_lf_is_two_line_breaks() {
        assert_eq!(frame("a\r\r\nb"), "event: e\ndata: a\ndata: \ndata: b\n\n");
    }

    #[test]
    fn empty_payload_is_one_empty_data_line() {
        assert_eq!(frame(""), "event: e\ndata: \n\n");
    }

    #[test]
    fn trailing_line_break_is_kept_as_an_empty_line() {
        assert_eq!(frame("a\n"), "event: e\ndata: a\ndata: \n\n");
    }

    #[test]
    fn payload_cannot_inject_an_event() {
        let encoded = frame("x\n\nevent: evil\ndata: y");
        assert_eq!(
            encoded,
            "event: e\ndata: x\ndata: \ndata: event: evil\ndata: data: y\n\n"
        );
        // Exactly one blank line, at the very end: one frame.
        assert_eq!(encoded.matches("\n\n").count(), 1);
    }

    #[test]
    fn event_names_with_line_breaks_are_invalid() {
        assert!(invalid_event_name("ok-name").is_none());
        assert!(invalid_event_name("").is_some());
        assert!(invalid_event_name("a\nb").is_some());
        assert!(invalid_event_name("a\rb").is_some());
    }

    #[test]
    fn the_first_unwritten_frame_is_the_first_without_its_blank_line() {
        let frames = [
            encode_with_id("7-1", "e", "one"),
            Bytes::from_static(b":\n\n"),
            encode_with_id("7-2", "e", "two"),
            encode_with_id("7-3", "e", "three"),
        ];
        let chunk: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        let end = |i: usize| frames[..=i].iter().map(Bytes::len).sum::<usize>();
        assert_eq!(first_unwritten(&chunk, 0), Some(Position::new(7, 1)));
        assert_eq!(
            first_unwritten(&chunk, end(0) - 1),
            Some(Position::new(7, 1)),
            "no blank line"
        );
        assert_eq!(
            first_unwritten(&chunk, end(0)),
            Some(Position::new(7, 2)),
            "past a comment"
        );
        assert_eq!(
            first_unwritten(&chunk, end(2) + 3),
            Some(Position::new(7, 3))
        );
        assert_eq!(first_unwritten(&chunk, chunk.len()), None);
        assert_eq!(first_unwritten(b":\n\n", 1), None);
    }
}
