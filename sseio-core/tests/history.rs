//! History and resume: a client that reconnects gets exactly what it missed, in order, before
//! live messages; or, when the gap cannot be filled, a `fetch` that knows it is a resync, and no
//! partial replay.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::Request;
use sseio_core::{
    BoxFuture, Broker, BrokerError, Connection, Context, EventHandler, HandlerOptions, History,
    HistoryStore, MemoryBroker, Node, Position, Recalled, Replay, ReplayRoom, Server,
    ServerBuilder, SseSink,
};
use sseio_test_support::fixtures::connect_request;
use sseio_test_support::{RecordingSink, StalledSink};

/// The `id:` lines and data lines of what a sink received, in order.
fn ids_and_data(sink: &RecordingSink) -> Vec<(Option<String>, String)> {
    sink.text()
        .split("\n\n")
        .filter(|frame| frame.contains("data: "))
        .map(|frame| {
            let field = |name: &str| {
                frame
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(str::to_owned)
            };
            (field("id: "), field("data: ").unwrap_or_default())
        })
        .collect()
}

fn data(sink: &RecordingSink) -> Vec<String> {
    ids_and_data(sink).into_iter().map(|(_, d)| d).collect()
}

/// A server with history on, and handler `e` in rooms by path; its `fetch` records whether it
/// ran as a resync and sends `snapshot`.
fn server(history: History) -> (Server, EventHandler, Arc<Mutex<Vec<bool>>>) {
    server_on(Server::builder(), history)
}

/// One node of a cluster on `broker`, as [`server`] makes it.
fn node(broker: &MemoryBroker, history: History) -> (Server, EventHandler, Arc<Mutex<Vec<bool>>>) {
    server_on(Server::builder().broker(broker.clone()), history)
}

fn server_on(
    builder: ServerBuilder,
    history: History,
) -> (Server, EventHandler, Arc<Mutex<Vec<bool>>>) {
    let server = builder.path("/r/:room").history(history).build().unwrap();
    let fetches = Arc::new(Mutex::new(Vec::new()));
    let seen = fetches.clone();
    let handler = server
        .register_event_handler(
            "e",
            HandlerOptions::new(|ctx: &Context| ctx.param("room").unwrap_or_default().to_owned())
                .fetch(move |ctx: Context| {
                    seen.lock().unwrap().push(ctx.resync());
                    async { Ok::<_, Infallible>("snapshot") }
                }),
        )
        .unwrap();
    (server, handler, fetches)
}

async fn connect(
    server: &Server,
    uri: &str,
    last_event_id: Option<&str>,
) -> (Connection, Arc<RecordingSink>) {
    let mut request = Request::get(uri);
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    connect_request(server, &request.body(()).unwrap()).await
}

/// Lets the `fetch` tasks run to completion.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn frames_carry_ids_and_last_event_id_replays_what_was_missed() {
    let (server, handler, fetches) = server(History::new(100));
    let (first, sink) = connect(&server, "/r/x?clientId=c&events=e", None).await;
    settle().await;
    handler.send("x", "1").unwrap();
    handler.send("x", "2").unwrap();
    let got = ids_and_data(&sink);
    assert_eq!(data(&sink), ["snapshot", "1", "2"]);
    let last_id = got[2].0.clone().expect("messages carry an id");
    assert!(got[0].0.is_none(), "a fetch result has no id");
    first.close();

    handler.send("x", "3").unwrap();
    handler.send("other", "not this room").unwrap();
    handler.send("x", "4").unwrap();
    let (_again, resumed) = connect(&server, "/r/x?clientId=d&events=e", Some(&last_id)).await;
    handler.send("x", "5").unwrap();
    settle().await;
    assert_eq!(
        data(&resumed),
        ["3", "4", "5"],
        "missed ones first, once, then live"
    );
    assert_eq!(*fetches.lock().unwrap(), [false], "a resume skips fetch");
}

