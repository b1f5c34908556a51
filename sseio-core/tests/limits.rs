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

/// A stream for `client` from address `addr`, as principal `user` (the `user` header, which the
/// test server's `authorize` grants as is).
async fn open_as(server: &Server, client: &str, user: &str, addr: [u8; 4]) -> Outcome {
    let request = Request::get(format!("/s?clientId={client}&events=a"))
        .header("user", user)
        .body(())
        .unwrap();
    let head = sseio_core::RequestHead::from(&request).with_client_addr(addr.into());
    server.handle(head).await
}

fn status_of(outcome: &Outcome) -> StatusCode {
    match outcome {
        Outcome::Reply(response) => response.status(),
        Outcome::Stream(response) => response.status(),
        Outcome::NotOurs => panic!("on the SSE path"),
    }
}

fn capped(builder: ServerBuilder) -> Server {
    let server = builder
        .authorize(|ctx: Context| async move {
            let user = ctx.headers().get("user").and_then(|v| v.to_str().ok());
            Ok::<_, sseio_core::Refusal>(sseio_core::Grant::new().principal(user.unwrap_or("")))
        })
        .build()
        .unwrap();
    server
        .register_event_handler("a", HandlerOptions::new(by_query))
        .unwrap();
    server
}

/// One user may hold two streams: the third is `429` with a `Retry-After` (on which the official
/// client backs off), others are unaffected, a replacement of one's own `clientId` takes its
/// place, and a closed stream frees one.
#[tokio::test]
async fn streams_past_the_cap_per_principal_are_429() {
    let server = capped(builder().max_streams_per_principal(2));
    let first = open_as(&server, "a1", "ada", [10, 0, 0, 1]).await;
    let second = open_as(&server, "a2", "ada", [10, 0, 0, 2]).await;
    assert_eq!(status_of(&first), StatusCode::OK);
    assert_eq!(status_of(&second), StatusCode::OK);

    let third = open_as(&server, "a3", "ada", [10, 0, 0, 3]).await;
    let Outcome::Reply(refused) = third else {
        panic!("refused")
    };
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    let body = String::from_utf8(refused.body().to_vec()).unwrap();
    assert!(
        body.contains("too many streams open for this principal"),
        "{body}"
    );

    let other = open_as(&server, "b1", "bob", [10, 0, 0, 1]).await;
    assert_eq!(
        status_of(&other),
        StatusCode::OK,
        "another user is not capped"
    );
    let again = open_as(&server, "a2", "ada", [10, 0, 0, 2]).await;
    assert_eq!(
        status_of(&again),
        StatusCode::OK,
        "a replacement takes its place"
    );

    drop(first);
    let after_close = open_as(&server, "a3", "ada", [10, 0, 0, 3]).await;
    assert_eq!(
        status_of(&after_close),
        StatusCode::OK,
        "a closed stream frees a place"
    );
    drop((second, other, again, after_close));
}

/// One address may hold two streams, whoever opens them.
#[tokio::test]
async fn streams_past_the_cap_per_address_are_429() {
    let server = capped(builder().max_streams_per_address(2));
    let home = [192, 0, 2, 7];
    let first = open_as(&server, "c1", "ada", home).await;
    let second = open_as(&server, "c2", "bob", home).await;
    assert_eq!(status_of(&first), StatusCode::OK);
    assert_eq!(status_of(&second), StatusCode::OK);
    let (third, _, body) = match open_as(&server, "c3", "eve", home).await {
        Outcome::Reply(response) => (
            response.status(),
            (),
            String::from_utf8(response.body().to_vec()).unwrap(),
        ),
        other => panic!("refused, got {other:?}"),
    };
    assert_eq!(third, StatusCode::TOO_MANY_REQUESTS);
    assert!(body.contains("client address"), "{body}");
    let elsewhere = open_as(&server, "c4", "eve", [192, 0, 2, 8]).await;
    assert_eq!(status_of(&elsewhere), StatusCode::OK);
    drop(first);
    let after_close = open_as(&server, "c3", "eve", home).await;
    assert_eq!(status_of(&after_close), StatusCode::OK);
    drop((second, elsewhere, after_close));
}
