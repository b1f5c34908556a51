//! A server behind a real nginx, with each configuration of `docs/nginx/` exactly as users deploy
//! it (`conformance_tests::nginx`): events and heartbeats pass at once, nginx's keep-alive pool
//! serves the next requests, and a drain through the proxy ends.

use std::time::{Duration, Instant};

use conformance_tests::Harness;
use conformance_tests::control;
use conformance_tests::http1::Request;
use conformance_tests::nginx::{Nginx, NginxConfig};
use conformance_tests::sse::{SseItem, SseStream};

use crate::cases::registry::{CaseFuture, Need};
use crate::cases::*;

/// The cases behind nginx, each with the configurations it runs with (a trial per server and
/// configuration, named `<server>::<configuration>::<case>`) and what it needs.
macro_rules! proxy_cases {
    ($($case:ident on [$($config:ident),+ $(,)?] $(needs [$($need:ident),+ $(,)?])?),+ $(,)?) => {
        /// Every case behind nginx, with the configurations it runs with.
        pub const CASES: &[ProxyCase] = &[$(
            ProxyCase {
                name: stringify!($case),
                configs: &[$(NginxConfig::$config),+],
                needs: &[$($(Need::$need),+)?],
                run: {
                    fn run(h: &Harness, config: NginxConfig) -> CaseFuture<'_> {
                        Box::pin($case(h, config))
                    }
                    run
                },
            }
        ),+];
    };
}

proxy_cases! {
    message_arrives_within_200ms on [Minimal, Sse],
    heartbeats_pass on [Minimal, Sse],
    pooled_connection_serves_the_next_requests on [Sse] needs [OwnProcess],
    drain_ends_through_the_proxy on [Minimal, Sse] needs [Settings, Signal],
}

/// One case behind nginx: an entry of [`CASES`].
#[derive(Debug)]
pub struct ProxyCase {
    /// The function's name, which names the test: `<server>::<configuration>::<name>`.
    pub name: &'static str,
    /// The configurations it runs with.
    pub configs: &'static [NginxConfig],
    /// What it needs beyond the harness contract's HTTP endpoints (see `registry::Need`).
    pub needs: &'static [Need],
    /// Runs the case against a harness, behind nginx with a configuration.
    pub run: for<'a> fn(&'a Harness, NginxConfig) -> CaseFuture<'a>,
}

/// How long a message may take from its send to its arrival through nginx.
const LATENCY: Duration = Duration::from_millis(200);
/// The messages whose latency is measured on one stream.
const MESSAGES: usize = 3;
/// How late a heartbeat may pass through nginx, beyond the heartbeat interval.
const HEARTBEAT_SLACK: Duration = Duration::from_millis(1500);
/// Comment lines this close to the last counted heartbeat belong to the same heartbeat.
const SAME_HEARTBEAT: Duration = Duration::from_secs(1);
/// The grace period of the drain cases (`SSEIO_SHUTDOWN_GRACE_MS`).
const GRACE: Duration = Duration::from_millis(1000);
/// How long after its grace period a draining harness may take to exit.
const EXIT_MARGIN: Duration = Duration::from_secs(3);

/// A stream opened through nginx receives each message within [`LATENCY`] of its send (measured
/// from just before the `POST /_control/send` to the harness until the event is parsed), with
/// the event name and payload it was sent with. With `minimal.conf` nginx buffers responses, so
/// this holds only because sseio's `X-Accel-Buffering: no` turns that off for the stream.
pub async fn message_arrives_within_200ms(h: &Harness, config: NginxConfig) {
    let nginx = Nginx::start(config, h.authority()).await;
    let (guid, client) = (new_id(), new_id());
    let mut stream = open_via(&nginx, &sse_target(&guid, &client, &["normal-event"])).await;
    wait_conn_create(h, &client).await;
    let mut latencies = Vec::with_capacity(MESSAGES);
    for i in 0..MESSAGES {
        let payload = format!("through {} #{i}", config.name());
        let sent = Instant::now();
        send(h, "normal-event", &guid, &payload).await;
        let event = next_event(&mut stream, &format!("message #{i} through nginx")).await;
        latencies.push(sent.elapsed());
        assert_eq!(
            (event.event.as_str(), event.data.as_str()),
            ("normal-event", payload.as_str()),
            "message #{i} through nginx"
        );
    }
    note(&format!(
        "{} {}: send-to-arrival through nginx {latencies:.1?}",
        h.adapter(),
        config.name()
    ));
    assert!(
        latencies.iter().all(|latency| *latency < LATENCY),
        "every message arrives through nginx within {LATENCY:?} of its send: {latencies:?}"
    );
    nginx.assert_no_errors();
}

