//! The server's metrics, through the `metrics` facade (the table is in the crate docs).
//!
//! Every handle is registered once, when the server is built, with the recorder installed at that
//! moment; the send path then pays one atomic add per send (by the number of members), never a
//! registry lookup per delivery. With no recorder installed the handles do nothing.

use std::time::Duration;

use ::metrics::{Counter, Gauge, Histogram, Unit};
use http::StatusCode;

use crate::history::Joined;
use crate::notify::CloseReason;

/// `sseio_connections`: open streams.
const CONNECTIONS: &str = "sseio_connections";
/// `sseio_connections_opened_total`.
const CONNECTIONS_OPENED: &str = "sseio_connections_opened_total";
/// `sseio_rooms`: rooms with at least one connection on this node.
const ROOMS: &str = "sseio_rooms";
/// `sseio_frames_sent_total`: message frames queued to connections.
const FRAMES_SENT: &str = "sseio_frames_sent_total";
/// `sseio_bytes_sent_total`: the bytes of those frames.
const BYTES_SENT: &str = "sseio_bytes_sent_total";
/// `sseio_heartbeats_sent_total`: heartbeat comments queued to connections.
const HEARTBEATS_SENT: &str = "sseio_heartbeats_sent_total";
/// `sseio_disconnects_total{reason}`: closed streams, by why.
const DISCONNECTS: &str = "sseio_disconnects_total";
/// `sseio_resumes_total{result}`: rooms rejoined from a position.
const RESUMES: &str = "sseio_resumes_total";
/// `sseio_send_lag_seconds`: from a frame being queued to its batch being handed to the
/// transport.
const SEND_LAG: &str = "sseio_send_lag_seconds";
/// `sseio_rejections_total{status}`: requests on the SSE path that opened no stream.
const REJECTIONS: &str = "sseio_rejections_total";

/// The statuses a [`ConnectRejection`](crate::ConnectRejection) answers with; each gets its
/// counter up front.
const REJECTION_STATUSES: [StatusCode; 8] = [
    StatusCode::BAD_REQUEST,
    StatusCode::UNAUTHORIZED,
    StatusCode::FORBIDDEN,
    StatusCode::NOT_FOUND,
    StatusCode::METHOD_NOT_ALLOWED,
    StatusCode::TOO_MANY_REQUESTS,
    StatusCode::INTERNAL_SERVER_ERROR,
    StatusCode::SERVICE_UNAVAILABLE,
];

/// One server's metric handles.
pub(crate) struct Metrics {
    connections: Gauge,
    connections_opened: Counter,
    rooms: Gauge,
    frames_sent: Counter,
    bytes_sent: Counter,
    heartbeats_sent: Counter,
    disconnects: Disconnects,
    resumes_replayed: Counter,
    resumes_resync: Counter,
    send_lag: Option<Histogram>,
    rejections: [Counter; REJECTION_STATUSES.len()],
}

impl Metrics {
    /// Describes and registers every metric with the recorder installed now (global, or local
    /// through `metrics::with_local_recorder`).
    /// `send_lag`: whether to register (and measure) `sseio_send_lag_seconds`.
    pub(crate) fn new(send_lag: bool) -> Self {
        describe();
        Self {
            connections: ::metrics::gauge!(CONNECTIONS),
            connections_opened: ::metrics::counter!(CONNECTIONS_OPENED),
            rooms: ::metrics::gauge!(ROOMS),
            frames_sent: ::metrics::counter!(FRAMES_SENT),
            bytes_sent: ::metrics::counter!(BYTES_SENT),
            heartbeats_sent: ::metrics::counter!(HEARTBEATS_SENT),
            disconnects: Disconnects::new(),
            resumes_replayed: ::metrics::counter!(RESUMES, "result" => "replayed"),
            resumes_resync: ::metrics::counter!(RESUMES, "result" => "resync"),
            send_lag: send_lag.then(|| ::metrics::histogram!(SEND_LAG)),
            rejections: REJECTION_STATUSES.map(
                |status| ::metrics::counter!(REJECTIONS, "status" => status.as_str().to_owned()),
            ),
        }
    }

    /// A stream opened.
    pub(crate) fn opened(&self) {
        self.connections.increment(1.0);
        self.connections_opened.increment(1);
    }

    /// A stream closed, once per stream; `draining` tells a close by [`Server::shutdown`]
    /// (reason `shutdown`) from other server-side closes.
    ///
    /// [`Server::shutdown`]: crate::Server::shutdown
    pub(crate) fn closed(&self, reason: CloseReason, draining: bool) {
        self.connections.decrement(1.0);
        self.disconnects.of(reason, draining).increment(1);
    }

