#![doc = include_str!("../README.md")]

mod lean;
mod serve;
mod service;

pub use serve::{DEFAULT_SHUTDOWN_GRACE, NotFound, Serve, listen, serve, shutdown_signal};
pub use service::{ResponseFuture, SseioBody, SseioLayer, SseioService};
#[doc(no_inline)]
pub use sseio_core::*;