#[tokio::test]
async fn the_last_event_id_query_parameter_works_like_the_header() {
    let (server, handler, _) = server(History::new(100));
    let (first, sink) = connect(&server, "/r/x?clientId=c&events=e", None).await;
    settle().await;
    handler.send("x", "1").unwrap();
    let id = ids_and_data(&sink).last().unwrap().0.clone().unwrap();
    first.close();
    handler.send("x", "2").unwrap();
    let uri = format!("/r/x?clientId=c2&events=e&lastEventId={id}");
    let (_again, resumed) = connect(&server, &uri, None).await;
    assert_eq!(data(&resumed), ["2"]);
}

#[tokio::test]
async fn the_official_client_resumes_by_its_client_id() {
    let (server, handler, fetches) = server(History::new(100));
    let (first, _) = connect(&server, "/r/x?clientId=c&events=e", None).await;
    settle().await;
    handler.send("x", "1").unwrap();
    first.close();
    handler.send("x", "2").unwrap();
    handler.send("x", "3").unwrap();
    // No Last-Event-ID: the official client reconnects with its clientId only.
    let (_again, resumed) = connect(&server, "/r/x?clientId=c&events=e", None).await;
    settle().await;
    assert_eq!(data(&resumed), ["2", "3"]);
    assert_eq!(*fetches.lock().unwrap(), [false]);

    // Another clientId gets no replay: it is a new client, and fetch runs as usual.
    let (_new, fresh) = connect(&server, "/r/x?clientId=n&events=e", None).await;
    settle().await;
    assert_eq!(data(&fresh), ["snapshot"]);
    assert_eq!(*fetches.lock().unwrap(), [false, false]);
}

#[tokio::test]
async fn a_gap_larger_than_the_history_resyncs_through_fetch_and_replays_nothing() {
    let (server, handler, fetches) = server(History::new(2));
    let (first, _) = connect(&server, "/r/x?clientId=c&events=e", None).await;
    settle().await;
    first.close();
    for n in 1..=3 {
        handler.send("x", &n.to_string()).unwrap();
    }
    let (_again, resumed) = connect(&server, "/r/x?clientId=c&events=e", None).await;
    settle().await;
    assert_eq!(data(&resumed), ["snapshot"], "no partial replay");
    assert_eq!(
        *fetches.lock().unwrap(),
        [false, true],
        "the second fetch is a resync"
    );
}

#[tokio::test]
async fn an_unknown_last_event_id_is_a_resync() {
    let (server, _handler, fetches) = server(History::new(2));
    let (_c, sink) = connect(&server, "/r/x?clientId=c&events=e", Some("not-ours")).await;
    settle().await;
    assert_eq!(data(&sink), ["snapshot"]);
    assert_eq!(*fetches.lock().unwrap(), [true]);
}

#[tokio::test]
async fn without_history_frames_have_no_id() {
    let server = Server::new("/r/:room").unwrap();
    let handler = server
        .register_event_handler(
            "e",
            HandlerOptions::new(|ctx: &Context| ctx.param("room").unwrap_or_default().to_owned()),
        )
        .unwrap();
    let (_c, sink) = connect(&server, "/r/x?clientId=c&events=e", None).await;
    handler.send("x", "1").unwrap();
    assert_eq!(sink.text(), "event: e\ndata: 1\n\n");
}

#[tokio::test]
async fn the_official_client_resumes_on_another_node_by_its_client_id() {
    let broker = MemoryBroker::new();
    let (one, on_one, fetched_on_one) = node(&broker, History::new(100));
    let (two, on_two, fetched_on_two) = node(&broker, History::new(100));
    let (first, before) = connect(&one, "/r/x?clientId=c&events=e", None).await;
    settle().await;
    on_one.send("x", "1").unwrap();
    first.close();
    on_two.send("x", "2").unwrap();
    on_one.send("x", "3").unwrap();
    assert_eq!(data(&before), ["snapshot", "1"]);

    let (_again, resumed) = connect(&two, "/r/x?clientId=c&events=e", None).await;
    settle().await;
    on_two.send("x", "4").unwrap();
    assert_eq!(
        data(&resumed),
        ["2", "3", "4"],
        "missed, then live, once each"
    );
    assert_eq!(*fetched_on_one.lock().unwrap(), [false]);
    assert!(
        fetched_on_two.lock().unwrap().is_empty(),
        "a resume skips fetch"
    );
}

