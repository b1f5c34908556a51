//! The reference `text/event-stream` parser, written once for the conformance suite (which reads
//! live streams with it), the property tests and the `frame` fuzz target (which use it as their
//! oracle).
//!
//! It follows the WHATWG HTML "event stream interpretation" to the letter, independently of
//! `sseio-core`'s encoder, so a frame that a browser's `EventSource` would read differently from
//! what was sent fails the test that sent it: lines end with CRLF, LF or CR (a CRLF split across
//! two reads still counts once); one leading byte order mark is dropped; `field: value` loses one
//! leading space from the value; `data` lines are joined with `\n`; an empty line dispatches the
//! event when some `data` was seen; an unterminated last line or event is not dispatched. Unlike
//! a browser's `EventSource`, comment lines (starting with `:`) are reported too, so the suite
//! can count heartbeats.

use std::collections::VecDeque;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The event type: the last `event:` field, or `message` when there was none.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The last `id:` field of the stream so far, if any.
    pub id: Option<String>,
}

/// What the parser reports, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// An event, dispatched by an empty line.
    Event(SseEvent),
    /// A comment line, without its leading `:`.
    Comment(String),
}

/// An incremental event-stream parser: push bytes as they arrive, take items as they complete.
#[derive(Debug, Default)]
pub struct SseParser {
    /// The current line so far.
    line: Vec<u8>,
    /// The previous byte was a CR, so an LF right now belongs to the same line break.
    after_cr: bool,
    /// Whether the start of the stream (and its optional byte order mark) has been seen.
    started: bool,
    /// The data buffer: each `data` value followed by `\n`.
    data: Vec<u8>,
    /// The event type buffer.
    event: Option<String>,
    /// The last event id.
    last_id: Option<String>,
    items: VecDeque<SseItem>,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Feeds the next bytes of the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if !self.started {
            // The byte order mark may only be skipped once three bytes are known.
            let mut probe = std::mem::take(&mut self.line);
            probe.extend_from_slice(bytes);
            if probe.len() < 3 && b"\xEF\xBB\xBF".starts_with(&probe) {
                self.line = probe;
                return;
            }
            self.started = true;
            let start = if probe.starts_with(b"\xEF\xBB\xBF") {
                3
            } else {
                0
            };
            let probe = probe[start..].to_vec();
            self.push_started(&probe);
            return;
        }
        self.push_started(bytes);
    }

    fn push_started(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\r' => {
                    self.after_cr = true;
                    self.end_line();
                }
                b'\n' => self.end_line(),
                _ => self.line.push(b),
            }
        }
    }

    /// The next complete item, if one is ready.
    pub fn next_item(&mut self) -> Option<SseItem> {
        self.items.pop_front()
    }

    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            self.dispatch();
            return;
        }
        if let Some(comment) = line.strip_prefix(b":") {
            self.items.push_back(SseItem::Comment(
                String::from_utf8_lossy(comment).into_owned(),
            ));
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (&line[..], &b""[..]),
        };
        match field {
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            b"data" => {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            b"id" if !value.contains(&0) => {
                self.last_id = Some(String::from_utf8_lossy(value).into_owned());
            }
            // `retry` and unknown fields do not affect what the suite checks.
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        let event = self.event.take();
        if self.data.is_empty() {
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop();
        self.items.push_back(SseItem::Event(SseEvent {
            event: event
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "message".to_owned()),
            data: String::from_utf8_lossy(&data).into_owned(),
            id: self.last_id.clone(),
        }));
    }
}

/// The events that a whole stream dispatches, as `(type, data)`, comments left out: what an
/// `EventSource` reading `stream` to its end would deliver.
pub fn parse_event_stream(stream: &[u8]) -> Vec<(String, String)> {
    let mut parser = SseParser::new();
    parser.push(stream);
    std::iter::from_fn(|| parser.next_item())
        .filter_map(|item| match item {
            SseItem::Event(event) => Some((event.event, event.data)),
            SseItem::Comment(_) => None,
        })
        .collect()
}

/// `text` with every line break (`\r\n`, `\r`, `\n`) written as `\n`, as an `EventSource` sees
/// a payload.
pub fn normalise_line_breaks(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(chunks: &[&[u8]]) -> Vec<SseItem> {
        let mut parser = SseParser::new();
        let mut items = Vec::new();
        for chunk in chunks {
            parser.push(chunk);
            while let Some(item) = parser.next_item() {
                items.push(item);
            }
        }
        items
    }

    fn event(name: &str, data: &str) -> SseItem {
        SseItem::Event(SseEvent {
            event: name.to_owned(),
            data: data.to_owned(),
            id: None,
        })
    }

    #[test]
    fn event_and_data_fields_make_one_event() {
        assert_eq!(
            parse(&[b"\nevent: e\ndata: hello\n\n"]),
            vec![event("e", "hello")]
        );
    }

    #[test]
    fn data_lines_are_joined_with_lf() {
        assert_eq!(
            parse(&[b"data: a\ndata:b\ndata:  c\n\n"]),
            vec![event("message", "a\nb\n c")]
        );
    }

    #[test]
    fn cr_lf_and_crlf_all_end_lines() {
        assert_eq!(
            parse(&[b"data: a\rdata: b\r\ndata: c\n\r\n"]),
            vec![event("message", "a\nb\nc")]
        );
    }

    #[test]
    fn crlf_split_across_reads_counts_once() {
        assert_eq!(
            parse(&[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]),
            vec![event("message", "a\nb")]
        );
    }

    #[test]
    fn comments_are_reported_and_do_not_dispatch() {
        assert_eq!(
            parse(&[b":hb\n\n: x\n"]),
            vec![
                SseItem::Comment("hb".to_owned()),
                SseItem::Comment(" x".to_owned())
            ]
        );
    }

    #[test]
    fn empty_data_line_dispatches_empty_event() {
        assert_eq!(parse(&[b"data\n\n"]), vec![event("message", "")]);
    }

    #[test]
    fn event_without_data_is_not_dispatched() {
        assert_eq!(
            parse(&[b"event: evil\n\ndata: y\n\n"]),
            vec![event("message", "y")]
        );
    }

    #[test]
    fn byte_order_mark_is_skipped_even_when_split() {
        assert_eq!(
            parse(&[b"\xEF", b"\xBB\xBFdata: x\n\n"]),
            vec![event("message", "x")]
        );
    }

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
