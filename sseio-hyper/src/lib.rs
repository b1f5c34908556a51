#![doc = include_str!("../README.md")]

mod health;
mod lean;
mod peer;
mod serve;
mod service;
#[cfg(feature = "tls")]
mod tls;

pub use health::{DEFAULT_LIVENESS_PATH, DEFAULT_READINESS_PATH, Health, HealthFuture};
pub use peer::ConnectionInfo;
pub use serve::{DEFAULT_SHUTDOWN_GRACE, NotFound, Serve, listen, serve, shutdown_signal};
pub use service::{ClientAddr, ResponseFuture, SseioBody, SseioLayer, SseioService};
#[doc(no_inline)]
pub use sseio_core::*;
#[cfg(feature = "tls")]
pub use tls::{ALPN_PROTOCOLS, TLS_HANDSHAKE_TIMEOUT, TlsConfig, TlsError};
/// The rustls crate that [`TlsConfig`] is built on (feature `tls`), for building a
/// [`rustls::ServerConfig`] of your own ([`TlsConfig::from_server_config`]) with the same version.
#[cfg(feature = "tls")]
pub use tokio_rustls::rustls;

/// Internal: the standalone server's request-head parser, for the fuzz targets in `fuzz/`.
/// Not part of the API; it may change or go in any release.
#[doc(hidden)]
pub mod __fuzz {
    pub use crate::lean::{HEAD_LIMIT, MAX_HEADERS, Parse, first_head};
}
