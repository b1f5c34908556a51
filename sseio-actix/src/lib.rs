#![doc = include_str!("../README.md")]

mod body;
mod convert;
mod middleware;

pub use middleware::{SseioMiddleware, SseioMiddlewareService, respond};
#[doc(no_inline)]
pub use sseio_core::*;
