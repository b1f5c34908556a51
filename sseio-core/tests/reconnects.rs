//! Paced reconnects: every client is told to wait a different time before it reconnects, so a
//! restarted or draining server is not hit by all of them at once; and streams that reach their
//! maximum lifetime close, each at its own moment.

use std::future::poll_fn;
use std::pin::Pin;
use std::time::Duration;

use futures_core::Stream;
use http::StatusCode;
use sseio_core::{
    CloseReason, ConnectionStream, Context, HandlerOptions, Notification, Outcome, Server,
    ServerBuilder,
};
use sseio_test_support::fixtures::get;

fn server(builder: ServerBuilder) -> Server {
    let server = builder.path("/r/:room").build().unwrap();
    server
        .register_event_handler(
            "e",
            HandlerOptions::new(|ctx: &Context| ctx.param("room").unwrap_or_default().to_owned()),
        )
        .unwrap();
    server
}

async fn open(server: &Server, client_id: &str) -> Outcome {
    server
        .handle((&get(format!("/r/a?clientId={client_id}&events=e"))).into())
        .await
}

async fn first_chunk(stream: &mut ConnectionStream) -> String {
    let chunk = poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await;
    String::from_utf8(chunk.unwrap().unwrap().to_vec()).unwrap()
}

#[tokio::test]
async fn every_stream_opens_with_its_own_retry_within_the_reconnect_window() {
    let server =
        server(Server::builder().reconnect_delay(Duration::from_secs(2), Duration::from_secs(1)));
    let mut retries = Vec::new();
    for n in 0..20 {
        let Outcome::Stream(response) = open(&server, &n.to_string()).await else {
            panic!("the stream should open");
        };
        let opening = first_chunk(&mut response.into_body()).await;
        let retry = opening
            .strip_prefix("\nretry: ")
            .and_then(|rest| rest.strip_suffix("\n\n"))
            .unwrap_or_else(|| panic!("a lone line break, then retry: {opening:?}"));
        retries.push(retry.parse::<u64>().unwrap());
    }
    assert!(
        retries.iter().all(|ms| (2000..3000).contains(ms)),
        "{retries:?}"
    );
    retries.dedup();
    assert!(
        retries.len() > 1,
        "spread, not one value for all: {retries:?}"
    );
}

#[tokio::test]
async fn a_503_says_to_retry_within_the_reconnect_window() {
    let server = server(
        Server::builder()
            .max_connections(1)
            .reconnect_delay(Duration::from_secs(2), Duration::from_secs(1)),
    );
    let _open = open(&server, "first").await;
    let Outcome::Reply(refused) = open(&server, "second").await else {
        panic!("the second stream is over the limit");
    };
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let seconds: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((2..=3).contains(&seconds), "Retry-After: {seconds}");
}

#[tokio::test(start_paused = true)]
async fn a_stream_closes_in_the_last_fifth_of_its_lifetime() {
    let lifetime = Duration::from_secs(100);
    let server = server(
        Server::builder()
            .heartbeat_interval(Duration::ZERO)
            .max_stream_lifetime(lifetime),
    );
    let mut notifications = server.subscribe();
    let Outcome::Stream(response) = open(&server, "c").await else {
        panic!("the stream should open");
    };
    let mut stream = response.into_body();
    tokio::time::sleep(Duration::from_secs(79)).await;
    assert_eq!(
        server.connection_count(),
        1,
        "open for four fifths of its lifetime"
    );
    let closed = tokio::time::timeout(Duration::from_secs(23), async {
        loop {
            if let Some(Notification::ConnClose { reason, .. }) = notifications.recv().await {
                return reason;
            }
        }
    })
    .await
    .expect("closed by the end of its lifetime (checked once a second)");
    assert_eq!(closed, CloseReason::Expired);
    // The stream ends, so the client reconnects.
    assert!(
        poll_fn(|cx| Pin::new(&mut stream).poll_next(cx))
            .await
            .is_none()
    );
}
