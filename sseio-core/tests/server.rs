//! The server's behaviour through its public API: connections on recording sinks (the seam a
//! custom transport uses) and on the production stream.

use std::convert::Infallible;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use http::{Method, Request, StatusCode, Version};
use sseio_core::{
    CloseReason, ConnectRejection, ConnectionError, ConnectionStream, Context, EventHandler,
    HandlerOptions, Notification, Notifications, Outcome, RegisterError, Server, SseSink,
};
use sseio_test_support::RecordingSink;
use sseio_test_support::fixtures::{PATTERN, by_guid, connect, get};
use tokio::sync::oneshot;

fn server() -> Server {
    Server::new(PATTERN).unwrap()
}

/// A server with one handler, for event `e`.
fn server_with(options: HandlerOptions) -> (Server, EventHandler) {
    let server = server();
    let handler = server.register_event_handler("e", options).unwrap();
    (server, handler)
}

async fn open_stream(server: &Server, uri: &str) -> ConnectionStream {
    match server.handle((&get(uri)).into()).await {
        Outcome::Stream(response) => response.into_body(),
        other => panic!("expected a stream, got {other:?}"),
    }
}

async fn next_chunk(stream: &mut ConnectionStream) -> Option<Bytes> {
    poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx))
        .await
        .map(|chunk| chunk.expect("streams never fail"))
}

/// The opening of a stream: a lone line break, then the `retry:` it is to wait before it
/// reconnects (within the default 1–4 s window).
fn assert_opening(chunk: Option<Bytes>) {
    let chunk = chunk.expect("the stream opens");
    let retry = std::str::from_utf8(&chunk)
        .ok()
        .and_then(|text| text.strip_prefix("\nretry: "))
        .and_then(|rest| rest.strip_suffix("\n\n"))
        .and_then(|ms| ms.parse::<u64>().ok());
    assert!(
        retry.is_some_and(|ms| (1000..4000).contains(&ms)),
        "opening {chunk:?}"
    );
}

fn drain(notifications: &mut Notifications) -> Vec<Notification> {
    std::iter::from_fn(|| notifications.try_recv()).collect()
}

