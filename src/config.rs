//! Command line + environment + TOML file → one validated `Config`, resolved once at startup.
//! Precedence: flag > environment > file > default. A bad value is a `ConfigError` naming the
//! option and the value; `main` prints it on one line and exits 2.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::capture::Listen;
pub use crate::capture::tls::TlsFiles;
use crate::cli::Cli;
use crate::output::webhook::{RawWebhookConfig, WebhookConfig};
use crate::p2p::PeerConfig;
pub use crate::settings::{ConfigError, Env, ProcessEnv, Secret};

/// What a responsive node calls itself: a common FreePBX/Asterisk build, so probes see a PBX.
pub const DEFAULT_SERVER_HEADER: &str = "FPBX-16.0.40.7(18.20.2)";

/// What `-g PATH` writes when PATH does not exist, as upstream does: upstream's defaults.
pub const NEW_CONFIG_FILE: &str = "\
# SentryPeer configuration, written with upstream's defaults because this file did not exist.
# Every long option has a key here (see the README); command-line options and SENTRYPEER_*
# variables take precedence over this file.
cert = \"cert.pem\"
key = \"key.pem\"
tls_listen_address = \"0.0.0.0:5061\"
";

/// Where the peer network listens by default: QUIC on upstream's UDP port, and TCP beside it.
pub const DEFAULT_P2P_LISTEN: [&str; 2] =
    ["/ip4/0.0.0.0/udp/4222/quic-v1", "/ip4/0.0.0.0/tcp/4222"];

/// Where the peer network listens by default when OpenDHT runs on upstream's UDP 4222: QUIC on
/// the next port, TCP unchanged.
pub const DEFAULT_P2P_LISTEN_BESIDE_OPENDHT: [&str; 2] =
    ["/ip4/0.0.0.0/udp/4223/quic-v1", "/ip4/0.0.0.0/tcp/4222"];

/// The TOML config file. Upstream's keys (`cert`, `key`, `tls_listen_address`) plus one key per
/// long option of ours.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    tls_listen_address: Option<OneOrMany>,
    udp_listen: Option<OneOrMany>,
    tcp_listen: Option<OneOrMany>,
    api_listen: Option<OneOrMany>,
    db_file: Option<PathBuf>,
    json_log: Option<bool>,
    json_log_file: Option<PathBuf>,
    api: Option<bool>,
    sip_responsive: Option<bool>,
    sip_disable: Option<bool>,
    tls_disable: Option<bool>,
    syslog: Option<bool>,
    syslog_socket: Option<PathBuf>,
    server_header: Option<String>,
    sip_persona: Option<String>,
    sip_accept_register_after: Option<u32>,
    sip_trap_passwords: Option<PathBuf>,
    verbose: Option<bool>,
    debug: Option<bool>,
    webhook_url: Option<String>,
    webhook_authorization: Option<Secret>,
    oauth2_client_id: Option<String>,
    oauth2_client_secret: Option<Secret>,
    oauth2_token_url: Option<String>,
    oauth2_audience: Option<String>,
    webhook_batch: Option<u64>,
    webhook_outbox_cap: Option<u64>,
    webhook_dead_letter_cap: Option<u64>,
    webhook_max_backoff: Option<u64>,
    peer_to_peer: Option<bool>,
    bootstrap_node: Option<OneOrMany>,
    p2p_listen: Option<OneOrMany>,
    p2p_no_mdns: Option<bool>,
    p2p_allow_private: Option<bool>,
    p2p_grace: Option<u64>,
    p2p_trusted: Option<OneOrMany>,
    p2p_max_per_ip: Option<u64>,
    p2p_corroboration: Option<u32>,
    opendht: Option<bool>,
    opendht_bootstrap: Option<String>,
    opendht_port: Option<u16>,
    opendht_bridge: Option<bool>,
    actor_ttl: Option<String>,
    allow: Option<OneOrMany>,
    allow_file: Option<PathBuf>,
    geoip_db: Option<OneOrMany>,
    retention: Option<String>,
    apiban_key: Option<Vec<Secret>>,
    agent_listen: Option<OneOrMany>,
    agent_allow: Option<OneOrMany>,
    agent_source_header: Option<String>,
    agent_divert: Option<String>,
    dnsbl_listen: Option<OneOrMany>,
    dnsbl_zone: Option<String>,
    dnsbl_ns: Option<String>,
    bgp_neighbor: Option<OneOrMany>,
    bgp_listen: Option<String>,
    bgp_local_as: Option<u32>,
    bgp_peer_as: Option<u32>,
    bgp_router_id: Option<String>,
    bgp_next_hop: Option<OneOrMany>,
    bgp_community: Option<OneOrMany>,
    bgp_max_routes: Option<u64>,
    nftables: Option<bool>,
    nftables_set_only: Option<bool>,
    ipset: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// Everything the node needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub db_file: PathBuf,
    pub json_log: Option<PathBuf>,
    pub api: Vec<Listen>,
    pub udp: Vec<Listen>,
    pub tcp: Vec<Listen>,
    pub tls: Vec<Listen>,
    pub tls_files: TlsFiles,
    pub responsive: bool,
    pub server_header: String,
    /// Persona, trap passwords and fake success of responsive mode.
    pub trap: crate::capture::trap::TrapConfig,
    pub syslog: Option<PathBuf>,
    pub verbose: bool,
    pub debug: bool,
    pub webhook: Option<WebhookConfig>,
    pub peers: Option<PeerConfig>,
    /// Upstream's OpenDHT network, when `--opendht` is on.
    pub opendht: Option<crate::opendht::OpenDhtConfig>,
    /// Who is a bad actor: TTL, allowlist, retention, corroboration.
    pub actors: crate::actors::config::ActorConfig,
    /// Keys the APIBAN-compatible API requires (`--apiban-key`); empty: any key.
    pub apiban_keys: Vec<Secret>,
    /// The fraud-check agent, when `--agent-listen` is given.
    pub agent: Option<crate::agent::AgentConfig>,
    /// The DNS blocklist (`--dnsbl-listen`, `--dnsbl-zone`), when it is served.
    pub dnsbl: Option<crate::dnsbl::DnsblConfig>,
    /// The BGP blackhole feed, when `--bgp-neighbor` is given.
    pub bgp: Option<crate::bgp::BgpConfig>,
    /// `--nftables` / `--nftables-set-only`: bad actors in an nftables table.
    pub nftables: Option<crate::output::kernel_sets::nftables::NftablesConfig>,
    /// `--ipset NAME`: bad actors in ipset sets.
    pub ipset: Option<crate::output::kernel_sets::ipset::IpsetConfig>,
    /// The GeoIP databases (`--geoip-db`), opened.
    pub geoip: Option<std::sync::Arc<crate::geoip::GeoIp>>,
    /// Settings that were accepted but do nothing, to be logged once logging is up.
    pub warnings: Vec<String>,
    /// The config file `-g` named, written with upstream's defaults because it did not exist.
    pub created_config_file: Option<PathBuf>,
}