/// An idle stream opened through nginx gets its heartbeats (comment lines) as the server writes
/// them: the first within the heartbeat interval plus [`HEARTBEAT_SLACK`] of the opening, the
/// next within as long of the first, and no event. A proxy that buffered the stream would hold
/// such small frames back.
pub async fn heartbeats_pass(h: &Harness, config: NginxConfig) {
    let nginx = Nginx::start(config, h.authority()).await;
    let mut stream = open_via(&nginx, &sse_target(&new_id(), &new_id(), &["normal-event"])).await;
    let limit = sseio_hyper::DEFAULT_HEARTBEAT_INTERVAL + HEARTBEAT_SLACK;
    let opened = tokio::time::Instant::now();
    let mut heartbeats: Vec<tokio::time::Instant> = Vec::new();
    while heartbeats.len() < 2 {
        let since = heartbeats.last().copied().unwrap_or(opened);
        match tokio::time::timeout_at(since + limit, stream.next_item()).await {
            Err(_) => panic!(
                "heartbeat #{} did not pass through nginx within {limit:?} of the {}; raw {:?}",
                heartbeats.len() + 1,
                if heartbeats.is_empty() {
                    "opening"
                } else {
                    "previous one"
                },
                String::from_utf8_lossy(stream.raw())
            ),
            Ok(Ok(Some(SseItem::Comment(_)))) => {
                let now = tokio::time::Instant::now();
                if heartbeats
                    .last()
                    .is_none_or(|last| now - *last > SAME_HEARTBEAT)
                {
                    heartbeats.push(now);
                }
            }
            Ok(Ok(Some(SseItem::Event(event)))) => {
                panic!("an idle stream should carry no event, got {event:?}")
            }
            Ok(Ok(None)) => panic!("the stream through nginx ended"),
            Ok(Err(e)) => panic!("the stream through nginx failed: {e}"),
        }
    }
    note(&format!(
        "{} {}: heartbeats through nginx at {:.2?} after the opening",
        h.adapter(),
        config.name(),
        heartbeats.iter().map(|t| *t - opened).collect::<Vec<_>>()
    ));
    nginx.assert_no_errors();
}

/// nginx puts the connection of a stream that the server ended into its keep-alive pool and
/// sends its next requests on it; the server serves each of them there: a second stream, then
/// requests that are not streams (`POST /_control/send`, `GET /hello`), then a third stream. That
/// it is the same connection throughout is read from the server's side of it (the peer's port,
/// in `/proc/net/tcp`); nginx logs no error.
///
/// For the standalone server this is its lean path reading a next request after a stream it
/// served, and handing a connection that it served lean to hyper when a request is not a stream.
pub async fn pooled_connection_serves_the_next_requests(h: &Harness, config: NginxConfig) {
    let nginx = Nginx::start(config, h.authority()).await;
    let room = new_id();

    let first = new_id();
    let mut stream = open_via(&nginx, &sse_target(&room, &first, &["normal-event"])).await;
    wait_conn_create(h, &first).await;
    let pooled = wait_peers(h, "the first stream's connection", |peers| peers.len() == 1).await[0];
    end_by_server(h, &first, &mut stream).await;
    wait_peers(
        h,
        "the ended stream's connection, idle in the pool",
        |peers| peers == [pooled],
    )
    .await;

    let second = new_id();
    let mut stream = open_via(&nginx, &sse_target(&room, &second, &["normal-event"])).await;
    wait_conn_create(h, &second).await;
    wait_peers(h, "the second stream, on the pooled connection", |peers| {
        peers == [pooled]
    })
    .await;
    send(h, "normal-event", &room, "second").await;
    expect_events(
        &mut stream,
        "the second stream",
        &[("normal-event", "second")],
    )
    .await;
    end_by_server(h, &second, &mut stream).await;

    let send_via = Request::new(
        "POST",
        format!("/_control/send?event=normal-event&room={}", new_id()),
    )
    .header("Content-Type", "text/plain")
    .header("Connection", "close")
    .body("not a stream");
    let (status, body) = exchange(&nginx, send_via).await;
    assert_eq!(status, 200, "POST /_control/send through nginx: {body}");
    let (status, body) =
        exchange(&nginx, Request::get("/hello").header("Connection", "close")).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "hello"),
        "GET /hello through nginx"
    );
    wait_peers(h, "the pooled connection, after the requests", |peers| {
        peers == [pooled]
    })
    .await;

    let third = new_id();
    let mut stream = open_via(&nginx, &sse_target(&room, &third, &["normal-event"])).await;
    wait_conn_create(h, &third).await;
    wait_peers(h, "the third stream, on the pooled connection", |peers| {
        peers == [pooled]
    })
    .await;
    send(h, "normal-event", &room, "third").await;
    expect_events(
        &mut stream,
        "the third stream",
        &[("normal-event", "third")],
    )
    .await;
    nginx.assert_no_errors();
}

