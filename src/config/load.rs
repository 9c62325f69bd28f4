//! Reading the configuration: a TOML file, then the `XPSYNC_*` environment over it,
//! and errors that name the key and where its value came from.

use std::path::Path;

use figment::providers::{Env, Format, Toml};
use figment::Figment;

use super::{Config, ConfigError, Needs};

impl Config {
    /// Reads `file` (if given) and the `XPSYNC_*` environment, without validating.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Parse(format!(
                    "file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        // XPSYNC_CONFIG names the file (`--config`); it is no setting.
        figment = figment.merge(Env::prefixed("XPSYNC_").ignore(&["config"]).split("__"));
        figment
            .extract()
            .map_err(|e| ConfigError::Parse(describe_figment_error(e)))
    }

    /// Reads and validates, for a command that needs `needs`.
    pub fn load_valid(file: Option<&Path>, needs: Needs) -> Result<Self, ConfigError> {
        let config = Self::load(file)?;
        config.validate(needs)?;
        Ok(config)
    }
}

/// One line per problem: the key, what is wrong, and where the value came from
/// (a file, or the environment variable to fix).
fn describe_figment_error(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = e.path.join(".").to_lowercase();
            let origin = match &e.metadata {
                Some(m) if m.name.contains("environment") => format!(
                    "environment variable XPSYNC_{}",
                    e.path.join("__").to_uppercase()
                ),
                Some(m) => match &m.source {
                    Some(source) => source.to_string(),
                    None => m.name.to_string(),
                },
                None => "the configuration".into(),
            };
            let what = e.kind.to_string();
            if key.is_empty() {
                format!("{what} (in {origin})")
            } else if what.starts_with("is ") {
                // A value's own words: "target.sse is \"aes\", but must be …".
                format!("{key} {what} (in {origin})")
            } else {
                format!("{key}: {what} (in {origin})")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}