impl Config {
    /// The configured outputs, in the order they are built and started (and joined in
    /// reverse): the WebHook first, since it attaches to the database writer that the sqlite
    /// output then takes.
    pub fn outputs(&self) -> Vec<Box<dyn crate::output::OutputConfig>> {
        use crate::output::{console, json_log, sqlite, syslog};
        let mut list: Vec<Box<dyn crate::output::OutputConfig>> = Vec::new();
        #[cfg(feature = "webhook")]
        if let Some(w) = &self.webhook {
            list.push(Box::new(w.clone()));
        }
        list.push(Box::new(sqlite::SqliteConfig));
        if let Some(path) = &self.json_log {
            list.push(Box::new(json_log::JsonLogConfig { path: path.clone() }));
        }
        if let Some(socket) = &self.syslog {
            list.push(Box::new(syslog::SyslogConfig {
                socket: socket.clone(),
            }));
        }
        if self.verbose {
            list.push(Box::new(console::ConsoleConfig));
        }
        if !self.api.is_empty() {
            list.push(Box::new(crate::output::live::LiveConfig));
        }
        if let Some(b) = &self.bgp {
            list.push(Box::new(b.clone()));
        }
        if let Some(n) = self.nftables {
            list.push(Box::new(n));
        }
        if let Some(i) = &self.ipset {
            list.push(Box::new(i.clone()));
        }
        list
    }