/// Clients stream through nginx when the harness gets `SIGTERM` (grace period [`GRACE`]): their
/// streams end, the harness exits 0 within the grace period plus [`EXIT_MARGIN`], and its exit
/// log has one `conn:close` for each. With `sse.conf` nginx's pool first holds as many idle
/// connections to the harness as its `keepalive` allows (streams the server ended), which must not
/// hold the process: before the standalone server closed idle connections once draining, 16 such
/// connections kept it running for 30 s past the drain.
pub async fn drain_ends_through_the_proxy(h: &Harness, config: NginxConfig) {
    const STREAMS: usize = 4;
    let grace_ms = GRACE.as_millis().to_string();
    let mut h = h.with_env(&[("SSEIO_SHUTDOWN_GRACE_MS", &grace_ms)]).await;
    let nginx = Nginx::start(config, h.authority()).await;
    let room = new_id();

    let pool = config.keepalive();
    if pool > 0 {
        let ids: Vec<String> = (0..pool).map(|_| new_id()).collect();
        let mut streams = Vec::with_capacity(pool);
        for id in &ids {
            streams.push(open_via(&nginx, &sse_target(&room, id, &["normal-event"])).await);
        }
        for (id, stream) in ids.iter().zip(&mut streams) {
            wait_conn_create(&h, id).await;
            end_by_server(&h, id, stream).await;
        }
        wait_peers(&h, "nginx's pool full of idle connections", |peers| {
            peers.len() == pool
        })
        .await;
    }

    let ids: Vec<String> = (0..STREAMS).map(|_| new_id()).collect();
    let mut streams = Vec::with_capacity(STREAMS);
    for id in &ids {
        streams.push(open_via(&nginx, &sse_target(&room, id, &["normal-event"])).await);
        wait_conn_create(&h, id).await;
    }

    h.terminate();
    let signalled = Instant::now();
    let ends: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                expect_end(&mut stream, "a stream through nginx to end in the drain").await;
                signalled.elapsed()
            })
        })
        .collect();
    let status = h.wait_exit(GRACE + EXIT_MARGIN).await;
    let exited = signalled.elapsed();
    assert!(
        status.success(),
        "the harness exits 0 after draining: {status}"
    );
    let mut ended = Vec::with_capacity(STREAMS);
    for end in ends {
        ended.push(end.await.expect("a stream's end (its own panic says why)"));
    }
    ended.sort();
    note(&format!(
        "{} {}: {pool} idle pooled connections and {STREAMS} streams through nginx; after \
         SIGTERM the streams ended from {:.2?} to {:.2?}, the harness exited 0 at {exited:.2?} \
         (grace {GRACE:?})",
        h.adapter(),
        config.name(),
        ended[0],
        ended[STREAMS - 1]
    ));
    let log = h.exit_log(WAIT).await;
    for id in &ids {
        assert_eq!(
            control::count_conn(&log, "conn:close", id),
            1,
            "conn:close records for stream {id} in the exit log"
        );
    }
    nginx.assert_no_errors();
}

/// Opens a stream through nginx with the headers the official client sends; asserts `200` and
/// `text/event-stream`.
async fn open_via(nginx: &Nginx, target: &str) -> SseStream {
    let response = within(
        WAIT,
        &format!("the response head to GET {target} through nginx"),
        Request::get(target)
            .header("Accept", "text/event-stream")
            .header("Cache-Control", "no-cache")
            .send(&nginx.base_url()),
    )
    .await
    .unwrap_or_else(|e| panic!("GET {target} through nginx failed: {e}"));
    assert_eq!(
        response.status(),
        200,
        "GET {target} through nginx should open a stream; headers {:?}",
        response.headers()
    );
    assert_eq!(
        response.header("content-type"),
        Some("text/event-stream"),
        "GET {target} through nginx"
    );
    SseStream::http1(response)
}

/// Sends `request` to nginx and reads the whole answer: its status and body.
async fn exchange(nginx: &Nginx, request: Request) -> (u16, String) {
    let what = format!("{} {} through nginx", request.method(), request.target());
    within(WAIT, &what, async {
        let mut response = request
            .send(&nginx.base_url())
            .await
            .unwrap_or_else(|e| panic!("{what} failed: {e}"));
        let body = response
            .read_to_end()
            .await
            .unwrap_or_else(|e| panic!("reading the answer to {what}: {e}"));
        (
            response.status(),
            String::from_utf8_lossy(&body).into_owned(),
        )
    })
    .await
}

/// Ends `client`'s stream from the server (`POST /_control/disconnect` to the harness) and waits
/// until it has ended at the client, through nginx.
async fn end_by_server(h: &Harness, client: &str, stream: &mut SseStream) {
    let outcome = within(
        WAIT,
        "POST /_control/disconnect",
        control::disconnect(h, client),
    )
    .await
    .unwrap_or_else(|e| panic!("POST /_control/disconnect failed: {e}"));
    assert_eq!(
        outcome.status, 200,
        "POST /_control/disconnect?clientId={client}"
    );
    expect_end(stream, "a stream the server ended, through nginx").await;
}

/// Polls the connections established to the harness (their peers' ports) until `done` holds for
/// them, within [`WAIT`].
async fn wait_peers(h: &Harness, what: &str, done: impl Fn(&[u16]) -> bool) -> Vec<u16> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let peers = h
            .established_peer_ports()
            .expect("this case reads the harness's connections from /proc/net/tcp");
        if done(&peers) {
            return peers;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}: the connections established to the \
             harness come from ports {peers:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
