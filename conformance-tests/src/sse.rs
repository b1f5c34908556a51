//! A stream of parsed `text/event-stream` items over a response body.
//!
//! The parser is the reference one of `sseio-test-support` (the WHATWG HTML "event stream
//! interpretation", comments reported too so the suite can count heartbeats), which sseio-core's
//! property tests and the fuzz targets use as their oracle; it is re-exported here.

use std::io;

pub use sseio_test_support::sse::{SseEvent, SseItem, SseParser};

use crate::h2::H2Response;
use crate::http1::Response;

/// Where the stream's bytes come from.
#[derive(Debug)]
enum Source {
    Http1(Response),
    Http2(H2Response),
}

/// An event stream read from a response body: raw bytes as they arrive and parsed items.
#[derive(Debug)]
pub struct SseStream {
    source: Source,
    parser: SseParser,
    raw: Vec<u8>,
    comments: usize,
    ended: bool,
}

impl SseStream {
    /// Reads the body of an HTTP/1.1 response as an event stream.
    pub fn http1(response: Response) -> SseStream {
        SseStream::new(Source::Http1(response))
    }

    /// Reads the body of an HTTP/2 response as an event stream.
    pub fn http2(response: H2Response) -> SseStream {
        SseStream::new(Source::Http2(response))
    }

    fn new(source: Source) -> SseStream {
        SseStream {
            source,
            parser: SseParser::new(),
            raw: Vec::new(),
            comments: 0,
            ended: false,
        }
    }

    /// The HTTP/1.1 response head, when this stream is read over HTTP/1.1.
    pub fn http1_response(&self) -> Option<&Response> {
        match &self.source {
            Source::Http1(response) => Some(response),
            Source::Http2(_) => None,
        }
    }

    /// Every body byte received so far, as sent (after transfer decoding).
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// How many comment lines have been parsed so far.
    pub fn comments(&self) -> usize {
        self.comments
    }

    /// Whether the body has ended.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Closes the connection as a client that goes away does (see [`Response::close`]);
    /// an HTTP/2 stream is reset with its connection.
    pub async fn close(self) {
        match self.source {
            Source::Http1(response) => response.close().await,
            Source::Http2(response) => drop(response),
        }
    }

    /// Reads the next piece of body as it arrives and feeds it to the parser; `None` once the
    /// body has ended. Cancel-safe.
    pub async fn next_raw(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.ended {
            return Ok(None);
        }
        let chunk = match &mut self.source {
            Source::Http1(response) => response.next_chunk().await,
            Source::Http2(response) => response.next_chunk().await,
        };
        match chunk {
            Ok(Some(bytes)) => {
                self.raw.extend_from_slice(&bytes);
                self.parser.push(&bytes);
                Ok(Some(bytes))
            }
            Ok(None) => {
                self.ended = true;
                Ok(None)
            }
            Err(e) => {
                self.ended = true;
                Err(e)
            }
        }
    }

    /// The next event or comment; `None` once the body has ended. Cancel-safe.
    pub async fn next_item(&mut self) -> io::Result<Option<SseItem>> {
        loop {
            if let Some(item) = self.parser.next_item() {
                if matches!(item, SseItem::Comment(_)) {
                    self.comments += 1;
                }
                return Ok(Some(item));
            }
            if self.next_raw().await?.is_none() {
                return Ok(None);
            }
        }
    }

    /// The next event, skipping (and counting) comments; `None` once the body has ended.
    /// Cancel-safe.
    pub async fn next_event(&mut self) -> io::Result<Option<SseEvent>> {
        loop {
            match self.next_item().await? {
                Some(SseItem::Event(event)) => return Ok(Some(event)),
                Some(SseItem::Comment(_)) => {}
                None => return Ok(None),
            }
        }
    }
}
