//! Reading the config file: the one piece of config handling that does I/O,
//! kept out of the pure schema and validation in `pure/config.rs`.

use crate::pure::config::{Config, ConfigError};
use std::path::Path;

impl Config {
    /// Reads the config file at `path`, then parses and validates it like `from_json`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_json(&text)
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
