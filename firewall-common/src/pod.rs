//! Marks the shared types as plain data for aya's map accessors.
#![allow(unsafe_code)]

use crate::*;

macro_rules! pod {
    ($($t:ty),*) => {$(
        // SAFETY: #[repr(C)], only integer fields and byte arrays, with every
        // padding byte spelled out as a field (sizes asserted in types.rs), so
        // any bit pattern is valid and no byte is uninitialised.
        unsafe impl aya::Pod for $t {}
    )*};
}

pod!(
    Counter,
    Config,
    ListEntry,
    LimitEntry,
    Rule,
    SourceKey,
    SourceKey4,
    SourceKey6,
    SourceState,
    Event,
    Bucket,
    Limit,
    ChallengeKey,
    Handoff
);
