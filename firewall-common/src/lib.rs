//! Types and arithmetic shared by the kernel program and the controller.
//!
//! Everything here is `no_std` and `#[repr(C)]` with explicit padding: the
//! same bytes are map keys and values on both sides, and implicit padding in
//! a hash key silently breaks lookups.
#![no_std]
#![deny(unsafe_code)]

pub mod bucket;
pub mod challenge;
pub mod maps;
pub mod types;

pub use bucket::{gcra_admit, gcra_tokens, Bucket, Limit};
pub use challenge::{ChallengeKey, Handoff};
pub use types::*;

#[cfg(feature = "user")]
mod pod;
