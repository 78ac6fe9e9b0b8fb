//! SentryPeer: a SIP honeypot and fraud-detection node.
//!
//! A probe flows `capture` (sockets) → `capture::inspect` (pure: bytes → event and replies,
//! using the pure `sip` parser) → `pipeline` (one bounded queue per output, never waits) →
//! `output::*` (database, JSON log, syslog, console, WebHook). `store` owns the database and
//! the API's queries; `api` serves them. `actors` decides who is a bad actor now (one rule,
//! read by lookups, exports, the fraud-check `agent`, the `dnsbl` zone, the `bgp` blackhole
//! feed and every enforcing output). `config` gathers `cli`, the environment and the file once,
//! and each component resolves its own settings (`settings` holds their shared vocabulary;
//! `geoip` opens the `--geoip-db` databases the analytics locate sources with);
//! `app` wires it all and shuts it down in order. `p2p` (libp2p, signed events) and `opendht`
//! (upstream's network, unsigned values) are the peer networks, each an output and an intake.
//! `admin` runs the one-shot commands
//! (`sentrypeer webhook|export|man|completions`).

pub mod actors;
pub mod admin;
pub mod agent;
pub mod api;
pub mod app;
pub mod bgp;
pub mod capture;
pub mod cli;
pub mod config;
pub mod conn_limits;
pub mod dnsbl;
pub mod event;
pub mod geoip;
pub mod metrics;
pub mod opendht;
pub mod output;
pub mod p2p;
pub mod pipeline;
pub mod settings;
pub mod sip;
pub mod store;
