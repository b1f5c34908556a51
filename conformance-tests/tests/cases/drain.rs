//! Graceful drain on `SIGTERM` (`conformance-tests/HARNESS.md`): new streams get `503` with
//! `Retry-After`, open streams are closed spread over `SSEIO_SHUTDOWN_GRACE_MS`, and the process
//! exits 0.

use std::time::{Duration, Instant};

use conformance_tests::Harness;
use conformance_tests::control;

use super::*;

super::registry::case_table! {
    sigterm_drains_spreading_the_closes needs [Settings, Signal],
}

/// Twenty open streams, `SIGTERM` with a one-second grace period: a new stream is refused with
/// `503` and `Retry-After`, the twenty end spread over the grace period (not all at once), the
/// harness exits with status 0, and the log it prints as it exits has one `conn:close` for each.
pub async fn sigterm_drains_spreading_the_closes(h: &Harness) {
    const STREAMS: usize = 20;
    let mut h = h.with_env(&[("SSEIO_SHUTDOWN_GRACE_MS", "1000")]).await;
    let room = new_id();
    let ids: Vec<String> = (0..STREAMS).map(|_| new_id()).collect();
    let mut streams = Vec::new();
    for id in &ids {
        streams.push(connect(&h, &room, id, &["normal-event"]).await);
    }
    h.terminate();
    let signalled = Instant::now();
    let ends: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                expect_end(&mut stream, "the stream to end in the drain").await;
                signalled.elapsed()
            })
        })
        .collect();

    new_streams_are_refused(&h).await;

    let mut ended = Vec::new();
    for end in ends {
        ended.push(end.await.expect("a stream task failed"));
    }
    ended.sort();
    let (first, last) = (ended[0], ended[STREAMS - 1]);
    assert!(
        last - first >= Duration::from_millis(300),
        "closes spread over the grace period, not all at once: first {first:?}, last {last:?}"
    );
    assert!(
        last <= Duration::from_millis(2000),
        "closed within the grace period: {last:?}"
    );
    let status = h.wait_exit(Duration::from_secs(15)).await;
    assert!(
        status.success(),
        "the harness exits 0 after draining: {status}"
    );
    let log = h.exit_log(WAIT).await;
    for id in &ids {
        assert_eq!(
            control::count_conn(&log, "conn:close", id),
            1,
            "conn:close records for stream {id} in the exit log"
        );
    }
}

/// Waits until the draining harness answers a new stream `503` with `Retry-After`. The signal
/// arrives asynchronously: until the harness has seen it, a new stream opens (and is closed
/// again at once).
pub async fn new_streams_are_refused(h: &Harness) {
    within(WAIT, "a 503 for a new stream while draining", async {
        loop {
            let target = sse_target(&new_id(), &new_id(), &["normal-event"]);
            let response = request(h, Request::get(target).header("Connection", "close")).await;
            if response.status() == 503 {
                assert!(
                    response.header("retry-after").is_some(),
                    "503 without Retry-After"
                );
                return;
            }
            assert_eq!(response.status(), 200, "headers {:?}", response.headers());
            response.close().await;
        }
    })
    .await;
}
