#![doc = include_str!("../README.md")]

mod filter;

pub use filter::filter;
#[doc(no_inline)]
pub use sseio_core::*;
