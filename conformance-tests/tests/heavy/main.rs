//! The conformance cases at the scale of issue 6's "Done when": a reader that stops reading
//! while a thousand others receive 50 MB of broadcasts, and a drain of ten thousand streams.
//!
//! They are a test target of their own so that they never share the machine with the rest of the
//! suite (which runs two cases at a time and has timing bounds of its own) nor with each other:
//! [`one_at_a_time`] runs one heavy case of one adapter at a time, so the ten thousand sockets of
//! a drain (one file descriptor each, in this process and in the harness's) stay far below the
//! per-process limit. `heavy_suite!` instantiates every heavy case per adapter, as
//! `conformance_suite!` does, so a failure reads `warp::drain_of_ten_thousand_streams`.
//!
//! The cases reuse the helpers of `tests/cases/` (and so compile that module once more).

#[path = "../cases/mod.rs"]
pub mod cases;

pub mod drain;
pub mod stalled_reader;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use conformance_tests::Harness;
use conformance_tests::http1::{Request, Response};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::cases::WAIT;

/// Expands to `mod $adapter { ... }` with one `#[test]` per heavy case, each taking its turn
/// ([`one_at_a_time`]) and then starting the harness binary `$bin` on a runtime of its own.
macro_rules! heavy_suite {
    ($adapter:ident, $bin:literal) => {
        heavy_suite!(@cases $adapter, $bin;
            stalled_reader::stalled_reader_among_a_thousand,
            drain::drain_of_ten_thousand_streams,
        );
    };
    (@cases $adapter:ident, $bin:literal; $($module:ident :: $case:ident),+ $(,)?) => {
        mod $adapter {
            $(
                #[test]
                fn $case() {
                    let _turn = crate::one_at_a_time();
                    crate::runtime().block_on(async {
                        let harness = conformance_tests::Harness::start(
                            stringify!($adapter),
                            env!(concat!("CARGO_BIN_EXE_", $bin)),
                            &[],
                        )
                        .await;
                        crate::cases::run_case(
                            &harness,
                            stringify!($case),
                            crate::$module::$case(&harness),
                        )
                        .await;
                    });
                }
            )+
        }
    };
}

heavy_suite!(hyper, "harness-hyper");
heavy_suite!(warp, "harness-warp");
heavy_suite!(poem, "harness-poem");
heavy_suite!(salvo, "harness-salvo");

/// Waits for this case's turn: the heavy cases run one at a time, whatever `--test-threads` says.
/// A case that failed (and so poisoned the lock) does not stop the next one.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The runtime of one heavy case: two worker threads, as the rest of the suite uses.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
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
