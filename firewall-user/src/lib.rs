//! The controller: loader, pinned-map access, policy, daemon and CLI.
#![deny(unsafe_code)]

pub mod addr;
pub mod bpf_sys;
pub mod challenge;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod control;
pub mod crowdsec;
pub mod daemon;
pub mod error;
pub mod fleet;
pub mod loader;
pub mod migrate;
pub mod policy;
pub mod state;
pub mod text;
pub mod tick;
pub mod tui;