    /// Resolves the command line (which already carries the value options' variables) with the
    /// environment's on/off switches and the config file.
    pub fn resolve(cli: Cli, env: &dyn Env) -> Result<Config, ConfigError> {
        let (file, created_config_file) = load_file(cli.config_file.as_deref(), env)?;
        let mut warnings = Vec::new();
        let on = |flag: bool, var: &str, file: Option<bool>| {
            flag || env.get(var).is_some() || file.unwrap_or(false)
        };

        let json_log_file = cli.json_log_file.or(file.json_log_file);
        let json_log =
            on(cli.json_log, "SENTRYPEER_JSON_LOG", file.json_log) || json_log_file.is_some();
        let api_listen = pick(cli.api_listen, file.api_listen);
        let api = on(cli.api, "SENTRYPEER_API", file.api) || !api_listen.is_empty();
        let sip_disable = on(cli.sip_disable, "SENTRYPEER_SIP_DISABLE", file.sip_disable);
        let tls_disable = on(cli.tls_disable, "SENTRYPEER_TLS_DISABLE", file.tls_disable);

        let listen = |option: &str,
                      given: Vec<String>,
                      defaults: &[&str]|
         -> Result<Vec<Listen>, ConfigError> {
            if given.is_empty() {
                Ok(defaults
                    .iter()
                    .filter_map(|d| d.parse::<SocketAddr>().ok())
                    .map(|addr| Listen {
                        addr,
                        optional: addr.is_ipv6(),
                    })
                    .collect())
            } else {
                given
                    .iter()
                    .map(|v| {
                        parse_addr(option, v).map(|addr| Listen {
                            addr,
                            optional: false,
                        })
                    })
                    .collect()
            }
        };
        let udp = if sip_disable {
            vec![]
        } else {
            listen(
                "--udp-listen",
                pick(cli.udp_listen, file.udp_listen),
                &["0.0.0.0:5060", "[::]:5060"],
            )?
        };
        let tcp = if sip_disable {
            vec![]
        } else {
            listen(
                "--tcp-listen",
                pick(cli.tcp_listen, file.tcp_listen),
                &["0.0.0.0:5060", "[::]:5060"],
            )?
        };
        let tls = if sip_disable || tls_disable {
            vec![]
        } else {
            listen(
                "--tls-listen (-z)",
                pick(cli.tls_listen, file.tls_listen_address),
                &["0.0.0.0:5061", "[::]:5061"],
            )?
        };
        let api = if api {
            listen("--api-listen", api_listen, &["0.0.0.0:8082"])?
        } else {
            vec![]
        };

        let webhook = WebhookConfig::resolve(
            RawWebhookConfig {
                url: cli.webhook_url.or(file.webhook_url),
                enabled_by_env: env.get("SENTRYPEER_WEBHOOK").is_some(),
                client_id: cli.oauth2_client_id.or(file.oauth2_client_id),
                client_secret: cli
                    .oauth2_client_secret
                    .map(Secret::new)
                    .or(file.oauth2_client_secret),
                token_url: cli.oauth2_token_url.or(file.oauth2_token_url),
                audience: cli.oauth2_audience.or(file.oauth2_audience),
                authorization: env
                    .get("SENTRYPEER_WEBHOOK_AUTHORIZATION")
                    .map(Secret::new)
                    .or(file.webhook_authorization),
                batch: cli.webhook_batch.or(file.webhook_batch),
                outbox_cap: cli.webhook_outbox_cap.or(file.webhook_outbox_cap),
                dead_letter_cap: cli.webhook_dead_letter_cap.or(file.webhook_dead_letter_cap),
                max_backoff: cli.webhook_max_backoff.or(file.webhook_max_backoff),
            },
            &mut warnings,
        )?;

        let peer_to_peer = on(
            cli.peer_to_peer,
            "SENTRYPEER_PEER_TO_PEER",
            file.peer_to_peer,
        );
        let bootstrap = pick(cli.bootstrap_node, file.bootstrap_node);
        if !peer_to_peer && !bootstrap.is_empty() {
            warnings.push(format!(
                "A bootstrap peer (-b {}) is set but peer to peer is off (no -p): it has no effect.",
                bootstrap.join(", -b ")
            ));
        }
        let allow_private = on(
            cli.p2p_allow_private,
            "SENTRYPEER_P2P_ALLOW_PRIVATE",
            file.p2p_allow_private,
        );
        let opendht = crate::opendht::OpenDhtConfig::resolve(
            crate::opendht::RawOpenDhtConfig {
                enabled: on(cli.opendht, "SENTRYPEER_OPENDHT", file.opendht),
                bootstrap: cli.opendht_bootstrap.or(file.opendht_bootstrap),
                port: cli
                    .opendht_port
                    .or(file.opendht_port.map(|p| p.to_string())),
                bridge: on(
                    cli.opendht_bridge,
                    "SENTRYPEER_OPENDHT_BRIDGE",
                    file.opendht_bridge,
                ),
                allow_private,
            },
            &mut warnings,
        )?;
        let mut p2p_listen = pick(cli.p2p_listen, file.p2p_listen);
        if p2p_listen.is_empty() {
            p2p_listen = DEFAULT_P2P_LISTEN.iter().map(|s| s.to_string()).collect();
            // Both on their defaults: OpenDHT keeps upstream's UDP 4222, QUIC moves beside it.
            if opendht
                .as_ref()
                .is_some_and(|o| o.port == crate::opendht::config::DEFAULT_PORT)
            {
                p2p_listen = DEFAULT_P2P_LISTEN_BESIDE_OPENDHT
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
            }
        }
        if let (Some(o), true) = (&opendht, peer_to_peer) {
            o.check_ports(&p2p_listen)?;
        }
        let p2p_grace = match cli.p2p_grace {
            Some(s) => s
                .trim()
                .parse::<u64>()
                .map_err(|_| ConfigError::new("--p2p-grace", &s, "expected a number of seconds"))?,
            None => file
                .p2p_grace
                .unwrap_or(crate::p2p::DEFAULT_GRACE.as_secs()),
        };
        let p2p_max_per_ip = match cli
            .p2p_max_per_ip
            .or(file.p2p_max_per_ip.map(|n| n.to_string()))
        {
            Some(s) => s
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=1024).contains(n))
                .ok_or_else(|| {
                    ConfigError::new("--p2p-max-per-ip", &s, "expected a number from 1 to 1024")
                })?,
            None => crate::p2p::DEFAULT_MAX_PER_IP,
        };
        let peers = peer_to_peer.then(|| PeerConfig {
            bootstrap,
            listen: p2p_listen,
            mdns: !on(cli.p2p_no_mdns, "SENTRYPEER_P2P_NO_MDNS", file.p2p_no_mdns),
            allow_private,
            grace: std::time::Duration::from_secs(p2p_grace),
            trusted: pick(cli.p2p_trusted, file.p2p_trusted),
            max_per_ip: p2p_max_per_ip,
        });

        let actors =
            crate::actors::config::ActorConfig::resolve(crate::actors::config::RawActorConfig {
                ttl: cli.actor_ttl.or(file.actor_ttl),
                allow: pick(cli.allow, file.allow),
                allow_file: cli.allow_file.or(file.allow_file),
                retention: cli.retention.or(file.retention),
                corroboration: cli
                    .p2p_corroboration
                    .or(file.p2p_corroboration.map(|n| n.to_string())),
                trusted: peers
                    .as_ref()
                    .map(|p| p.trusted.clone())
                    .unwrap_or_default(),
            })?;

        let dnsbl = crate::dnsbl::DnsblConfig::resolve(
            crate::dnsbl::RawDnsblConfig {
                listen: pick(cli.dnsbl_listen, file.dnsbl_listen),
                zone: cli.dnsbl_zone.or(file.dnsbl_zone),
                ns: cli.dnsbl_ns.or(file.dnsbl_ns),
            },
            &mut warnings,
        )?;

        let syslog = on(cli.syslog, "SENTRYPEER_SYSLOG", file.syslog).then(|| {
            cli.syslog_socket
                .or(file.syslog_socket)
                .unwrap_or_else(|| PathBuf::from("/dev/log"))
        });

        let nftables_set_only = on(
            cli.nftables_set_only,
            "SENTRYPEER_NFTABLES_SET_ONLY",
            file.nftables_set_only,
        );
        let nftables = (nftables_set_only
            || on(cli.nftables, "SENTRYPEER_NFTABLES", file.nftables))
        .then_some(crate::output::kernel_sets::nftables::NftablesConfig {
            chain: !nftables_set_only,
        });
        let ipset = cli
            .ipset
            .or(file.ipset)
            .map(|n| crate::output::kernel_sets::ipset::IpsetConfig::new(&n))
            .transpose()?;

        let trap =
            crate::capture::trap::TrapConfig::resolve(crate::capture::trap::RawTrapConfig {
                persona: cli.sip_persona.or(file.sip_persona),
                accept_after: cli
                    .sip_accept_register_after
                    .or(file.sip_accept_register_after.map(|n| n.to_string())),
                trap_passwords: cli.sip_trap_passwords.or(file.sip_trap_passwords),
            })?;
        let responsive = on(
            cli.sip_responsive,
            "SENTRYPEER_SIP_RESPONSIVE",
            file.sip_responsive,
        );
        if !responsive && trap.accept_after.is_some() {
            warnings.push(
                "--sip-accept-register-after is set but responsive mode is off (no -r): no REGISTER is ever answered.".to_string(),
            );
        }
        if !responsive && trap.persona != crate::sip::persona::Persona::Default {
            warnings.push(
                "--sip-persona is set but responsive mode is off (no -r): nothing is answered."
                    .to_string(),
            );
        }

        Ok(Config {
            db_file: cli
                .db_file
                .or(file.db_file)
                .unwrap_or_else(|| PathBuf::from("./sentrypeer.db")),
            json_log: json_log
                .then(|| json_log_file.unwrap_or_else(|| PathBuf::from("./sentrypeer_json.log"))),
            api,
            udp,
            tcp,
            tls,
            tls_files: TlsFiles {
                cert: cli
                    .cert
                    .or(file.cert)
                    .unwrap_or_else(|| PathBuf::from("./cert.pem")),
                key: cli
                    .key
                    .or(file.key)
                    .unwrap_or_else(|| PathBuf::from("./key.pem")),
            },
            responsive,
            server_header: cli
                .server_header
                .or(file.server_header)
                .unwrap_or_else(|| trap.persona.agent().unwrap_or(DEFAULT_SERVER_HEADER).into()),
            trap,
            syslog,
            verbose: on(cli.verbose, "SENTRYPEER_VERBOSE", file.verbose),
            debug: on(cli.debug, "SENTRYPEER_DEBUG", file.debug),
            webhook,
            peers,
            opendht,
            actors,
            agent: crate::agent::AgentConfig::resolve(crate::agent::RawAgentConfig {
                listen: pick(cli.agent_listen, file.agent_listen),
                allow: pick(cli.agent_allow, file.agent_allow),
                source_header: cli.agent_source_header.or(file.agent_source_header),
                divert: cli.agent_divert.or(file.agent_divert),
            })?,
            bgp: crate::bgp::BgpConfig::resolve(crate::bgp::RawBgpConfig {
                neighbors: pick(cli.bgp_neighbor, file.bgp_neighbor),
                listen: cli.bgp_listen.or(file.bgp_listen),
                local_as: cli
                    .bgp_local_as
                    .or(file.bgp_local_as.map(|n| n.to_string())),
                peer_as: cli.bgp_peer_as.or(file.bgp_peer_as.map(|n| n.to_string())),
                router_id: cli.bgp_router_id.or(file.bgp_router_id),
                next_hops: pick(cli.bgp_next_hop, file.bgp_next_hop),
                communities: pick(cli.bgp_community, file.bgp_community),
                max_routes: cli
                    .bgp_max_routes
                    .or(file.bgp_max_routes.map(|n| n.to_string())),
            })?,
            apiban_keys: if cli.apiban_key.is_empty() {
                file.apiban_key.unwrap_or_default()
            } else {
                cli.apiban_key.into_iter().map(Secret::new).collect()
            },
            dnsbl,
            nftables,
            ipset,
            geoip: {
                let paths: Vec<PathBuf> = pick(cli.geoip_db, file.geoip_db)
                    .into_iter()
                    .map(PathBuf::from)
                    .collect();
                if paths.is_empty() {
                    None
                } else {
                    Some(std::sync::Arc::new(crate::geoip::GeoIp::open(&paths)?))
                }
            },
            warnings,
            created_config_file,
        })
    }
}

