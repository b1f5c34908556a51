//! `fetch`: the first message of an event on a new connection, with sends held back meanwhile.

use conformance_tests::Harness;

use super::{
    expect_events, log, new_id, next_event, open_stream, send, sse_target, wait_conn_create,
    wait_log,
};

super::registry::case_table! {
    fetch_holds_back,
    fetch_error_is_reported_and_messages_still_delivered,
}

/// The fetch result is the first message; messages sent while `fetch` runs (it takes 500 ms in
/// the harness) are held back and delivered right after it, in order; later ones follow.
pub async fn fetch_holds_back(h: &Harness) {
    let (guid, client) = (new_id(), new_id());
    let mut stream = open_stream(h, &sse_target(&guid, &client, &["fetch-event"])).await;
    wait_conn_create(h, &client).await;
    send(h, "fetch-event", &guid, "held 1").await;
    send(h, "fetch-event", &guid, "held 2").await;
    let first = next_event(&mut stream, "the fetch result").await;
    assert_eq!(first.event, "fetch-event", "the fetch result's event");
    let value: serde_json::Value = serde_json::from_str(&first.data).unwrap_or_else(|e| {
        panic!(
            "the first message should be the fetch result [\"a\",\"b\"] as JSON ({e}), got {:?}",
            first.data
        )
    });
    assert_eq!(
        value,
        serde_json::json!(["a", "b"]),
        "the first message should be the fetch result, got {:?}",
        first.data
    );
    expect_events(
        &mut stream,
        "client after the fetch result",
        &[("fetch-event", "held 1"), ("fetch-event", "held 2")],
    )
    .await;
    send(h, "fetch-event", &guid, "after").await;
    expect_events(&mut stream, "client", &[("fetch-event", "after")]).await;
}

/// A failing `fetch` raises an `error` (its message contains `foo`) and does not stop the
/// connection: a message sent right after connect is still delivered.
pub async fn fetch_error_is_reported_and_messages_still_delivered(h: &Harness) {
    let (guid, client) = (new_id(), new_id());
    let since = log(h).await.len();
    let mut stream = open_stream(h, &sse_target(&guid, &client, &["fetch-error-event"])).await;
    wait_conn_create(h, &client).await;
    let payload = format!("despite the failed fetch {}", new_id());
    send(h, "fetch-error-event", &guid, &payload).await;
    expect_events(&mut stream, "client", &[("fetch-error-event", &payload)]).await;
    wait_log(h, "an error record mentioning foo", |log| {
        log.iter()
            .skip(since)
            .any(|r| r.is_error() && r.message.as_deref().is_some_and(|m| m.contains("foo")))
    })
    .await;
}