fn closes_of(notifications: &[Notification], id: &str) -> Vec<CloseReason> {
    notifications
        .iter()
        .filter_map(|n| match n {
            Notification::ConnClose {
                client_id, reason, ..
            } if &**client_id == id => Some(*reason),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn conn_create_comes_after_the_connection_joined_its_rooms() {
    let (server, handler) = server_with(HandlerOptions::new(by_guid));
    let mut notifications = server.subscribe();
    let (_connection, sink) = connect(&server, "/files/g/pull?clientId=c&events=e").await;
    let seen = drain(&mut notifications);
    assert!(
        matches!(&seen[0], Notification::RoomCreate { event, room } if &**event == "e" && &**room == "g")
    );
    assert!(matches!(&seen[1], Notification::ConnCreate { client_id, .. } if &**client_id == "c"));
    // A send made as soon as conn:create is seen reaches the connection.
    handler.send("g", "hi").unwrap();
    assert_eq!(sink.text(), "event: e\ndata: hi\n\n");
}

#[tokio::test]
async fn rooms_are_per_handler() {
    let server = server();
    let a = server
        .register_event_handler("a", HandlerOptions::new(by_guid))
        .unwrap();
    let b = server
        .register_event_handler("b", HandlerOptions::new(by_guid))
        .unwrap();
    let (_on_a, sink_a) = connect(&server, "/files/42/pull?clientId=1&events=a").await;
    let (_on_b, sink_b) = connect(&server, "/files/42/pull?clientId=2&events=b").await;
    a.send("42", "for a").unwrap();
    b.send("42", &serde_json::json!({"for": "b"})).unwrap();
    assert_eq!(sink_a.text(), "event: a\ndata: for a\n\n");
    assert_eq!(sink_b.text(), "event: b\ndata: {\"for\":\"b\"}\n\n");
}

#[tokio::test]
async fn unknown_events_are_ignored_and_repeated_ones_join_once() {
    let (server, handler) = server_with(HandlerOptions::new(by_guid));
    let (_connection, sink) = connect(
        &server,
        "/files/g/pull?clientId=c&events=nope&events=e&events=e",
    )
    .await;
    assert_eq!(handler.room_size("g"), 1);
    handler.send("g", "once").unwrap();
    assert_eq!(sink.text(), "event: e\ndata: once\n\n");
}

#[tokio::test]
async fn query_and_headers_reach_get_room_id() {
    let server = server();
    let handler = server
        .register_event_handler(
            "e",
            HandlerOptions::new(|ctx: &Context| {
                let tenant = ctx.headers()["x-tenant"].to_str().unwrap().to_owned();
                let rooms: Vec<&str> = ctx.query_all("room").collect();
                format!("{tenant}/{}", rooms.join("+"))
            }),
        )
        .unwrap();
    let request = Request::get("/files/g/pull?clientId=c&events=e&room=x&room=y%20z")
        .header("x-tenant", "acme")
        .body(())
        .unwrap();
    let _connection = server
        .connect((&request).into(), Arc::new(RecordingSink::default()))
        .await
        .unwrap();
    assert_eq!(handler.rooms(), vec!["acme/x+y z".to_owned()]);
}

#[tokio::test]
async fn replacement_closes_the_old_stream_and_keeps_the_new_one() {
    let (server, handler) = server_with(HandlerOptions::new(by_guid));
    let mut notifications = server.subscribe();
    let (old, old_sink) = connect(&server, "/files/g/pull?clientId=same&events=e").await;
    let (_new, new_sink) = connect(&server, "/files/g/pull?clientId=same&events=e").await;
    assert!(old_sink.is_closed());
    // The old connection's own close (its response dropped) must not remove the new one.
    drop(old);
    handler.send("g", "after").unwrap();
    assert_eq!(new_sink.text(), "event: e\ndata: after\n\n");
    assert_eq!(old_sink.text(), "");
    let seen = drain(&mut notifications);
    assert_eq!(closes_of(&seen, "same"), [CloseReason::Replaced]);
    // The shared room never emptied in between.
    assert!(
        !seen
            .iter()
            .any(|n| matches!(n, Notification::RoomEmpty { .. }))
    );
    assert_eq!(server.connection_count(), 1);
}

#[tokio::test]
async fn conn_close_fires_once_when_both_sides_close() {
    let (server, _handler) = server_with(HandlerOptions::new(by_guid));
    let mut notifications = server.subscribe();
    let mut stream = open_stream(&server, "/files/g/pull?clientId=c&events=e").await;
    assert_opening(next_chunk(&mut stream).await);
    server.close_all();
    assert_eq!(next_chunk(&mut stream).await, None);
    drop(stream);
    let seen = drain(&mut notifications);
    assert_eq!(closes_of(&seen, "c"), [CloseReason::ServerClosed]);
    assert!(matches!(seen.last(), Some(Notification::ConnClose { .. })));
    assert!(
        matches!(&seen[seen.len() - 2], Notification::RoomEmpty { room, .. } if &**room == "g")
    );
}

#[tokio::test]
async fn a_client_that_leaves_is_closed_without_an_error() {
    let (server, _handler) = server_with(HandlerOptions::new(by_guid));
    let mut notifications = server.subscribe();
    let stream = open_stream(&server, "/files/g/pull?clientId=c&events=e").await;
    drop(stream);
    let seen = drain(&mut notifications);
    assert_eq!(closes_of(&seen, "c"), [CloseReason::ClientGone]);
    assert!(!seen.iter().any(|n| matches!(n, Notification::Error(_))));
    assert_eq!(server.connection_count(), 0);
}

#[tokio::test]
async fn fetch_result_comes_first_and_held_messages_follow_in_order() {
    let server = server();
    let (release, released) = oneshot::channel::<()>();
    let released = Arc::new(Mutex::new(Some(released)));
    let handler = server
        .register_event_handler(
            "e",
            HandlerOptions::new(by_guid).fetch(move |_ctx: Context| {
                let released = released.lock().unwrap().take();
                async move {
                    if let Some(released) = released {
                        released.await.ok();
                    }
                    Ok::<_, Infallible>(["a", "b"])
                }
            }),
        )
        .unwrap();
    let (_connection, sink) = connect(&server, "/files/g/pull?clientId=c&events=e").await;
    handler.send("g", "one").unwrap();
    handler.send("g", "two").unwrap();
    assert_eq!(sink.text(), "", "messages wait for the fetch");
    release.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while sink.text().is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the fetch completes");
    handler.send("g", "three").unwrap();
    assert_eq!(
        sink.text(),
        "event: e\ndata: [\"a\",\"b\"]\n\nevent: e\ndata: one\n\nevent: e\ndata: two\n\nevent: e\ndata: three\n\n"
    );
}

#[tokio::test]
async fn failed_fetch_is_reported_and_held_messages_still_arrive() {
    let (server, handler) =
        server_with(HandlerOptions::new(by_guid).fetch(|_ctx: Context| async {
            tokio::task::yield_now().await;
            Err::<(), _>("foo went wrong")
        }));
    let mut notifications = server.subscribe();
    let (_connection, sink) = connect(&server, "/files/g/pull?clientId=c&events=e").await;
    handler.send("g", "held").unwrap();
    let error = wait_for(
        &mut notifications,
        |n| matches!(n, Notification::Error(_)),
        Duration::from_secs(5),
    )
    .await;
    let Notification::Error(error) = error else {
        unreachable!()
    };
    assert!(matches!(&*error, ConnectionError::Fetch { .. }));
    assert!(error.to_string().contains("foo"));
    assert_eq!(sink.text(), "event: e\ndata: held\n\n");
}

#[tokio::test]
async fn panicking_fetch_is_contained() {
    let (server, handler) =
        server_with(HandlerOptions::new(by_guid).fetch(|_ctx: Context| async {
            if true {
                panic!("fetch blew up");
            }
            Ok::<(), Infallible>(())
        }));
    let mut notifications = server.subscribe();
    let (_connection, sink) = connect(&server, "/files/g/pull?clientId=c&events=e").await;
    handler.send("g", "held").unwrap();
    let error = wait_for(
        &mut notifications,
        |n| matches!(n, Notification::Error(_)),
        Duration::from_secs(5),
    )
    .await;
    assert!(
        matches!(error, Notification::Error(e) if matches!(&*e, ConnectionError::Panicked { callback: "fetch", .. }))
    );
    assert_eq!(sink.text(), "event: e\ndata: held\n\n");
}

#[tokio::test]
async fn panicking_get_room_id_refuses_the_connection_and_the_server_carries_on() {
    let server = server();
    server
        .register_event_handler(
            "bad",
            HandlerOptions::new(|_ctx: &Context| -> String { panic!("no room for you") }),
        )
        .unwrap();
    let good = server
        .register_event_handler("good", HandlerOptions::new(by_guid))
        .unwrap();
    let mut notifications = server.subscribe();
    let Outcome::Reply(response) = server
        .handle((&get("/files/g/pull?clientId=c&events=good&events=bad")).into())
        .await
    else {
        panic!("expected a rejection");
    };
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let seen = drain(&mut notifications);
    assert!(
        matches!(&seen[..], [Notification::Error(e)] if matches!(&**e, ConnectionError::Panicked { callback: "get_room_id", .. }))
    );
    assert_eq!(good.room_size("g"), 0, "nothing joined");
    let (_connection, sink) = connect(&server, "/files/g/pull?clientId=d&events=good").await;
    good.send("g", "still serving").unwrap();
    assert_eq!(sink.text(), "event: good\ndata: still serving\n\n");
}

#[tokio::test]
async fn slow_consumer_is_closed_and_the_others_get_every_message() {
    let server = Server::builder()
        .path("/files/:guid/pull")
        .max_buffer_bytes(1024)
        .build()
        .unwrap();
    let handler = server
        .register_event_handler("e", HandlerOptions::new(by_guid))
        .unwrap();
    let mut notifications = server.subscribe();
    // This one never reads its stream.
    let _stuck = open_stream(&server, "/files/g/pull?clientId=stuck&events=e").await;
    let (_reader, sink) = connect(&server, "/files/g/pull?clientId=reader&events=e").await;
    let payload = "x".repeat(100);
    for _ in 0..50 {
        handler.send("g", payload.as_str()).unwrap();
    }
    assert_eq!(sink.text().matches("data: ").count(), 50);
    let seen = drain(&mut notifications);
    assert_eq!(closes_of(&seen, "stuck"), [CloseReason::SlowConsumer]);
    let errors: Vec<_> = seen
        .iter()
        .filter(|n| matches!(n, Notification::Error(_)))
        .collect();
    assert!(
        matches!(&errors[..], [Notification::Error(e)] if matches!(&**e, ConnectionError::SlowConsumer { client_id, .. } if &**client_id == "stuck"))
    );
    assert_eq!(handler.room_size("g"), 1);
}

/// When each of `streams` gets its first `beats` heartbeats after `started`, read by a task
/// per stream so that each is seen when it comes.
async fn heartbeat_times(
    streams: Vec<ConnectionStream>,
    beats: usize,
    started: tokio::time::Instant,
) -> Vec<Vec<Duration>> {
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let mut times = Vec::new();
                while times.len() < beats {
                    assert_eq!(next_chunk(&mut stream).await.unwrap(), ":\n\n");
                    times.push(started.elapsed());
                }
                times
            })
        })
        .collect();
    let mut all = Vec::new();
    for reader in readers {
        all.push(reader.await.unwrap());
    }
    all
}

