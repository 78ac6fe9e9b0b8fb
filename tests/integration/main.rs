#![allow(unreachable_pub)]
//! The one integration-test binary: every test starts the real `sentrypeer` on loopback and
//! talks real protocols to it.

mod harness;

mod api;
mod capture;
mod cli;
mod hostile;
mod shutdown;
mod upstream_db;
