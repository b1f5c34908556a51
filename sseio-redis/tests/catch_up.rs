//! A node that loses Redis for a while catches its rooms up when it is back, against a real
//! `redis-server`: the streams that stayed open get, once and in order, what other nodes sent
//! meanwhile, from the history (Pub/Sub kept nothing for the node while it was away).

mod support;

use std::time::Duration;

use sseio_core::{CloseReason, Context, EventHandler, HandlerOptions, History, Server, SseSink};
use sseio_redis::RedisBroker;
use support::{Redis, WAIT, client_ids, open, wait_until};
use tokio::time::Instant;

/// A node on `redis` with history, handler `e` in rooms by path, reconnecting after `backoff`.
async fn node(redis: &Redis, backoff: Duration) -> (Server, EventHandler) {
    node_keeping(redis, backoff, 100).await
}

/// As [`node`], each room keeping its last `history` messages.
async fn node_keeping(redis: &Redis, backoff: Duration, history: usize) -> (Server, EventHandler) {
    let broker = RedisBroker::builder(redis.url())
        .reconnect_backoff(backoff, backoff)
        .connect()
        .await
        .expect("the broker connects");
    let server = Server::builder()
        .path("/r/:room")
        .history(History::new(history))
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

/// Sends `messages` through `handler`, each confirmed (recorded in Redis's history).
async fn send_all(handler: &EventHandler, messages: &[&str]) {
    for message in messages {
        handler.send_confirmed("a", message).await.unwrap();
    }
}

/// Waits until a presence query through `handler` (on another node) lists the client: node two
/// answers it only once its subscription to the room is in place, so what is sent from then on
/// reaches it.
async fn wait_subscribed(handler: &EventHandler) {
    let deadline = Instant::now() + WAIT;
    while handler.presence("a").await.map(|p| p.count).unwrap_or(0) != 1 {
        assert!(
            Instant::now() < deadline,
            "node two never subscribed the room"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Node two's connection to Redis drops, and node two stays away a second; node one sends
/// meanwhile. Back, node two delivers what it missed to its stream (which never closed), then
/// the live messages, each once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_from_losing_redis_delivers_what_its_rooms_missed() {
    let redis = Redis::start().await;
    let (_one, on_one) = node(&redis, Duration::from_millis(50)).await;
    let before = client_ids(&redis).await;
    let (two, _) = node(&redis, Duration::from_secs(1)).await;
    let two_ids: Vec<String> = client_ids(&redis)
        .await
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    let (_stream, sink) = open(&two, "/r/a?clientId=c&events=e").await;
    wait_subscribed(&on_one).await;
    send_all(&on_one, &["1"]).await;
    wait_until("message 1", || sink.data() == ["1"]).await;

    for id in &two_ids {
        let _ = redis.command(&["CLIENT", "KILL", "ID", id]).await;
    }
    wait_until("node two to notice", || !two.is_ready()).await;
    send_all(&on_one, &["2", "3"]).await;
    wait_until("node two to be back", || two.is_ready()).await;
    send_all(&on_one, &["4"]).await;
    wait_until("message 4", || {
        sink.data().last().map(String::as_str) == Some("4")
    })
    .await;
    assert_eq!(sink.data(), ["1", "2", "3", "4"], "each once, in order");
    assert!(!sink.is_closed());
}

/// Redis restarts without its data: node one is back first and sends from the new sequence
/// while node two is still away. Back, node two delivers those to its stream too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_after_redis_restarted_empty_delivers_the_new_sequence_it_missed() {
    let mut redis = Redis::start().await;
    let (_one, on_one) = node(&redis, Duration::from_millis(50)).await;
    let (two, _) = node(&redis, Duration::from_millis(1500)).await;
    let (_stream, sink) = open(&two, "/r/a?clientId=c&events=e").await;
    wait_subscribed(&on_one).await;
    send_all(&on_one, &["1"]).await;
    wait_until("message 1", || sink.data() == ["1"]).await;

    redis.kill().await;
    redis.wipe();
    redis.restart().await;
    let one_back = Instant::now() + WAIT;
    while on_one.send_confirmed("a", "2").await.is_err() {
        assert!(Instant::now() < one_back, "node one did not come back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!two.is_ready(), "node two is still away (backoff 1.5 s)");
    send_all(&on_one, &["3"]).await;
    wait_until("node two to be back", || two.is_ready()).await;
    send_all(&on_one, &["4"]).await;
    wait_until("message 4", || {
        sink.data().last().map(String::as_str) == Some("4")
    })
    .await;
    assert_eq!(sink.data(), ["1", "2", "3", "4"], "each once, in order");
}

/// Node two is away while more is sent than the room's history keeps: what its stream missed
/// cannot be replayed, so, back, node two closes it (the client reconnects, and resumes or is
/// told of the gap) rather than go on as if nothing was missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_closes_the_streams_of_a_room_that_missed_more_than_its_history() {
    let redis = Redis::start().await;
    let (_one, on_one) = node_keeping(&redis, Duration::from_millis(50), 2).await;
    let before = client_ids(&redis).await;
    let (two, _) = node_keeping(&redis, Duration::from_secs(1), 2).await;
    let two_ids: Vec<String> = client_ids(&redis)
        .await
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    let (_stream, sink) = open(&two, "/r/a?clientId=c&events=e").await;
    wait_subscribed(&on_one).await;
    send_all(&on_one, &["1"]).await;
    wait_until("message 1", || sink.data() == ["1"]).await;

    for id in &two_ids {
        let _ = redis.command(&["CLIENT", "KILL", "ID", id]).await;
    }
    wait_until("node two to notice", || !two.is_ready()).await;
    send_all(&on_one, &["2", "3", "4", "5"]).await;
    wait_until("node two to be back", || two.is_ready()).await;
    wait_until("the stream to be closed", || sink.is_closed()).await;
    assert_eq!(sink.close_reason(), Some(CloseReason::ServerClosed));
    assert_eq!(sink.data(), ["1"], "no partial catch-up");
}
