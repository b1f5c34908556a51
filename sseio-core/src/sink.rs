//! `SseSink`: where fan-out meets one connection's outgoing queue.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;
use std::task::{Poll, Waker};

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use crate::frame;
use crate::notify::CloseReason;
use crate::position::Position;
use crate::sync::lock;

/// One connection's outgoing side, as the room fan-out and the heartbeat see it.
///
/// Every method returns at once: a sink never waits for its client. The core ships the
/// production sink behind [`ConnectionStream`](crate::ConnectionStream); a custom transport (or a
/// test) can bring its own through [`Server::connect`](crate::Server::connect).
pub trait SseSink: Send + Sync + fmt::Debug + 'static {
    /// Queues one encoded frame. The same [`Bytes`] handle is shared by every member of a room,
    /// so this must not copy it needlessly.
    fn send(&self, frame: Bytes) -> Result<(), SinkError>;

    /// Closes the sink: later sends fail with [`SinkError::Closed`] and the client's stream ends.
    /// Closing twice is harmless.
    fn close(&self, reason: CloseReason);

    /// Closes the sink like [`SseSink::close`], but writes `last` before the client's stream
    /// ends: a frame that is not a message (the drain's `retry:` field, say), so it is neither
    /// counted against the budget nor ever resumed. Default: queue `last`, then close, for a sink
    /// that hands every frame on as it accepts it.
    fn close_with(&self, reason: CloseReason, last: Bytes) {
        let _ = self.send(last);
        self.close(reason);
    }

    /// Closes the sink like [`SseSink::close`], but only once every frame it accepted is
    /// written: nothing is discarded, and the client's stream ends after the last of them.
    /// Default: [`SseSink::close`], for a sink that hands every frame on as it accepts it.
    fn close_after_queued(&self, reason: CloseReason) {
        self.close(reason);
    }

    /// Whether the sink is closed, by [`SseSink::close`] or by its transport: the server's
    /// heartbeat closes the connection of a sink that says so (`conn:close` with
    /// [`CloseReason::ClientGone`]), so a transport may close its sink when its client goes away
    /// instead of dropping the [`Connection`](crate::Connection).
    fn is_closed(&self) -> bool;

    /// The bytes queued and not yet written, so that messages held back behind a `fetch` count
    /// against the same budget. A sink without a queue of its own answers 0 (the default).
    fn queued_bytes(&self) -> usize {
        0
    }

    /// The frames queued and not yet written, as [`SseSink::queued_bytes`] for the frame
    /// budget. Default: 0.
    fn queued_frames(&self) -> usize {
        0
    }

    /// Once closed: the position (the `id:` line) of the first frame it accepted and never handed
    /// to its transport. A client resuming by `clientId` then gets that message again and
    /// everything after it. Default: `None`, for a sink that hands every frame on as it accepts
    /// it, so that a frame counts as given once accepted.
    fn unsent(&self) -> Option<Position> {
        None
    }
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The connection's outgoing buffer is full: the client stopped reading. The server closes
    /// such a connection.
    #[error("the connection's outgoing buffer is full")]
    Full,
    /// The connection is closed.
    #[error("the connection is closed")]
    Closed,
}

/// The most bytes one poll of a connection stream hands to the HTTP layer: what has queued up is
/// coalesced into one write up to this size.
const MAX_COALESCE: usize = 64 * 1024;

/// The production sink: a bounded queue of frames drained by the connection's response body.
pub(crate) struct QueueSink {
    state: Mutex<QueueState>,
    max_bytes: usize,
    max_frames: usize,
    /// Whether sends note [`QueueState::since`].
    track_lag: bool,
}

