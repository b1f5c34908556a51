//! Issue 6's slow reader at full scale: one client stops reading while a thousand others receive
//! 50 MB of broadcasts.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conformance_tests::Harness;
use conformance_tests::control;
use conformance_tests::http1::{Request, Response};
use conformance_tests::message_check::MessageCheck;

use crate::cases::*;

crate::cases::registry::case_table! {
    stalled_reader_among_a_thousand needs [Settings, OwnProcess],
}

/// The readers that keep up.
const READERS: usize = 1000;
/// The bytes of each message's payload: large, so that 50 MB is a few hundred frames.
const PAYLOAD: usize = 64 * 1024;
/// Messages sent: 763 × 64 KiB = 50.0 MB, to every reader.
const MESSAGES: usize = 763;
/// How many messages the sender may be ahead of the slowest reader that keeps up.
const WINDOW: usize = 4;
/// The memory baseline is taken before this message is sent, once every reader has at least the
/// first [`WINDOW`] + 1: the readers' write buffers have had a full frame by then.
const BASELINE_AFTER: usize = 2 * WINDOW;
/// The per-connection outgoing budget the harness is given (`SSEIO_MAX_BUFFER_BYTES`).
const BUDGET: u64 = 1024 * 1024;
/// How much more than [`BUDGET`] the server's resident memory may grow while the messages flow:
/// the messages in flight (shared by every reader's queue, [`WINDOW`] of them), the readers'
/// HTTP write buffers and the allocator's slack. Buffering the stalled reader's backlog without
/// a bound would keep most of the 50 MB.
const RSS_MARGIN: u64 = 8 * 1024 * 1024;

/// The event every message of this case is sent on.
const EVENT: &str = "normal-event";

/// A thousand readers and one that opened its stream and never reads it. The sender keeps within
/// [`WINDOW`] messages of the slowest of the thousand, as a healthy deployment does, and sends
/// 50 MB in 64 KiB messages, each numbered and filled with a letter of its own. Every reader gets
/// every message exactly once, in order, byte for byte; the stalled one is disconnected
/// (`conn:close`) with one `error` record naming it; and the server's resident memory peaks at
/// most [`BUDGET`] + [`RSS_MARGIN`] above what it held once every stream had its first frames.
pub async fn stalled_reader_among_a_thousand(h: &Harness) {
    let h = h
        .with_env(&[("SSEIO_MAX_BUFFER_BYTES", &BUDGET.to_string())])
        .await;
    let room = new_id();
    let stalled_id = new_id();
    let reader_ids: Vec<String> = (0..READERS).map(|_| new_id()).collect();
    let started = Instant::now();
    // Opened, then never read again.
    let stalled = open_stream(&h, &sse_target(&room, &stalled_id, &[EVENT])).await;
    let targets: Vec<String> = reader_ids
        .iter()
        .map(|id| sse_target(&room, id, &[EVENT]))
        .collect();
    let streams = crate::open_streams(&h, &targets).await;
    let ours: HashSet<&str> = reader_ids
        .iter()
        .chain([&stalled_id])
        .map(String::as_str)
        .collect();
    wait_log_within(
        &h,
        Duration::from_secs(30),
        "conn:create of every reader",
        |log| {
            log.iter()
                .filter(|r| r.kind == "conn:create")
                .filter(|r| r.client_id.as_deref().is_some_and(|id| ours.contains(id)))
                .count()
                == READERS + 1
        },
    )
    .await;
    let connected = started.elapsed();

    // Measured from once every reader has its first messages: a framework that copies each
    // frame into a per-connection write buffer (actix-web does) keeps that buffer's capacity, as
    // large as the largest frame, for the connection's life: a thousand times 64 KiB that must
    // not count against the stalled reader. Its budget is the growth after that.
    let mut rss_before = None;
    let mut peak_tracked = false;
    let fillers: Arc<Vec<Vec<u8>>> = Arc::new(
        (b'a'..=b'z')
            .map(|letter| vec![letter; PAYLOAD - 7])
            .collect(),
    );
    let mut readers = Vec::new();
    let mut progress = Vec::new();
    for (stream, id) in streams.into_iter().zip(&reader_ids) {
        let (received, watch) = tokio::sync::watch::channel(0usize);
        progress.push(watch);
        readers.push(tokio::spawn(read_every_message(
            stream,
            id.clone(),
            fillers.clone(),
            received,
        )));
    }
    for seq in 0..MESSAGES {
        let what = format!(
            "every reader to have message {} before {seq} is sent",
            seq.saturating_sub(WINDOW)
        );
        for watch in &mut progress {
            if within(WAIT, &what, watch.wait_for(|n| n + WINDOW > seq))
                .await
                .is_err()
            {
                reader_failed(&h, &stalled_id).await;
            }
        }
        if seq == BASELINE_AFTER {
            rss_before = h.rss_bytes();
            peak_tracked = h.reset_peak_rss();
        }
        let mut message = format!("{seq:06} ");
        message.push_str(std::str::from_utf8(&fillers[seq % 26]).expect("ASCII letters"));
        send(&h, EVENT, &room, &message).await;
    }
    for reader in readers {
        within(WAIT, "every reader's last messages", reader)
            .await
            .expect("a reader failed (its own panic says why)");
    }
    let delivered = started.elapsed() - connected;

    let log = wait_log(&h, "conn:close of the stalled reader", |log| {
        control::count_conn(log, "conn:close", &stalled_id) == 1
    })
    .await;
    // The readers close their streams once they have everything, so their `conn:close` records
    // are expected; a reader cut off as slow would have failed above, and have an error record.
    let errors: Vec<_> = log.iter().filter(|r| r.is_error()).collect();
    assert!(
        errors.len() == 1
            && errors[0]
                .message
                .as_deref()
                .unwrap_or("")
                .contains(&stalled_id),
        "exactly one error record, naming the stalled client {stalled_id}: {errors:?}"
    );
    let peak = if peak_tracked {
        h.peak_rss_bytes()
    } else {
        h.rss_bytes()
    };
    // A framework whose write buffers keep growing after the baseline (see
    // `registry::Adapter::write_buffer_growth`) gets that much more per reader; still far below
    // the stalled reader's 50 MB were it buffered without a bound.
    let write_buffer_growth = crate::cases::registry::ADAPTERS
        .iter()
        .find(|a| a.name == h.adapter())
        .map_or(0, |a| a.write_buffer_growth);
    let bound = BUDGET + RSS_MARGIN + READERS as u64 * write_buffer_growth;
    if let (Some(before), Some(peak)) = (rss_before, peak) {
        let growth = peak.saturating_sub(before);
        note(&format!(
            "{}: {READERS} readers got {} MB each in {delivered:.1?} (connecting took \
             {connected:.1?}); server RSS {} MiB with the streams open, {} of peak growth \
             {growth} bytes ({:.1} MiB) against a bound of {} MiB",
            h.adapter(),
            MESSAGES * PAYLOAD / 1_000_000,
            before / (1024 * 1024),
            if peak_tracked {
                "VmHWM"
            } else {
                "VmRSS at the end"
            },
            growth as f64 / (1024.0 * 1024.0),
            bound / (1024 * 1024),
        ));
        assert!(
            growth <= bound,
            "server RSS grew by {growth} bytes while one client stalled, more than its \
             {BUDGET}-byte budget plus {RSS_MARGIN} and {READERS} times the framework's write \
             buffer growth of {write_buffer_growth}"
        );
    }
    drop(stalled);
}

