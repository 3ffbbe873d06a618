//! Reading the config file: the one piece of config handling that does I/O,
//! kept out of the pure schema and validation in `pure/config.rs`.

use crate::pure::config::{Config, ConfigError};
use std::path::Path;

impl Config {
    /// Reads the config file at `path`, then parses and validates it like `from_json`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        Config::from_json(&text)
    }

    /// Like `load`, for `herd certs`: a config whose only want is the `tls`
    /// section that command is about to make (a `client_tls_listen` needs a
    /// certificate) is taken as it will be with one.
    pub fn load_before_certs(path: &Path) -> Result<Config, ConfigError> {
        match Config::load(path) {
            Err(ConfigError::Invalid(problems)) => {
                let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
                    path: path.to_path_buf(),
                    cause,
                })?;
                let mut config: Config = serde_json::from_str(&text).map_err(ConfigError::Json)?;
                if config.tls.is_some() {
                    return Err(ConfigError::Invalid(problems));
                }
                config.tls = Some(crate::pure::config::TlsConfig {
                    ca: "ca.pem".to_owned(),
                    cert: "{name}.pem".to_owned(),
                    key: "{name}-key.pem".to_owned(),
                });
                config.validate()?;
                config.tls = None;
                Ok(config)
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loading_a_missing_file_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("no-such-herd.json");
        let err = Config::load(&path).expect_err("missing file");
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("no-such-herd.json"), "{err}");
    }

    #[test]
    fn loading_a_written_config_gives_it_back() {
        let mut herd = Config::default_herd();
        herd.secret = Some("s3cret".to_owned());
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), herd.to_json_pretty()).expect("write");
        assert_eq!(Config::load(file.path()).expect("loads"), herd);
    }
}
