//! How cases become tests: each case module lists its cases in a table ([`case_table!`]), with
//! what each needs beyond the harness contract's HTTP endpoints ([`Need`]); the test targets turn
//! every (adapter, case) into a `libtest-mimic` trial named `<adapter>::<case>`.
//!
//! Adding a case is one edit to its module (the function and its line in the module's table);
//! adding an adapter is one line in [`ADAPTERS`]. Whether a case can run against an external
//! server (`SERVER_URL`) is decided here, once, from what it declares: one that needs something
//! only a harness started by the suite can give is listed as ignored there, so the summary line
//! counts it as ignored rather than passed.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};

use conformance_tests::Harness;
use libtest_mimic::{Failed, Trial};

/// The future of one running case.
pub type CaseFuture<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// One case of the suite, run against one harness: an entry of a module's `CASES` table.
#[derive(Debug)]
pub struct Case {
    /// The function's name, which names the test: `<adapter>::<name>`.
    pub name: &'static str,
    /// What it needs beyond the harness contract's HTTP endpoints; empty when it runs against
    /// any server, external ones included.
    pub needs: &'static [Need],
    /// Runs the case against a harness.
    pub run: for<'a> fn(&'a Harness) -> CaseFuture<'a>,
}

/// What a case needs that an external server (`SERVER_URL`) cannot give the suite. A case that
/// declares any of these is listed as ignored when `SERVER_URL` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A harness of its own started with settings of `HARNESS.md`'s "What later capabilities
    /// add" (an `SSEIO_*` environment variable: limits, CORS, auth, history, drain grace).
    Settings,
    /// The server to itself: it reads figures of the whole process (`GET /metrics`, resident
    /// memory) as its own.
    OwnProcess,
    /// The harness process, to send it `SIGTERM` and read the log it prints as it exits.
    Signal,
    /// Several nodes, and the `redis-server` between them, started by the suite.
    Nodes,
}

/// Lists a case module's cases as `pub const CASES: &[Case]`: each entry is the name of a
/// `pub async fn case(h: &Harness)` of the module, optionally followed by `needs [Need, ..]`.
macro_rules! case_table {
    ($($case:ident $(needs [$($need:ident),+ $(,)?])?),+ $(,)?) => {
        /// This module's cases, each with what it needs (see `registry::Need`).
        pub const CASES: &[$crate::cases::registry::Case] = &[$(
            $crate::cases::registry::Case {
                name: stringify!($case),
                needs: &[$($($crate::cases::registry::Need::$need),+)?],
                run: {
                    fn run(h: &conformance_tests::Harness) -> $crate::cases::registry::CaseFuture<'_> {
                        Box::pin($case(h))
                    }
                    run
                },
            }
        ),+];
    };
}
pub(crate) use case_table;

/// A harness binary of this package, one per adapter.
#[derive(Debug)]
pub struct Adapter {
    /// The adapter's name, the first part of its tests' names.
    pub name: &'static str,
    /// The path of its harness binary.
    pub bin: &'static str,
    /// The environment its harness starts with, before a case's own: how it is served
    /// (`SSEIO_SERVE`, see `conformance-tests/HARNESS.md`); empty for the binary's default.
    pub env: &'static [(&'static str, &'static str)],
    /// Its framework notices an HTTP/2 stream the client reset (`RST_STREAM`) only when it next
    /// writes to that stream, at the stream's next heartbeat at the latest, not at once. Only
    /// the case that checks how soon may allow for it; the stream must still close once,
    /// without an error.
    pub h2_reset_seen_at_next_write: bool,
    /// How far its framework's per-connection write buffer may grow under load beyond what it
    /// held once the stream had its first frames: 0 for a framework that writes the frames it is
    /// given without copying them. The stalled-reader case allows this much more per reader.
    pub write_buffer_growth: u64,
}

impl Adapter {
    const fn new(name: &'static str, bin: &'static str) -> Adapter {
        Adapter {
            name,
            bin,
            env: &[],
            h2_reset_seen_at_next_write: false,
            write_buffer_growth: 0,
        }
    }

    /// Served by its framework's own server (`SSEIO_SERVE=framework`) rather than its default.
    const fn framework(self) -> Adapter {
        Adapter {
            env: &[("SSEIO_SERVE", "framework")],
            ..self
        }
    }

    /// Starts its harness with `env` (after [`Adapter::env`]) and waits for it to listen; the
    /// external server instead with `SERVER_URL` (see [`Harness::start`]).
    pub async fn start(&'static self, env: &[(&str, &str)]) -> Harness {
        Harness::start_with_base(self.name, self.bin, self.env, env).await
    }

    /// See [`Adapter::write_buffer_growth`].
    const fn write_buffer_growth(self, bytes: u64) -> Adapter {
        Adapter {
            write_buffer_growth: bytes,
            ..self
        }
    }