#[tokio::test]
async fn a_last_event_id_from_one_node_means_the_same_on_another() {
    let broker = MemoryBroker::new();
    let (one, on_one, _) = node(&broker, History::new(100));
    let (two, on_two, _) = node(&broker, History::new(100));
    let (_watching, on_node_one) = connect(&one, "/r/x?clientId=a&events=e", None).await;
    let (_other, on_node_two) = connect(&two, "/r/x?clientId=b&events=e", None).await;
    settle().await;
    for n in 1..=3 {
        on_one.send("x", &n.to_string()).unwrap();
    }
    let ids_one: Vec<_> = ids_and_data(&on_node_one)
        .into_iter()
        .filter_map(|(id, _)| id)
        .collect();
    let ids_two: Vec<_> = ids_and_data(&on_node_two)
        .into_iter()
        .filter_map(|(id, _)| id)
        .collect();
    assert_eq!(ids_one.len(), 3);
    assert_eq!(
        ids_one, ids_two,
        "every node frames a message with the same id"
    );

    let (_back, resumed) = connect(&two, "/r/x?clientId=z&events=e", Some(&ids_one[0])).await;
    settle().await;
    on_two.send("x", "4").unwrap();
    assert_eq!(data(&resumed), ["2", "3", "4"]);
}

#[tokio::test]
async fn a_gap_too_large_for_the_cluster_history_resyncs_on_the_other_node() {
    let broker = MemoryBroker::new();
    let (one, on_one, _) = node(&broker, History::new(2));
    let (two, _, fetched_on_two) = node(&broker, History::new(2));
    let (first, _) = connect(&one, "/r/x?clientId=c&events=e", None).await;
    settle().await;
    first.close();
    for n in 1..=3 {
        on_one.send("x", &n.to_string()).unwrap();
    }
    let (_again, resumed) = connect(&two, "/r/x?clientId=c&events=e", None).await;
    settle().await;
    assert_eq!(data(&resumed), ["snapshot"], "no partial replay");
    assert_eq!(
        *fetched_on_two.lock().unwrap(),
        [true],
        "fetch ran as a resync"
    );
}

/// Regression: with the cluster's history in a `MemoryBroker`, a send that found a full buffer
/// closed that connection while the broker still held its history lock, and the close, which
/// records where the connection stood, waited for that same lock forever: the send never
/// returned. The slow connection must be closed, and the send return.
#[tokio::test]
async fn a_slow_consumer_on_a_cluster_with_history_is_closed_while_sending() {
    let broker = MemoryBroker::new();
    let (one, on_one, _) = node(&broker, History::new(10));
    let (_fast, fast) = connect(&one, "/r/x?clientId=f&events=e", None).await;
    let stalled = Arc::new(StalledSink::default());
    let request = Request::get("/r/x?clientId=s&events=e").body(()).unwrap();
    let _stalled = one
        .connect((&request).into(), stalled.clone())
        .await
        .expect("the connection opens");
    settle().await;
    assert!(!stalled.is_closed());
    stalled.stall();
    // On a thread of its own, so that a deadlock fails the test instead of hanging it.
    let (done, sent) = std::sync::mpsc::channel();
    let sender = on_one.clone();
    std::thread::spawn(move || done.send(sender.send("x", "1")));
    sent.recv_timeout(std::time::Duration::from_secs(10))
        .expect("the send returns")
        .unwrap();
    assert!(stalled.is_closed());
    assert_eq!(one.connection_count(), 1);
    assert_eq!(data(&fast), ["snapshot", "1"]);
}

/// The gap notice where the broker decides the resume (its history answers after the join):
/// a client resuming on another node past the cluster's history is told first, then gets the
/// resync's `fetch`.
#[tokio::test]
async fn the_gap_notice_comes_first_where_the_broker_decides_the_resume() {
    let broker = MemoryBroker::new();
    let noticed = || Server::builder().broker(broker.clone()).gap_notice("gap");
    let (one, on_one, _) = server_on(noticed(), History::new(2));
    let (two, _, _) = server_on(noticed(), History::new(2));
    let (first, told_on_one) = connect(&one, "/r/x?clientId=c&events=e", None).await;
    settle().await;
    assert!(
        !told_on_one.text().contains("event: gap"),
        "a fresh stream is told nothing"
    );
    first.close();
    for n in 1..=3 {
        on_one.send("x", &n.to_string()).unwrap();
    }
    let (_again, resumed) = connect(&two, "/r/x?clientId=c&events=e", None).await;
    settle().await;
    let text = resumed.text();
    let notice = text.find("event: gap\ndata: {\"event\":\"e\"}\n\n");
    let snapshot = text.find("data: snapshot");
    assert!(
        notice.is_some() && notice < snapshot,
        "the notice, then the resync: {text:?}"
    );
}

