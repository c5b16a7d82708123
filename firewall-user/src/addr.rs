//! Addresses and prefixes as the CLI and policy accept them.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

use crate::error::BadInput;

/// How a CIDR is written, for messages.
pub const CIDR_EXAMPLES: &str =
    "an IPv4 or IPv6 address or CIDR such as \"192.0.2.0/24\", \"2001:db8::/32\" or \"203.0.113.7\"";

/// Why a string is not a CIDR: one reason for the CLI and the policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CidrError {
    Empty,
    NotAnAddress,
    /// The text after `/`.
    PrefixNotANumber(String),
    PrefixOutOfRange {
        len: String,
        v4: bool,
    },
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CidrError::Empty => f.write_str("empty"),
            CidrError::NotAnAddress => f.write_str("not an IP address"),
            CidrError::PrefixNotANumber(len) => {
                write!(f, "prefix length \"{len}\" is not a number")
            }
            CidrError::PrefixOutOfRange { len, v4: true } => {
                write!(
                    f,
                    "prefix length {len} is out of range (IPv4 allows 0 to 32)"
                )
            }
            CidrError::PrefixOutOfRange { len, v4: false } => {
                write!(
                    f,
                    "prefix length {len} is out of range (IPv6 allows 0 to 128)"
                )
            }
        }
    }
}

/// A CIDR (`10.0.0.0/8`) or a bare address (`/32` or `/128`), host bits kept.
pub fn parse_net(s: &str) -> Result<IpNet, CidrError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(CidrError::Empty);
    }
    let (addr, len) = match s.split_once('/') {
        None => (s, None),
        Some((addr, len)) => (addr.trim(), Some(len.trim())),
    };
    let addr = IpAddr::from_str(addr).map_err(|_| CidrError::NotAnAddress)?;
    let Some(len) = len else {
        return Ok(IpNet::from(addr));
    };
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CidrError::PrefixNotANumber(len.to_string()));
    }
    let max = if addr.is_ipv4() { 32 } else { 128 };
    match len.parse::<u8>() {
        Ok(n) if n <= max => Ok(IpNet::new(addr, n).expect("prefix length checked")),
        _ => Err(CidrError::PrefixOutOfRange {
            len: len.to_string(),
            v4: addr.is_ipv4(),
        }),
    }
}

/// A CIDR or a bare address (`203.0.113.7` = /32, `2001:db8::1` = /128),
/// as the CLI takes it. Host bits are cleared; `Ok((net, true))` says some
/// were set.
pub fn parse_cidr(s: &str) -> Result<(IpNet, bool), BadInput> {
    let net = parse_net(s).map_err(|why| {
        BadInput(format!(
            "invalid CIDR '{}': {why}; expected an address or prefix such as 203.0.113.0/24, 203.0.113.7 or 2001:db8::/48",
            s.trim()
        ))
    })?;
    let trunc = net.trunc();
    Ok((trunc, trunc != net))
}

/// The 4 or 16 address bytes of a prefix.
pub fn v4_bytes(net: &IpNet) -> Option<[u8; 4]> {
    match net {
        IpNet::V4(n) => Some(n.addr().octets()),
        IpNet::V6(_) => None,
    }
}

pub fn v6_bytes(net: &IpNet) -> Option<[u8; 16]> {
    match net {
        IpNet::V6(n) => Some(n.addr().octets()),
        IpNet::V4(_) => None,
    }
}

/// A source-table key's address as the prefix it stands for.
pub fn key_net(key: &firewall_common::SourceKey, prefix: u8) -> IpNet {
    if key.family == 4 {
        let a = [key.addr[0], key.addr[1], key.addr[2], key.addr[3]];
        IpNet::new(IpAddr::from(a), prefix.min(32)).expect("prefix <= 32")
    } else {
        IpNet::new(IpAddr::from(key.addr), prefix.min(128)).expect("prefix <= 128")
    }
}

/// An event's source address.
pub fn addr_of(family: u8, bytes: &[u8; 16]) -> IpAddr {
    if family == 4 {
        IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
    } else {
        IpAddr::from(*bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_addresses_and_host_bits() {
        assert_eq!(
            parse_cidr("203.0.113.7").unwrap().0.to_string(),
            "203.0.113.7/32"
        );
        assert_eq!(
            parse_cidr("2001:db8::1").unwrap().0.to_string(),
            "2001:db8::1/128"
        );
        assert_eq!(
            parse_cidr("10.1.2.3/8").unwrap(),
            ("10.0.0.0/8".parse().unwrap(), true)
        );
        let e = parse_cidr("10.0.0.300").unwrap_err().0;
        assert!(e.contains("'10.0.0.300'"), "{e}");
        assert!(parse_cidr("10.0.0.0/33").is_err());
    }
}
