//! The limits (`conformance-tests/HARNESS.md`, "What later capabilities add"): each answered with a
//! JSON error and the right status, and a reader that stops reading cut off without slowing anyone
//! else.
//!
//! These cases start a harness of their own with the limit's environment variable
//! (`Need::Settings`), so they are listed as ignored against an external server (`SERVER_URL`).

use std::time::Duration;

use conformance_tests::Harness;
use conformance_tests::control;

use super::*;

super::registry::case_table! {
    too_many_events_is_400 needs [Settings],
    connection_limit_is_503_with_retry_after needs [Settings],
    oversized_message_is_413 needs [Settings],
    slow_reader_is_cut_off_and_the_others_get_everything needs [Settings],
}

fn assert_json_error(response: &Response, body: &[u8], status: u16, what: &str) {
    assert_eq!(
        response.status(),
        status,
        "{what}: {}",
        String::from_utf8_lossy(body)
    );
    assert_eq!(
        response
            .header("content-type")
            .map(|v| v.split(';').next().unwrap_or("").trim()),
        Some("application/json"),
        "{what}"
    );
    let json: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{what}: the body is not JSON ({e})"));
    assert!(json["message"].is_string(), "{what}: no message in {json}");
}

/// More distinct events than `SSEIO_MAX_EVENTS` is `400` JSON; as many is a stream.
pub async fn too_many_events_is_400(h: &Harness) {
    let h = h.with_env(&[("SSEIO_MAX_EVENTS", "2")]).await;
    let events = ["normal-event", "test-multiple-1", "test-multiple-2"];
    let target = sse_target(&new_id(), &new_id(), &events);
    let (response, body) = get_body(&h, &target).await;
    assert_json_error(
        &response,
        &body,
        400,
        "three events with SSEIO_MAX_EVENTS=2",
    );
    let stream = open_stream(&h, &sse_target(&new_id(), &new_id(), &events[..2])).await;
    stream.close().await;
}

/// A stream past `SSEIO_MAX_CONNECTIONS` is `503` JSON with `Retry-After`.
pub async fn connection_limit_is_503_with_retry_after(h: &Harness) {
    let h = h.with_env(&[("SSEIO_MAX_CONNECTIONS", "1")]).await;
    let first = connect(&h, &new_id(), &new_id(), &["normal-event"]).await;
    let target = sse_target(&new_id(), &new_id(), &["normal-event"]);
    let (response, body) = get_body(&h, &target).await;
    assert_json_error(
        &response,
        &body,
        503,
        "a second stream with SSEIO_MAX_CONNECTIONS=1",
    );
    assert!(
        response.header("retry-after").is_some(),
        "503 without Retry-After"
    );
    first.close().await;
}

/// A message over `SSEIO_MAX_MESSAGE_BYTES` is refused (`413` from the control route, a typed
/// error from `send`); one of exactly the limit goes through.
pub async fn oversized_message_is_413(h: &Harness) {
    let h = h.with_env(&[("SSEIO_MAX_MESSAGE_BYTES", "1000")]).await;
    let room = new_id();
    let mut stream = connect(&h, &room, &new_id(), &["normal-event"]).await;
    let too_large = within(
        WAIT,
        "POST /_control/send",
        control::send_text(&h, "normal-event", &room, &"x".repeat(1001)),
    )
    .await
    .expect("send answered");
    assert_eq!(
        too_large.status,
        413,
        "{}",
        String::from_utf8_lossy(&too_large.body)
    );
    let fits = "y".repeat(1000);
    send(&h, "normal-event", &room, &fits).await;
    expect_events(&mut stream, "the reader", &[("normal-event", &fits)]).await;
}

/// One client stops reading while ten others receive 40 MiB of broadcasts: the ten get every
/// message, in order; the stalled one is disconnected (`conn:close`) with exactly one `error`
/// record naming it; and the server's memory grows by less than the stalled client's backlog
/// would take (its 1 MiB budget plus a stated 12 MiB margin for allocator slack and the other
/// queues, where unbounded buffering would keep most of the 40 MiB). The sender keeps within a few messages of the slowest live reader, as a
/// healthy deployment does, so only the stalled client's buffer grows.
pub async fn slow_reader_is_cut_off_and_the_others_get_everything(h: &Harness) {
    const READERS: usize = 10;
    const MESSAGES: usize = 640;
    const WINDOW: usize = 4;
    let h = h.with_env(&[("SSEIO_MAX_BUFFER_BYTES", "1048576")]).await;
    /// Growth allowed over the run: the stalled client's 1 MiB budget plus this margin.
    const RSS_MARGIN: u64 = 12 * 1024 * 1024;
    let room = new_id();
    let stalled_id = new_id();
    let rss_before = h.rss_bytes();
    // Opened, then never read again.
    let stalled = connect(&h, &room, &stalled_id, &["normal-event"]).await;
    let mut readers = Vec::new();
    let mut progress = Vec::new();
    for _ in 0..READERS {
        let mut stream = connect(&h, &room, &new_id(), &["normal-event"]).await;
        let (received, watch) = tokio::sync::watch::channel(0usize);
        progress.push(watch);
        readers.push(tokio::spawn(async move {
            for seq in 0..MESSAGES {
                let event = next_event(&mut stream, "a broadcast").await;
                assert!(
                    event.data.starts_with(&format!("{seq} ")),
                    "message {seq} out of order or lost"
                );
                received.send_replace(seq + 1);
            }
            stream.close().await;
        }));
    }
    let filler = "z".repeat(64 * 1024 - 10);
    for seq in 0..MESSAGES {
        for watch in &mut progress {
            within(
                WAIT,
                "a reader to keep up",
                watch.wait_for(|n| n + WINDOW > seq),
            )
            .await
            .expect("reader alive");
        }
        send(&h, "normal-event", &room, &format!("{seq} {filler}")).await;
    }
    for reader in readers {
        within(Duration::from_secs(60), "every reader's messages", reader)
            .await
            .expect("a reader failed");
    }
    let log = wait_log(&h, "conn:close of the stalled reader", |log| {
        control::count_conn(log, "conn:close", &stalled_id) == 1
    })
    .await;
    let errors: Vec<_> = log
        .iter()
        .filter(|r| r.is_error() && r.message.as_deref().unwrap_or("").contains(&stalled_id))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "one error record names the slow client: {errors:?}"
    );
    if let (Some(before), Some(after)) = (rss_before, h.rss_bytes()) {
        let growth = after.saturating_sub(before);
        note(&format!(
            "{}: server RSS grew by {growth} bytes",
            h.adapter()
        ));
        assert!(
            growth <= 1024 * 1024 + RSS_MARGIN,
            "server RSS grew by {growth} bytes while one client stalled"
        );
    }
    drop(stalled);
}
