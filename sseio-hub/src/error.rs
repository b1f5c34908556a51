//! Why a hub could not start: a bad configuration, or something it names that is not there.

use std::fmt;
use std::path::PathBuf;

/// A configuration the hub cannot start with. Each variant names where the mistake is: the
/// file (or the environment variable) and the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file cannot be read. Check `--config` (or `SSEIO_HUB_CONFIG`) and the
    /// file's permissions.
    #[error("cannot read the configuration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML; the message has the line and column.
    #[error("{source_name}: {message}")]
    Syntax {
        /// The file.
        source_name: String,
        /// `toml`'s message, with the line and a snippet.
        message: String,
    },
    /// A key has a value the hub cannot use, or is not a key the hub knows.
    #[error("{source_name}: {}{}: {message}", Key(key), FromEnv(from_env))]
    Invalid {
        /// The file.
        source_name: String,
        /// The key path, such as `events.news.room` (empty for the whole file).
        key: String,
        /// The environment variable that set the key, when one did.
        from_env: Option<String>,
        /// What is wrong, and what to do.
        message: String,
    },
}

struct Key<'a>(&'a str);

impl fmt::Display for Key<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() || self.0 == "." {
            f.write_str("the configuration")
        } else {
            write!(f, "key `{}`", self.0)
        }
    }
}

struct FromEnv<'a>(&'a Option<String>);

impl fmt::Display for FromEnv<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(var) => write!(f, " (set by the environment variable {var})"),
            None => Ok(()),
        }
    }
}

/// Why [`Hub::build`](crate::Hub::build) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The configuration is not usable; the error names the key.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Redis could not be reached at start. Check `redis.url`, and that Redis runs.
    #[error("cannot connect to Redis at {url}: {source}")]
    Redis {
        /// The URL from `redis.url`.
        url: String,
        /// The client's error.
        #[source]
        source: sseio_hyper::BoxError,
    },
    /// The server could not be built from the configuration.
    #[error("{0}")]
    Build(#[source] sseio_hyper::BuildError),
}
