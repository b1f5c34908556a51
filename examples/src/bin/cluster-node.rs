//! One node of a multi-node SSE-IO cluster on Redis: run two (or more) on different ports with
//! the same Redis, put them behind any load balancer, and a message posted to either reaches the
//! room's clients on both.
//!
//! Run (a Redis on 6379, then two terminals):
//! ```text
//! redis-server --port 6379 --save ''
//! REDIS_URL=redis://127.0.0.1:6379/ PORT=3001 cargo run -p examples --bin cluster-node
//! REDIS_URL=redis://127.0.0.1:6379/ PORT=3002 cargo run -p examples --bin cluster-node
//! ```
//! Then a client on node 3001, a message posted to node 3002, and the room's presence:
//! ```text
//! curl -N 'http://127.0.0.1:3001/sseio?clientId=ann&events=chat&room=lobby'
//! curl -X POST 'http://127.0.0.1:3002/rooms/lobby/messages' -d 'hello from 3002'
//! curl 'http://127.0.0.1:3002/rooms/lobby/presence'
//! ```
//! Messages carry ids, and the history (last 100 per room) lives in Redis, so a client that
//! comes back to either node gets what it missed: stop the first `curl`, post twice more, then
//! resume on the other node with the last id it printed (or with the same `clientId` alone,
//! within a minute, as the official client does):
//! ```text
//! curl -N -H 'Last-Event-ID: <the last id: line>' \
//!   'http://127.0.0.1:3002/sseio?clientId=bob&events=chat&room=lobby'
//! ```
//! Stop Redis for a while: the streams stay open, posts answer `503` until the nodes have
//! reconnected, then everything flows again without any client reconnecting.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::json;
use sseio_hyper::{
    Context, EventHandler, HandlerOptions, History, Notification, SendError, Server,
};
use sseio_redis::RedisBroker;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let port: u16 = std::env::var("PORT").map_or(Ok(3001), |p| p.parse())?;

    // The broker connects now, so a wrong URL fails here rather than at the first send.
    let broker = RedisBroker::connect(url.as_str()).await?;
    println!("node {} on Redis {url}", broker.node_id());
    let server = Server::builder()
        .path("/sseio")
        .broker(broker)
        .history(History::new(100))
        .build()?;
    let chat = server.register_event_handler(
        "chat",
        HandlerOptions::new(|ctx: &Context| ctx.query("room").unwrap_or("lobby").to_owned()),
    )?;

    // Losing Redis (and nothing else) is reported here; the node reconnects by itself.
    let mut notifications = server.subscribe();
    tokio::spawn(async move {
        while let Some(notification) = notifications.recv().await {
            if let Notification::Broker(error) = notification {
                eprintln!("! {error}");
            }
        }
    });

    let app = Router::new()
        .route("/rooms/{room}/messages", post(post_message))
        .route("/rooms/{room}/presence", get(presence))
        .with_state(chat);
    let listener = sseio_hyper::bind(([127, 0, 0, 1], port).into())?;
    println!("SSE-IO on http://127.0.0.1:{port}/sseio?clientId=me&events=chat&room=lobby");
    sseio_hyper::serve(listener, server)
        .with_app(app)
        .with_graceful_shutdown(sseio_hyper::shutdown_signal())
        .await?;
    Ok(())
}

/// `POST /rooms/:room/messages`: the body goes to the room on every node.
async fn post_message(
    State(chat): State<EventHandler>,
    Path(room): Path<String>,
    body: String,
) -> (StatusCode, String) {
    match chat.send(&room, &body) {
        Ok(()) => (StatusCode::OK, "sent\n".into()),
        // Redis is down and the broker is reconnecting: tell the caller to retry later.
        Err(error @ SendError::Broker(_)) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n"))
        }
        Err(error) => (StatusCode::BAD_REQUEST, format!("{error}\n")),
    }
}

/// `GET /rooms/:room/presence`: who is in the room, across every node.
async fn presence(
    State(chat): State<EventHandler>,
    Path(room): Path<String>,
) -> (StatusCode, String) {
    match chat.presence(&room).await {
        Ok(presence) => (
            StatusCode::OK,
            json!({ "count": presence.count, "clientIds": presence.client_ids }).to_string(),
        ),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n")),
    }
}
