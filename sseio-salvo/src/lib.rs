#![doc = include_str!("../README.md")]

mod handler;

pub use handler::SseioHandler;
#[doc(no_inline)]
pub use sseio_core::*;
