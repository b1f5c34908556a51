//! Reading the configuration: the TOML file, then the environment's overrides, with errors that
//! name the file, the key path, and the line or the variable; and printing it back.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::error::ConfigError;

/// The prefix of the environment variables that override keys of the file:
/// `SSEIO_HUB__LIMITS__MAX_CONNECTIONS=10000` sets `limits.max_connections`.
pub const ENV_PREFIX: &str = "SSEIO_HUB__";

/// What `--print-config` shows in place of a secret.
const REDACTED: &str = "<redacted>";

/// Where the configuration came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file.
    File(PathBuf),
    /// Text given in code (a test, the conformance harness).
    Text,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Text => f.write_str("<config text>"),
        }
    }
}

/// A configuration with where it came from: what [`Hub::build`](crate::Hub::build) takes.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Where it came from, to name in errors about it.
    pub source: Source,
    /// The directory relative key file paths are read from (the file's directory).
    pub base_dir: PathBuf,
    /// The environment variables that overrode keys, with the key path each set.
    pub overrides: Vec<(String, String)>,
}

impl Loaded {
    /// The error for a bad value at `key`, naming the file (and the environment variable when
    /// one set the key).
    pub(crate) fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let from_env = self
            .overrides
            .iter()
            .find(|(_, path)| key == path || key.starts_with(&format!("{path}.")))
            .map(|(var, _)| var.clone());
        ConfigError::Invalid {
            source_name: self.source.to_string(),
            key: key.to_owned(),
            from_env,
            message: message.into(),
        }
    }

    /// Resolves a key file path from the configuration against [`Loaded::base_dir`].
    pub(crate) fn path(&self, path: &Path) -> PathBuf {
        self.base_dir.join(path)
    }
}

impl Config {
    /// Reads the configuration from the TOML file at `path`, then applies the environment's
    /// overrides ([`ENV_PREFIX`]).
    ///
    /// # Errors
    ///
    /// When the file cannot be read, is not TOML, has an unknown key or a value of the wrong
    /// type; the error names the file, the key and its line.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_owned(),
            source: e,
        })?;
        let base_dir = path
            .parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::parse(
            &text,
            Source::File(path.to_owned()),
            base_dir,
            std::env::vars(),
        )
    }

    /// Parses `text` as the configuration, with no environment overrides; key files are read
    /// relative to the current directory.
    ///
    /// # Errors
    ///
    /// As [`Config::load`].
    pub fn from_toml(text: &str) -> Result<Loaded, ConfigError> {
        Self::parse(text, Source::Text, PathBuf::from("."), std::iter::empty())
    }

    /// Parses `text` from `source`, then applies the overrides among `vars`.
    ///
    /// # Errors
    ///
    /// As [`Config::load`].
    pub fn parse(
        text: &str,
        source: Source,
        base_dir: PathBuf,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Loaded, ConfigError> {
        // The file alone first, so that its own mistakes are told with their line.
        let config = from_text(text, &source)?;
        let mut overrides: Vec<(String, String, String)> = vars
            .into_iter()
            .filter_map(|(var, value)| {
                let rest = var.strip_prefix(ENV_PREFIX)?;
                let path = rest
                    .split("__")
                    .map(str::to_ascii_lowercase)
                    .collect::<Vec<_>>()
                    .join(".");
                Some((var, path, value))
            })
            .collect();
        overrides.sort();
        if overrides.is_empty() {
            return Ok(Loaded {
                config,
                source,
                base_dir,
                overrides: Vec::new(),
            });
        }
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            source_name: source.to_string(),
            message: e.to_string(),
        })?;
        for (var, path, value) in &overrides {
            set(&mut table, path, value).map_err(|message| ConfigError::Invalid {
                source_name: source.to_string(),
                key: path.clone(),
                from_env: Some(var.clone()),
                message,
            })?;
        }
        let config = serde_path_to_error::deserialize::<_, Config>(table).map_err(|e| {
            let key = e.path().to_string();
            let from_env = overrides
                .iter()
                .find(|(_, path, _)| key.starts_with(path.as_str()) || path.starts_with(&key))
                .map(|(var, _, _)| var.clone());
            ConfigError::Invalid {
                source_name: source.to_string(),
                key,
                from_env,
                message: e.into_inner().message().to_owned(),
            }
        })?;
        Ok(Loaded {
            config,
            source,
            base_dir,
            overrides: overrides
                .into_iter()
                .map(|(var, path, _)| (var, path))
                .collect(),
        })
    }

    /// The configuration as TOML, as `--print-config` shows it: every key with its effective
    /// value, secrets (API keys, the JWT secret) replaced by `<redacted>`.
    ///
    /// # Errors
    ///
    /// Never for a configuration that was parsed; the `Result` is `toml`'s.
    pub fn to_toml_redacted(&self) -> Result<String, toml::ser::Error> {
        let mut shown = self.clone();
        for key in &mut shown.publish.api_keys {
            *key = REDACTED.to_owned();
        }
        if let Some(jwt) = &mut shown.auth.jwt
            && jwt.secret.is_some()
        {
            jwt.secret = Some(REDACTED.to_owned());
        }
        toml::to_string(&shown)
    }
}

