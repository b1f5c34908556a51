//! Lifecycle notifications (`conn:create`, `conn:close`, `room:create`, `room:empty`, `error`)
//! as recorded by `GET /_control/log`, and connection replacement.

use std::time::Duration;

use conformance_tests::Harness;
use conformance_tests::control::{LogRecord, count_conn};
use conformance_tests::h2::H2Connection;
use conformance_tests::sse::SseStream;

use super::{
    WAIT, connect, expect_end, expect_events, log, new_id, open_stream, send, server_is_exclusive,
    settle, sse_target, wait_conn_create, wait_log, wait_log_within, within,
};

super::registry::case_table! {
    conn_create_and_room_create_are_logged,
    send_right_after_conn_create_is_delivered,
    room_empty_when_last_client_leaves,
    closing_leaves_every_room,
    conn_close_once_promptly_without_error,
    replacement_closes_old_stream_and_keeps_new,
    replacement_leaves_the_old_rooms,
    http2_stream_reset_closes_only_that_stream,
}

/// How soon after the client closes its TCP connection `conn:close` must be in the log: well
/// under one heartbeat interval, so the server notices the close itself rather than on its
/// next write.
const CLOSE_NOTICED_WITHIN: Duration = Duration::from_secs(2);

/// How soon a reset HTTP/2 stream must be closed on an adapter whose framework only notices the
/// reset at its next write (`Adapter::h2_reset_seen_at_next_write`): by the next heartbeat,
/// with the same margin.
const RESET_NOTICED_AT_NEXT_WRITE_WITHIN: Duration =
    Duration::from_secs(sseio_hyper::DEFAULT_HEARTBEAT_INTERVAL.as_secs() + 2);

fn count_room(log: &[LogRecord], kind: &str, event: &str, room: &str) -> usize {
    log.iter().filter(|r| r.is_room(kind, event, room)).count()
}

/// Asserts that no `error` record was raised for a clean disconnect: with the server to
/// ourselves, none at all; on a shared server, none after `since` except the `foo` errors that
/// the suite's own `fetch-error-event` case provokes.
fn assert_no_error(log: &[LogRecord], since: usize, what: &str) {
    let errors: Vec<&LogRecord> = log
        .iter()
        .enumerate()
        .filter(|(i, r)| {
            r.is_error()
                && (server_is_exclusive()
                    || (*i >= since && !r.message.as_deref().unwrap_or("").contains("foo")))
        })
        .map(|(_, r)| r)
        .collect();
    assert!(
        errors.is_empty(),
        "{what} must raise no error, got {errors:#?}"
    );
}

/// A stream raises `conn:create` (client id) and its first connection to a room raises
/// `room:create` (event, room), once: a second client in the same room raises no second
/// `room:create`.
pub async fn conn_create_and_room_create_are_logged(h: &Harness) {
    let (guid, first, second) = (new_id(), new_id(), new_id());
    let _first = open_stream(h, &sse_target(&guid, &first, &["normal-event"])).await;
    wait_log(
        h,
        "conn:create and room:create for the first client",
        |log| {
            count_conn(log, "conn:create", &first) >= 1
                && count_room(log, "room:create", "normal-event", &guid) >= 1
        },
    )
    .await;
    let _second = connect(h, &guid, &second, &["normal-event"]).await;
    let log = settle(h).await;
    assert_eq!(
        count_conn(&log, "conn:create", &first),
        1,
        "conn:create of the first client"
    );
    assert_eq!(
        count_conn(&log, "conn:create", &second),
        1,
        "conn:create of the second client"
    );
    assert_eq!(
        count_room(&log, "room:create", "normal-event", &guid),
        1,
        "room:create is raised once, for the room's first connection"
    );
}

/// `conn:create` is raised only once the connection has joined all its rooms: sends made as
/// soon as it is visible in the log reach the new client, on every event it asked for.
pub async fn send_right_after_conn_create_is_delivered(h: &Harness) {
    let events = ["normal-event", "test-multiple-1", "test-multiple-2"];
    for round in 0..5 {
        let (guid, client) = (new_id(), new_id());
        let mut stream = open_stream(h, &sse_target(&guid, &client, &events)).await;
        wait_conn_create(h, &client).await;
        let payload = format!("right after conn:create, round {round}");
        for event in events.iter().rev() {
            send(h, event, &guid, &payload).await;
        }
        let expected: Vec<(&str, &str)> = events
            .iter()
            .rev()
            .map(|e| (*e, payload.as_str()))
            .collect();
        expect_events(&mut stream, "the new client", &expected).await;
    }
}

