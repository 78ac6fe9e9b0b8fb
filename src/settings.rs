//! The vocabulary every component's settings use: the error that names a bad option, a secret
//! that never reaches a log, the environment as a trait (so tests need not touch the process's),
//! and small checks shared by several components. A leaf: it depends on no other module, so
//! components can own their settings without importing `config`, which imports them.

use std::fmt;

use serde::Deserialize;

/// An option's value was wrong: names the option and the value.
#[derive(Debug, thiserror::Error)]
#[error("invalid value '{value}' for {option}: {reason}")]
pub struct ConfigError {
    pub option: String,
    pub value: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(
        option: impl Into<String>,
        value: impl fmt::Display,
        reason: impl fmt::Display,
    ) -> Self {
        Self {
            option: option.into(),
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// A value that must never reach a log: `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Reads the environment through a function, so tests need not touch the process's.
pub trait Env {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
    }
}

/// Checks that a URL is http:// or https:// and has no whitespace.
pub fn check_url(option: &str, url: &str) -> Result<(), ConfigError> {
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() > "https://".len()
        && !url.contains(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            option,
            url,
            "expected an http:// or https:// URL",
        ))
    }
}
