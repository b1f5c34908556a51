//! Regression tests, one per defect, each named for the bug and headed by what a user saw. Each
//! failed on the code before its fix.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use futures_core::Stream;
use sseio_core::{
    BoxFuture, Broker, BrokerError, CloseReason, ConnectionId, ConnectionStream, Context,
    HandlerOptions, History, Node, Notification, Outcome, Presence, Server, SseSink,
};
use sseio_test_support::RecordingSink;
use sseio_test_support::fixtures::get;

async fn open_stream(server: &Server, uri: &str) -> ConnectionStream {
    match server.handle((&get(uri)).into()).await {
        Outcome::Stream(response) => response.into_body(),
        other => panic!("expected a stream, got {other:?}"),
    }
}

/// Every chunk the stream has ready now, as the transport would take them, concatenated.
fn take_ready(stream: &mut ConnectionStream) -> String {
    let mut cx = TaskContext::from_waker(Waker::noop());
    let mut text = String::new();
    while let Poll::Ready(Some(chunk)) = Pin::new(&mut *stream).poll_next(&mut cx) {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    text
}

/// The data lines of some SSE text, in order.
fn data_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

fn room_by_param(ctx: &Context) -> String {
    ctx.param("room").unwrap_or_default().to_owned()
}

/// A slow consumer's reconnect by `clientId` skipped messages it never got.
///
/// A client stops reading; its queue fills; the next frame is refused and the connection is
/// closed as a slow consumer, discarding what was queued and not yet written. The official
/// client then reconnects with the same `clientId`. The server used to remember the position of
/// the refused frame as where the client stood (a refused frame still counted as seen, and so
/// did every queued one), so the reconnect replayed nothing: the messages queued at the close
/// and the refused one were lost without a trace.
#[tokio::test]
async fn a_slow_consumer_resuming_by_client_id_gets_what_was_refused_and_discarded() {
    let server = Server::builder()
        .path("/r/:room")
        .history(History::new(100))
        .max_buffer_frames(3)
        .heartbeat_interval(Duration::ZERO)
        .build()
        .unwrap();
    let handler = server
        .register_event_handler("e", HandlerOptions::new(room_by_param))
        .unwrap();
    let mut notifications = server.subscribe();
    let mut stream = open_stream(&server, "/r/a?clientId=slow&events=e").await;
    handler.send("a", "1").unwrap();
    handler.send("a", "2").unwrap();
    assert_eq!(data_lines(&take_ready(&mut stream)), ["1", "2"], "written");
    // The client stops reading: 3, 4 and 5 fill its queue, 6 is refused.
    for message in ["3", "4", "5", "6"] {
        handler.send("a", message).unwrap();
    }
    let closed = std::iter::from_fn(|| notifications.try_recv()).any(|n| {
        matches!(
            n,
            Notification::ConnClose {
                reason: CloseReason::SlowConsumer,
                ..
            }
        )
    });
    assert!(closed, "closed as a slow consumer");
    drop(stream);

    let mut resumed = open_stream(&server, "/r/a?clientId=slow&events=e").await;
    handler.send("a", "7").unwrap();
    assert_eq!(
        data_lines(&take_ready(&mut resumed)),
        ["3", "4", "5", "6", "7"],
        "every message the client never got, once, in order"
    );
}

/// A broker that keeps the [`Node`] it is given and nothing else.
#[derive(Debug, Default, Clone)]
struct CapturingBroker {
    node: Arc<OnceLock<Node>>,
}

impl Broker for CapturingBroker {
    fn attach(&self, node: Node) -> Result<(), BrokerError> {
        self.node
            .set(node)
            .map_err(|_| BrokerError::AlreadyAttached)
    }
    fn publish(&self, event: &str, room: &str, payload: &str) -> Result<(), BrokerError> {
        self.node.get().unwrap().deliver(event, room, payload);
        Ok(())
    }
    fn room_created(&self, _event: &str, _room: &str) {}
    fn room_emptied(&self, _event: &str, _room: &str) {}
    fn client_connected(&self, _client_id: &str, _connection: ConnectionId) {}
    fn client_closed(&self, _client_id: &str, _connection: ConnectionId) {}
    fn presence(&self, _event: &str, _room: &str) -> BoxFuture<Result<Presence, BrokerError>> {
        Box::pin(std::future::ready(Ok(Presence::default())))
    }
    fn send_to_client(&self, _: &str, _: &str, _: &str) -> Result<(), BrokerError> {
        Ok(())
    }
    fn disconnect(&self, _client_id: &str) -> Result<(), BrokerError> {
        Ok(())
    }
}

/// `Node::deliver` counted connections that took nothing.
///
/// A broker reads the count `Node::deliver` returns as how many connections a message reached
/// on this node. A connection whose sink had closed (its transport went away, and the server had
/// not noticed yet) refused the frame, but was counted all the same.
#[tokio::test]
async fn node_deliver_counts_only_the_connections_that_queued_the_frame() {
    let broker = CapturingBroker::default();
    let server = Server::builder()
        .path("/r/:room")
        .heartbeat_interval(Duration::ZERO)
        .broker(broker.clone())
        .build()
        .unwrap();
    server
        .register_event_handler("e", HandlerOptions::new(room_by_param))
        .unwrap();
    let open = Arc::new(RecordingSink::default());
    let gone = Arc::new(RecordingSink::default());
    let _a = server
        .connect((&get("/r/a?clientId=open&events=e")).into(), open.clone())
        .await
        .unwrap();
    let _b = server
        .connect((&get("/r/a?clientId=gone&events=e")).into(), gone.clone())
        .await
        .unwrap();
    gone.close(CloseReason::ClientGone);
    let node = broker.node.get().unwrap();
    assert_eq!(node.deliver("e", "a", "hi"), 1, "only the open connection");
    assert_eq!(open.text(), "event: e\ndata: hi\n\n");
}

/// A custom transport's connection whose sink closed stayed open forever.
///
/// `SseSink::is_closed` was required of every sink but never called, and a closed sink's
/// refusals were ignored: a transport that closed its sink when its client went away (without
/// dropping the `Connection` handle) left the connection in its rooms, counted and never
/// announced with `conn:close`. The heartbeat now finds such connections and closes them.
#[tokio::test(start_paused = true)]
async fn a_connection_whose_sink_closed_is_closed_at_the_next_heartbeat() {
    let server = Server::builder()
        .path("/r/:room")
        .heartbeat_interval(Duration::from_secs(1))
        .build()
        .unwrap();
    let handler = server
        .register_event_handler("e", HandlerOptions::new(room_by_param))
        .unwrap();
    let mut notifications = server.subscribe();
    let sink = Arc::new(RecordingSink::default());
    let _connection = server
        .connect((&get("/r/a?clientId=c&events=e")).into(), sink.clone())
        .await
        .unwrap();
    sink.close(CloseReason::ClientGone);
    let close = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(Notification::ConnClose { reason, .. }) = notifications.recv().await {
                return reason;
            }
        }
    })
    .await
    .expect("conn:close within a few heartbeats");
    assert_eq!(close, CloseReason::ClientGone);
    assert_eq!(server.connection_count(), 0);
    assert_eq!(handler.room_size("a"), 0);
}