/// A connection in several rooms (one per event) leaves all of them when it closes: a
/// `room:empty` for each.
pub async fn closing_leaves_every_room(h: &Harness) {
    let (guid, room, client) = (new_id(), new_id(), new_id());
    let target = format!(
        "{}&room={room}",
        sse_target(
            &guid,
            &client,
            &["test-multiple-1", "test-multiple-2", "query-event"]
        )
    );
    let stream = open_stream(h, &target).await;
    wait_conn_create(h, &client).await;
    stream.close().await;
    wait_log(
        h,
        "room:empty for each of the connection's three rooms",
        |log| {
            count_room(log, "room:empty", "test-multiple-1", &guid) == 1
                && count_room(log, "room:empty", "test-multiple-2", &guid) == 1
                && count_room(log, "room:empty", "query-event", &room) == 1
        },
    )
    .await;
}

/// When the last connection leaves a room, `room:empty` (event, room) is raised, not before,
/// and the room is forgotten: the next connection raises `room:create` again.
pub async fn room_empty_when_last_client_leaves(h: &Harness) {
    let (guid, a, b) = (new_id(), new_id(), new_id());
    let stream_a = connect(h, &guid, &a, &["normal-event"]).await;
    let stream_b = connect(h, &guid, &b, &["normal-event"]).await;
    stream_a.close().await;
    wait_log(h, "conn:close of the first of two clients", |log| {
        count_conn(log, "conn:close", &a) >= 1
    })
    .await;
    let log = settle(h).await;
    assert_eq!(
        count_room(&log, "room:empty", "normal-event", &guid),
        0,
        "room:empty while a client is still in the room"
    );
    stream_b.close().await;
    wait_log(h, "room:empty once the last client left", |log| {
        count_room(log, "room:empty", "normal-event", &guid) >= 1
    })
    .await;
    let _again = connect(h, &guid, &new_id(), &["normal-event"]).await;
    let log = wait_log(h, "room:create for the emptied room's next client", |log| {
        count_room(log, "room:create", "normal-event", &guid) >= 2
    })
    .await;
    assert_eq!(
        count_room(&log, "room:empty", "normal-event", &guid),
        1,
        "room:empty is raised once"
    );
}

/// Regression: `conn_close_twice_and_error_on_disconnect` (original server).
///
/// When a client closed its connection, the original raised `conn:close` twice (once per
/// close callback) and an `error` for what is a normal disconnect. The server must notice the
/// close promptly (well before a heartbeat write would fail) and raise `conn:close` exactly
/// once and no `error`.
pub async fn conn_close_once_promptly_without_error(h: &Harness) {
    let (guid, client) = (new_id(), new_id());
    let stream = connect(h, &guid, &client, &["normal-event"]).await;
    let since = log(h)
        .await
        .iter()
        .position(|r| r.is_conn("conn:create", &client))
        .expect("conn:create is in the log");
    // A witness opened after the client: a heartbeat on it after the close means the server
    // has had its chance to (wrongly) act on the closed stream's heartbeat too.
    let mut witness = open_stream(h, &sse_target(&new_id(), &new_id(), &["normal-event"])).await;
    stream.close().await;
    wait_log_within(
        h,
        CLOSE_NOTICED_WITHIN,
        "conn:close soon after the client closed its TCP connection",
        |log| count_conn(log, "conn:close", &client) >= 1,
    )
    .await;
    let heartbeats = witness.comments();
    within(
        WAIT,
        "a heartbeat on the witness stream after the close",
        async {
            while witness.comments() <= heartbeats {
                match witness.next_item().await {
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("the witness stream ended"),
                    Err(e) => panic!("the witness stream failed: {e}"),
                }
            }
        },
    )
    .await;
    let log = settle(h).await;
    assert_eq!(
        count_conn(&log, "conn:close", &client),
        1,
        "conn:close must be raised exactly once per stream"
    );
    assert_no_error(&log, since, "a clean client disconnect");
}