/// Every stream gets a heartbeat every interval (3 s by default), the first within the first
/// interval.
#[tokio::test(start_paused = true)]
async fn heartbeats_come_every_interval() {
    let (server, _handler) = server_with(HandlerOptions::new(by_guid));
    let mut streams = Vec::new();
    for i in 0..8 {
        let mut stream =
            open_stream(&server, &format!("/files/g/pull?clientId={i}&events=e")).await;
        assert_opening(next_chunk(&mut stream).await);
        streams.push(stream);
    }
    let started = tokio::time::Instant::now();
    for times in heartbeat_times(streams, 3, started).await {
        assert!(times[0] <= Duration::from_secs(3), "{times:?}");
        assert_eq!(times[1] - times[0], Duration::from_secs(3), "{times:?}");
        assert_eq!(times[2] - times[1], Duration::from_secs(3), "{times:?}");
    }
}

/// Regression: every stream's heartbeat was written in the same instant, a burst of thousands
/// of writes every interval that held up every connect meanwhile (connect latency p99 at two to
/// three times rawsse's). The heartbeats of many streams are spread over the interval.
#[tokio::test(start_paused = true)]
async fn heartbeats_are_spread_over_the_interval() {
    let (server, _handler) = server_with(HandlerOptions::new(by_guid));
    let mut streams = Vec::new();
    for i in 0..640 {
        let mut stream =
            open_stream(&server, &format!("/files/g/pull?clientId={i}&events=e")).await;
        assert_opening(next_chunk(&mut stream).await);
        streams.push(stream);
    }
    let started = tokio::time::Instant::now();
    let firsts: Vec<Duration> = heartbeat_times(streams, 1, started)
        .await
        .into_iter()
        .map(|times| times[0])
        .collect();
    // The first heartbeats fall in every tenth of the interval, none with more than a fifth.
    for tenth in 0..10u32 {
        let window = Duration::from_millis(300) * tenth..Duration::from_millis(300) * (tenth + 1);
        let n = firsts.iter().filter(|t| window.contains(t)).count();
        assert!(
            (1..=128).contains(&n),
            "{n} of 640 first heartbeats in {window:?}"
        );
    }
}