/// Deserializes the file's text, naming the key path of a bad value and its line.
fn from_text(text: &str, source: &Source) -> Result<Config, ConfigError> {
    let deserializer = toml::Deserializer::parse(text).map_err(|e| ConfigError::Syntax {
        source_name: source.to_string(),
        message: e.to_string(),
    })?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        ConfigError::Invalid {
            source_name: source.to_string(),
            key,
            from_env: None,
            message: e.into_inner().to_string().trim_end().to_owned(),
        }
    })
}

/// Sets the key at dotted `path` of `table` to `value`: a TOML value when it parses as one
/// (`10`, `true`, `["a", "b"]`), else the string itself.
fn set(table: &mut toml::Table, path: &str, value: &str) -> Result<(), String> {
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    let mut keys = path.split('.').peekable();
    let mut at = table;
    while let Some(key) = keys.next() {
        if key.is_empty() {
            return Err("the variable's name has an empty key between `__`s".to_owned());
        }
        if keys.peek().is_none() {
            at.insert(key.to_owned(), parsed);
            return Ok(());
        }
        let next = at
            .entry(key.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        at = match next {
            toml::Value::Table(t) => t,
            _ => return Err(format!("`{key}` is not a table, so it has no keys to set")),
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(text: &str, vars: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        Config::parse(
            text,
            Source::File(PathBuf::from("hub.toml")),
            PathBuf::from("."),
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(parse_with("", &[]).unwrap().config, Config::default());
    }

    #[test]
    fn unknown_key_is_an_error_naming_file_key_and_line() {
        let error = parse_with("[limits]\nmax_conections = 5\n", &[]).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("hub.toml"), "{text}");
        assert!(text.contains("limits.max_conections"), "{text}");
        assert!(text.contains("line 2"), "{text}");
    }

    #[test]
    fn unknown_key_in_an_event_names_the_event() {
        let text = "[events.news]\nroom = \"all\"\nrom = \"x\"\n";
        let error = parse_with(text, &[]).unwrap_err().to_string();
        assert!(error.contains("events.news.rom"), "{error}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let error = parse_with("[server]\nheartbeat_interval_ms = \"soon\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(error.contains("server.heartbeat_interval_ms"), "{error}");
    }

    #[test]
    fn environment_overrides_keys_with_typed_values() {
        let loaded = parse_with(
            "[limits]\nmax_events = 4\n",
            &[
                ("SSEIO_HUB__LIMITS__MAX_EVENTS", "8"),
                ("SSEIO_HUB__REDIS__URL", "redis://127.0.0.1:6379/"),
                ("SSEIO_HUB__PUBLISH__API_KEYS", "[\"k1\", \"k2\"]"),
                ("UNRELATED", "1"),
            ],
        )
        .unwrap();
        assert_eq!(loaded.config.limits.max_events, 8);
        assert_eq!(
            loaded.config.redis.unwrap().url,
            "redis://127.0.0.1:6379/".to_owned()
        );
        assert_eq!(loaded.config.publish.api_keys, ["k1", "k2"]);
    }

    #[test]
    fn unknown_key_from_the_environment_names_the_variable() {
        let error = parse_with("", &[("SSEIO_HUB__LIMITS__MAX_CONECTIONS", "5")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("limits.max_conections"), "{error}");
        assert!(
            error.contains("SSEIO_HUB__LIMITS__MAX_CONECTIONS"),
            "{error}"
        );
    }

    #[test]
    fn print_config_redacts_secrets_and_reads_back() {
        let mut config = Config::default();
        config.publish.api_keys = vec!["s3cret".to_owned()];
        let text = config.to_toml_redacted().unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains(REDACTED), "{text}");
        let back = parse_with(&text, &[]).unwrap().config;
        assert_eq!(back.limits, config.limits);
        assert_eq!(back.server, config.server);
    }
}