/// Fails the case after a reader failed (its own panic says how), with what the server says about
/// the streams it closed: its error records, how many `conn:close`, and whether it is draining
/// (a new stream answered `503`: the harness was sent `SIGTERM`, which this case never does).
async fn reader_failed(h: &Harness, stalled_id: &str) -> ! {
    let log = log(h).await;
    let errors: Vec<_> = log.iter().filter(|r| r.is_error()).take(5).collect();
    let closed = log.iter().filter(|r| r.kind == "conn:close").count();
    let probe = sse_target(&new_id(), &new_id(), &[EVENT]);
    let probe = request(h, Request::get(probe).header("Connection", "close")).await;
    panic!(
        "a reader failed (its own panic says why); the server has closed {closed} streams, the \
         stalled one is {stalled_id}, its first error records are {errors:#?}, and a new stream \
         is answered {}",
        probe.status()
    );
}

/// Reads `stream` until it has had every message of the case, checking each against what was
/// sent, and reports its progress on `received`.
async fn read_every_message(
    mut stream: Response,
    id: String,
    fillers: Arc<Vec<Vec<u8>>>,
    received: tokio::sync::watch::Sender<usize>,
) {
    let mut check = MessageCheck::new(EVENT, MESSAGES, fillers);
    while check.seq() < MESSAGES {
        let chunk = within(
            WAIT,
            &format!("reader {id}: message {}", check.seq()),
            stream.next_chunk(),
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "reader {id}: the stream failed at message {}: {e}",
                check.seq()
            )
        })
        .unwrap_or_else(|| panic!("reader {id}: the stream ended at message {}", check.seq()));
        if let Err(e) = check.feed(&chunk) {
            panic!("reader {id}: {e}");
        }
        received.send_replace(check.seq());
    }
    stream.close().await;
}
