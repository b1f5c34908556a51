#![doc = include_str!("../README.md")]

mod lean;
mod serve;
mod service;

pub use serve::{LISTEN_BACKLOG, NotFound, Serve, bind, listen, serve, shutdown_signal};
pub use service::{ResponseFuture, SseioBody, SseioLayer, SseioService};
#[doc(no_inline)]
pub use sseio_core::*;
