#![doc = include_str!("../README.md")]

mod filter;

pub use filter::filter;
#[doc(no_inline)]
pub use sseio_core::*;
/// sseio's standalone server ([`sseio_hyper::serve`]), which serves a warp app made a tower
/// service by `warp::service` beside SSE streams on its lean path; re-exported so that its
/// version always matches this crate's.
pub use sseio_hyper;