/// Regression: `replaced_stream_close_removes_new_connection` (original server).
///
/// A second connection with the same `clientId` replaces the first: the first stream ends and
/// leaves its rooms, the new one gets the sends. The original kept connections keyed by
/// `clientId`, so the replaced stream's close removed the *new* connection, which then never
/// received anything. Each stream raises exactly one `conn:close`.
pub async fn replacement_closes_old_stream_and_keeps_new(h: &Harness) {
    let (guid, client) = (new_id(), new_id());
    let mut old = connect(h, &guid, &client, &["normal-event"]).await;
    let mut new = open_stream(h, &sse_target(&guid, &client, &["normal-event"])).await;
    expect_end(&mut old, "the replaced stream's body to end").await;
    wait_log(
        h,
        "the new stream's conn:create and the old one's conn:close",
        |log| {
            count_conn(log, "conn:create", &client) >= 2
                && count_conn(log, "conn:close", &client) >= 1
        },
    )
    .await;
    let payload = format!("to the replacement {}", new_id());
    send(h, "normal-event", &guid, &payload).await;
    expect_events(
        &mut new,
        "the replacing stream",
        &[("normal-event", &payload)],
    )
    .await;
    let log = settle(h).await;
    assert_eq!(
        count_conn(&log, "conn:close", &client),
        1,
        "only the replaced stream has closed so far"
    );
    // The old stream's close must not have removed the new connection: it still receives.
    let payload = format!("still there {}", new_id());
    send(h, "normal-event", &guid, &payload).await;
    expect_events(
        &mut new,
        "the replacing stream",
        &[("normal-event", &payload)],
    )
    .await;
    new.close().await;
    wait_log(h, "conn:close of the replacing stream", |log| {
        count_conn(log, "conn:close", &client) >= 2
    })
    .await;
    let log = settle(h).await;
    assert_eq!(
        count_conn(&log, "conn:close", &client),
        2,
        "one conn:close per stream, two in total for the client id"
    );
    assert_eq!(
        count_conn(&log, "conn:create", &client),
        2,
        "one conn:create per stream"
    );
}

/// A replacing connection on another room: the replaced stream leaves its old room
/// (`room:empty`), so a send there reaches nobody, while the new room gets its sends.
pub async fn replacement_leaves_the_old_rooms(h: &Harness) {
    let (old_guid, new_guid, client) = (new_id(), new_id(), new_id());
    let mut old = connect(h, &old_guid, &client, &["normal-event"]).await;
    let mut new = open_stream(h, &sse_target(&new_guid, &client, &["normal-event"])).await;
    expect_end(&mut old, "the replaced stream's body to end").await;
    wait_log(h, "room:empty for the replaced stream's room", |log| {
        count_room(log, "room:empty", "normal-event", &old_guid) >= 1
            && count_conn(log, "conn:create", &client) >= 2
    })
    .await;
    send(h, "normal-event", &old_guid, "to the old room").await;
    send(h, "normal-event", &new_guid, "to the new room").await;
    expect_events(
        &mut new,
        "the replacing stream (not in the old room)",
        &[("normal-event", "to the new room")],
    )
    .await;
}

/// Over HTTP/2 several streams share one TCP connection. A client that resets one stream
/// (`RST_STREAM`, as a browser does when a tab closes) closes that SSE-IO connection promptly,
/// once, without an error, and leaves the other stream on the same TCP connection working.
/// "Promptly" is by the next heartbeat for an adapter whose framework notices a reset only at
/// its next write (see `registry::Adapter::h2_reset_seen_at_next_write`).
pub async fn http2_stream_reset_closes_only_that_stream(h: &Harness) {
    let at_next_write = super::registry::ADAPTERS
        .iter()
        .any(|a| a.name == h.adapter() && a.h2_reset_seen_at_next_write);
    let noticed_within = if at_next_write {
        RESET_NOTICED_AT_NEXT_WRITE_WITHIN
    } else {
        CLOSE_NOTICED_WITHIN
    };
    let guid = new_id();
    let (gone, staying) = (new_id(), new_id());
    let since = log(h).await.len();
    let mut connection = within(
        WAIT,
        "an HTTP/2 connection",
        H2Connection::connect(h.base_url()),
    )
    .await
    .unwrap_or_else(|e| panic!("cannot open an h2c prior-knowledge connection: {e}"));
    let mut streams = Vec::new();
    for client in [&gone, &staying] {
        let target = sse_target(&guid, client, &["normal-event"]);
        let response = within(WAIT, "an HTTP/2 response head", connection.get(&target))
            .await
            .unwrap_or_else(|e| panic!("HTTP/2 GET {target} failed: {e}"));
        assert_eq!(response.status(), 200, "HTTP/2 GET {target}");
        streams.push(SseStream::http2(response));
        wait_conn_create(h, client).await;
    }
    let mut staying_stream = streams.pop().expect("two streams");
    drop(streams);
    wait_log_within(
        h,
        noticed_within,
        "conn:close soon after the client reset its HTTP/2 stream",
        |log| count_conn(log, "conn:close", &gone) >= 1,
    )
    .await;
    let payload = format!("still on the shared connection {}", new_id());
    send(h, "normal-event", &guid, &payload).await;
    expect_events(
        &mut staying_stream,
        "the other stream on the same HTTP/2 connection",
        &[("normal-event", &payload)],
    )
    .await;
    let log = settle(h).await;
    assert_eq!(
        count_conn(&log, "conn:close", &gone),
        1,
        "one conn:close for the reset stream"
    );
    assert_eq!(
        count_conn(&log, "conn:close", &staying),
        0,
        "the other stream on the connection is still open"
    );
    assert_no_error(&log, since, "a client resetting its HTTP/2 stream");
}