/// The command line's values if any were given, else the file's.
fn pick(cli: Vec<String>, file: Option<OneOrMany>) -> Vec<String> {
    if cli.is_empty() {
        file.map(OneOrMany::into_vec).unwrap_or_default()
    } else {
        cli
    }
}

fn parse_addr(option: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.trim().parse().map_err(|_| {
        ConfigError::new(
            option,
            value,
            "expected IP:PORT, such as 0.0.0.0:5060 or [::]:5060",
        )
    })
}

/// The default config file: `$XDG_CONFIG_HOME` or `~/.config`, then `sentrypeer/default-config.toml`.
fn default_config_path(env: &dyn Env) -> Option<PathBuf> {
    let base = env
        .get("XDG_CONFIG_HOME")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(|| env.get("HOME").map(|h| Path::new(&h).join(".config")))?;
    Some(base.join("sentrypeer").join("default-config.toml"))
}

/// Reads the config file: the one `-g` names (written with upstream's defaults if it does not
/// exist, as upstream does), else the default one if it exists (never written). Returns the
/// file's settings and, when `-g`'s file was written, its path.
fn load_file(
    given: Option<&Path>,
    env: &dyn Env,
) -> Result<(FileConfig, Option<PathBuf>), ConfigError> {
    let err = |path: &Path, e: &dyn fmt::Display| {
        ConfigError::new("-g (--config-file)", path.display(), e)
    };
    let (path, required) = match given {
        Some(p) => (p.to_path_buf(), true),
        None => match default_config_path(env) {
            Some(p) => (p, false),
            None => return Ok((FileConfig::default(), None)),
        },
    };
    let mut created = None;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok((FileConfig::default(), None));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if create_default_file(&path).map_err(|e| err(&path, &e))? {
                created = Some(path.clone());
            }
            std::fs::read_to_string(&path).map_err(|e| err(&path, &e))?
        }
        Err(e) => return Err(err(&path, &e)),
    };
    let file = toml::from_str(&text).map_err(|e| {
        // One line, as every startup error: the parser's message can span several.
        let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
        match e.span() {
            Some(at) => {
                let before = &text.as_bytes()[..at.start.min(text.len())];
                let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
                err(&path, &format_args!("line {line}: {message}"))
            }
            None => err(&path, &message),
        }
    })?;
    Ok((file, created))
}

