//! The bad-actor set's settings: `--actor-ttl`, `--allow`, `--allow-file`, `--retention` and
//! `--p2p-corroboration`, validated here and turned into the [`Rules`] every reader shares.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{AllowList, Cidr, DEFAULT_CORROBORATION, Rules, Ttl, parse_duration};
use crate::settings::ConfigError;

/// The most distinct peer authors a corroboration rule may ask for (more than the authors kept
/// per actor could never be met).
const MAX_CORROBORATION: u32 = crate::store::actors::MAX_AUTHORS_PER_ACTOR as u32;

/// The set's settings, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorConfig {
    pub ttl: Ttl,
    /// `--allow` ranges (repeatable).
    pub allow: Vec<Cidr>,
    /// `--allow-file`: one range per line, read at startup and on SIGHUP.
    pub allow_file: Option<PathBuf>,
    /// `--retention`: events older than this are pruned; `None` keeps every event.
    pub retention: Option<Duration>,
    pub corroboration: u32,
    /// Peers whose word alone lists an actor (`--p2p-trusted`).
    pub trusted: Vec<String>,
}

impl Default for ActorConfig {
    fn default() -> Self {
        ActorConfig {
            ttl: Ttl::For(super::DEFAULT_TTL),
            allow: Vec::new(),
            allow_file: None,
            retention: None,
            corroboration: DEFAULT_CORROBORATION,
            trusted: Vec::new(),
        }
    }
}

/// The raw values, as given on the command line, in the environment or the config file.
#[derive(Debug, Default, Clone)]
pub struct RawActorConfig {
    pub ttl: Option<String>,
    pub allow: Vec<String>,
    pub allow_file: Option<PathBuf>,
    pub retention: Option<String>,
    pub corroboration: Option<String>,
    pub trusted: Vec<String>,
}

impl ActorConfig {
    pub fn resolve(raw: RawActorConfig) -> Result<ActorConfig, ConfigError> {
        let ttl = match raw.ttl {
            None => Ttl::For(super::DEFAULT_TTL),
            Some(t) => Ttl::parse(&t).map_err(|e| ConfigError::new("--actor-ttl", &t, e))?,
        };
        let allow = raw
            .allow
            .iter()
            .map(|a| Cidr::parse(a).map_err(|e| ConfigError::new("--allow", a, e)))
            .collect::<Result<Vec<_>, _>>()?;
        let retention = match raw.retention {
            None => None,
            Some(r) if r.trim().eq_ignore_ascii_case("forever") => None,
            Some(r) => {
                Some(parse_duration(&r).map_err(|e| ConfigError::new("--retention", &r, e))?)
            }
        };
        let corroboration = match raw.corroboration {
            None => DEFAULT_CORROBORATION,
            Some(n) => n
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_CORROBORATION).contains(n))
                .ok_or_else(|| {
                    ConfigError::new(
                        "--p2p-corroboration",
                        &n,
                        format!("expected a number of peers from 1 to {MAX_CORROBORATION}"),
                    )
                })?,
        };
        let config = ActorConfig {
            ttl,
            allow,
            allow_file: raw.allow_file,
            retention,
            corroboration,
            trusted: raw.trusted,
        };
        // A bad allow file stops the node at startup, naming the line.
        config.read_allow_list()?;
        Ok(config)
    }

    /// The allowlist: `--allow` ranges and the allow file's.
    pub fn read_allow_list(&self) -> Result<AllowList, ConfigError> {
        let mut list = AllowList::new(self.allow.iter().copied());
        if let Some(path) = &self.allow_file {
            for r in AllowList::read_file(path)
                .map_err(|e| ConfigError::new("--allow-file", path.display(), e))?
            {
                list.insert(r);
            }
        }
        Ok(list)
    }

    /// The rule to put in force.
    pub fn rules(&self) -> Result<Arc<Rules>, ConfigError> {
        Ok(Arc::new(Rules::new(
            self.ttl,
            self.corroboration,
            self.trusted.iter().cloned().collect(),
            self.read_allow_list()?,
        )))
    }

    /// On SIGHUP: reads the allow file again and puts the new list in force; a file that no
    /// longer parses is warned about and the list in force kept.
    pub fn reload_allow_list(&self, rules: &Rules) {
        let Some(path) = &self.allow_file else {
            return;
        };
        match self.read_allow_list() {
            Ok(list) => {
                let n = list.len();
                rules.set_allow(list);
                tracing::info!(path = %path.display(), ranges = n, "Reloaded the allow file.");
            }
            Err(error) => {
                tracing::warn!(%error, "Cannot reload the allow file; keeping the list in force.")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_and_name_the_option() {
        let c = ActorConfig::resolve(RawActorConfig {
            ttl: Some("2s".into()),
            allow: vec!["198.51.100.0/24".into()],
            retention: Some("30d".into()),
            corroboration: Some("3".into()),
            ..RawActorConfig::default()
        })
        .unwrap();
        assert_eq!(c.ttl, Ttl::For(Duration::from_secs(2)));
        assert_eq!(c.retention, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(c.corroboration, 3);
        for (raw, option) in [
            (
                RawActorConfig {
                    ttl: Some("7 weeks".into()),
                    ..RawActorConfig::default()
                },
                "--actor-ttl",
            ),
            (
                RawActorConfig {
                    allow: vec!["300.1.1.1".into()],
                    ..RawActorConfig::default()
                },
                "--allow",
            ),
            (
                RawActorConfig {
                    corroboration: Some("0".into()),
                    ..RawActorConfig::default()
                },
                "--p2p-corroboration",
            ),
            (
                RawActorConfig {
                    allow_file: Some("/nonexistent/allow".into()),
                    ..RawActorConfig::default()
                },
                "--allow-file",
            ),
        ] {
            assert_eq!(ActorConfig::resolve(raw).unwrap_err().option, option);
        }
    }

    #[test]
    fn the_allow_file_is_read_again_on_reload_and_a_broken_one_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("allow");
        std::fs::write(&path, "192.0.2.0/24\n").unwrap();
        let c = ActorConfig::resolve(RawActorConfig {
            allow: vec!["198.51.100.1".into()],
            allow_file: Some(path.clone()),
            ..RawActorConfig::default()
        })
        .unwrap();
        let rules = c.rules().unwrap();
        assert!(rules.excluded("192.0.2.9".parse().unwrap()));
        std::fs::write(&path, "203.0.113.0/24\n").unwrap();
        c.reload_allow_list(&rules);
        assert!(!rules.excluded("192.0.2.9".parse().unwrap()));
        assert!(rules.excluded("203.0.113.9".parse().unwrap()));
        assert!(rules.excluded("198.51.100.1".parse().unwrap()));
        std::fs::write(&path, "garbage\n").unwrap();
        c.reload_allow_list(&rules);
        assert!(rules.excluded("203.0.113.9".parse().unwrap()));
    }
}
