//! Every limit of `ServerBuilder`, answered with its status and a JSON message, or a typed error.

use std::convert::Infallible;
use std::time::Duration;

use http::{Request, StatusCode};
use sseio_core::{
    ConnectionError, Context, HandlerOptions, Notification, Outcome, SendError, Server,
    ServerBuilder,
};

fn builder() -> ServerBuilder {
    Server::builder().path("/s")
}

fn by_query(ctx: &Context) -> String {
    ctx.query("room").unwrap_or("r").to_owned()
}

async fn status(server: &Server, uri: &str) -> (StatusCode, http::HeaderMap, String) {
    let request = Request::get(uri).body(()).unwrap();
    match server.handle((&request).into()).await {
        Outcome::Reply(response) => {
            let (parts, body) = response.into_parts();
            (
                parts.status,
                parts.headers,
                String::from_utf8(body.to_vec()).unwrap(),
            )
        }
        Outcome::Stream(response) => (response.status(), response.headers().clone(), String::new()),
        Outcome::NotOurs => panic!("{uri} is on the SSE path"),
    }
}

#[tokio::test]
async fn too_many_events_is_400() {
    let server = builder().max_events(2).build().unwrap();
    let (ok, ..) = status(&server, "/s?clientId=c&events=a&events=b&events=a").await;
    assert_eq!(ok, StatusCode::OK, "repeated names count once");
    let (bad, _, body) = status(&server, "/s?clientId=d&events=a&events=b&events=c").await;
    assert_eq!(bad, StatusCode::BAD_REQUEST);
    assert!(body.contains("too many events"), "{body}");
}

#[tokio::test]
async fn long_client_id_is_400() {
    let server = builder().max_client_id_bytes(8).build().unwrap();
    let (bad, _, body) = status(&server, "/s?clientId=123456789&events=a").await;
    assert_eq!(bad, StatusCode::BAD_REQUEST);
    assert!(body.contains("clientId"), "{body}");
    assert_eq!(
        status(&server, "/s?clientId=12345678&events=a").await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn long_room_id_is_400_naming_the_event() {
    let server = builder().max_room_id_bytes(4).build().unwrap();
    server
        .register_event_handler("e", HandlerOptions::new(by_query))
        .unwrap();
    let (bad, _, body) = status(&server, "/s?clientId=c&events=e&room=12345").await;
    assert_eq!(bad, StatusCode::BAD_REQUEST);
    assert!(body.contains("'e'"), "{body}");
    assert_eq!(server.connection_count(), 0);
}

#[tokio::test]
async fn connection_limit_is_503_with_retry_after_but_replacement_passes() {
    let server = builder().max_connections(1).build().unwrap();
    let request = Request::get("/s?clientId=first&events=a").body(()).unwrap();
    let Outcome::Stream(_first) = server.handle((&request).into()).await else {
        panic!("the first connection opens");
    };
    let (full, headers, body) = status(&server, "/s?clientId=second&events=a").await;
    assert_eq!(full, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key("retry-after"));
    assert!(body.contains("limit"), "{body}");
    // The same clientId reconnecting replaces its stream instead of counting twice.
    let (again, ..) = status(&server, "/s?clientId=first&events=a").await;
    assert_eq!(again, StatusCode::OK);
}

#[tokio::test]
async fn message_larger_than_the_limit_is_a_typed_error() {
    let server = builder().max_message_bytes(10).build().unwrap();
    let handler = server
        .register_event_handler("e", HandlerOptions::new(by_query))
        .unwrap();
    assert!(handler.send("r", "0123456789").is_ok());
    let Err(SendError::TooLarge { size, limit }) = handler.send("r", "0123456789a") else {
        panic!("too large");
    };
    assert_eq!((size, limit), (11, 10));
}

#[tokio::test(start_paused = true)]
async fn fetch_past_its_timeout_is_reported_and_held_messages_flow() {
    let server = builder()
        .fetch_timeout(Duration::from_secs(2))
        .heartbeat_interval(Duration::ZERO)
        .reconnect_delay(Duration::from_secs(1), Duration::ZERO)
        .build()
        .unwrap();
    let handler = server
        .register_event_handler(
            "e",
            HandlerOptions::new(by_query).fetch(|_ctx: Context| async {
                std::future::pending::<()>().await;
                Ok::<_, Infallible>("never")
            }),
        )
        .unwrap();
    let mut notifications = server.subscribe();
    let request = Request::get("/s?clientId=c&events=e").body(()).unwrap();
    let Outcome::Stream(response) = server.handle((&request).into()).await else {
        panic!("opens");
    };
    let mut stream = response.into_body();
    handler.send("r", "held").unwrap();
    let error = loop {
        if let Some(Notification::Error(error)) = notifications.recv().await {
            break error;
        }
    };
    assert!(
        matches!(&*error, ConnectionError::FetchTimedOut { timeout, .. } if *timeout == Duration::from_secs(2))
    );
    // Frames queued together come out coalesced in one chunk; read until both are in.
    let expected: &[u8] = b"\nretry: 1000\n\nevent: e\ndata: held\n\n";
    let mut received = Vec::new();
    while received.len() < expected.len() {
        let chunk = std::future::poll_fn(|cx| {
            futures_core::Stream::poll_next(std::pin::Pin::new(&mut stream), cx)
        })
        .await
        .unwrap()
        .unwrap();
        received.extend_from_slice(&chunk);
    }
    assert_eq!(received, expected);
}

#[tokio::test]
async fn messages_held_behind_a_fetch_count_against_the_buffer() {
    let server = builder()
        .max_buffer_bytes(80)
        .reconnect_delay(Duration::from_secs(1), Duration::ZERO)
        .build()
        .unwrap();
    let handler = server
        .register_event_handler(
            "e",
            HandlerOptions::new(by_query).fetch(|_ctx: Context| async {
                std::future::pending::<()>().await;
                Ok::<_, Infallible>("never")
            }),
        )
        .unwrap();
    let mut notifications = server.subscribe();
    let request = Request::get("/s?clientId=c&events=e").body(()).unwrap();
    let Outcome::Stream(_stream) = server.handle((&request).into()).await else {
        panic!("opens");
    };
    // "event: e\ndata: 0123456789\n\n" is 29 bytes; the opening ("\nretry: 1000\n\n") is 14.
    handler.send("r", "0123456789").unwrap();
    handler.send("r", "0123456789").unwrap();
    assert_eq!(server.connection_count(), 1, "72 bytes fit in 80");
    handler.send("r", "0123456789").unwrap();
    assert_eq!(server.connection_count(), 0, "101 bytes do not");
    let closed = std::iter::from_fn(|| notifications.try_recv()).any(|n| {
        matches!(
            n,
            Notification::ConnClose {
                reason: sseio_core::CloseReason::SlowConsumer,
                ..
            }
        )
    });
    assert!(closed);
}
