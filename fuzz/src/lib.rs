//! What the fuzz targets share beyond `sseio-test-support` (whose reference event-stream parser
//! is the oracle of the frame target, and whose fixtures build the servers): one runtime for the
//! whole process, since a fuzzer runs millions of inputs.

use std::sync::{Arc, OnceLock};

use sseio_core::{Connection, Server};
use sseio_test_support::RecordingSink;
use sseio_test_support::fixtures::connect_blocking;
use tokio::runtime::Runtime;

/// The process's current-thread runtime.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(sseio_test_support::fixtures::runtime)
}

/// Connects a recording sink to room `g` of `event` (which is percent-encoded into the query),
/// on [`runtime`].
pub fn connect(server: &Server, event: &str) -> (Connection, Arc<RecordingSink>) {
    connect_blocking(runtime(), server, event)
}
