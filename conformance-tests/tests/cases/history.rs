//! History and resume (`SSEIO_HISTORY=N`, `conformance-tests/HARNESS.md`): frames carry `id:`
//! lines, and a client that reconnects gets exactly what it missed, in order, before live messages:
//! by `Last-Event-ID` as a native `EventSource` sends it, or by its `clientId` as the official
//! client reconnects. A gap larger than the history gives a `fetch` and no partial replay.

use conformance_tests::Harness;
use conformance_tests::control;
use conformance_tests::http1::Request;
use conformance_tests::sse::SseStream;

use super::*;

super::registry::case_table! {
    last_event_id_replays_exactly_the_missed_messages needs [Settings],
    client_id_reconnect_replays_the_missed_messages needs [Settings],
    a_gap_larger_than_the_history_gets_fetch_and_no_partial_replay needs [Settings],
    a_resume_past_the_history_gets_the_gap_notice_first needs [Settings],
    a_client_id_whose_connection_dropped_gets_the_gap_notice_then_what_followed needs [Settings],
    a_slow_consumer_gets_every_message_it_missed_once_it_reads_again needs [Settings],
    an_unknown_last_event_id_gets_the_gap_notice_before_the_resync needs [Settings],
    a_first_connect_from_a_rendered_position_gets_what_was_sent_since needs [Settings],
}

/// The gap notice's event name in these cases.
const GAP: &str = "sseio-gap";

/// Sends `messages` to `room` of `event`.
async fn send_all(h: &Harness, event: &str, room: &str, messages: &[&str]) {
    for message in messages {
        send(h, event, room, message).await;
    }
}

/// Closes `stream` and waits until the server has seen it go (its `conn:close`).
pub async fn leave(h: &Harness, stream: SseStream, client: &str, closes_before: usize) {
    stream.close().await;
    wait_log(h, &format!("conn:close of {client}"), |log| {
        control::count_conn(log, "conn:close", client) > closes_before
    })
    .await;
}

/// Has the server close `client`'s `stream` (`POST /_control/disconnect`), as a drain or the
/// application does, and waits until it has (its `conn:close`).
async fn leave_by_server(h: &Harness, stream: SseStream, client: &str, closes_before: usize) {
    let outcome = control::disconnect(h, client).await.expect("disconnect");
    assert_eq!(outcome.status, 200, "disconnect: {outcome:?}");
    wait_log(h, &format!("conn:close of {client}"), |log| {
        control::count_conn(log, "conn:close", client) > closes_before
    })
    .await;
    stream.close().await;
}

/// A native `EventSource` reconnecting with `Last-Event-ID` gets the messages it missed, each
/// once and in order, then live ones; every message has a distinct `id:`.
pub async fn last_event_id_replays_exactly_the_missed_messages(h: &Harness) {
    let h = h.with_env(&[("SSEIO_HISTORY", "100")]).await;
    let (room, client) = (new_id(), new_id());
    let mut stream = connect(&h, &room, &client, &["normal-event"]).await;
    send_all(&h, "normal-event", &room, &["1", "2"]).await;
    let first = next_event(&mut stream, "message 1").await;
    let second = next_event(&mut stream, "message 2").await;
    assert_eq!((first.data.as_str(), second.data.as_str()), ("1", "2"));
    let last_id = second.id.clone().expect("with history, frames carry an id");
    assert_ne!(first.id, second.id, "each message has its own id");
    leave(&h, stream, &client, 0).await;

    send_all(&h, "normal-event", &room, &["3", "4"]).await;
    // Another clientId, so the position comes from the header alone, not from where the first
    // clientId left off.
    let reader = new_id();
    let response = request(
        &h,
        Request::get(sse_target(&room, &reader, &["normal-event"]))
            .header("Accept", "text/event-stream")
            .header("Last-Event-ID", &last_id),
    )
    .await;
    assert_eq!(response.status(), 200);
    let mut resumed = SseStream::http1(response);
    expect_events(
        &mut resumed,
        "the resumed stream",
        &[("normal-event", "3"), ("normal-event", "4")],
    )
    .await;
    wait_conn_create(&h, &reader).await;
    send(&h, "normal-event", &room, "5").await;
    expect_events(&mut resumed, "the resumed stream", &[("normal-event", "5")]).await;
}