#[test]
fn a_gap_notice_name_that_cannot_go_on_the_wire_is_a_build_error() {
    let built = Server::builder().gap_notice("a\nb").build();
    assert!(matches!(
        built,
        Err(sseio_core::BuildError::InvalidGapNotice { .. })
    ));
}

/// A page the server renders embeds the room's position; its first connect names it in the
/// query (a native `EventSource` cannot send `Last-Event-ID` then) and gets exactly what was
/// sent after the render, locally and on another node of a cluster.
#[tokio::test]
async fn a_first_connect_from_a_rendered_position_gets_what_was_sent_since() {
    for clustered in [false, true] {
        let broker = MemoryBroker::new();
        let builder = || match clustered {
            true => Server::builder().broker(broker.clone()),
            false => Server::builder(),
        };
        let (one, on_one, fetched) = server_on(builder(), History::new(10));
        let (two, _, _) = server_on(builder(), History::new(10));
        let render_on = if clustered { &two } else { &one };
        on_one.send("x", "before").unwrap();
        let rendered = render_on.handler("e").unwrap().position("x").await.unwrap();
        on_one.send("x", "after 1").unwrap();
        on_one.send("x", "after 2").unwrap();
        let uri = format!("/r/x?clientId=page&events=e&lastEventId={rendered}");
        let (_page, sink) = connect(render_on, &uri, None).await;
        settle().await;
        on_one.send("x", "live").unwrap();
        settle().await;
        assert_eq!(
            data(&sink),
            ["after 1", "after 2", "live"],
            "clustered: {clustered}"
        );
        assert!(
            fetched.lock().unwrap().is_empty(),
            "no fetch: the resume was served"
        );
    }
}

/// The official client keeps its query on every reconnect: a reconnect by `clientId` resumes
/// from where its last stream stood, not again from the rendered position.
#[tokio::test]
async fn a_reconnect_by_client_id_does_not_go_back_to_the_rendered_position() {
    let (server, handler, _) = server(History::new(10));
    let rendered = handler.position("x").await.unwrap();
    let uri = format!("/r/x?clientId=page&events=e&lastEventId={rendered}");
    handler.send("x", "1").unwrap();
    let (first, sink) = connect(&server, &uri, None).await;
    settle().await;
    assert_eq!(data(&sink), ["1"]);
    first.close();
    handler.send("x", "2").unwrap();
    let (_again, resumed) = connect(&server, &uri, None).await;
    settle().await;
    assert_eq!(data(&resumed), ["2"], "each message once");
}

#[tokio::test]
async fn without_history_there_is_no_position_and_the_parameter_name_is_the_servers() {
    let server = Server::builder().path("/r/:room").build().unwrap();
    let handler = server
        .register_event_handler("e", HandlerOptions::new(|_: &Context| "x"))
        .unwrap();
    assert!(matches!(
        handler.position("x").await,
        Err(sseio_core::PositionError::NoHistory { .. })
    ));

    let (server, handler, _) = server_on(
        Server::builder().resume_query_param("since"),
        History::new(10),
    );
    let rendered = handler.position("x").await.unwrap();
    handler.send("x", "after").unwrap();
    let ignored = format!("/r/x?clientId=a&events=e&lastEventId={rendered}");
    let (_a, plain) = connect(&server, &ignored, None).await;
    let named = format!("/r/x?clientId=b&events=e&since={rendered}");
    let (_b, resumed) = connect(&server, &named, None).await;
    settle().await;
    assert_eq!(
        data(&plain),
        ["snapshot"],
        "lastEventId is just a query parameter now"
    );
    assert_eq!(data(&resumed), ["after"]);
}