    /// A room got its first connection on this node.
    pub(crate) fn room_created(&self) {
        self.rooms.increment(1.0);
    }

    /// A room lost its last connection on this node.
    pub(crate) fn room_emptied(&self) {
        self.rooms.decrement(1.0);
    }

    /// `beats` heartbeats were queued.
    pub(crate) fn heartbeats(&self, beats: usize) {
        self.heartbeats_sent.increment(beats as u64);
    }

    /// `frames` message frames of `frame_len` bytes each were queued (one send to a room of
    /// `frames` members, say).
    pub(crate) fn sent(&self, frames: usize, frame_len: usize) {
        if frames > 0 {
            self.frames_sent.increment(frames as u64);
            self.bytes_sent.increment((frames * frame_len) as u64);
        }
    }

    /// A connection joined a room of a handler with history from a position (`Fresh` joins
    /// are not counted).
    pub(crate) fn joined(&self, joined: Joined) {
        match joined {
            // Counted once the broker answered, as one of the others.
            Joined::Fresh | Joined::Replaying => {}
            Joined::Resumed => self.resumes_replayed.increment(1),
            Joined::Resync => self.resumes_resync.increment(1),
        }
    }

    /// A batch whose oldest frame was queued `lag` ago was handed to the transport.
    pub(crate) fn send_lag(&self, lag: Duration) {
        if let Some(histogram) = &self.send_lag {
            histogram.record(lag);
        }
    }

    /// Whether connection queues should note when their oldest frame was sent.
    pub(crate) fn tracks_send_lag(&self) -> bool {
        self.send_lag.is_some()
    }

    /// A request on the SSE path was refused with `status`.
    pub(crate) fn rejected(&self, status: StatusCode) {
        if let Some(i) = REJECTION_STATUSES.iter().position(|s| *s == status) {
            self.rejections[i].increment(1);
        }
    }
}

/// `sseio_disconnects_total`, one counter per `reason` label, each label next to its counter.
struct Disconnects {
    client_gone: Counter,
    replaced: Counter,
    slow_consumer: Counter,
    server_closed: Counter,
    shutdown: Counter,
    disconnected: Counter,
    expired: Counter,
    catching_up: Counter,
}

impl Disconnects {
    fn new() -> Self {
        let counter = |reason: &'static str| ::metrics::counter!(DISCONNECTS, "reason" => reason);
        Self {
            client_gone: counter("client_gone"),
            replaced: counter("replaced"),
            slow_consumer: counter("slow_consumer"),
            server_closed: counter("server_closed"),
            shutdown: counter("shutdown"),
            disconnected: counter("disconnected"),
            expired: counter("expired"),
            catching_up: counter("catching_up"),
        }
    }

    /// The counter of a close for `reason`; a server-side close while draining is `shutdown`.
    fn of(&self, reason: CloseReason, draining: bool) -> &Counter {
        match reason {
            CloseReason::ClientGone => &self.client_gone,
            CloseReason::Replaced => &self.replaced,
            CloseReason::SlowConsumer => &self.slow_consumer,
            CloseReason::ServerClosed if draining => &self.shutdown,
            CloseReason::ServerClosed => &self.server_closed,
            CloseReason::Disconnected => &self.disconnected,
            CloseReason::Expired => &self.expired,
            CloseReason::CatchingUp => &self.catching_up,
        }
    }
}