/// The official client's way: it reconnects with the same `clientId` and no `Last-Event-ID`,
/// and still gets what it missed, once, in order.
pub async fn client_id_reconnect_replays_the_missed_messages(h: &Harness) {
    let h = h.with_env(&[("SSEIO_HISTORY", "100")]).await;
    let (room, client) = (new_id(), new_id());
    let mut stream = connect(&h, &room, &client, &["normal-event"]).await;
    send(&h, "normal-event", &room, "before").await;
    expect_events(
        &mut stream,
        "the first stream",
        &[("normal-event", "before")],
    )
    .await;
    leave(&h, stream, &client, 0).await;

    let missed: Vec<String> = (0..10).map(|n| format!("missed {n}")).collect();
    for message in &missed {
        send(&h, "normal-event", &room, message).await;
    }
    let mut resumed = connect(&h, &room, &client, &["normal-event"]).await;
    send(&h, "normal-event", &room, "live").await;
    let mut expected: Vec<(&str, &str)> = missed
        .iter()
        .map(|m| ("normal-event", m.as_str()))
        .collect();
    expected.push(("normal-event", "live"));
    expect_events(&mut resumed, "the reconnected client", &expected).await;
}

/// More messages missed than the history keeps: nothing is replayed, the `fetch` runs again as
/// a resync (its result comes first), and live messages follow.
pub async fn a_gap_larger_than_the_history_gets_fetch_and_no_partial_replay(h: &Harness) {
    let h = h.with_env(&[("SSEIO_HISTORY", "2")]).await;
    let (room, client) = (new_id(), new_id());
    let mut stream = connect(&h, &room, &client, &["fetch-event"]).await;
    let snapshot = next_event(&mut stream, "the fetch result").await;
    leave(&h, stream, &client, 0).await;

    send_all(&h, "fetch-event", &room, &["1", "2", "3"]).await;
    let mut resumed = connect(&h, &room, &client, &["fetch-event"]).await;
    send(&h, "fetch-event", &room, "live").await;
    let first = next_event(&mut resumed, "the resync's fetch result").await;
    assert_eq!(
        first.data, snapshot.data,
        "a fetch, not a replay, comes first"
    );
    expect_events(
        &mut resumed,
        "the resynced client",
        &[("fetch-event", "live")],
    )
    .await;
}

