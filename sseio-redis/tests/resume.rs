//! A `clientId` that comes back to another node, against a real `redis-server`: it takes over a
//! stream still open on the node it left, with where that stream stood; and when that node is
//! gone, it is told of the gap rather than started afresh.

mod support;

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;
use sseio_core::{
    ConnectionStream, Context, EventHandler, HandlerOptions, History, Outcome, Server,
};
use sseio_redis::RedisBroker;
use sseio_test_support::RecordingSink;
use support::{Redis, WAIT, client_ids, wait_until};

/// A node on `redis` with history and the gap notice (`gap`), handler `e` in rooms by path;
/// reconnecting to Redis after `backoff`.
async fn node(redis: &Redis, backoff: Duration) -> (Server, EventHandler) {
    let broker = RedisBroker::builder(redis.url())
        .reconnect_backoff(backoff, backoff)
        .connect()
        .await
        .expect("the broker connects");
    let server = Server::builder()
        .path("/r/:room")
        .history(History::new(100))
        .gap_notice("gap")
        .broker(broker)
        .build()
        .unwrap();
    let handler = server
        .register_event_handler(
            "e",
            HandlerOptions::new(|ctx: &Context| ctx.param("room").unwrap_or_default().to_owned()),
        )
        .unwrap();
    (server, handler)
}

fn request(uri: &str) -> http::Request<()> {
    http::Request::get(uri).body(()).unwrap()
}

/// The data lines of some SSE text.
fn data(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .collect()
}

/// The next chunk of `stream` the transport would write, within [`WAIT`]; `None` at its end.
async fn next_chunk(stream: &mut ConnectionStream) -> Option<String> {
    let next = poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx));
    let chunk = tokio::time::timeout(WAIT, next).await.expect("a chunk");
    chunk.map(|chunk| String::from_utf8_lossy(&chunk.unwrap()).into_owned())
}

/// Node one keeps the stream of `c` open (it has not noticed the client left); a message is
/// queued on it and never written. The client comes back to node two: node one closes the old
/// stream and hands over where it stood, so the client gets the message it never got, then the
/// live ones, once each, after a gap notice (what the old stream wrote may have been lost with
/// its path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_back_on_another_node_takes_its_open_stream_over() {
    let redis = Redis::start().await;
    let (one, on_one) = node(&redis, Duration::from_millis(100)).await;
    let (two, _) = node(&redis, Duration::from_millis(100)).await;
    let Outcome::Stream(response) = one
        .handle((&request("/r/a?clientId=c&events=e")).into())
        .await
    else {
        panic!("the stream opens on node one");
    };
    let mut old = response.into_body();
    let mut written = String::new();
    // Once its replay answered, the stream stands somewhere: what follows counts.
    on_one.send_confirmed("a", "1").await.unwrap();
    while !written.contains("data: 1\n") {
        written.push_str(&next_chunk(&mut old).await.expect("the stream is open"));
    }
    // Queued on the old stream, never written: the path to the client is gone.
    on_one.send_confirmed("a", "2").await.unwrap();

    let moved = Arc::new(RecordingSink::default());
    let _moved = two
        .connect((&request("/r/a?clientId=c&events=e")).into(), moved.clone())
        .await
        .expect("the stream opens on node two");
    wait_until("the message the old stream never wrote", || {
        moved.text().contains("data: 2\n")
    })
    .await;
    on_one.send_confirmed("a", "3").await.unwrap();
    wait_until("the live message", || moved.text().contains("data: 3\n")).await;
    // What the old stream wrote may have been lost with the path (only the client could tell):
    // the gap notice first.
    assert_eq!(
        data(&moved.text()),
        [r#"{"event":"e"}"#, "2", "3"],
        "{:?}",
        moved.text()
    );
    // The old stream was closed on node one: it ends, without message 2.
    let mut rest = String::new();
    while let Some(chunk) = next_chunk(&mut old).await {
        rest.push_str(&chunk);
    }
    assert!(!rest.contains("data: 2"), "{rest:?}");
}