/// Heartbeats stopped for good once the runtime of the first connection ended.
///
/// The heartbeat task was started once, on the runtime of the server's first connection. A
/// server that outlived that runtime (built in one `#[tokio::main]` phase or test runtime and
/// used in another) never sent a heartbeat again, so proxies cut its idle streams.
#[test]
fn heartbeats_go_on_after_the_first_connections_runtime_ends() {
    let server = Server::builder()
        .path("/r/:room")
        .heartbeat_interval(Duration::from_millis(20))
        .build()
        .unwrap();
    server
        .register_event_handler("e", HandlerOptions::new(room_by_param))
        .unwrap();
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    runtime().block_on(async {
        let _first = open_stream(&server, "/r/a?clientId=first&events=e").await;
    });
    runtime().block_on(async {
        let mut stream = open_stream(&server, "/r/a?clientId=second&events=e").await;
        let beat = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let chunk = poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await;
                let chunk = chunk.expect("the stream stays open").unwrap();
                if chunk.ends_with(b":\n\n") {
                    return;
                }
            }
        });
        beat.await.expect("a heartbeat on the second runtime");
    });
}

/// A connect polled outside a tokio runtime panicked.
///
/// `Server::connect` is an async fn any executor can poll; the first connect started the
/// heartbeat with `tokio::spawn`, which panics outside a tokio runtime and took the caller's
/// thread down with it. Now the connection opens, and the heartbeat starts with the first
/// connect made on a runtime.
#[test]
fn a_first_connect_outside_a_runtime_does_not_panic() {
    let server = Server::builder().path("/r/:room").build().unwrap();
    server
        .register_event_handler("e", HandlerOptions::new(room_by_param))
        .unwrap();
    let sink = Arc::new(RecordingSink::default());
    let request = get("/r/a?clientId=c&events=e");
    let mut connecting = pin!(server.connect((&request).into(), sink));
    let mut cx = TaskContext::from_waker(Waker::noop());
    match connecting.as_mut().poll(&mut cx) {
        Poll::Ready(result) => assert!(result.is_ok(), "the connection opens: {result:?}"),
        Poll::Pending => panic!("nothing to wait for without authorize or a broker"),
    }
}