/// A cluster broker whose history store says of every reconnect by `clientId` that its stream
/// was open on a node that died: what `sseio-redis` answers after a `kill -9`.
#[derive(Debug, Clone)]
struct NodeDiedBroker {
    inner: MemoryBroker,
    store: NodeDiedStore,
}

impl NodeDiedBroker {
    fn new() -> Self {
        let inner = MemoryBroker::new();
        Self {
            store: NodeDiedStore(inner.clone()),
            inner,
        }
    }
}

/// The history store of a clone of the same broker (a clone shares the nodes and history).
#[derive(Debug, Clone)]
struct NodeDiedStore(MemoryBroker);

impl NodeDiedStore {
    fn inner(&self) -> &dyn HistoryStore {
        self.0
            .history_store()
            .expect("a MemoryBroker keeps history")
    }
}

impl HistoryStore for NodeDiedStore {
    fn publish(
        &self,
        event: &str,
        room: &str,
        payload: &str,
        h: History,
    ) -> Result<(), BrokerError> {
        self.inner().publish(event, room, payload, h)
    }
    fn replay(
        &self,
        rooms: Vec<ReplayRoom>,
        from: Option<Position>,
    ) -> BoxFuture<Result<Replay, BrokerError>> {
        self.inner().replay(rooms, from)
    }
    fn remember(&self, client_id: &str, at: Recalled, ttl: std::time::Duration) {
        self.inner().remember(client_id, at, ttl);
    }
    fn recall(&self, client_id: &str) -> BoxFuture<Result<Recalled, BrokerError>> {
        self.inner().recall(client_id)
    }
    fn resume_point(&self, _client_id: &str) -> BoxFuture<Result<Recalled, BrokerError>> {
        Box::pin(std::future::ready(Ok(Recalled::Lost)))
    }
}

impl Broker for NodeDiedBroker {
    fn attach(&self, node: Node) -> Result<(), BrokerError> {
        self.inner.attach(node)
    }
    fn publish(&self, event: &str, room: &str, payload: &str) -> Result<(), BrokerError> {
        self.inner.publish(event, room, payload)
    }
    fn history_store(&self) -> Option<&dyn HistoryStore> {
        Some(&self.store)
    }
}

/// A `clientId` whose stream was open on a node that died is told of the gap, first, and its
/// `fetch` runs as a resync: it never starts afresh as if it had missed nothing.
#[tokio::test]
async fn a_client_id_whose_node_died_is_told_of_the_gap_and_resyncs() {
    let builder = Server::builder()
        .broker(NodeDiedBroker::new())
        .gap_notice("gap");
    let (server, handler, fetches) = server_on(builder, History::new(10));
    let (_back, sink) = connect(&server, "/r/x?clientId=c&events=e", None).await;
    settle().await;
    handler.send("x", "live").unwrap();
    let text = sink.text();
    assert!(
        text.starts_with("event: gap\ndata: {\"event\":\"e\"}\n\n"),
        "the gap notice first: {text:?}"
    );
    assert_eq!(data(&sink)[1..], ["snapshot", "live"]);
    assert_eq!(*fetches.lock().unwrap(), [true], "fetch ran as a resync");
}

/// A server with history and the gap notice `gap`, handler `e` in rooms by path, no `fetch`.
fn server_without_fetch(builder: ServerBuilder) -> (Server, EventHandler) {
    let server = builder
        .path("/r/:room")
        .history(History::new(100))
        .gap_notice("gap")
        .build()
        .unwrap();
    let room = |ctx: &Context| ctx.param("room").unwrap_or_default().to_owned();
    let handler = server
        .register_event_handler("e", HandlerOptions::new(room))
        .unwrap();
    (server, handler)
}

const GAP_NOTICE: &str = "event: gap\ndata: {\"event\":\"e\"}\n\n";

