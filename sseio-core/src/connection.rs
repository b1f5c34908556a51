//! One open connection: its handle, and the response body that streams its frames.

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, Version, header};
use http_body::{Body, Frame, SizeHint};

use crate::notify::CloseReason;
use crate::server::ServerInner;
use crate::sink::QueueSink;

/// A live connection, as long as this handle exists.
///
/// Dropping it is the disconnect signal: the connection leaves its rooms and `conn:close` is
/// raised, unless the server closed it first (then nothing more happens). Either way `conn:close`
/// fires exactly once.
pub struct Connection {
    server: Arc<ServerInner>,
    serial: u64,
    client_id: Arc<str>,
}

impl Connection {
    pub(crate) fn new(server: Arc<ServerInner>, serial: u64, client_id: Arc<str>) -> Self {
        Self {
            server,
            serial,
            client_id,
        }
    }

    /// The `clientId` of this connection.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Closes the connection from the server side.
    pub fn close(self) {
        self.server
            .hub()
            .close(self.serial, CloseReason::ServerClosed);
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.server
            .hub()
            .close(self.serial, CloseReason::ClientGone);
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("serial", &self.serial)
            .field("client_id", &self.client_id)
            .finish()
    }
}

/// The body of an accepted SSE response: the opening line break at once, then frames and
/// heartbeats as they are queued, whatever has queued up coalesced into one chunk.
///
/// It ends when the server closes the connection (replacement, slow consumer, shutdown).
/// Dropping it, which every HTTP server does when the client goes away, closes the connection.
/// It is both a [`futures_core::Stream`] of `Bytes` and an [`http_body::Body`], so any framework
/// can use it as a streaming response body.
pub struct ConnectionStream {
    sink: Arc<QueueSink>,
    connection: Connection,
}

impl ConnectionStream {
    pub(crate) fn new(sink: Arc<QueueSink>, connection: Connection) -> Self {
        Self { sink, connection }
    }

    /// The `clientId` of this connection.
    pub fn client_id(&self) -> &str {
        self.connection.client_id()
    }

    /// For transports that write the stream themselves: the write of `chunk` (one this stream
    /// handed out) is blocked after its first `written` bytes (the socket takes no more: the
    /// client does not read). A close while it is blocked abandons it
    /// ([`ConnectionStream::abandons_write`]): the messages it has not wholly written count as
    /// not given, so a reconnect by `clientId` gets them again. Attempt the write again only
    /// through [`ConnectionStream::retry_write`], so that the attempt and the close never
    /// overlap. `false` when the stream closed first: the write counts as given, so finish it.
    pub fn write_blocked(&self, chunk: &[u8], written: usize) -> bool {
        self.sink.write_blocked(chunk, written)
    }

    /// Runs one attempt at a blocked write of `chunk` (see [`ConnectionStream::write_blocked`]):
    /// `attempt` must not wait, and answers how it went and how many bytes of `chunk` are
    /// written by then. `None`, without running it, once a close abandoned the write: give it
    /// up.
    pub fn retry_write<T>(
        &self,
        chunk: &[u8],
        attempt: impl FnOnce() -> (Poll<T>, usize),
    ) -> Option<Poll<T>> {
        self.sink.retry_write(chunk, attempt)
    }

    /// Once [`poll_closed`](ConnectionStream::poll_closed) is ready: whether the close came
    /// while a write was blocked, and counted what it had not written as not given. Give the
    /// write up then (drop the socket); otherwise finish it: it counts as given.
    pub fn abandons_write(&self) -> bool {
        self.sink.abandoned()
    }

    /// Ready once the server has closed this connection (replacement, slow consumer, shutdown).
    ///
    /// For transports that write the stream themselves: a write blocked on a client that stopped
    /// reading never finishes, so race it against this and drop the socket when it is ready
    /// and [`ConnectionStream::abandons_write`] says so.
    /// Do not poll it concurrently with the stream itself; they share one waker.
    pub fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.sink.poll_closed(cx.waker())
    }

    /// The next chunk for the transport, recording the send lag of its oldest frame.
    fn poll_chunk(&self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.sink.poll_chunk(cx.waker()).map(|chunk| {
            chunk.map(|(bytes, since)| {
                if let Some(since) = since {
                    self.connection.server.metrics().send_lag(since.elapsed());
                }
                bytes
            })
        })
    }
}

impl futures_core::Stream for ConnectionStream {
    /// Never an error; `io::Error` is what every framework's stream body accepts.
    type Item = Result<Bytes, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_chunk(cx).map(|chunk| chunk.map(Ok))
    }
}

impl Body for ConnectionStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.poll_chunk(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl fmt::Debug for ConnectionStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionStream")
            .field("connection", &self.connection)
            .field("sink", &self.sink)
            .finish()
    }
}

/// The response head of an SSE stream, as the official client requires it.
pub(crate) fn stream_response<B>(version: Version, body: B) -> Response<B> {
    let mut response = Response::new(body);
    let headers: &mut HeaderMap = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    headers.insert(
        header::HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    if version == Version::HTTP_11 {
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    }
    response
}