/// Writes [`NEW_CONFIG_FILE`] at `path`, and its directory if missing. Returns false if another
/// process wrote the file first (it is then read as it is).
fn create_default_file(path: &Path) -> std::io::Result<bool> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e),
    };
    f.write_all(NEW_CONFIG_FILE.as_bytes())?;
    f.sync_all()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    struct MapEnv(HashMap<String, String>);
    impl Env for MapEnv {
        fn get(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
    }
    fn env(pairs: &[(&str, &str)]) -> MapEnv {
        MapEnv(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }
    /// Resolves as the binary would, with `e` as the whole environment: clap's own reading of
    /// `SENTRYPEER_*` variables is switched off, so the developer's shell cannot leak in.
    fn resolve(args: &[&str], e: &MapEnv) -> Result<Config, ConfigError> {
        use clap::{CommandFactory, FromArgMatches};
        let mut argv = vec!["sentrypeer"];
        argv.extend_from_slice(args);
        let matches = Cli::command()
            .mut_args(|a| a.env(None::<&str>))
            .try_get_matches_from(argv)
            .unwrap();
        Config::resolve(Cli::from_arg_matches(&matches).unwrap(), e)
    }

    #[test]
    fn defaults_match_upstream() {
        let c = resolve(&[], &env(&[])).unwrap();
        assert_eq!(c.db_file, PathBuf::from("./sentrypeer.db"));
        assert!(c.json_log.is_none() && c.api.is_empty() && !c.responsive && c.syslog.is_none());
        assert_eq!(c.udp[0].addr, "0.0.0.0:5060".parse().unwrap());
        assert!(c.udp[1].optional && c.udp[1].addr.is_ipv6());
        assert_eq!(c.tls[0].addr, "0.0.0.0:5061".parse().unwrap());
        assert_eq!(c.tls_files.cert, PathBuf::from("./cert.pem"));
    }

    #[test]
    fn an_on_off_variable_set_to_zero_still_switches_on() {
        let c = resolve(
            &[],
            &env(&[
                ("SENTRYPEER_JSON_LOG", "0"),
                ("SENTRYPEER_API", ""),
                ("SENTRYPEER_SIP_RESPONSIVE", "0"),
            ]),
        )
        .unwrap();
        assert_eq!(c.json_log, Some(PathBuf::from("./sentrypeer_json.log")));
        assert_eq!(c.api[0].addr, "0.0.0.0:8082".parse().unwrap());
        assert!(c.responsive);
    }

    #[test]
    fn flag_beats_file_and_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "cert = \"c.pem\"\nkey = \"k.pem\"\ntls_listen_address = \"127.0.0.1:7061\"\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = resolve(&["-g", p], &env(&[])).unwrap();
        assert_eq!(c.tls[0].addr, "127.0.0.1:7061".parse().unwrap());
        assert_eq!(c.tls_files.cert, PathBuf::from("c.pem"));
        let c = resolve(&["-g", p, "-z", "127.0.0.1:9061", "-t", "x.pem"], &env(&[])).unwrap();
        assert_eq!(c.tls[0].addr, "127.0.0.1:9061".parse().unwrap());
        assert_eq!(c.tls_files.cert, PathBuf::from("x.pem"));
    }

    #[test]
    fn credential_traps_come_from_flags_or_the_file_and_the_persona_names_the_server() {
        use crate::sip::persona::Persona;
        let c = resolve(&[], &env(&[])).unwrap();
        assert_eq!(c.trap, crate::capture::trap::TrapConfig::default());
        assert_eq!(c.server_header, DEFAULT_SERVER_HEADER);

        let dir = tempfile::tempdir().unwrap();
        let traps = dir.path().join("traps.txt");
        std::fs::write(&traps, "1234\n").unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            format!(
                "sip_responsive = true\nsip_persona = \"kamailio\"\nsip_accept_register_after = 5\nsip_trap_passwords = {:?}\n",
                traps.display().to_string()
            ),
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = resolve(&["-g", p], &env(&[])).unwrap();
        assert_eq!(c.trap.persona, Persona::Kamailio);
        assert_eq!(c.trap.accept_after, Some(5));
        assert_eq!(c.trap.trap_passwords, ["1234"]);
        assert_eq!(c.server_header, "kamailio (5.6.3 (x86_64/linux))");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);

        let c = resolve(
            &[
                "-g",
                p,
                "--sip-persona",
                "cisco",
                "--sip-accept-register-after",
                "2",
                "--server-header",
                "Mine",
            ],
            &env(&[]),
        )
        .unwrap();
        assert_eq!(
            (c.trap.persona, c.trap.accept_after),
            (Persona::Cisco, Some(2))
        );
        assert_eq!(c.server_header, "Mine");

        // Without -r nothing is answered: said once at startup.
        let c = resolve(&["--sip-accept-register-after", "2"], &env(&[])).unwrap();
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    }

    #[test]
    fn unknown_file_keys_and_bad_addresses_name_the_option() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "certt = 1\n").unwrap();
        let e = resolve(&["-g", path.to_str().unwrap()], &env(&[])).unwrap_err();
        assert!(e.option.contains("config-file"), "{e}");
        let e = resolve(&["--udp-listen", "nonsense"], &env(&[])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid value 'nonsense' for --udp-listen: expected IP:PORT, such as 0.0.0.0:5060 or [::]:5060"
        );
    }

    #[test]
    fn oauth2_needs_both_halves_and_secrets_never_print() {
        assert!(resolve(&["-w", "http://127.0.0.1:1/x", "-i", "id"], &env(&[])).is_err());
        let c = resolve(
            &["-w", "http://127.0.0.1:1/x", "-i", "id", "-c", "hunter2"],
            &env(&[]),
        )
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2") && dbg.contains("***"), "{dbg}");
    }

    #[test]
    fn the_default_webhook_url_is_upstreams_on_this_machine() {
        for value in ["1", "0", ""] {
            let c = resolve(&[], &env(&[("SENTRYPEER_WEBHOOK", value)])).unwrap();
            let w = c.webhook.unwrap();
            assert_eq!(w.url, "http://localhost:4000/api/events");
            assert!(w.oauth2.is_none());
        }
        // A URL given wins over the default.
        let c = resolve(
            &["-w", "http://127.0.0.1:1/x"],
            &env(&[("SENTRYPEER_WEBHOOK", "1")]),
        )
        .unwrap();
        assert_eq!(c.webhook.unwrap().url, "http://127.0.0.1:1/x");
        assert!(resolve(&[], &env(&[])).unwrap().webhook.is_none());
    }

    #[test]
    fn oauth2_without_a_webhook_url_starts_with_a_warning() {
        for args in [
            &["-i", "id", "-c", "hunter2"][..],
            &["-i", "id"][..],
            &["-c", "hunter2"][..],
            &[
                "-i",
                "id",
                "-c",
                "hunter2",
                "--oauth2-token-url",
                "nonsense",
            ][..],
        ] {
            let c = resolve(args, &env(&[])).unwrap();
            assert!(c.webhook.is_none(), "{args:?}");
            assert_eq!(c.warnings.len(), 1, "{args:?}");
            assert!(
                c.warnings[0].contains("-i/-c") && c.warnings[0].contains("no effect"),
                "{:?}",
                c.warnings
            );
            assert!(!format!("{c:?}").contains("hunter2"));
        }
        // With the default URL, the credentials are used.
        let c = resolve(
            &["-i", "id", "-c", "hunter2"],
            &env(&[("SENTRYPEER_WEBHOOK", "1")]),
        )
        .unwrap();
        assert_eq!(c.webhook.unwrap().oauth2.unwrap().client_id, "id");
        assert!(c.warnings.is_empty());
        assert!(resolve(&[], &env(&[])).unwrap().warnings.is_empty());
    }

    #[test]
    fn opendht_keeps_udp_4222_and_quic_moves_to_4223_when_both_default() {
        let c = resolve(&["-p", "--opendht"], &env(&[])).unwrap();
        let o = c.opendht.unwrap();
        assert_eq!(o.port, 4222);
        assert_eq!(
            c.peers.unwrap().listen,
            ["/ip4/0.0.0.0/udp/4223/quic-v1", "/ip4/0.0.0.0/tcp/4222"]
        );
        let c = resolve(&["-p", "--opendht", "--opendht-port", "5000"], &env(&[])).unwrap();
        assert_eq!(
            c.peers.unwrap().listen,
            ["/ip4/0.0.0.0/udp/4222/quic-v1", "/ip4/0.0.0.0/tcp/4222"]
        );
        let c = resolve(&["-p"], &env(&[("SENTRYPEER_OPENDHT", "1")])).unwrap();
        assert!(c.opendht.is_some());
        let e = resolve(
            &[
                "-p",
                "--opendht",
                "--p2p-listen",
                "/ip4/0.0.0.0/udp/4222/quic-v1",
            ],
            &env(&[]),
        )
        .unwrap_err();
        assert_eq!(e.option, "--opendht-port");
        let e = resolve(&["--opendht", "--opendht-bootstrap", "nowhere"], &env(&[])).unwrap_err();
        assert_eq!(e.option, "--opendht-bootstrap");
    }

    #[test]
    fn a_bootstrap_node_without_p2p_is_kept_with_a_warning() {
        let c = resolve(&["-b", "bootstrap.example.org"], &env(&[])).unwrap();
        assert!(c.peers.is_none());
        assert_eq!(c.warnings.len(), 1);
        assert!(
            c.warnings[0].contains("-b bootstrap.example.org") && c.warnings[0].contains("-p"),
            "{:?}",
            c.warnings
        );
        let c = resolve(&["-p", "-b", "bootstrap.example.org"], &env(&[])).unwrap();
        assert_eq!(c.peers.unwrap().bootstrap, ["bootstrap.example.org"]);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn inbound_peer_connections_per_address_default_to_eight_and_are_checked() {
        let c = resolve(&["-p"], &env(&[])).unwrap();
        assert_eq!(c.peers.unwrap().max_per_ip, 8);
        let c = resolve(&["-p", "--p2p-max-per-ip", "64"], &env(&[])).unwrap();
        assert_eq!(c.peers.unwrap().max_per_ip, 64);
        for bad in ["0", "1025", "many"] {
            let e = resolve(&["-p", "--p2p-max-per-ip", bad], &env(&[])).unwrap_err();
            assert!(e.to_string().contains("--p2p-max-per-ip"), "{e}");
        }
    }

    #[test]
    fn a_missing_config_file_named_by_g_is_written_with_upstreams_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not").join("yet").join("sentrypeer.toml");
        let p = path.to_str().unwrap();
        let c = resolve(&["-g", p], &env(&[])).unwrap();
        assert_eq!(c.created_config_file.as_deref(), Some(path.as_path()));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with('#'), "{text}");
        let t: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(t.len(), 3, "{text}");
        assert_eq!(t["cert"].as_str(), Some("cert.pem"));
        assert_eq!(t["key"].as_str(), Some("key.pem"));
        assert_eq!(t["tls_listen_address"].as_str(), Some("0.0.0.0:5061"));
        assert_eq!(c.tls_files.cert, PathBuf::from("cert.pem"));
        assert_eq!(c.tls_files.key, PathBuf::from("key.pem"));
        assert_eq!(c.tls.len(), 1);
        assert_eq!(c.tls[0].addr, "0.0.0.0:5061".parse().unwrap());

        // Read, not written, the next time; a user's edits stay.
        std::fs::write(&path, "cert = \"mine.pem\"\n").unwrap();
        let c = resolve(&["-g", p], &env(&[])).unwrap();
        assert!(c.created_config_file.is_none());
        assert_eq!(c.tls_files.cert, PathBuf::from("mine.pem"));
    }

    #[test]
    fn a_malformed_config_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "cert = [unclosed\n").unwrap();
        let e = resolve(&["-g", path.to_str().unwrap()], &env(&[])).unwrap_err();
        assert!(e.option.contains("config-file"), "{e}");
        assert_eq!(e.value, path.display().to_string());
        assert!(
            !e.to_string().contains('\n') && e.reason.starts_with("line 1: "),
            "{e}"
        );
        // A directory where the file should be is not overwritten either.
        let e = resolve(&["-g", dir.path().to_str().unwrap()], &env(&[])).unwrap_err();
        assert!(e.option.contains("config-file"), "{e}");
    }

    #[test]
    fn the_default_config_file_is_read_if_present_and_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let xdg = dir.path().to_str().unwrap();
        let default = dir.path().join("sentrypeer").join("default-config.toml");
        let c = resolve(&[], &env(&[("XDG_CONFIG_HOME", xdg)])).unwrap();
        assert!(c.created_config_file.is_none());
        assert!(!default.exists() && !dir.path().join("sentrypeer").exists());
        std::fs::create_dir_all(default.parent().unwrap()).unwrap();
        std::fs::write(&default, "cert = \"xdg.pem\"\n").unwrap();
        let c = resolve(&[], &env(&[("XDG_CONFIG_HOME", xdg)])).unwrap();
        assert_eq!(c.tls_files.cert, PathBuf::from("xdg.pem"));
    }

    #[test]
    fn webhook_delivery_settings_default_sanely_and_are_bounded() {
        let w = |args: &[&str]| {
            let mut argv = vec!["-w", "http://127.0.0.1:1/x"];
            argv.extend_from_slice(args);
            resolve(&argv, &env(&[])).map(|c| c.webhook.unwrap())
        };
        let d = w(&[]).unwrap();
        assert_eq!(
            (d.batch, d.outbox_cap, d.dead_letter_cap, d.max_backoff),
            (1, 100_000, 100_000, Duration::from_secs(300))
        );
        let c = w(&[
            "--webhook-batch",
            "50",
            "--webhook-outbox-cap",
            "7",
            "--webhook-dead-letter-cap",
            "9",
            "--webhook-max-backoff",
            "1",
        ])
        .unwrap();
        assert_eq!(
            (c.batch, c.outbox_cap, c.dead_letter_cap, c.max_backoff),
            (50, 7, 9, Duration::from_secs(1))
        );
        assert!(w(&["--webhook-batch", "0"]).is_err());
        assert!(w(&["--webhook-batch", "1001"]).is_err());
        assert!(w(&["--webhook-outbox-cap", "0"]).is_err());
        assert!(w(&["--webhook-dead-letter-cap", "0"]).is_err());
        assert!(w(&["--webhook-max-backoff", "0"]).is_err());
    }

    #[test]
    fn dnsbl_settings_come_from_flags_or_the_file_and_need_a_zone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "dnsbl_listen = [\"127.0.0.1:5353\", \"[::1]:5353\"]\ndnsbl_zone = \"BL.example.\"\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let d = resolve(&["-g", p], &env(&[])).unwrap().dnsbl.unwrap();
        assert_eq!((d.listen.len(), d.zone.as_str()), (2, "bl.example"));
        let d = resolve(&["-g", p, "--dnsbl-listen", "127.0.0.1:53"], &env(&[]))
            .unwrap()
            .dnsbl
            .unwrap();
        assert_eq!(d.listen[0].addr, "127.0.0.1:53".parse().unwrap());
        assert!(resolve(&[], &env(&[])).unwrap().dnsbl.is_none());
        let e = resolve(&["--dnsbl-listen", "127.0.0.1:53"], &env(&[])).unwrap_err();
        assert_eq!(e.option, "--dnsbl-zone");
    }

    #[test]
    fn the_bgp_feed_is_configured_from_the_file_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "bgp_neighbor = [\"192.0.2.10\", \"192.0.2.11:1179\"]\nbgp_local_as = 65000\n\
             bgp_peer_as = 65001\nbgp_next_hop = [\"192.0.2.1\", \"100::1\"]\n\
             bgp_community = \"65000:666:1\"\nbgp_max_routes = 50\nbgp_listen = \"127.0.0.1:0\"\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let b = resolve(&["-g", p], &env(&[])).unwrap().bgp.unwrap();
        assert_eq!(b.neighbors.len(), 2);
        assert_eq!((b.local_as, b.peer_as, b.max_routes), (65000, 65001, 50));
        assert!(b.next_hop_v6.is_some() && b.listen.is_some());
        let b = resolve(&["-g", p, "--bgp-max-routes", "7"], &env(&[]))
            .unwrap()
            .bgp
            .unwrap();
        assert_eq!(b.max_routes, 7);
        assert!(resolve(&[], &env(&[])).unwrap().bgp.is_none());
    }

    #[test]
    fn kernel_set_options_add_their_outputs() {
        use crate::output::kernel_sets::nftables::NftablesConfig;
        let names = |c: &Config| c.outputs().iter().map(|o| o.name()).collect::<Vec<_>>();
        let c = resolve(&[], &env(&[])).unwrap();
        assert!(c.nftables.is_none() && c.ipset.is_none());
        let c = resolve(&["--nftables", "--ipset", "blocked"], &env(&[])).unwrap();
        assert_eq!(c.nftables, Some(NftablesConfig { chain: true }));
        assert_eq!(c.ipset.as_ref().unwrap().name, "blocked");
        assert_eq!(names(&c), ["sqlite", "nftables", "ipset"]);
        let c = resolve(&[], &env(&[("SENTRYPEER_NFTABLES_SET_ONLY", "")])).unwrap();
        assert_eq!(c.nftables, Some(NftablesConfig { chain: false }));
        let e = resolve(&["--ipset", "no spaces"], &env(&[])).unwrap_err();
        assert_eq!(e.option, "--ipset");
    }

    #[test]
    fn sip_disable_means_no_sip_listeners() {
        let c = resolve(&["-R", "-a"], &env(&[])).unwrap();
        assert!(c.udp.is_empty() && c.tcp.is_empty() && c.tls.is_empty());
        assert_eq!(c.api.len(), 1);
    }
}
