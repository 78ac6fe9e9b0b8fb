#![allow(unreachable_pub)]
//! The one integration-test binary: every test starts the real `sentrypeer` on loopback and
//! talks real protocols to it.

mod harness;

mod api;
mod capture;
mod cli;
mod durability;
mod hostile;
mod logrotate;
#[cfg(feature = "p2p")]
mod p2p;
#[cfg(feature = "p2p")]
mod p2p_bounds;
mod shutdown;
#[cfg(feature = "p2p")]
mod sybil;
mod syslog;
mod tools;
mod upstream_db;
mod webhook;
