//! Rooms: who receives a send.

use std::collections::HashSet;

use conformance_tests::Harness;
use conformance_tests::control;
use conformance_tests::http1::Request;
use conformance_tests::sse::SseStream;
use tokio::task::JoinSet;

use super::{
    WAIT, connect, expect_events, new_id, next_event, open_stream, send, sse_target,
    wait_conn_create, wait_log, within,
};

super::registry::case_table! {
    send_reaches_every_client_in_room,
    send_skips_other_rooms,
    rooms_are_per_handler,
    query_event_joins_room_from_query,
    query_values_are_percent_decoded,
    unknown_events_are_ignored,
    repeated_events_keys_subscribe_to_each,
    two_hundred_clients_get_every_send_once_in_order,
}

/// Every client in a room gets a message sent to that room.
pub async fn send_reaches_every_client_in_room(h: &Harness) {
    let guid = new_id();
    let mut a = connect(h, &guid, &new_id(), &["normal-event"]).await;
    let mut b = connect(h, &guid, &new_id(), &["normal-event"]).await;
    let payload = format!("to both {}", new_id());
    send(h, "normal-event", &guid, &payload).await;
    expect_events(&mut a, "first client", &[("normal-event", &payload)]).await;
    expect_events(&mut b, "second client", &[("normal-event", &payload)]).await;
}

/// A client in another room does not get the message: the first thing it receives is the
/// message later sent to its own room.
pub async fn send_skips_other_rooms(h: &Harness) {
    let (guid, other_guid) = (new_id(), new_id());
    let mut inside = connect(h, &guid, &new_id(), &["normal-event"]).await;
    let mut outside = connect(h, &other_guid, &new_id(), &["normal-event"]).await;
    let first = format!("for {guid}");
    send(h, "normal-event", &guid, &first).await;
    expect_events(
        &mut inside,
        "client in the room",
        &[("normal-event", &first)],
    )
    .await;
    let second = format!("for {other_guid}");
    send(h, "normal-event", &other_guid, &second).await;
    expect_events(
        &mut outside,
        "client in another room (must not get the first message)",
        &[("normal-event", &second)],
    )
    .await;
}

/// Rooms are per handler: room `G` of `test-multiple-1` and room `G` of `test-multiple-2` are
/// different, so a send on one event reaches only that event's subscribers.
pub async fn rooms_are_per_handler(h: &Harness) {
    let guid = new_id();
    let mut one = connect(h, &guid, &new_id(), &["test-multiple-1"]).await;
    let mut two = connect(h, &guid, &new_id(), &["test-multiple-2"]).await;
    let mut both = connect(h, &guid, &new_id(), &["test-multiple-1", "test-multiple-2"]).await;
    send(h, "test-multiple-1", &guid, "first").await;
    send(h, "test-multiple-2", &guid, "second").await;
    send(h, "test-multiple-1", &guid, "third").await;
    expect_events(
        &mut one,
        "test-multiple-1 subscriber",
        &[("test-multiple-1", "first"), ("test-multiple-1", "third")],
    )
    .await;
    expect_events(
        &mut two,
        "test-multiple-2 subscriber",
        &[("test-multiple-2", "second")],
    )
    .await;
    expect_events(
        &mut both,
        "subscriber of both",
        &[
            ("test-multiple-1", "first"),
            ("test-multiple-2", "second"),
            ("test-multiple-1", "third"),
        ],
    )
    .await;
    // Prove the negative for the single-event subscribers: the next message each receives is
    // a fresh one on its own event, not one that leaked from the other handler.
    send(h, "test-multiple-2", &guid, "fourth").await;
    expect_events(
        &mut two,
        "test-multiple-2 subscriber",
        &[("test-multiple-2", "fourth")],
    )
    .await;
    send(h, "test-multiple-1", &guid, "fifth").await;
    expect_events(
        &mut one,
        "test-multiple-1 subscriber",
        &[("test-multiple-1", "fifth")],
    )
    .await;
}

/// `query-event` takes its room from the `room` query parameter, not from the path.
pub async fn query_event_joins_room_from_query(h: &Harness) {
    let (guid, room, client) = (new_id(), new_id(), new_id());
    let target = format!(
        "{}&room={room}",
        sse_target(&guid, &client, &["query-event"])
    );
    let mut stream = open_stream(h, &target).await;
    wait_conn_create(h, &client).await;
    send(h, "query-event", &guid, "to the path's guid").await;
    send(h, "query-event", &room, "to the query's room").await;
    expect_events(
        &mut stream,
        "query-event client",
        &[("query-event", "to the query's room")],
    )
    .await;
}

/// Query values are percent-decoded (and `+` is a space, as in every form-encoded query, and
/// as the original's `querystring` does) before the server and the application see them: the
/// client id in `conn:create` and the `room` of `query-event`.
pub async fn query_values_are_percent_decoded(h: &Harness) {
    let id = new_id();
    let client = format!("{id} /é+&=");
    let room = format!("{} ü&x=y", new_id());
    let target = format!(
        "/files/{}/pull?clientId={}&events=query%2Devent&room={}",
        new_id(),
        control::encode_component(&client),
        control::encode_component(&room).replacen("%20", "+", 1)
    );
    let mut stream = open_stream(h, &target).await;
    wait_conn_create(h, &client).await;
    send(h, "query-event", &room, "decoded").await;
    expect_events(&mut stream, "client", &[("query-event", "decoded")]).await;
}

