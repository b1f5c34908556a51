#![doc = include_str!("../README.md")]

mod auth;
mod backend;
mod config;
mod error;
mod events;
mod hub;
mod lifecycle;
mod load;
mod publish;
mod template;

pub use config::{
    AuthConfig, AuthWebhookConfig, Config, CorsConfig, EventConfig, FetchConfig, HistoryConfig,
    JwtAlgorithm, JwtConfig, LimitsConfig, LogConfig, LogFormat, PublishConfig, RedisConfig,
    ServerConfig, WebhooksConfig,
};
pub use error::{ConfigError, HubError};
pub use hub::Hub;
pub use lifecycle::{KINDS, record};
pub use load::{ENV_PREFIX, Loaded, Source};
#[doc(no_inline)]
pub use sseio_hyper;

/// Logs to stderr as `[log]` says (`RUST_LOG` wins when set): what the `sseio-hub` binary does
/// first. Does nothing when a global subscriber is already set.
pub fn init_tracing(log: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&log.filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
