//! Regression: two rooms shared one Pub/Sub channel, and one emptying silenced the other.
//!
//! A room's channel was `<prefix>:room:<event>:<room>`, so event `a:b` with room `c` and event
//! `a` with room `b:c` were both `sseio:room:a:b:c`. A node serving both rooms subscribed that
//! channel once; when the second room emptied there, the node unsubscribed the channel, and the
//! first room's clients on that node silently stopped getting what other nodes sent to it. The
//! channel names are now length-prefixed as the history keys are
//! (`<prefix>:room:<length of event>:<event>:<room>`), so no two rooms share one.
//!
//! Against a real `redis-server` (Debian's, started here on a free port), with plain and with
//! sharded Pub/Sub.

mod support;

use std::time::Duration;

use sseio_core::{Context, EventHandler, HandlerOptions, Server};
use sseio_redis::RedisBroker;
use support::{Redis, WAIT, open, wait_until};
use tokio::time::Instant;

/// A node on `redis` with handlers `a:b` and `a`, rooms by path.
async fn node(redis: &Redis, sharded: bool) -> (Server, EventHandler, EventHandler) {
    let broker = RedisBroker::builder(redis.url())
        .sharded(sharded)
        .connect()
        .await
        .expect("the broker connects");
    let server = Server::builder()
        .path("/r/:room")
        .broker(broker)
        .build()
        .unwrap();
    let by_path =
        || HandlerOptions::new(|ctx: &Context| ctx.param("room").unwrap_or_default().to_owned());
    let ab = server.register_event_handler("a:b", by_path()).unwrap();
    let a = server.register_event_handler("a", by_path()).unwrap();
    (server, ab, a)
}

/// Waits until a presence query through `handler` (on the other node) counts `count` clients
/// in `room`: the node serving the room answers only through its subscription.
async fn wait_presence(handler: &EventHandler, room: &str, count: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let seen = handler.presence(room).await.map(|p| p.count);
        if seen.as_ref().is_ok_and(|&seen| seen == count) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "presence of {room} never counted {count} (last: {seen:?})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Node one serves room `c` of event `a:b` and room `b:c` of event `a`; the second empties.
/// What node two sends to the first still reaches its client on node one.
async fn a_room_emptying_leaves_the_room_with_the_same_joined_name_subscribed(sharded: bool) {
    let redis = if sharded {
        Redis::start_cluster().await
    } else {
        Redis::start().await
    };
    let (one, _, _) = node(&redis, sharded).await;
    let (_two, ab_on_two, a_on_two) = node(&redis, sharded).await;
    let (_stays, stays) = open(&one, "/r/c?clientId=stays&events=a:b").await;
    let (leaves_connection, leaves) = open(&one, "/r/b:c?clientId=leaves&events=a").await;
    wait_presence(&ab_on_two, "c", 1).await;
    wait_presence(&a_on_two, "b:c", 1).await;

    ab_on_two.send_confirmed("c", "1").await.unwrap();
    a_on_two.send_confirmed("b:c", "x").await.unwrap();
    wait_until("message 1 to room c of a:b", || stays.data() == ["1"]).await;
    wait_until("message x to room b:c of a", || leaves.data() == ["x"]).await;

    drop(leaves_connection);
    wait_presence(&a_on_two, "b:c", 0).await;
    ab_on_two.send_confirmed("c", "2").await.unwrap();
    wait_until(
        "message 2 to room c of a:b, after room b:c of a emptied",
        || stays.data() == ["1", "2"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_emptying_leaves_the_room_with_the_same_joined_name_subscribed_plain() {
    a_room_emptying_leaves_the_room_with_the_same_joined_name_subscribed(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_emptying_leaves_the_room_with_the_same_joined_name_subscribed_sharded() {
    a_room_emptying_leaves_the_room_with_the_same_joined_name_subscribed(true).await;
}