/// Node one is cut off from Redis (its connection killed, and it stays away): its streams
/// cannot record where they stood, nor be taken over. The client of one of them, back on node
/// two by its `clientId`, is told of the gap first, instead of starting afresh silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_whose_node_is_gone_is_told_of_the_gap() {
    let redis = Redis::start().await;
    // Node one's connection is the only one when it connects.
    let (one, on_one) = node(&redis, Duration::from_secs(60)).await;
    let node_one = client_ids(&redis).await;
    let (two, on_two) = node(&redis, Duration::from_millis(100)).await;
    let first = Arc::new(RecordingSink::default());
    let _first = one
        .connect((&request("/r/a?clientId=c&events=e")).into(), first.clone())
        .await
        .unwrap();
    on_one.send_confirmed("a", "1").await.unwrap();
    wait_until("message 1 on node one", || {
        first.text().contains("data: 1\n")
    })
    .await;

    for id in node_one {
        let _ = redis.command(&["CLIENT", "KILL", "ID", &id]).await;
    }
    wait_until("node one to notice", || !one.is_ready()).await;
    on_two.send_confirmed("a", "2").await.unwrap();

    let back = Arc::new(RecordingSink::default());
    let _back = two
        .connect((&request("/r/a?clientId=c&events=e")).into(), back.clone())
        .await
        .unwrap();
    wait_until("the gap notice", || back.text().contains("event: gap")).await;
    on_two.send_confirmed("a", "3").await.unwrap();
    wait_until("the live message", || back.text().contains("data: 3\n")).await;
    let text = back.text();
    assert!(
        text.starts_with("event: gap\ndata: {\"event\":\"e\"}\n\n"),
        "told of the gap first: {text:?}"
    );
}

/// A node drained with no grace lost its streams' resume records with the process.
///
/// A drain closes every stream, and each close queues where the stream stood for Redis; the
/// harness (and any server) exits once `Server::shutdown` returns. With a short grace it
/// returned before the broker had written the records, so the process took them with it, and
/// every official client that came back to another node found its stream still marked open on
/// a node that was gone: told of a gap that was not there, and resynced. `shutdown` now
/// returns once the broker has handed on what was queued.
#[test]
fn a_drain_hands_its_resume_records_to_redis_before_shutdown_returns() {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let redis = runtime().block_on(Redis::start());
    const CLIENTS: usize = 50;
    {
        // The node's whole life, in a runtime that ends with it, as a process does.
        let process = runtime();
        process.block_on(async {
            let (server, handler) = node(&redis, Duration::from_millis(100)).await;
            let mut streams = Vec::new();
            for c in 0..CLIENTS {
                let sink = Arc::new(RecordingSink::default());
                let uri = format!("/r/a?clientId=c{c}&events=e");
                let stream = server.connect((&request(&uri)).into(), sink.clone()).await;
                streams.push((stream.unwrap(), sink));
            }
            handler.send_confirmed("a", "1").await.unwrap();
            wait_until("message 1 on every stream", || {
                streams.iter().all(|(_, s)| s.text().contains("data: 1\n"))
            })
            .await;
            server.shutdown(Duration::ZERO).await;
        });
    }
    let recorded = runtime().block_on(async {
        let mut recorded = Vec::new();
        for c in 0..CLIENTS {
            let key = format!("sseio:resume:c{c}");
            recorded.push(match redis.command(&["GET", &key]).await.unwrap() {
                redis::Value::BulkString(bytes) => String::from_utf8(bytes).unwrap(),
                other => format!("{other:?}"),
            });
        }
        recorded
    });
    let positions = recorded.iter().filter(|r| !r.starts_with('@')).count();
    assert_eq!(
        positions, CLIENTS,
        "every stream's record holds where it stood, not the node it was open on: {recorded:?}"
    );
}
