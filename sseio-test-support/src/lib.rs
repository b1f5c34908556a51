//! What sseio's tests, benchmarks and fuzz targets share, written once (house style 28).
//!
//! - [`sink`]: [`SseSink`](sseio_core::SseSink)s that stand in for a client's connection:
//!   [`RecordingSink`] keeps every frame, [`StalledSink`] stops taking frames when told to,
//!   [`CountingSink`] only counts them.
//! - [`sse`]: the reference `text/event-stream` parser, which follows the WHATWG HTML "event
//!   stream interpretation" independently of `sseio-core`'s encoder; the conformance suite reads
//!   live streams with it, the property tests and the `frame` fuzz target use it as their
//!   oracle ([`parse_event_stream`]).
//! - [`client`]: a bare HTTP/1.1 client, for the adapters' tests of serving an app with sseio's
//!   standalone server.
//! - [`fixtures`]: the server on `/files/:guid/pull` that several tests build, requests, and a
//!   connection on a recording sink in one call.
//! - [`node`]: Node.js test scripts (the real-browser tests) run from a Rust test.
//! - [`outcome`]: what `Server::handle` promises for any request ([`check_outcome`]), the oracle
//!   of the request property test and the `request` fuzz target.
//!
//! # Who may depend on it
//!
//! It depends on `sseio-core`, so `sseio-core` may use it only as a dev-dependency of its
//! integration tests and benches (`tests/*.rs`, `benches/*.rs`): those link the same
//! `sseio-core` as this crate. The unit tests inside `sseio-core/src` are built from a second
//! copy of `sseio-core` whose types are not this crate's, so they cannot use it. The fuzz crate,
//! outside the workspace, takes it as a path dependency.

pub mod client;
pub mod fixtures;
pub mod node;
pub mod outcome;
pub mod sink;
pub mod sse;

pub use outcome::check_outcome;
pub use sink::{CountingSink, RecordingSink, StalledSink};
pub use sse::{normalise_line_breaks, parse_event_stream};