/// The `HELP` texts and units, for exporters that show them.
fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(CONNECTIONS, Unit::Count, "Open SSE-IO streams.");
    describe_counter!(CONNECTIONS_OPENED, Unit::Count, "SSE-IO streams opened.");
    describe_gauge!(
        ROOMS,
        Unit::Count,
        "Rooms (per event) with at least one connection on this node."
    );
    describe_counter!(
        FRAMES_SENT,
        Unit::Count,
        "Message frames queued to connections: one per member a message was queued on (heartbeats excluded)."
    );
    describe_counter!(
        BYTES_SENT,
        Unit::Bytes,
        "Bytes of the message frames queued to connections (members times frame length)."
    );
    describe_counter!(
        HEARTBEATS_SENT,
        Unit::Count,
        "Heartbeat comments queued to connections."
    );
    describe_counter!(
        DISCONNECTS,
        Unit::Count,
        "Closed SSE-IO streams, by reason."
    );
    describe_counter!(
        RESUMES,
        Unit::Count,
        "Rooms rejoined from a position: replayed (the missed messages were sent) or resync (fetch ran instead)."
    );
    describe_histogram!(
        SEND_LAG,
        Unit::Seconds,
        "Time from a frame being queued to its batch being handed to the transport (the oldest frame of each batch)."
    );
    describe_counter!(
        REJECTIONS,
        Unit::Count,
        "Requests on the SSE path refused without a stream, by status."
    );
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::pin::Pin;
    use std::task::{Context as TaskContext, Poll, Waker};
    use std::time::Duration;

    use bytes::Bytes;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use crate::{
        ConnectionStream, Context, HandlerOptions, History, Outcome, Server, ServerBuilder,
    };

    /// A server whose metrics go to `recorder` alone (no global recorder is involved), with the
    /// handler `e` whose room is the query parameter `room`.
    fn server(recorder: &DebuggingRecorder, builder: ServerBuilder) -> Server {
        let server = ::metrics::with_local_recorder(recorder, || {
            builder
                .path("/s")
                .heartbeat_interval(Duration::ZERO)
                .build()
        })
        .unwrap();
        server
            .register_event_handler(
                "e",
                HandlerOptions::new(|ctx: &Context| {
                    ctx.query("room").unwrap_or_default().to_owned()
                }),
            )
            .unwrap();
        server
    }

    async fn open(server: &Server, client_id: &str, room: &str) -> ConnectionStream {
        let request = http::Request::get(format!("/s?clientId={client_id}&events=e&room={room}"))
            .body(())
            .unwrap();
        match server.handle((&request).into()).await {
            Outcome::Stream(response) => response.into_body(),
            other => panic!("the stream should open: {other:?}"),
        }
    }

    /// Every chunk the stream has queued, as the transport would take them.
    fn drain(stream: &mut ConnectionStream) -> Vec<Bytes> {
        let mut cx = TaskContext::from_waker(Waker::noop());
        let mut chunks = Vec::new();
        while let Poll::Ready(Some(chunk)) =
            futures_core::Stream::poll_next(Pin::new(&mut *stream), &mut cx)
        {
            chunks.push(chunk.unwrap());
        }
        chunks
    }

    /// The recorder's values, keyed `name` or `name{label=value}`. Taking it resets them.
    fn values(recorder: &DebuggingRecorder) -> HashMap<String, DebugValue> {
        recorder
            .snapshotter()
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let key = key.key();
                let labels: Vec<String> = key
                    .labels()
                    .map(|l| format!("{}={}", l.key(), l.value()))
                    .collect();
                let name = if labels.is_empty() {
                    key.name().to_owned()
                } else {
                    format!("{}{{{}}}", key.name(), labels.join(","))
                };
                (name, value)
            })
            .collect()
    }

    fn count(values: &HashMap<String, DebugValue>, name: &str) -> f64 {
        match values.get(name) {
            Some(DebugValue::Counter(n)) => *n as f64,
            Some(DebugValue::Gauge(n)) => n.into_inner(),
            other => panic!("{name}: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_send_counts_one_frame_per_member_and_their_bytes() {
        let recorder = DebuggingRecorder::new();
        let server = server(&recorder, Server::builder());
        let handler = server.handler("e").unwrap();
        let (_a, _b, c) = (
            open(&server, "a", "r").await,
            open(&server, "b", "r").await,
            open(&server, "c", "s").await,
        );
        for _ in 0..3 {
            handler.send("r", "hi").unwrap();
        }
        drop(c);

        let values = values(&recorder);
        let frame_len = "event: e\ndata: hi\n\n".len() as f64;
        assert_eq!(count(&values, "sseio_frames_sent_total"), 6.0);
        assert!(
            !values.contains_key("sseio_send_lag_seconds"),
            "off by default"
        );
        assert_eq!(count(&values, "sseio_bytes_sent_total"), 6.0 * frame_len);
        assert_eq!(count(&values, "sseio_connections_opened_total"), 3.0);
        assert_eq!(count(&values, "sseio_connections"), 2.0);
        assert_eq!(count(&values, "sseio_rooms"), 1.0, "room s emptied");
        assert_eq!(
            count(&values, "sseio_disconnects_total{reason=client_gone}"),
            1.0
        );
    }

    #[tokio::test]
    async fn every_close_counts_once_by_its_reason() {
        let recorder = DebuggingRecorder::new();
        // The opening bytes and one frame fill a queue.
        let server = server(&recorder, Server::builder().max_buffer_frames(2));
        let handler = server.handler("e").unwrap();
        let mut streams = vec![
            open(&server, "a", "r").await,
            open(&server, "a", "r").await, // replaces the first
            open(&server, "b", "r").await,
            open(&server, "c", "slow").await,
        ];
        server.disconnect("b").unwrap();
        handler.send("slow", "1").unwrap();
        handler.send("slow", "2").unwrap(); // c is full: a slow consumer
        server.close_all(); // the second a
        streams.push(open(&server, "d", "r").await);
        server.shutdown(Duration::ZERO).await;
        drop(streams); // already closed: nothing more is counted

        let values = values(&recorder);
        for (reason, n) in [
            ("replaced", 1.0),
            ("disconnected", 1.0),
            ("slow_consumer", 1.0),
            ("server_closed", 1.0),
            ("shutdown", 1.0),
            ("client_gone", 0.0),
        ] {
            let name = format!("sseio_disconnects_total{{reason={reason}}}");
            assert_eq!(count(&values, &name), n, "{name}");
        }
        assert_eq!(count(&values, "sseio_connections"), 0.0);
        assert_eq!(count(&values, "sseio_rooms"), 0.0);
        assert_eq!(count(&values, "sseio_connections_opened_total"), 5.0);
    }

    #[tokio::test]
    async fn resumes_count_replayed_and_resync() {
        let recorder = DebuggingRecorder::new();
        let server = server(&recorder, Server::builder().history(History::new(10)));
        let handler = server.handler("e").unwrap();
        drop(open(&server, "x", "r").await);
        handler.send("r", "missed").unwrap(); // nobody in the room: only recorded
        let mut resumed = open(&server, "x", "r").await;
        let request = http::Request::get("/s?clientId=y&events=e&room=r&lastEventId=nonsense")
            .body(())
            .unwrap();
        let Outcome::Stream(_resync) = server.handle((&request).into()).await else {
            panic!("the stream should open");
        };

        let replayed: Vec<u8> = drain(&mut resumed).concat();
        assert!(String::from_utf8_lossy(&replayed).contains("data: missed\n"));
        let values = values(&recorder);
        assert_eq!(count(&values, "sseio_resumes_total{result=replayed}"), 1.0);
        assert_eq!(count(&values, "sseio_resumes_total{result=resync}"), 1.0);
        assert_eq!(
            count(&values, "sseio_frames_sent_total"),
            1.0,
            "the replayed frame"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn send_lag_is_the_age_of_the_oldest_frame_of_a_batch() {
        let recorder = DebuggingRecorder::new();
        let server = server(&recorder, Server::builder().send_lag_metric(true));
        let handler = server.handler("e").unwrap();
        let mut stream = open(&server, "a", "r").await;
        assert_eq!(drain(&mut stream).len(), 1, "the opening bytes");
        handler.send("r", "1").unwrap();
        tokio::time::advance(Duration::from_millis(250)).await;
        handler.send("r", "2").unwrap();
        tokio::time::advance(Duration::from_millis(50)).await;
        assert_eq!(drain(&mut stream).len(), 1, "both frames in one batch");

        let values = values(&recorder);
        let Some(DebugValue::Histogram(lags)) = values.get("sseio_send_lag_seconds") else {
            panic!("no send lag: {values:?}");
        };
        let lags: Vec<f64> = lags.iter().map(|l| l.into_inner()).collect();
        assert_eq!(
            lags.len(),
            1,
            "one record per batch, none for the opening bytes"
        );
        assert!(
            (lags[0] - 0.3).abs() < 1e-6,
            "the oldest frame's lag, got {lags:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_are_counted_apart_from_messages() {
        let recorder = DebuggingRecorder::new();
        let server = ::metrics::with_local_recorder(&recorder, || {
            Server::builder()
                .path("/s")
                .heartbeat_interval(Duration::from_secs(1))
                .build()
        })
        .unwrap();
        server
            .register_event_handler("e", HandlerOptions::new(|_: &Context| "r"))
            .unwrap();
        let _streams = (open(&server, "a", "r").await, open(&server, "b", "r").await);
        // Just over one interval: each stream has had its heartbeat once (the heartbeat beats
        // one part of the streams at a time, spread over the interval).
        tokio::time::sleep(Duration::from_millis(1010)).await;

        let values = values(&recorder);
        assert_eq!(count(&values, "sseio_heartbeats_sent_total"), 2.0);
        assert_eq!(count(&values, "sseio_frames_sent_total"), 0.0);
    }

    #[tokio::test]
    async fn refused_requests_count_by_status() {
        let recorder = DebuggingRecorder::new();
        let server = server(&recorder, Server::builder());
        let missing = http::Request::get("/s?events=e").body(()).unwrap();
        let post = http::Request::post("/s?clientId=a&events=e")
            .body(())
            .unwrap();
        for request in [&missing, &missing, &post] {
            assert!(matches!(
                server.handle(request.into()).await,
                Outcome::Reply(_)
            ));
        }

        let values = values(&recorder);
        assert_eq!(count(&values, "sseio_rejections_total{status=400}"), 2.0);
        assert_eq!(count(&values, "sseio_rejections_total{status=405}"), 1.0);
        assert_eq!(count(&values, "sseio_connections_opened_total"), 0.0);
    }
}