/// The official client, reconnecting by `clientId` after its connection dropped (a proxy cut
/// it, or the network), resumed where the server had last queued, silently: what the server
/// had written and the dropped path lost in flight was never told of. A client that resumes by
/// `clientId` cannot say what it got; now it is told of a possible gap first, then resumes.
#[tokio::test]
async fn a_client_id_whose_connection_dropped_is_told_of_a_possible_gap_then_resumes() {
    let (server, handler, fetches) =
        server_on(Server::builder().gap_notice("gap"), History::new(10));
    let (first, _) = connect(&server, "/r/x?clientId=c&events=e", None).await;
    settle().await;
    handler.send("x", "1").unwrap();
    // Dropped: the client's side ended it, not the server.
    drop(first);
    handler.send("x", "2").unwrap();
    let (_back, sink) = connect(&server, "/r/x?clientId=c&events=e", None).await;
    settle().await;
    handler.send("x", "live").unwrap();
    let text = sink.text();
    assert!(
        text.starts_with(GAP_NOTICE),
        "the gap notice first: {text:?}"
    );
    assert_eq!(data(&sink)[1..], ["2", "live"]);
    assert_eq!(*fetches.lock().unwrap(), [false], "a resume skips fetch");
}

/// A dropped connection's `clientId` gets the notice, then everything since where its stream
/// stood, on another node of a cluster just as on the node it left.
#[tokio::test]
async fn a_dropped_client_id_is_told_then_gets_what_followed_on_any_node() {
    let broker = MemoryBroker::new();
    let (one, on_one) = server_without_fetch(Server::builder().broker(broker.clone()));
    let (two, _) = server_without_fetch(Server::builder().broker(broker.clone()));
    let (local, cluster) = (("c", &one), ("d", &two));
    for (client, resumes_on) in [local, cluster] {
        let uri = format!("/r/x?clientId={client}&events=e");
        let (first, _) = connect(&one, &uri, None).await;
        settle().await;
        on_one.send("x", "1").unwrap();
        drop(first);
        on_one.send("x", "2").unwrap();
        let (_back, sink) = connect(resumes_on, &uri, None).await;
        settle().await;
        let text = sink.text();
        assert!(
            text.starts_with(GAP_NOTICE),
            "{client}: the notice: {text:?}"
        );
        assert_eq!(data(&sink)[1..], ["2"], "{client}: then what followed");
    }
}

/// What stays exact: a stream the server ended, and a dropped one that was given no message.
#[tokio::test]
async fn a_client_id_resumes_without_a_notice_when_nothing_can_have_been_lost() {
    let (server, handler) = server_without_fetch(Server::builder());
    let (closed, _) = connect(&server, "/r/x?clientId=c&events=e", None).await;
    handler.send("x", "1").unwrap();
    closed.close();
    let (quiet, _) = connect(&server, "/r/y?clientId=q&events=e", None).await;
    drop(quiet);
    handler.send("x", "2").unwrap();
    handler.send("y", "3").unwrap();
    for (uri, missed) in [
        ("/r/x?clientId=c&events=e", "2"),
        ("/r/y?clientId=q&events=e", "3"),
    ] {
        let (_back, sink) = connect(&server, uri, None).await;
        settle().await;
        assert_eq!(
            data(&sink),
            [missed],
            "{uri}: exactly what it missed, no notice"
        );
    }
}

/// A stream cut before the broker's replay answered was remembered nowhere: it stood at no
/// position yet, so its `clientId`'s next reconnect started afresh, and what the replay would
/// have given was lost silently (seen once in the resilience suite's cut case).
#[tokio::test]
async fn a_stream_cut_before_its_replay_answered_keeps_where_the_replay_starts() {
    let broker = MemoryBroker::new();
    let (server, handler) = server_without_fetch(Server::builder().broker(broker));
    let (first, _) = connect(&server, "/r/x?clientId=c&events=e", None).await;
    settle().await;
    handler.send("x", "1").unwrap();
    first.close();
    handler.send("x", "2").unwrap();
    // Back, and cut before its replay task ran (nothing given, nothing live held).
    let (cut, cut_sink) = connect(&server, "/r/x?clientId=c&events=e", None).await;
    drop(cut);
    assert_eq!(data(&cut_sink), Vec::<String>::new(), "cut before anything");
    settle().await;
    handler.send("x", "3").unwrap();
    let (_back, sink) = connect(&server, "/r/x?clientId=c&events=e", None).await;
    settle().await;
    assert_eq!(
        data(&sink),
        ["2", "3"],
        "what it never got, once: {:?}",
        sink.text()
    );
}
