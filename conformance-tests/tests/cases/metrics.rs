//! `GET /metrics` (`conformance-tests/HARNESS.md`): the Prometheus text exposition of the library's
//! metrics, whose values follow what the case did to the server: streams opened and closed, rooms,
//! frames sent per member, disconnects by reason, refused requests and resumes.
//!
//! The values are the whole process's, so these cases need a harness of their own, started with
//! the settings they need (`Need::OwnProcess`, `Need::Settings`): they are listed as ignored
//! against an external server (`SERVER_URL`), shared with other cases.

use std::collections::HashMap;

use conformance_tests::Harness;
use conformance_tests::control;
use conformance_tests::http1::Request;
use conformance_tests::sse::SseStream;

use super::*;

super::registry::case_table! {
    metrics_follow_streams_sends_and_closes needs [Settings, OwnProcess],
    metrics_count_resumes needs [Settings, OwnProcess],
}

/// One scrape: every sample by its series as written (`name` or `name{label="value"}`).
#[derive(Debug)]
pub struct Scrape(HashMap<String, f64>);

impl Scrape {
    /// The sample of `series`; 0 when it is absent (a counter not yet incremented).
    pub fn get(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }
}

/// `GET /metrics`, asserting `200` and the exposition format's content type, parsed.
pub async fn scrape(h: &Harness) -> Scrape {
    let (response, body) = get_body(h, "/metrics").await;
    assert_eq!(response.status(), 200, "GET /metrics");
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain") && content_type.contains("version=0.0.4"),
        "GET /metrics content type: {content_type:?}"
    );
    let text = String::from_utf8(body).expect("the exposition text is UTF-8");
    let samples = text
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("not a sample line: {line:?}"));
            let value = value
                .parse()
                .unwrap_or_else(|_| panic!("not a sample value: {line:?}"));
            (series.to_owned(), value)
        })
        .collect();
    Scrape(samples)
}

/// Scrapes until `done` holds (within [`WAIT`]), for what the server does after the client has
/// gone (a close).
async fn wait_scrape(h: &Harness, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let scrape = scrape(h).await;
        if done(&scrape) {
            return scrape;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {WAIT:?} waiting for {what} in GET /metrics: {scrape:#?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const CLIENT_GONE: &str = r#"sseio_disconnects_total{reason="client_gone"}"#;

/// Three streams, two in one room and one in another; `K` sends to the room of two; one of the
/// two closes; a refused request. The gauges then read what is open, the frame counter grew by
/// one per member and send, the bytes by their encoded length, the close is counted once under
/// its reason, and the refusal under its status.
pub async fn metrics_follow_streams_sends_and_closes(h: &Harness) {
    let h = &h.with_env(&[("SSEIO_SEND_LAG_METRIC", "1")]).await;
    let before = scrape(h).await;
    let (room, other_room) = (new_id(), new_id());
    let (a, b, c) = (new_id(), new_id(), new_id());
    let mut stream_a = connect(h, &room, &a, &["normal-event"]).await;
    let mut stream_b = connect(h, &room, &b, &["normal-event"]).await;
    let stream_c = connect(h, &other_room, &c, &["normal-event"]).await;
    let open = scrape(h).await;
    assert_eq!(open.get("sseio_connections"), 3.0, "three streams open");
    assert_eq!(open.get("sseio_rooms"), 2.0, "two rooms");
    assert_eq!(
        open.get("sseio_connections_opened_total") - before.get("sseio_connections_opened_total"),
        3.0
    );

    const K: usize = 5;
    let messages: Vec<String> = (0..K).map(|n| format!("message {n}")).collect();
    for message in &messages {
        send(h, "normal-event", &room, message).await;
    }
    let expected: Vec<(&str, &str)> = messages
        .iter()
        .map(|m| ("normal-event", m.as_str()))
        .collect();
    expect_events(&mut stream_a, "a", &expected).await;
    expect_events(&mut stream_b, "b", &expected).await;

    stream_c.close().await;
    let after = wait_scrape(h, "the close of c counted", |s| {
        s.get(CLIENT_GONE) - before.get(CLIENT_GONE) >= 1.0
    })
    .await;
    let grew = |series: &str| after.get(series) - before.get(series);
    assert_eq!(grew(CLIENT_GONE), 1.0, "one close, counted once");
    assert_eq!(
        after.get("sseio_connections"),
        2.0,
        "two streams still open"
    );
    assert_eq!(after.get("sseio_rooms"), 1.0, "the other room emptied");
    assert_eq!(
        grew("sseio_frames_sent_total"),
        (2 * K) as f64,
        "one frame per member and send"
    );
    let frame_bytes: usize = messages
        .iter()
        .map(|m| format!("event: normal-event\ndata: {m}\n\n").len())
        .sum();
    assert_eq!(grew("sseio_bytes_sent_total"), (2 * frame_bytes) as f64);
    for reason in ["replaced", "slow_consumer", "server_closed", "shutdown"] {
        let series = format!(r#"sseio_disconnects_total{{reason="{reason}"}}"#);
        assert_eq!(grew(&series), 0.0, "{series}");
    }
    assert!(
        grew("sseio_send_lag_seconds_count") >= 1.0,
        "the batches written to a and b have a send lag"
    );

    let (refused, _) = get_body(h, &format!("/files/{room}/pull?events=normal-event")).await;
    assert_eq!(refused.status(), 400);
    let refusals = scrape(h).await;
    let status_400 = r#"sseio_rejections_total{status="400"}"#;
    assert_eq!(refusals.get(status_400) - before.get(status_400), 1.0);
    assert_eq!(refusals.get("sseio_connections"), 2.0);
}

/// With history: the official client's reconnect by `clientId` replays what it missed and is
/// counted as `replayed`; an `EventSource` naming a position that is not the server's gets a
/// resync, counted as `resync`. Replayed messages are frames sent too.
pub async fn metrics_count_resumes(h: &Harness) {
    let h = h.with_env(&[("SSEIO_HISTORY", "100")]).await;
    let replayed = r#"sseio_resumes_total{result="replayed"}"#;
    let resync = r#"sseio_resumes_total{result="resync"}"#;
    let before = scrape(&h).await;
    let (room, client) = (new_id(), new_id());
    let stream = connect(&h, &room, &client, &["normal-event"]).await;
    stream.close().await;
    wait_log(&h, &format!("conn:close of {client}"), |log| {
        control::count_conn(log, "conn:close", &client) == 1
    })
    .await;
    send(&h, "normal-event", &room, "missed").await;
    let mut resumed = connect(&h, &room, &client, &["normal-event"]).await;
    expect_events(
        &mut resumed,
        "the resumed client",
        &[("normal-event", "missed")],
    )
    .await;

    let reader = new_id();
    let response = request(
        &h,
        Request::get(sse_target(&room, &reader, &["normal-event"]))
            .header("Accept", "text/event-stream")
            .header("Last-Event-ID", "not-one-of-ours"),
    )
    .await;
    assert_eq!(response.status(), 200);
    let _resynced = SseStream::http1(response);
    wait_conn_create(&h, &reader).await;

    let after = scrape(&h).await;
    let grew = |series: &str| after.get(series) - before.get(series);
    assert_eq!(grew(replayed), 1.0, "the reconnect by clientId replayed");
    assert_eq!(grew(resync), 1.0, "the unknown Last-Event-ID resynced");
    assert_eq!(
        grew("sseio_frames_sent_total"),
        1.0,
        "the replayed message (it was sent while its room was empty)"
    );
}
