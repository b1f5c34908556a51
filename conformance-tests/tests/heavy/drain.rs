//! Issue 6's drain at full scale: ten thousand open streams closed on `SIGTERM`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use conformance_tests::Harness;

use crate::cases::*;

crate::cases::registry::case_table! {
    drain_of_ten_thousand_streams needs [Settings, Signal],
    a_drain_ends_while_clients_keep_their_sockets_open needs [Settings, Signal],
}

/// The streams open when the signal comes.
const STREAMS: usize = 10_000;
/// The grace period the harness is given (`SSEIO_SHUTDOWN_GRACE_MS`, its default).
const GRACE: Duration = Duration::from_millis(5000);

/// Ten thousand open streams, then `SIGTERM`: a new stream is refused with `503` and
/// `Retry-After`; every stream ends within the grace period, the ends spread over it (over at
/// least half of it, and no tenth of it sees more than a quarter of them); the harness exits 0;
/// and the log it prints as it exits holds exactly one `conn:create` and one `conn:close` for each
/// of the ten thousand, a `conn:close` for every stream it ever opened, and no `error`.
pub async fn drain_of_ten_thousand_streams(h: &Harness) {
    let grace_ms = GRACE.as_millis().to_string();
    let mut h = h.with_env(&[("SSEIO_SHUTDOWN_GRACE_MS", &grace_ms)]).await;
    let started = Instant::now();
    // A hundred rooms of a hundred, so the drain also empties rooms.
    let rooms: Vec<String> = (0..STREAMS / 100).map(|_| new_id()).collect();
    let ids: Vec<String> = (0..STREAMS).map(|_| new_id()).collect();
    let targets: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| sse_target(&rooms[i % rooms.len()], id, &["normal-event"]))
        .collect();
    let streams = crate::open_and_joined(&h, &ids, &targets).await;
    let connected = started.elapsed();

    h.terminate();
    let signalled = Instant::now();
    let ends: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let limit = GRACE + WAIT;
                let ended = tokio::time::timeout(limit, async {
                    // A clean end of body and a connection closed mid-body both end the stream
                    // for an `EventSource`.
                    while let Ok(Some(_)) = stream.next_chunk().await {}
                })
                .await;
                assert!(ended.is_ok(), "a stream did not end within {limit:?}");
                signalled.elapsed()
            })
        })
        .collect();

    crate::cases::drain::new_streams_are_refused(&h).await;

    let mut ended = Vec::with_capacity(STREAMS);
    for end in ends {
        ended.push(end.await.expect("a stream's end (its own panic says why)"));
    }
    ended.sort();
    let (first, median, last) = (ended[0], ended[STREAMS / 2], ended[STREAMS - 1]);
    let tenths = {
        let mut tenths = [0usize; 10];
        for end in &ended {
            let tenth = (end.as_secs_f64() / GRACE.as_secs_f64() * 10.0) as usize;
            tenths[tenth.min(9)] += 1;
        }
        tenths
    };
    note(&format!(
        "{}: {STREAMS} streams opened in {connected:.1?}; after SIGTERM the first ended at \
         {first:.2?}, the median at {median:.2?}, the last at {last:.2?} (grace {GRACE:?}); \
         ends per tenth of the grace period: {tenths:?}",
        h.adapter()
    ));
    assert!(
        last <= GRACE,
        "every stream closed within the grace period: the last at {last:?}"
    );
    assert!(
        tenths.iter().all(|&n| n <= STREAMS / 4) && last - first >= GRACE / 2,
        "closes spread over the grace period, not all at once: from {first:?} to {last:?}, \
         ends per tenth {tenths:?}"
    );
    let status = h.wait_exit(WAIT).await;
    assert!(
        status.success(),
        "the harness exits 0 after draining: {status}"
    );
    let exited = signalled.elapsed();

    let log = h.exit_log(WAIT).await;
    let mut records: HashMap<&str, (usize, usize)> = HashMap::new();
    for record in &log {
        let Some(id) = record.client_id.as_deref() else {
            continue;
        };
        let counts = records.entry(id).or_default();
        match record.kind.as_str() {
            "conn:create" => counts.0 += 1,
            "conn:close" => counts.1 += 1,
            _ => {}
        }
    }
    for id in &ids {
        assert_eq!(
            records.get(id.as_str()).copied(),
            Some((1, 1)),
            "(conn:create, conn:close) records for stream {id} in the exit log"
        );
    }
    let unclosed: Vec<_> = records
        .iter()
        .filter(|(_, (creates, closes))| creates != closes)
        .collect();
    assert!(
        unclosed.is_empty(),
        "streams without exactly one conn:close per conn:create: {unclosed:?}"
    );
    let errors: Vec<_> = log.iter().filter(|r| r.is_error()).collect();
    assert!(errors.is_empty(), "error records in the drain: {errors:?}");
    note(&format!(
        "{}: exited 0 at {exited:.2?} after SIGTERM; its exit log has {} records",
        h.adapter(),
        log.len()
    ));
}

/// The standalone server's drain did not end while its clients kept their sockets open.
///
/// A stream the server ends leaves its HTTP/1.1 connection open for the client's next request
/// (an `EventSource`'s reconnect), and every browser and HTTP client keeps such a connection in
/// its keep-alive pool. A thousand streams drained on `SIGTERM` all ended in time, but the
/// standalone server then waited for each of those connections' next request until its 30 s
/// header timeout, so under Kubernetes' default 30 s termination grace the process was killed.
/// Now a connection whose stream ended while draining is closed, and one still waiting for a
/// request when the drain is over is closed then: the process exits within the grace period
/// plus a small constant, whatever the clients do with their sockets.
pub async fn a_drain_ends_while_clients_keep_their_sockets_open(h: &Harness) {
    const KEPT: usize = 1_000;
    let grace = Duration::from_millis(1000);
    let grace_ms = grace.as_millis().to_string();
    let mut h = h.with_env(&[("SSEIO_SHUTDOWN_GRACE_MS", &grace_ms)]).await;
    let room = new_id();
    let ids: Vec<String> = (0..KEPT).map(|_| new_id()).collect();
    let targets: Vec<String> = ids
        .iter()
        .map(|id| sse_target(&room, id, &["normal-event"]))
        .collect();
    let streams = crate::open_and_joined(&h, &ids, &targets).await;

    h.terminate();
    let signalled = Instant::now();
    // Each client reads its stream to its end and keeps the connection, as a keep-alive pool
    // does, until the harness is gone.
    let kept: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                while let Ok(Some(_)) = stream.next_chunk().await {}
                stream
            })
        })
        .collect();
    let limit = grace + Duration::from_secs(3);
    let status = h.wait_exit(limit).await;
    let exited = signalled.elapsed();
    assert!(
        status.success(),
        "the harness exits 0 after draining: {status}"
    );
    note(&format!(
        "{}: {KEPT} streams whose clients keep their sockets; exited at {exited:.2?} after \
         SIGTERM (grace {grace:?})",
        h.adapter()
    ));
    drop(kept);
}
