#![allow(unreachable_pub)]
//! The one integration-test binary: every test starts the real `sentrypeer` on loopback and
//! talks real protocols to it.

mod harness;

mod agent;
mod api;
mod apiban;
mod bgp;
mod blocklist;
mod browser;
mod capture;
mod cli;
mod crowdsec;
mod dashboard;
#[cfg(feature = "dnsbl")]
mod dnsbl;
mod durability;
mod geoip;
mod grafana;
mod hostile;
mod kamailio;
mod kernel_sets;
mod logrotate;
#[cfg(feature = "opendht")]
mod opendht;
#[cfg(feature = "p2p")]
mod p2p;
#[cfg(feature = "p2p")]
mod p2p_bounds;
#[cfg(feature = "p2p")]
mod p2p_trust;
mod shutdown;
mod sip_auth;
#[cfg(feature = "p2p")]
mod sybil;
mod syslog;
mod tools;
mod upstream_db;
mod webhook;
