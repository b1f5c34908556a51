#![doc = include_str!("../README.md")]

mod health;
mod lean;
mod serve;
mod service;

pub use health::{DEFAULT_LIVENESS_PATH, DEFAULT_READINESS_PATH, Health, HealthFuture};
pub use serve::{DEFAULT_SHUTDOWN_GRACE, NotFound, Serve, listen, serve, shutdown_signal};
pub use service::{ClientAddr, ResponseFuture, SseioBody, SseioLayer, SseioService};
#[doc(no_inline)]
pub use sseio_core::*;

/// Internal: the standalone server's request-head parser, for the fuzz targets in `fuzz/`.
/// Not part of the API; it may change or go in any release.
#[doc(hidden)]
pub mod __fuzz {
    pub use crate::lean::{HEAD_LIMIT, MAX_HEADERS, Parse, first_head};
}
