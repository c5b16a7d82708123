//! The controller: loader, pinned-map access, policy, daemon and CLI.
pub mod policy;
