//! The real-browser cases: `js/browser/*.test.mjs` drive Debian's chromium with playwright-core,
//! under `node --test`, against harness binaries built with this test.
//!
//! Each node script starts, drains and restarts the harnesses itself (see its header), so this
//! is only glue: install the npm dependencies once, check that chromium is there, run node with
//! the binaries' paths, and turn a failing node run into a failing test that shows node's
//! report. A missing chromium fails the test with instructions; it is never skipped.

use std::path::Path;
use std::time::Duration;

use sseio_test_support::node;

/// Bound on one whole node run; each script bounds its own waits, so this only fires if node
/// itself hangs.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// The standalone server, and an adapter on a framework's own HTTP stack.
const DRAINED: &str = concat!(
    "hyper=",
    env!("CARGO_BIN_EXE_harness-hyper"),
    ",actix=",
    env!("CARGO_BIN_EXE_harness-actix"),
);

#[test]
fn pages_come_back_after_a_drain_and_restart() {
    node::require_chromium();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("js");
    node::ensure_node_modules(&dir);
    let report = node::node_test(
        &dir,
        &["browser/drain.test.mjs"],
        &[("HARNESSES", DRAINED)],
        RUN_TIMEOUT,
    );
    println!("{report}");
}

/// Ten `EventSource`s to one origin: all open over TLS (HTTP/2 by ALPN), six over cleartext
/// HTTP/1.1, in `js/browser/tls.test.mjs`. The certificate, for `127.0.0.1` and `localhost`, is
/// made here with rcgen; the script runs `harness-hyper` with and without it.
#[test]
fn ten_streams_to_one_origin_open_over_http2_and_six_over_http11() {
    node::require_chromium();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("js");
    node::ensure_node_modules(&dir);
    let certs = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-tls");
    std::fs::create_dir_all(&certs).expect("create the certificate's directory");
    let certified =
        rcgen::generate_simple_self_signed(["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("rcgen makes a certificate");
    let (cert, key) = (certs.join("cert.pem"), certs.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("write the certificate");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write the key");
    let report = node::node_test(
        &dir,
        &["browser/tls.test.mjs"],
        &[
            ("HARNESS_HYPER", env!("CARGO_BIN_EXE_harness-hyper")),
            ("TLS_CERT", cert.to_str().expect("a UTF-8 path")),
            ("TLS_KEY", key.to_str().expect("a UTF-8 path")),
        ],
        RUN_TIMEOUT,
    );
    println!("{report}");
}