#[tokio::test]
async fn request_outcomes_follow_the_protocol() {
    let (server, _handler) = server_with(HandlerOptions::new(by_guid));
    let mut notifications = server.subscribe();
    let outcome = |method: Method, uri: &str, version: Version| {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .version(version)
            .body(())
            .unwrap();
        let server = server.clone();
        async move { server.handle((&request).into()).await }
    };
    let ok = "/files/g/pull?clientId=c&events=e";

    assert!(matches!(
        outcome(Method::GET, "/other", Version::HTTP_11).await,
        Outcome::NotOurs
    ));
    assert!(matches!(
        outcome(Method::OPTIONS, ok, Version::HTTP_11).await,
        Outcome::NotOurs
    ));

    let Outcome::Reply(head) = outcome(Method::HEAD, ok, Version::HTTP_11).await else {
        panic!("HEAD gets a reply");
    };
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-type"], "text/event-stream");
    assert!(head.body().is_empty());

    let Outcome::Reply(post) = outcome(Method::POST, ok, Version::HTTP_11).await else {
        panic!("POST gets a reply");
    };
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);

    for bad in [
        "/files/g/pull?events=e",
        "/files/g/pull?clientId=&events=e",
        "/files/g/pull?clientId=c",
        "/files/g/pull?clientId=c&events=",
        "/files/g/pull?clientId=%zz&events=e",
        "/files/%FF/pull?clientId=c&events=e",
    ] {
        let Outcome::Reply(response) = outcome(Method::GET, bad, Version::HTTP_11).await else {
            panic!("{bad} is rejected");
        };
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(response.headers()["content-type"], "application/json");
    }

    let Outcome::Stream(h1) = outcome(Method::GET, ok, Version::HTTP_11).await else {
        panic!("GET opens a stream");
    };
    assert_eq!(h1.headers()["cache-control"], "no-cache, no-transform");
    assert_eq!(h1.headers()["x-accel-buffering"], "no");
    assert_eq!(h1.headers()["connection"], "keep-alive");
    let Outcome::Stream(h2) = outcome(Method::GET, ok, Version::HTTP_2).await else {
        panic!("GET opens a stream");
    };
    assert!(!h2.headers().contains_key("connection"));
    drop((h1, h2));

    // Only the two real streams were announced.
    let creates = drain(&mut notifications)
        .into_iter()
        .filter(|n| matches!(n, Notification::ConnCreate { .. }))
        .count();
    assert_eq!(creates, 2);
}