struct QueueState {
    frames: VecDeque<Bytes>,
    queued_bytes: usize,
    /// When the oldest frame still queued was sent, for the send-lag metric: set by the first
    /// send into an empty queue, cleared when the queue is drained. The opening bytes have none.
    since: Option<Instant>,
    closed: bool,
    /// Whether the transport's write of a chunk is blocked (the client does not read), as a
    /// transport that writes the stream itself says
    /// ([`ConnectionStream::write_blocked`](crate::ConnectionStream::write_blocked)).
    write_blocked: bool,
    /// Set by a close while that write was blocked: what it had not written counts as not
    /// given, and the transport gives the write up.
    abandoned: bool,
    /// While a write is blocked: the position of the first numbered frame of its chunk not
    /// wholly written. Set by the close: that position when the close abandoned the write, else
    /// the first frame it discarded.
    unsent: Option<Position>,
    waker: Option<Waker>,
}

impl QueueSink {
    /// A sink holding `first` (the opening bytes), accepting up to `max_bytes` in at most
    /// `max_frames` frames queued; with `track_lag`, noting when its oldest frame was sent.
    pub(crate) fn new(first: Bytes, max_bytes: usize, max_frames: usize, track_lag: bool) -> Self {
        let mut frames = VecDeque::new();
        let queued_bytes = first.len();
        frames.push_back(first);
        Self {
            state: Mutex::new(QueueState {
                frames,
                queued_bytes,
                since: None,
                closed: false,
                write_blocked: false,
                abandoned: false,
                unsent: None,
                waker: None,
            }),
            max_bytes,
            max_frames,
            track_lag,
        }
    }

    /// The next chunk to write: every queued frame up to [`MAX_COALESCE`] bytes in one `Bytes`
    /// (a single frame is handed over without copying), with when its oldest frame was sent
    /// (`None` for the opening bytes alone); once closed, the last field its close kept, if
    /// any, then `None`.
    ///
    /// When frames remain queued past the chunk, the instant stays, so the next chunk's lag is
    /// an upper bound: one timestamp per connection, none per frame.
    pub(crate) fn poll_chunk(&self, waker: &Waker) -> Poll<Option<(Bytes, Option<Instant>)>> {
        let mut state = lock(&self.state);
        if state.closed {
            // What a close kept (a last field) is written before the stream ends.
            return Poll::Ready(state.frames.pop_front().map(|last| {
                state.queued_bytes = 0;
                (last, None)
            }));
        }
        let Some(first) = state.frames.pop_front() else {
            if !state.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                state.waker = Some(waker.clone());
            }
            return Poll::Pending;
        };
        let chunk = match state.frames.front() {
            Some(next) if first.len() + next.len() <= MAX_COALESCE => {
                let mut buf = BytesMut::with_capacity(state.queued_bytes.min(MAX_COALESCE));
                buf.extend_from_slice(&first);
                while let Some(next) = state.frames.front() {
                    if buf.len() + next.len() > MAX_COALESCE {
                        break;
                    }
                    let next = state.frames.pop_front().expect("front exists");
                    buf.extend_from_slice(&next);
                }
                buf.freeze()
            }
            _ => first,
        };
        state.queued_bytes -= chunk.len();
        let since = if state.frames.is_empty() {
            state.since.take()
        } else {
            state.since
        };
        Poll::Ready(Some((chunk, since)))
    }
}