    /// See [`Adapter::h2_reset_seen_at_next_write`].
    const fn h2_reset_seen_at_next_write(self) -> Adapter {
        Adapter {
            h2_reset_seen_at_next_write: true,
            ..self
        }
    }
}

/// Every adapter the suite runs against, each way it is served: a harness binary and the
/// environment that chooses how it serves (`SSEIO_SERVE`). The framework quirks below are of the
/// server that writes the streams, so they are set per entry. A new adapter is one line here (and
/// its `[[bin]]`).
pub const ADAPTERS: &[Adapter] = &[
    // sseio's standalone server (its lean path) with an axum app; and the same app with
    // `SseioLayer` under `axum::serve`.
    Adapter::new("hyper", env!("CARGO_BIN_EXE_harness-hyper")),
    Adapter::new("hyper-framework", env!("CARGO_BIN_EXE_harness-hyper")).framework(),
    // warp, poem and salvo apps served by sseio's standalone server (their default, the documented
    // way), and by their framework's own server.
    Adapter::new("warp", env!("CARGO_BIN_EXE_harness-warp")),
    Adapter::new("warp-framework", env!("CARGO_BIN_EXE_harness-warp")).framework(),
    Adapter::new("poem", env!("CARGO_BIN_EXE_harness-poem")),
    Adapter::new("poem-framework", env!("CARGO_BIN_EXE_harness-poem")).framework(),
    Adapter::new("salvo", env!("CARGO_BIN_EXE_harness-salvo")),
    Adapter::new("salvo-framework", env!("CARGO_BIN_EXE_harness-salvo")).framework(),
    // actix-web, on its own HTTP stack, is served by its own server only. actix-web 4.17 awaits
    // an idle response body without watching for a reset of its HTTP/2 stream (`actix-http`'s
    // `h2::dispatcher::handle_response`). Its HTTP/1 dispatcher copies body chunks into a write
    // buffer that it flushes at 32 KiB and never shrinks: one that ends up holding a little over
    // 32 KiB (sseio-actix hands it 16 KiB slices) doubles its capacity to 64 KiB.
    Adapter::new("actix", env!("CARGO_BIN_EXE_harness-actix"))
        .h2_reset_seen_at_next_write()
        .write_buffer_growth(32 * 1024),
    // The standalone hub, served by sseio-hyper's standalone server as harness-hyper is.
    Adapter::new("hub", env!("CARGO_BIN_EXE_harness-hub")),
];

/// The adapter named `name`.
///
/// # Panics
///
/// When [`ADAPTERS`] has no such adapter.
pub fn adapter(name: &str) -> &'static Adapter {
    ADAPTERS
        .iter()
        .find(|a| a.name == name)
        .unwrap_or_else(|| panic!("no adapter named {name}"))
}

/// Whether what `needs` lists is available: everything is when the suite starts its own
/// harnesses, nothing beyond the HTTP endpoints against an external server (`SERVER_URL`).
pub fn available(needs: &[Need]) -> bool {
    super::server_is_exclusive() || needs.is_empty()
}

/// A trial named `name` that runs the future `body` makes, on a thread named after the trial
/// (so a panic message names the case, as libtest's do) with a tokio runtime of its own (two
/// worker threads, as each `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]` had).
/// It is listed as ignored when what it `needs` is not [`available`].
pub fn trial<F>(name: String, needs: &[Need], body: impl FnOnce() -> F + Send + 'static) -> Trial
where
    F: Future<Output = ()>,
{
    let ignored = !available(needs);
    let thread_name = name.clone();
    Trial::test(name, move || {
        let thread = std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || runtime().block_on(body()))
            .map_err(|e| Failed::from(format!("cannot start the case's thread: {e}")))?;
        thread
            .join()
            .map_err(|panic| Failed::from(panic_message(&*panic)))
    })
    .with_ignored_flag(ignored)
}

/// The trial of `case` against `adapter`: starts the adapter's harness on a free port (or uses
/// `SERVER_URL`) and runs the case under [`super::CASE_LIMIT`].
pub fn adapter_trial(adapter: &'static Adapter, case: &'static Case) -> Trial {
    trial(
        format!("{}::{}", adapter.name, case.name),
        case.needs,
        move || async move {
            let harness = adapter.start(&[]).await;
            super::run_case(&harness, case.name, (case.run)(&harness)).await;
        },
    )
}

/// The runtime of one case.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("the case panicked")
        .to_owned()
}

static SHOW_OUTPUT: AtomicBool = AtomicBool::new(false);

/// Prints what cases report (figures, the JavaScript suite's report) when `show` is set: the
/// suite runs with `--nocapture`, as libtest showed a passing test's output only then.
pub fn show_output(show: bool) {
    SHOW_OUTPUT.store(show, Ordering::Relaxed);
}

/// Prints `report` on stdout when the suite runs with `--nocapture` ([`show_output`]).
pub fn note(report: &str) {
    if SHOW_OUTPUT.load(Ordering::Relaxed) {
        println!("{report}");
    }
}