/// Unknown event names in `events` are ignored: the stream still opens, and the known events
/// still work.
pub async fn unknown_events_are_ignored(h: &Harness) {
    let guid = new_id();
    let client = new_id();
    let mut stream = connect(h, &guid, &client, &["no-such-event", "normal-event"]).await;
    let payload = format!("known {}", new_id());
    send(h, "normal-event", &guid, &payload).await;
    expect_events(&mut stream, "client", &[("normal-event", &payload)]).await;

    // Only unknown events: still a stream (that receives nothing).
    let lone = new_id();
    let mut lone_stream = open_stream(h, &sse_target(&new_id(), &lone, &["no-such-event"])).await;
    let opening = within(
        WAIT,
        "the opening of a stream with only unknown events",
        lone_stream.next_raw(),
    )
    .await;
    assert!(
        matches!(opening, Ok(Some(_))),
        "a stream with only unknown events should still open, got {opening:?}"
    );
}

/// One connection with repeated `events` keys subscribes to each event.
pub async fn repeated_events_keys_subscribe_to_each(h: &Harness) {
    let guid = new_id();
    let mut stream = connect(h, &guid, &new_id(), &["test-multiple-1", "test-multiple-2"]).await;
    send(h, "test-multiple-2", &guid, "on two").await;
    send(h, "test-multiple-1", &guid, "on one").await;
    expect_events(
        &mut stream,
        "client of both events",
        &[("test-multiple-2", "on two"), ("test-multiple-1", "on one")],
    )
    .await;
}

/// How many clients share the room in the fan-out case.
const FAN_OUT_CLIENTS: usize = 200;
/// How many messages the fan-out case sends.
const FAN_OUT_MESSAGES: usize = 20;

/// 200 clients in one room each receive every one of 20 sends, once and in order.
pub async fn two_hundred_clients_get_every_send_once_in_order(h: &Harness) {
    let guid = new_id();
    let clients: Vec<String> = (0..FAN_OUT_CLIENTS).map(|_| new_id()).collect();
    // Connect all at once, as a burst of page loads would.
    let mut opening = JoinSet::new();
    for (i, client) in clients.iter().enumerate() {
        let request = Request::get(sse_target(&guid, client, &["normal-event"]))
            .header("Accept", "text/event-stream")
            .header("Cache-Control", "no-cache");
        let base_url = h.base_url().to_owned();
        opening.spawn(async move { (i, request.send(&base_url).await) });
    }
    let mut streams: Vec<Option<SseStream>> = (0..FAN_OUT_CLIENTS).map(|_| None).collect();
    within(WAIT * 3, "200 concurrent connects to answer", async {
        while let Some(result) = opening.join_next().await {
            let (i, response) = result.expect("a connect task panicked");
            let response = response.unwrap_or_else(|e| panic!("client {i} cannot connect: {e}"));
            assert_eq!(
                response.status(),
                200,
                "client {i}: {:?}",
                response.headers()
            );
            streams[i] = Some(SseStream::http1(response));
        }
    })
    .await;
    let streams: Vec<SseStream> = streams.into_iter().flatten().collect();
    let log = wait_log(h, "conn:create for all 200 clients", |log| {
        let created: HashSet<&str> = log
            .iter()
            .filter(|r| r.kind == "conn:create")
            .filter_map(|r| r.client_id.as_deref())
            .collect();
        clients.iter().all(|c| created.contains(c.as_str()))
    })
    .await;
    let room_creates = log
        .iter()
        .filter(|r| r.is_room("room:create", "normal-event", &guid))
        .count();
    assert_eq!(room_creates, 1, "200 concurrent joins make one room:create");
    let messages: Vec<String> = (0..FAN_OUT_MESSAGES)
        .map(|i| format!("message {i} of {guid}"))
        .collect();
    for message in &messages {
        send(h, "normal-event", &guid, message).await;
    }
    let end = format!("end of {guid}");
    send(h, "normal-event", &guid, &end).await;
    let mut expected = messages.clone();
    expected.push(end);

    let mut readers = JoinSet::new();
    for (i, mut stream) in streams.into_iter().enumerate() {
        let expected = expected.clone();
        readers.spawn(async move {
            for (n, want) in expected.iter().enumerate() {
                let got = next_event(&mut stream, &format!("client {i}: message #{n}")).await;
                assert_eq!(
                    (got.event.as_str(), got.data.as_str()),
                    ("normal-event", want.as_str()),
                    "client {i}: message #{n} (a duplicate, a loss or a reordering)"
                );
            }
        });
    }
    within(WAIT * 3, "all 200 clients to read every message", async {
        while let Some(result) = readers.join_next().await {
            if let Err(e) = result {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    })
    .await;
}