impl QueueSink {
    /// Closes the sink, discarding every queued frame but `last` (the frames still to write
    /// once closed: none, or a last field); `None` keeps every queued frame, to be written. A
    /// chunk whose write is blocked is abandoned: it counts as not given.
    fn close_and_keep(&self, last: Option<VecDeque<Bytes>>) {
        let mut state = lock(&self.state);
        if state.closed {
            return;
        }
        state.closed = true;
        state.abandoned = state.write_blocked;
        let under_way = state.unsent.take().filter(|_| state.abandoned);
        match last {
            Some(last) => {
                let discarded = state.frames.iter().find_map(|f| frame::position_of(f));
                state.unsent = under_way.or(discarded);
                state.queued_bytes = last.iter().map(Bytes::len).sum();
                state.frames = last;
            }
            // Everything is to be written: only an abandoned chunk was not.
            None => state.unsent = under_way,
        }
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// See [`ConnectionStream::write_blocked`](crate::ConnectionStream::write_blocked).
    pub(crate) fn write_blocked(&self, chunk: &[u8], written: usize) -> bool {
        let mut state = lock(&self.state);
        if state.closed {
            return false;
        }
        state.write_blocked = true;
        state.unsent = frame::first_unwritten(chunk, written);
        true
    }

    /// See [`ConnectionStream::retry_write`](crate::ConnectionStream::retry_write).
    pub(crate) fn retry_write<T>(
        &self,
        chunk: &[u8],
        attempt: impl FnOnce() -> (Poll<T>, usize),
    ) -> Option<Poll<T>> {
        let mut state = lock(&self.state);
        if state.abandoned {
            return None;
        }
        let (poll, written) = attempt();
        if !state.closed {
            state.write_blocked = poll.is_pending();
            state.unsent = match poll {
                Poll::Pending => frame::first_unwritten(chunk, written),
                Poll::Ready(_) => None,
            };
        }
        Some(poll)
    }

    /// Whether a close abandoned the write that was blocked.
    pub(crate) fn abandoned(&self) -> bool {
        lock(&self.state).abandoned
    }

    /// Ready once the sink is closed; otherwise registers `waker` (in the same slot as
    /// [`QueueSink::poll_chunk`], so call one or the other at a time).
    pub(crate) fn poll_closed(&self, waker: &Waker) -> Poll<()> {
        let mut state = lock(&self.state);
        if state.closed {
            return Poll::Ready(());
        }
        if !state.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            state.waker = Some(waker.clone());
        }
        Poll::Pending
    }
}

impl SseSink for QueueSink {
    fn send(&self, frame: Bytes) -> Result<(), SinkError> {
        let mut state = lock(&self.state);
        if state.closed {
            return Err(SinkError::Closed);
        }
        if state.queued_bytes + frame.len() > self.max_bytes
            || state.frames.len() >= self.max_frames
        {
            return Err(SinkError::Full);
        }
        state.queued_bytes += frame.len();
        state.frames.push_back(frame);
        if self.track_lag && state.since.is_none() {
            state.since = Some(Instant::now());
        }
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    fn close(&self, _reason: CloseReason) {
        self.close_and_keep(Some(VecDeque::new()));
    }

    fn close_with(&self, _reason: CloseReason, last: Bytes) {
        self.close_and_keep(Some(VecDeque::from([last])));
    }

    fn close_after_queued(&self, _reason: CloseReason) {
        self.close_and_keep(None);
    }

    fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }

    fn queued_bytes(&self) -> usize {
        lock(&self.state).queued_bytes
    }

    fn queued_frames(&self) -> usize {
        lock(&self.state).frames.len()
    }

    fn unsent(&self) -> Option<Position> {
        let state = lock(&self.state);
        state.unsent.filter(|_| state.closed)
    }
}

