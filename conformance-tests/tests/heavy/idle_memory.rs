//! A guard against the next silent regression of an idle stream's memory: the standalone server
//! (its lean path: `harness-hyper`, and every harness served `lean`) holding two thousand idle
//! streams must stay within a stated budget per stream. The framework's app a harness serves
//! beside SSE-IO must not change what a stream costs, so the budget is the same for all. Memory per stream is stable to a few bytes from run to run, unlike timings,
//! so a change that adds a few hundred bytes to every stream fails here instead of landing
//! unnoticed.
//!
//! The budget is for this suite's debug build; `BENCHMARKS.md` has the release figures and the
//! command that measures them against rawsse.

use conformance_tests::Harness;

use crate::cases::*;

/// The streams measured.
const STREAMS: usize = 2_000;
/// The streams opened first, and not measured.
const WARM_UP: usize = 1_000;

/// The most bytes of resident memory one idle stream may cost the debug build of the standalone
/// server: measured at 2,316 to 2,465 B over four runs when it was set (a release build costs
/// about 2,320 B; before the stream's task was cut down, about 4,900 B).
pub const BUDGET_BYTES: u64 = 2_700;

/// Two thousand idle streams (in twenty rooms, heartbeats on, the metrics recorder installed, as
/// the harness always runs), opened after a thousand others: the growth of the harness's
/// resident memory over those two thousand, per stream, is within [`BUDGET_BYTES`]. Measuring
/// from the first thousand on leaves out what the first connections of a process allocate once
/// (thread caches, pools, the registry's first growth).
pub async fn an_idle_stream_stays_within_its_budget(h: &Harness) {
    // A fresh process, so that nothing an earlier case did is in its memory.
    let h = h.with_env(&[]).await;
    let rooms: Vec<String> = (0..20).map(|_| new_id()).collect();
    let warm_up = open_joined(&h, &rooms, WARM_UP).await;
    let before = h.rss_bytes().expect("the harness's VmRSS");
    let streams = open_joined(&h, &rooms, STREAMS).await;
    let open = h.rss_bytes().expect("the harness's VmRSS");
    let per_stream = open.saturating_sub(before) / STREAMS as u64;
    println!(
        "{}: {STREAMS} idle streams, {per_stream} B of resident memory each (budget {BUDGET_BYTES} B)",
        h.adapter()
    );
    assert!(
        per_stream <= BUDGET_BYTES,
        "an idle stream costs {per_stream} B, over the budget of {BUDGET_BYTES} B: find what a \
         change added to every stream (`--cfg sseio_dhat`, BENCHMARKS.md) before raising it"
    );
    drop((warm_up, streams));
}

/// Opens `count` streams of new clients over `rooms`, and waits until each has joined.
async fn open_joined(
    h: &Harness,
    rooms: &[String],
    count: usize,
) -> Vec<conformance_tests::http1::Response> {
    let ids: Vec<String> = (0..count).map(|_| new_id()).collect();
    let targets: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| sse_target(&rooms[i % rooms.len()], id, &["normal-event"]))
        .collect();
    crate::open_and_joined(h, &ids, &targets).await
}
