//! The response body: the core's `ConnectionStream`, handed to actix in pieces of at most
//! [`PIECE`] bytes.
//!
//! actix's HTTP/1 encoder copies each chunk of a streaming body into the connection's write
//! buffer, and that buffer keeps its capacity for the connection's life: given a 1 MiB message
//! whole, every connection that gets it would keep 1 MiB (and more when it arrives behind a
//! partial write). In pieces, the buffer stays at actix's flush threshold
//! (`HttpServer::h1_write_buffer_size`, 32 KiB by default) plus one piece. A piece is a slice of
//! the frame's `Bytes`, not a copy; the bytes on the wire are the same.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use actix_web::web::Bytes;
use futures_core::Stream;
use sseio_core::ConnectionStream;

/// The largest chunk handed to actix.
pub(crate) const PIECE: usize = 16 * 1024;

/// A [`ConnectionStream`] whose chunks are at most [`PIECE`] bytes. Dropping it drops the
/// connection stream, which closes the connection in the core.
#[derive(Debug)]
pub(crate) struct Pieces {
    stream: ConnectionStream,
    /// What is left of the last chunk taken from the stream.
    rest: Bytes,
}

impl Pieces {
    pub(crate) fn new(stream: ConnectionStream) -> Self {
        Self {
            stream,
            rest: Bytes::new(),
        }
    }
}

impl Stream for Pieces {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.rest.is_empty() {
            match ready!(Pin::new(&mut self.stream).poll_next(cx)) {
                Some(Ok(chunk)) if chunk.len() > PIECE => self.rest = chunk,
                other => return Poll::Ready(other),
            }
        }
        let len = self.rest.len().min(PIECE);
        Poll::Ready(Some(Ok(self.rest.split_to(len))))
    }
}

#[cfg(test)]
mod tests {
    use sseio_core::{Outcome, RequestHead, Server};

    use super::*;

    async fn next(pieces: &mut Pieces) -> Bytes {
        std::future::poll_fn(|cx| Pin::new(&mut *pieces).poll_next(cx))
            .await
            .expect("an open stream")
            .expect("never an error")
    }

    #[tokio::test]
    async fn a_large_frame_arrives_in_pieces_in_order() {
        let server = Server::new("/sseio").unwrap();
        let handler = server
            .register_event_handler("e", sseio_core::HandlerOptions::new(|_: &_| "r".to_owned()))
            .unwrap();
        let request = http::Request::get("/sseio?clientId=c&events=e")
            .body(())
            .unwrap();
        let Outcome::Stream(response) = server.handle(RequestHead::from(&request)).await else {
            panic!("a stream");
        };
        let mut pieces = Pieces::new(response.into_body());
        let opening = next(&mut pieces).await;
        let payload = "x".repeat(3 * PIECE);
        handler.send("r", payload.as_str()).unwrap();
        let mut frame = Vec::new();
        while !frame.ends_with(b"\n\n") {
            let piece = next(&mut pieces).await;
            assert!(piece.len() <= PIECE, "a piece of {} bytes", piece.len());
            frame.extend_from_slice(&piece);
        }
        assert!(opening.len() <= PIECE);
        assert_eq!(frame, format!("event: e\ndata: {payload}\n\n").as_bytes());
    }
}