impl fmt::Debug for QueueSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("QueueSink")
            .field("queued_frames", &state.frames.len())
            .field("queued_bytes", &state.queued_bytes)
            .field("max_bytes", &self.max_bytes)
            .field("closed", &state.closed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    fn chunk(sink: &QueueSink) -> Poll<Option<Bytes>> {
        sink.poll_chunk(Waker::noop())
            .map(|chunk| chunk.map(|(bytes, _since)| bytes))
    }

    #[test]
    fn opening_bytes_come_first() {
        let sink = QueueSink::new(Bytes::from_static(b"\n"), 1024, 64, false);
        assert_eq!(chunk(&sink), Poll::Ready(Some(Bytes::from_static(b"\n"))));
        assert_eq!(chunk(&sink), Poll::Pending);
    }

    #[test]
    fn queued_frames_are_coalesced_into_one_chunk() {
        let sink = QueueSink::new(Bytes::from_static(b"\n"), 1024, 64, false);
        sink.send(Bytes::from_static(b"a")).unwrap();
        sink.send(Bytes::from_static(b"b")).unwrap();
        assert_eq!(chunk(&sink), Poll::Ready(Some(Bytes::from_static(b"\nab"))));
    }

    #[test]
    fn full_buffer_refuses_the_frame() {
        let sink = QueueSink::new(Bytes::from_static(b"\n"), 4, 64, false);
        sink.send(Bytes::from_static(b"abc")).unwrap();
        assert_eq!(sink.send(Bytes::from_static(b"d")), Err(SinkError::Full));
        assert_eq!(
            chunk(&sink),
            Poll::Ready(Some(Bytes::from_static(b"\nabc")))
        );
        sink.send(Bytes::from_static(b"d")).unwrap();
    }

    #[test]
    fn poll_closed_is_ready_only_once_closed() {
        let sink = QueueSink::new(Bytes::from_static(b"\n"), 1024, 64, false);
        assert_eq!(sink.poll_closed(Waker::noop()), Poll::Pending);
        sink.close(CloseReason::SlowConsumer);
        assert_eq!(sink.poll_closed(Waker::noop()), Poll::Ready(()));
    }

    #[test]
    fn too_many_frames_refuses_the_frame() {
        let sink = QueueSink::new(Bytes::from_static(b"\n"), 1024, 2, false);
        sink.send(Bytes::from_static(b"a")).unwrap();
        assert_eq!(sink.send(Bytes::from_static(b"b")), Err(SinkError::Full));
    }

    #[tokio::test(start_paused = true)]
    async fn chunk_carries_when_its_oldest_frame_was_sent() {
        let sink = QueueSink::new(Bytes::from_static(b"\n"), 1024, 64, true);
        let since = |sink: &QueueSink| match sink.poll_chunk(Waker::noop()) {
            Poll::Ready(Some((_, since))) => since,
            other => panic!("expected a chunk, got {other:?}"),
        };
        assert_eq!(
            since(&sink),
            None,
            "the opening bytes were not sent by anyone"
        );
        let first = Instant::now();
        sink.send(Bytes::from_static(b"a")).unwrap();
        tokio::time::advance(std::time::Duration::from_millis(5)).await;
        sink.send(Bytes::from_static(b"b")).unwrap();
        assert_eq!(since(&sink), Some(first), "the oldest frame's instant");
        sink.send(Bytes::from_static(b"c")).unwrap();
        assert_eq!(
            since(&sink),
            Some(Instant::now()),
            "a drained queue starts afresh"
        );
    }

    #[test]
    fn without_lag_tracking_no_instant_is_taken() {
        let sink = QueueSink::new(Bytes::from_static(b"\n"), 1024, 64, false);
        sink.send(Bytes::from_static(b"a")).unwrap();
        assert!(matches!(
            sink.poll_chunk(Waker::noop()),
            Poll::Ready(Some((_, None)))
        ));
    }

    #[test]
    fn a_close_notes_the_first_numbered_frame_it_discards() {
        let sink = QueueSink::new(Bytes::from_static(b"\n"), 1024, 64, false);
        sink.send(frame::encode_with_id("7-1", "e", "written"))
            .unwrap();
        assert!(matches!(chunk(&sink), Poll::Ready(Some(_))));
        sink.send(frame::encode("e", "no id")).unwrap();
        sink.send(frame::encode_with_id("7-3", "e", "discarded"))
            .unwrap();
        sink.send(frame::encode_with_id("7-4", "e", "discarded"))
            .unwrap();
        assert_eq!(sink.unsent(), None, "still open");
        sink.close(CloseReason::SlowConsumer);
        assert_eq!(sink.unsent(), Some(Position::new(7, 3)));
    }

    /// A slow consumer's last message was lost to the official client.
    ///
    /// The transport takes a chunk and writes it; a client that stopped reading blocks that
    /// write for good, and once the server closes the stream the transport gives the write up
    /// (the standalone server drops the socket). The chunk had left the queue, so it counted as
    /// given, and a reconnect by `clientId` resumed after it: its first message never arrived.
    #[test]
    fn a_close_during_a_blocked_write_counts_what_it_did_not_wholly_write_as_unsent() {
        let sink = QueueSink::new(Bytes::from_static(b"\n"), 1024, 64, false);
        assert!(matches!(chunk(&sink), Poll::Ready(Some(_))), "the opening");
        let first = frame::encode_with_id("7-1", "e", "written");
        sink.send(first.clone()).unwrap();
        sink.send(frame::encode_with_id("7-2", "e", "half written"))
            .unwrap();
        let Poll::Ready(Some(taken)) = chunk(&sink) else {
            panic!("a chunk")
        };
        sink.send(frame::encode_with_id("7-3", "e", "queued"))
            .unwrap();
        assert!(sink.write_blocked(&taken, first.len() + 4));
        assert_eq!(sink.unsent(), None, "still open");
        sink.close(CloseReason::SlowConsumer);
        assert!(sink.abandoned());
        assert_eq!(sink.unsent(), Some(Position::new(7, 2)));
        let retried = sink.retry_write(&taken, || (Poll::Ready(()), taken.len()));
        assert_eq!(retried, None, "not one more attempt once abandoned");

        // A write that was not blocked at the close goes on, and its chunk counts as given.
        let writing = QueueSink::new(Bytes::new(), 1024, 64, false);
        writing
            .send(frame::encode_with_id("7-1", "e", "being written"))
            .unwrap();
        let Poll::Ready(Some(taken)) = chunk(&writing) else {
            panic!("a chunk")
        };
        writing.close(CloseReason::SlowConsumer);
        assert!(!writing.abandoned());
        assert_eq!(writing.unsent(), None);
        assert!(!writing.write_blocked(&taken, 0), "closed first: finish it");
    }

    #[test]
    fn a_close_after_what_is_queued_keeps_it_all_and_discards_nothing() {
        let sink = QueueSink::new(Bytes::from_static(b"\n"), 1024, 64, false);
        sink.send(frame::encode_with_id("7-1", "e", "a")).unwrap();
        sink.send(frame::encode_with_id("7-2", "e", "b")).unwrap();
        sink.close_after_queued(CloseReason::CatchingUp);
        assert_eq!(sink.unsent(), None);
        assert_eq!(sink.send(Bytes::from_static(b"c")), Err(SinkError::Closed));
        let mut written = Vec::new();
        while let Poll::Ready(Some(chunk)) = chunk(&sink) {
            written.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(written).unwrap();
        assert!(
            text.ends_with("data: a\n\nid: 7-2\nevent: e\ndata: b\n\n"),
            "{text:?}"
        );
    }

    #[test]
    fn closed_sink_ends_the_stream_and_refuses_frames() {
        let sink = QueueSink::new(Bytes::from_static(b"\n"), 1024, 64, false);
        sink.close(CloseReason::ServerClosed);
        sink.close(CloseReason::ServerClosed);
        assert!(sink.is_closed());
        assert_eq!(chunk(&sink), Poll::Ready(None));
        assert_eq!(sink.send(Bytes::from_static(b"a")), Err(SinkError::Closed));
    }

    #[test]
    fn a_close_with_a_last_field_writes_only_that_field_then_ends() {
        let sink = QueueSink::new(Bytes::from_static(b"\n"), 1024, 64, false);
        sink.send(frame::encode_with_id("7-1", "e", "discarded"))
            .unwrap();
        sink.close_with(
            CloseReason::ServerClosed,
            Bytes::from_static(b"retry: 5000\n\n"),
        );
        assert_eq!(sink.unsent(), Some(Position::new(7, 1)));
        assert_eq!(sink.queued_bytes(), 13);
        assert_eq!(sink.send(Bytes::from_static(b"a")), Err(SinkError::Closed));
        assert_eq!(
            chunk(&sink),
            Poll::Ready(Some(Bytes::from_static(b"retry: 5000\n\n")))
        );
        assert_eq!(chunk(&sink), Poll::Ready(None));
        assert_eq!(sink.queued_bytes(), 0);
    }
}
