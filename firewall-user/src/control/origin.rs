//! Where a list or limit entry came from.
//!
//! The enum is the data plane's (`firewall_common::Origin`: each entry
//! stores it as a byte); the control layer decodes the byte once, so code
//! above it compares enums, never names. The names (`config`, `manual`,
//! `import`, `autoban`, `fleet`, `crowdsec`) are for output only.

pub use firewall_common::Origin;

/// Decode an entry's origin byte (unknown bytes read as `manual`, as the
/// program never writes them).
pub(super) fn of_byte(b: u8) -> Origin {
    Origin::from_u8(b)
}

/// Whether entries of this origin follow the policy file: they are changed
/// by editing the file, not by the CLI.
pub fn from_file(o: Origin) -> bool {
    o == Origin::Config
}

/// Serialise an origin as its name (for `#[serde(serialize_with)]`).
pub fn by_name<S: serde::Serializer>(o: &Origin, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(o.name())
}