#[tokio::test]
async fn shutdown_refuses_new_streams_and_ends_open_ones() {
    let (server, _handler) = server_with(HandlerOptions::new(by_guid));
    let mut stream = open_stream(&server, "/files/g/pull?clientId=c&events=e").await;
    assert_opening(next_chunk(&mut stream).await);
    server.shutdown(Duration::ZERO).await;
    let last = next_chunk(&mut stream).await.expect("a last field");
    assert!(last.starts_with(b"retry: "), "{last:?}");
    assert_eq!(next_chunk(&mut stream).await, None);
    let Outcome::Reply(response) = server
        .handle((&get("/files/g/pull?clientId=d&events=e")).into())
        .await
    else {
        panic!("refused");
    };
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
}

#[test]
fn event_names_are_validated_at_registration() {
    let server = server();
    let invalid = server.register_event_handler("a\nb", HandlerOptions::new(by_guid));
    assert!(matches!(
        invalid,
        Err(RegisterError::InvalidEventName { .. })
    ));
    server
        .register_event_handler("a", HandlerOptions::new(by_guid))
        .unwrap();
    let twice = server.register_event_handler("a", HandlerOptions::new(by_guid));
    assert!(matches!(
        twice,
        Err(RegisterError::AlreadyRegistered { .. })
    ));
}

#[test]
fn bad_path_patterns_are_a_build_error() {
    assert!(Server::new("no-slash").is_err());
    assert!(Server::new("/a/:x/:x").is_err());
    assert_eq!(Server::builder().build().unwrap().path(), "/sseio");
}

#[test]
fn rejections_map_to_json_responses() {
    let response = ConnectRejection::MissingEvents.into_response();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
    assert!(body["message"].as_str().unwrap().contains("events"));
}

