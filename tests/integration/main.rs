#![allow(unreachable_pub)]
//! The one integration-test binary: every test starts the real `sentrypeer` on loopback and
//! talks real protocols to it.

mod harness;

mod api;
mod apiban;
mod capture;
mod cli;
mod durability;
mod hostile;
mod kernel_sets;
mod logrotate;
#[cfg(feature = "p2p")]
mod p2p;
mod shutdown;
mod syslog;
mod tools;
mod upstream_db;
mod webhook;
