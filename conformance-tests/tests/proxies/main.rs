//! Real proxies: the standalone server and the actix adapter behind a real nginx, with each
//! configuration of `docs/nginx/` exactly as users deploy it, and every adapter with an HTTP/1.0
//! client (what nginx speaks to the server by default).
//!
//! A trial per server, configuration and case, named `<server>::<configuration>::<case>`, so a
//! failure reads `hyper::nginx_sse::drain_ends_through_the_proxy`; and a trial per adapter for the
//! HTTP/1.0 client, `<adapter>::http10_client_gets_a_readable_stream`. Each starts its own
//! harness process and nginx (`conformance_tests::nginx`), so the target needs Debian's `nginx`
//! (`scripts/test-all` installs it); without it the cases fail with how to install it.
//!
//! [`PROXIED`] names the servers run behind nginx: `hyper`, the standalone server with its lean
//! path, and `actix`, the one adapter whose framework has an HTTP stack of its own (its own
//! HTTP/1 codec, keep-alive and shutdown) rather than hyper's, which the standalone server and
//! the other adapters share.
//!
//! The trials run one at a time ([`one_at_a_time`]), whatever `--test-threads` says: a message's
//! latency through the proxy is measured against a bound of 200 ms.
//!
//! The cases reuse the helpers of `tests/cases/` (and so compile that module once more; its own
//! case tables are not run here).

#[path = "../cases/mod.rs"]
#[allow(dead_code)] // The conformance cases and their tables; only the helpers are used here.
pub mod cases;

pub mod behind_nginx;
pub mod http10;

use conformance_tests::nginx::NginxConfig;
use tokio::sync::{Mutex, MutexGuard};

use crate::cases::registry::{self, ADAPTERS};

/// The servers run behind nginx, by adapter name (see the module's doc for why these).
const PROXIED: &[&str] = &["hyper", "actix"];

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    registry::show_output(args.nocapture);
    let mut trials = Vec::new();
    for adapter in PROXIED.iter().map(|name| registry::adapter(name)) {
        for config in NginxConfig::ALL {
            let cases = behind_nginx::CASES
                .iter()
                .filter(|case| case.configs.contains(&config));
            for case in cases {
                trials.push(registry::trial(
                    format!("{}::{}::{}", adapter.name, config.name(), case.name),
                    case.needs,
                    move || async move {
                        let _turn = one_at_a_time().await;
                        let harness = adapter.start(&[]).await;
                        cases::run_case(&harness, case.name, (case.run)(&harness, config)).await;
                    },
                ));
            }
        }
    }
    for adapter in ADAPTERS {
        for case in http10::CASES {
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
    trials.sort_by(|a, b| a.name().cmp(b.name()));
    libtest_mimic::run(&args, trials).exit();
}

/// Waits for this trial's turn: the trials run one at a time. The turn ends when the trial's
/// future is dropped, so a trial that failed does not stop the next one.
async fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::const_new(());
    TURN.lock().await
}