/// Each stream a drain closes tells its `EventSource` to come back only once the drain is over
/// (when the server no longer answers `503`, which an `EventSource` treats as final), within the
/// reconnect window after it.
#[tokio::test(start_paused = true)]
async fn a_drained_stream_is_told_to_reconnect_after_the_drain() {
    let (server, _handler) = server_with(HandlerOptions::new(by_guid));
    let mut streams = Vec::new();
    for i in 0..20 {
        let mut stream =
            open_stream(&server, &format!("/files/g/pull?clientId={i}&events=e")).await;
        assert_opening(next_chunk(&mut stream).await);
        streams.push(stream);
    }
    let grace = Duration::from_secs(10);
    let started = tokio::time::Instant::now();
    let drain_task = tokio::spawn({
        let server = server.clone();
        async move { server.shutdown(grace).await }
    });
    // Each stream read by a task of its own, so each close is seen when it happens.
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                // Heartbeats go on meanwhile (the clock jumps ahead while every task waits).
                let last = loop {
                    match next_chunk(&mut stream).await {
                        Some(heartbeat) if &heartbeat[..] == b":\n\n" => continue,
                        chunk => break chunk.expect("a last field"),
                    }
                };
                let closed_at = started.elapsed();
                assert_eq!(next_chunk(&mut stream).await, None, "then the stream ends");
                (closed_at, last)
            })
        })
        .collect();
    for reader in readers {
        let (closed_at, last) = reader.await.unwrap();
        let retry = std::str::from_utf8(&last)
            .ok()
            .and_then(|text| text.strip_prefix("retry: "))
            .and_then(|rest| rest.strip_suffix("\n\n"))
            .and_then(|ms| ms.parse::<u64>().ok())
            .map(Duration::from_millis)
            .unwrap_or_else(|| panic!("a retry: field, got {last:?}"));
        let back_at = closed_at + retry;
        assert!(
            back_at >= grace + Duration::from_secs(1) - Duration::from_millis(20),
            "closed at {closed_at:?}, told to wait {retry:?}: back before the drain is over"
        );
        assert!(
            back_at <= grace + Duration::from_secs(4) + Duration::from_millis(20),
            "closed at {closed_at:?}, told to wait {retry:?}: past the reconnect window"
        );
    }
    drain_task.await.unwrap();
}

/// Waits for the first notification matching `wanted`, up to `timeout`.
async fn wait_for(
    notifications: &mut Notifications,
    wanted: impl Fn(&Notification) -> bool,
    timeout: Duration,
) -> Notification {
    tokio::time::timeout(timeout, async {
        loop {
            let notification = notifications.recv().await.expect("server alive");
            if wanted(&notification) {
                return notification;
            }
        }
    })
    .await
    .expect("the notification is raised in time")
}

#[tokio::test(start_paused = true)]
async fn shutdown_spreads_the_closes_over_the_grace_period() {
    let (server, _handler) = server_with(HandlerOptions::new(by_guid));
    let mut notifications = server.subscribe();
    let mut streams = Vec::new();
    for i in 0..100 {
        streams.push(open_stream(&server, &format!("/files/g/pull?clientId={i}&events=e")).await);
    }
    drain(&mut notifications);
    let started = tokio::time::Instant::now();
    let drain_task = tokio::spawn({
        let server = server.clone();
        async move { server.shutdown(Duration::from_secs(1)).await }
    });
    let mut closed_at = Vec::new();
    while closed_at.len() < 100 {
        if let Some(Notification::ConnClose { reason, .. }) = notifications.recv().await {
            assert_eq!(reason, CloseReason::ServerClosed);
            closed_at.push(started.elapsed());
        }
    }
    drain_task.await.unwrap();
    let (first, last) = (closed_at[0], closed_at[99]);
    assert!(
        first < Duration::from_millis(50),
        "the first batch goes at once: {first:?}"
    );
    assert!(
        last >= Duration::from_millis(800),
        "spread over the grace period: {last:?}"
    );
    assert!(
        last <= Duration::from_secs(1),
        "done within the grace period: {last:?}"
    );
    assert_eq!(server.connection_count(), 0);
    // Exactly one conn:close per stream, and none after.
    assert!(drain(&mut notifications).is_empty());
}
