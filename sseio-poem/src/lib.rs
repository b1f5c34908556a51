#![doc = include_str!("../README.md")]

mod endpoint;

pub use endpoint::{SseioEndpoint, SseioMiddleware, SseioMiddlewareEndpoint};
#[doc(no_inline)]
pub use sseio_core::*;
