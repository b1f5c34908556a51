//! The live demo in a real browser: `examples/browser-test/test.mjs` drives Debian's chromium
//! with playwright-core, under `node --test`, against the `demo` binary built with this test.
//!
//! The node script starts the demo itself and restarts it halfway through (see its header), so
//! this is only glue: install the npm dependencies once, check that chromium is there, run node,
//! and turn a failing node run into a failing test that shows node's report. It needs Node 20+,
//! npm for a one-time `npm ci`, and `/usr/bin/chromium`; a missing chromium fails the test with
//! instructions, it is never skipped.

use std::path::Path;
use std::time::Duration;

use sseio_test_support::node;

/// Bound on one whole node run. The script bounds every wait and the test itself (120 s), so
/// this only fires if node itself hangs.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn demo_works_in_a_real_browser() {
    node::require_chromium();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser-test");
    node::ensure_node_modules(&dir);
    let report = node::node_test(
        &dir,
        &["test.mjs"],
        &[("DEMO_BIN", env!("CARGO_BIN_EXE_demo"))],
        RUN_TIMEOUT,
    );
    println!("the demo's browser test passed\n{report}");
}
