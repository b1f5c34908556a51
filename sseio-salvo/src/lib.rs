#![doc = include_str!("../README.md")]

mod handler;
mod service;

pub use handler::SseioHandler;
pub use service::{TowerFuture, TowerService, tower_service};
#[doc(no_inline)]
pub use sseio_core::*;
/// sseio's standalone server ([`sseio_hyper::serve`]), which serves a salvo app made a tower
/// service by [`tower_service()`] beside SSE streams on its lean path; re-exported so that its
/// version always matches this crate's.
pub use sseio_hyper;