/// Messages held back behind a `fetch` ignored the frame budget.
///
/// While a connection's `fetch` runs, what is sent to it is held back; that counted against
/// `max_buffer_bytes` but not `max_buffer_frames`, so a flood of small messages behind a slow
/// `fetch` grew the connection's memory far past its frame budget.
#[tokio::test]
async fn frames_held_behind_a_fetch_count_against_the_frame_budget() {
    let server = Server::builder()
        .path("/r/:room")
        .max_buffer_frames(8)
        .heartbeat_interval(Duration::ZERO)
        .build()
        .unwrap();
    let handler = server
        .register_event_handler(
            "e",
            HandlerOptions::new(room_by_param).fetch(|_: Context| async {
                std::future::pending::<Result<String, std::convert::Infallible>>().await
            }),
        )
        .unwrap();
    let mut notifications = server.subscribe();
    let _connection = server
        .connect(
            (&get("/r/a?clientId=c&events=e")).into(),
            Arc::new(RecordingSink::default()),
        )
        .await
        .unwrap();
    for n in 0..20 {
        handler.send("a", &n).unwrap();
    }
    let closes: Vec<CloseReason> = std::iter::from_fn(|| notifications.try_recv())
        .filter_map(|n| match n {
            Notification::ConnClose { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(closes, [CloseReason::SlowConsumer]);
}

/// A server on `broker` with history and the gap notice, handler `e` in rooms by path.
fn cluster_node(broker: &sseio_core::MemoryBroker) -> (Server, sseio_core::EventHandler) {
    let server = Server::builder()
        .path("/r/:room")
        .history(History::new(100))
        .gap_notice("gap")
        .heartbeat_interval(Duration::ZERO)
        .broker(broker.clone())
        .build()
        .unwrap();
    let handler = server
        .register_event_handler("e", HandlerOptions::new(room_by_param))
        .unwrap();
    (server, handler)
}

/// Lets the replay tasks run.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// The official client, moving to another node before the first noticed it left, silently lost
/// what the first node had not written.
///
/// A network path drops; the client reconnects at once, by its `clientId`, through the load
/// balancer to another node, while the first still holds its stream (it notices a dead
/// connection only when it next writes, or reads). The other node found no resume record (the
/// first writes one when the stream closes), so the client joined as a new one; the first
/// node then closed the old stream as replaced, without recording where it stood. Whatever
/// was queued on the old stream and never written was lost, with no gap notice.
///
/// Now it resumes where the old stream stood, after the gap notice: what the old stream wrote
/// may have been lost with the dropped path too, which only the client could tell.
#[tokio::test]
async fn a_client_id_moving_to_another_node_while_its_stream_is_open_resumes_where_it_stood() {
    let broker = sseio_core::MemoryBroker::new();
    let (one, on_one) = cluster_node(&broker);
    let (two, _) = cluster_node(&broker);
    let mut old = open_stream(&one, "/r/a?clientId=c&events=e").await;
    on_one.send("a", "1").unwrap();
    assert_eq!(data_lines(&take_ready(&mut old)), ["1"], "written");
    // Queued on the old stream, never written: the path to the client is gone.
    on_one.send("a", "2").unwrap();

    let moved = Arc::new(RecordingSink::default());
    let _moved = two
        .connect((&get("/r/a?clientId=c&events=e")).into(), moved.clone())
        .await
        .unwrap();
    settle().await;
    on_one.send("a", "3").unwrap();
    assert_eq!(
        data_lines(&moved.text()),
        [r#"{"event":"e"}"#, "2", "3"],
        "the gap notice, what the old stream never wrote, then live: {:?}",
        moved.text()
    );
    drop(old);
}

/// A reconnect whose missed messages did not fit its buffer was closed as a slow consumer, at
/// every reconnect, forever; then it resynced instead, which lost what it missed for good.
///
/// With a broker's history, the replay of what a reconnecting client missed goes out as one
/// chunk once the broker answers. One larger than the connection's buffer was refused by the
/// sink, and the connection closed as a slow consumer, its position still before the replay:
/// the client came back, asked for the same (by then larger) replay, and was closed again. A
/// later fix resynced it (the gap notice, `fetch`, the live messages), with the server's own
/// history too. And a client closed as a slow consumer always comes back to a replay larger
/// than its buffer: what it missed is at least what its buffer held.
///
/// Now the replay goes out in parts: the oldest that fits, then the stream ends once that is
/// written (`CatchingUp`, a close by the server, so the position is exact), and each reconnect,
/// by `Last-Event-ID` or by `clientId`, gets the next part: every message once, in order.
#[tokio::test]
async fn a_replay_larger_than_the_buffer_goes_out_in_parts_one_per_reconnect() {
    for (cluster, by_client_id) in [(true, false), (true, true), (false, false), (false, true)] {
        let case = format!("cluster {cluster}, by clientId {by_client_id}");
        let mut builder = Server::builder()
            .path("/r/:room")
            .history(History::new(100))
            .gap_notice("gap")
            .max_buffer_bytes(400)
            .heartbeat_interval(Duration::ZERO);
        if cluster {
            builder = builder.broker(sseio_core::MemoryBroker::new());
        }
        let server = builder.build().unwrap();
        let handler = server
            .register_event_handler("e", HandlerOptions::new(room_by_param))
            .unwrap();
        let mut notifications = server.subscribe();
        let mut stream = open_stream(&server, "/r/a?clientId=c&events=e").await;
        settle().await;
        handler.send("a", "first").unwrap();
        let (text, _) = take_until_end(&mut stream);
        let mut last_id = last_id_of(&text).expect("an id");
        // Closed by the server: where it stood is exact.
        server.disconnect("c").unwrap();
        drop(stream);
        // More than the buffer holds, while it is away.
        let missed: Vec<String> = (0..10).map(|n| format!("{n:0>60}")).collect();
        for message in &missed {
            handler.send("a", message).unwrap();
        }

        let mut got = Vec::new();
        let mut parts = 0;
        let back = loop {
            assert!(
                parts < 10,
                "{case}: still catching up after {parts} parts: {got:?}"
            );
            let mut request = http::Request::get("/r/a?clientId=c&events=e");
            if !by_client_id {
                request = request.header("last-event-id", &last_id);
            }
            let request = request.body(()).unwrap();
            let Outcome::Stream(response) = server.handle((&request).into()).await else {
                panic!("{case}: the stream opens");
            };
            let mut back = response.into_body();
            settle().await;
            let (text, ended) = take_until_end(&mut back);
            assert!(!text.contains("event: gap"), "{case}: no gap: {text:?}");
            got.extend(data_lines(&text));
            last_id = last_id_of(&text).unwrap_or(last_id);
            if !ended {
                break back;
            }
            parts += 1;
        };
        let mut back = back;
        handler.send("a", "live").unwrap();
        got.extend(data_lines(&take_until_end(&mut back).0));
        let mut expected = missed.clone();
        expected.push("live".to_owned());
        assert_eq!(got, expected, "{case}: every message once, in order");
        assert!(parts >= 2, "{case}: in parts ({parts})");
        let closes: Vec<CloseReason> = std::iter::from_fn(|| notifications.try_recv())
            .filter_map(|n| match n {
                Notification::ConnClose { reason, .. } => Some(reason),
                _ => None,
            })
            .collect();
        assert!(
            !closes.contains(&CloseReason::SlowConsumer),
            "{case}: never closed as a slow consumer: {closes:?}"
        );
        assert_eq!(
            closes
                .iter()
                .filter(|r| **r == CloseReason::CatchingUp)
                .count(),
            parts,
            "{case}: {closes:?}"
        );
    }
}

/// Every chunk the stream has ready now, concatenated, and whether it ended.
fn take_until_end(stream: &mut ConnectionStream) -> (String, bool) {
    let mut cx = TaskContext::from_waker(Waker::noop());
    let mut text = String::new();
    loop {
        match Pin::new(&mut *stream).poll_next(&mut cx) {
            Poll::Ready(Some(chunk)) => text.push_str(&String::from_utf8_lossy(&chunk.unwrap())),
            Poll::Ready(None) => return (text, true),
            Poll::Pending => return (text, false),
        }
    }
}

/// The last `id:` of some SSE text.
fn last_id_of(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .next_back()
        .map(str::to_owned)
}