/// With `SSEIO_GAP_NOTICE`, a client resuming by its `clientId` past what the history keeps is
/// told so before anything else of that event; a fresh stream and a resume that is served are
/// told nothing.
pub async fn a_resume_past_the_history_gets_the_gap_notice_first(h: &Harness) {
    let h = h
        .with_env(&[("SSEIO_HISTORY", "2"), ("SSEIO_GAP_NOTICE", GAP)])
        .await;
    let (room, client) = (new_id(), new_id());
    let mut stream = connect(&h, &room, &client, &["normal-event", GAP]).await;
    send(&h, "normal-event", &room, "first").await;
    expect_events(&mut stream, "a fresh stream", &[("normal-event", "first")]).await;
    // Closed by the server, so where it stood is certain.
    leave_by_server(&h, stream, &client, 0).await;

    // Within the history: served, no notice.
    send(&h, "normal-event", &room, "missed").await;
    let mut resumed = connect(&h, &room, &client, &["normal-event", GAP]).await;
    expect_events(
        &mut resumed,
        "a served resume",
        &[("normal-event", "missed")],
    )
    .await;
    leave_by_server(&h, resumed, &client, 1).await;

    // Past it: the notice, then live messages.
    send_all(&h, "normal-event", &room, &["1", "2", "3"]).await;
    let mut gapped = connect(&h, &room, &client, &["normal-event", GAP]).await;
    send(&h, "normal-event", &room, "live").await;
    expect_events(
        &mut gapped,
        "a resume past the history",
        &[
            (GAP, r#"{"event":"normal-event"}"#),
            ("normal-event", "live"),
        ],
    )
    .await;
}

/// The official client, whose connection dropped after it was given messages (here: it closed
/// it), cannot say what it got: what was in flight may have been lost with the connection. Its
/// reconnect by `clientId` gets the gap notice first, then what followed where it stood.
pub async fn a_client_id_whose_connection_dropped_gets_the_gap_notice_then_what_followed(
    h: &Harness,
) {
    let h = h
        .with_env(&[("SSEIO_HISTORY", "10"), ("SSEIO_GAP_NOTICE", GAP)])
        .await;
    let (room, client) = (new_id(), new_id());
    let mut stream = connect(&h, &room, &client, &["normal-event", GAP]).await;
    send(&h, "normal-event", &room, "first").await;
    expect_events(&mut stream, "a fresh stream", &[("normal-event", "first")]).await;
    leave(&h, stream, &client, 0).await;
    send(&h, "normal-event", &room, "missed").await;
    let mut back = connect(&h, &room, &client, &["normal-event", GAP]).await;
    expect_events(
        &mut back,
        "a resume after a dropped connection",
        &[
            (GAP, r#"{"event":"normal-event"}"#),
            ("normal-event", "missed"),
        ],
    )
    .await;
}

/// A client that stops reading is closed as a slow consumer; once it reads again, it gets what
/// was in its connection's buffers, and its reconnects get every message it missed, once and in
/// order, without a gap notice, whether it comes back by `clientId` or by `Last-Event-ID`. What
/// it missed is more than its buffer holds, so it comes in parts: each stream ends after one,
/// and the next reconnect gets the next.
pub async fn a_slow_consumer_gets_every_message_it_missed_once_it_reads_again(h: &Harness) {
    const BUDGET: usize = 64 * 1024;
    let budget = BUDGET.to_string();
    let h = h
        .with_env(&[
            ("SSEIO_HISTORY", "5000"),
            ("SSEIO_MAX_BUFFER_BYTES", &budget),
            ("SSEIO_GAP_NOTICE", GAP),
        ])
        .await;
    let padding = "x".repeat(BUDGET / 4);
    for by_client_id in [true, false] {
        let how = if by_client_id {
            "by clientId"
        } else {
            "by Last-Event-ID"
        };
        let (room, client) = (new_id(), new_id());
        let target = sse_target(&room, &client, &["normal-event", GAP]);
        // A small receive buffer, as a phone's: once it stops reading, the server's side fills
        // up too, and the server's write blocks.
        let stalled = Request::get(target.as_str())
            .header("Accept", "text/event-stream")
            .recv_buffer(4096);
        let response = request(&h, stalled).await;
        assert_eq!(response.status(), 200, "{how}: the stream opens");
        let mut stream = SseStream::http1(response);
        wait_conn_create(&h, &client).await;
        // The client reads nothing: its socket buffers fill up, then its queue, and it is
        // closed.
        let mut sent = 0;
        while control::count_conn(&log(&h).await, "conn:close", &client) == 0 {
            assert!(sent < 5000, "{how}: not closed after {sent} messages");
            sent += 1;
            send(&h, "normal-event", &room, &format!("{sent} {padding}")).await;
        }
        let mut got = Vec::new();
        let mut last_id = None;
        let mut streams = 1;
        loop {
            // This stream's messages, until it ends or has the last one.
            while got.last() != Some(&sent) {
                let what = format!("{how}: stream {streams}, after {:?}", got.last());
                let Ok(Some(event)) = within(WAIT, &what, stream.next_event()).await else {
                    break;
                };
                assert_eq!(event.event, "normal-event", "{how}: no gap notice");
                let number = event.data.split(' ').next().and_then(|n| n.parse().ok());
                got.push(number.expect("a numbered message"));
                last_id = event.id.or(last_id);
            }
            if got.last() == Some(&sent) {
                break;
            }
            streams += 1;
            assert!(
                streams < 100,
                "{how}: still catching up after {streams} streams"
            );
            let mut again = Request::get(target.as_str()).header("Accept", "text/event-stream");
            if let (false, Some(id)) = (by_client_id, &last_id) {
                again = again.header("Last-Event-ID", id);
            }
            let response = request(&h, again).await;
            assert_eq!(response.status(), 200, "{how}: reconnect {streams}");
            stream = SseStream::http1(response);
        }
        let twice: Vec<u64> = got
            .windows(2)
            .filter(|w| w[0] >= w[1])
            .map(|w| w[1])
            .collect();
        let missing: Vec<u64> = (1..=sent).filter(|n| !got.contains(n)).collect();
        assert!(
            twice.is_empty() && missing.is_empty(),
            "{how}: every message once, in order: {} of {sent} got; again or out of order: \
             {twice:?}; missing: {missing:?}; {streams} streams",
            got.len()
        );
        assert!(
            streams > 2,
            "{how}: what it missed came in parts ({streams} streams)"
        );
    }
}

/// A native `EventSource` naming a position the server never gave gets the notice, then its
/// event's `fetch` as a resync, then live messages.
pub async fn an_unknown_last_event_id_gets_the_gap_notice_before_the_resync(h: &Harness) {
    let h = h
        .with_env(&[("SSEIO_HISTORY", "10"), ("SSEIO_GAP_NOTICE", GAP)])
        .await;
    let (room, client) = (new_id(), new_id());
    let response = request(
        &h,
        Request::get(sse_target(&room, &client, &["fetch-event", GAP]))
            .header("Accept", "text/event-stream")
            .header("Last-Event-ID", "not-a-position"),
    )
    .await;
    assert_eq!(response.status(), 200);
    let mut stream = SseStream::http1(response);
    let notice = next_event(&mut stream, "the gap notice").await;
    assert_eq!(
        (notice.event.as_str(), notice.data.as_str()),
        (GAP, r#"{"event":"fetch-event"}"#)
    );
    let resync = next_event(&mut stream, "the resync's fetch result").await;
    assert_eq!(resync.event, "fetch-event");
    wait_conn_create(&h, &client).await;
    send(&h, "fetch-event", &room, "live").await;
    expect_events(
        &mut stream,
        "the resynced stream",
        &[("fetch-event", "live")],
    )
    .await;
}

/// Bootstrap without a gap: a page embeds the room's position when the server renders it, and
/// its `EventSource` passes it as `lastEventId` on its first connect (it cannot send
/// `Last-Event-ID` then): it gets exactly what was sent after the render, then live messages.
pub async fn a_first_connect_from_a_rendered_position_gets_what_was_sent_since(h: &Harness) {
    let h = h.with_env(&[("SSEIO_HISTORY", "10")]).await;
    let (room, client) = (new_id(), new_id());
    send(&h, "normal-event", &room, "before the render").await;
    let rendered = control::position(&h, "normal-event", &room)
        .await
        .expect("GET /_control/position");
    send_all(&h, "normal-event", &room, &["after 1", "after 2"]).await;

    let target = format!(
        "{}&lastEventId={rendered}",
        sse_target(&room, &client, &["normal-event"])
    );
    let response = request(
        &h,
        Request::get(target).header("Accept", "text/event-stream"),
    )
    .await;
    assert_eq!(response.status(), 200);
    let mut stream = SseStream::http1(response);
    wait_conn_create(&h, &client).await;
    send(&h, "normal-event", &room, "live").await;
    expect_events(
        &mut stream,
        "the page's first stream",
        &[
            ("normal-event", "after 1"),
            ("normal-event", "after 2"),
            ("normal-event", "live"),
        ],
    )
    .await;
}
