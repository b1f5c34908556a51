//! The conformance cases at the scale of issue 6's "Done when": a reader that stops reading
//! while a thousand others receive 50 MB of broadcasts, and a drain of ten thousand streams.
//!
//! They are a test target of their own so that they never share the machine with the rest of the
//! suite (which runs two cases at a time and has timing bounds of its own) nor with each other:
//! [`one_at_a_time`] runs one heavy case of one adapter at a time, so the ten thousand sockets of
//! a drain (one file descriptor each, in this process and in the harness's) stay far below the
//! per-process limit. As in `tests/conformance.rs`, each module lists its cases in a table with
//! what they need, and the cases run against the adapters as trials named `<adapter>::<case>`, so
//! a failure reads `warp::drain_of_ten_thousand_streams`: every case against each harness served
//! its default way, the stalled reader also against each served by its framework's own server
//! (`warp-framework`, ...), and the idle stream's budget against each served lean. Against an
//! external server (`SERVER_URL`) they are listed as ignored.
//!
//! The cases reuse the helpers of `tests/cases/` (and so compile that module once more; its own
//! case tables are not run here).

#[path = "../cases/mod.rs"]
#[allow(dead_code)] // The conformance cases and their tables; only the helpers are used here.
pub mod cases;

pub mod drain;
pub mod idle_memory;
pub mod stalled_reader;

use std::collections::HashSet;
use std::sync::Arc;

use conformance_tests::Harness;
use conformance_tests::http1::{Request, Response};
use tokio::sync::{Mutex, MutexGuard, Semaphore};
use tokio::task::JoinSet;

use crate::cases::WAIT;
use crate::cases::registry::{self, ADAPTERS};

/// The entries of `ADAPTERS` whose SSE streams take the standalone server's lean path: the
/// harnesses served `lean`, each held to the idle stream's budget.
const LEAN: &[&str] = &["hyper", "warp", "poem", "salvo", "hub"];

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    registry::show_output(args.nocapture);
    let mut trials = Vec::new();
    for adapter in ADAPTERS {
        // A way of serving other than the harness's default (`SSEIO_SERVE=framework`) runs only
        // the case about how its server writes: the drains take each framework's server through
        // a graceful stop of its own, which the default entries and the conformance suite's
        // drain cases cover, and would add a minute to CI here.
        let cases: Vec<&'static registry::Case> = match adapter.env {
            [] => stalled_reader::CASES.iter().chain(drain::CASES).collect(),
            _ => stalled_reader::CASES.iter().collect(),
        };
        for case in cases {
            trials.push(registry::trial(
                format!("{}::{}", adapter.name, case.name),
                case.needs,
                move || async move {
                    let _turn = one_at_a_time().await;
                    let harness = adapter.start(&[]).await;
                    cases::run_case(&harness, case.name, (case.run)(&harness)).await;
                },
            ));
        }
    }
    // The lean path's budget per idle stream, for each harness that is served on it.
    for adapter in LEAN.iter().map(|name| registry::adapter(name)) {
        trials.push(registry::trial(
            format!("{}::an_idle_stream_stays_within_its_budget", adapter.name),
            &[registry::Need::Settings, registry::Need::OwnProcess],
            move || async move {
                let _turn = one_at_a_time().await;
                let harness = adapter.start(&[]).await;
                cases::run_case(
                    &harness,
                    "an_idle_stream_stays_within_its_budget",
                    idle_memory::an_idle_stream_stays_within_its_budget(&harness),
                )
                .await;
            },
        ));
    }
    trials.sort_by(|a, b| a.name().cmp(b.name()));
    libtest_mimic::run(&args, trials).exit();
}

/// Waits for this case's turn: the heavy cases run one at a time, whatever `--test-threads` says.
/// The turn ends when the case's future is dropped, so a case that failed (its future dropped as
/// the panic unwinds) does not stop the next one.
pub async fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::const_new(());
    TURN.lock().await
}

/// How many connections a case opens at once: well under the server's listen backlog (1024), so
/// no connect waits for a SYN retry.
pub const OPENING_AT_ONCE: usize = 128;

/// Opens one stream per target, [`OPENING_AT_ONCE`] at a time, and returns their responses in
/// the order of `targets`, each asserted `200` (a stream the server accepted: it has joined its
/// rooms before answering).
pub async fn open_streams(h: &Harness, targets: &[String]) -> Vec<Response> {
    let permits = Arc::new(Semaphore::new(OPENING_AT_ONCE));
    let mut opening = JoinSet::new();
    for (i, target) in targets.iter().enumerate() {
        let (permits, base_url, target) =
            (permits.clone(), h.base_url().to_owned(), target.clone());
        opening.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("never closed");
            let request = Request::get(target.as_str())
                .header("Accept", "text/event-stream")
                .header("Cache-Control", "no-cache");
            let response = tokio::time::timeout(WAIT, request.send(&base_url))
                .await
                .unwrap_or_else(|_| panic!("timed out after {WAIT:?} opening GET {target}"))
                .unwrap_or_else(|e| panic!("GET {target} failed: {e}"));
            assert_eq!(
                response.status(),
                200,
                "GET {target} should open a stream; headers {:?}",
                response.headers()
            );
            (i, response)
        });
    }
    let mut responses: Vec<Option<Response>> = targets.iter().map(|_| None).collect();
    while let Some(opened) = opening.join_next().await {
        let (i, response) = opened.unwrap_or_else(|e| match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("opening a stream: {e}"),
        });
        responses[i] = Some(response);
    }
    responses.into_iter().map(|r| r.expect("opened")).collect()
}

/// Opens a stream on each of `targets` (of the clients `ids`), and waits until the log has the
/// `conn:create` of every one.
pub async fn open_and_joined(h: &Harness, ids: &[String], targets: &[String]) -> Vec<Response> {
    let streams = open_streams(h, targets).await;
    let ours: HashSet<&str> = ids.iter().map(String::as_str).collect();
    cases::wait_log_within(
        h,
        std::time::Duration::from_secs(30),
        "conn:create of every stream",
        |log| {
            log.iter()
                .filter(|r| r.kind == "conn:create")
                .filter(|r| r.client_id.as_deref().is_some_and(|id| ours.contains(id)))
                .count()
                == ids.len()
        },
    )
    .await;
    streams
}
