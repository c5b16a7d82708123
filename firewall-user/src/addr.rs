//! Addresses and prefixes as the CLI and policy accept them.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::BadInput;

/// A CIDR or a bare address (`203.0.113.7` = /32, `2001:db8::1` = /128).
/// Host bits are cleared; `Ok((net, true))` says some were set.
pub fn parse_cidr(s: &str) -> Result<(IpNet, bool), BadInput> {
    let s = s.trim();
    let net = match s.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => match s.parse::<IpAddr>() {
            Ok(a) => IpNet::from(a),
            Err(_) => {
                return Err(BadInput(format!(
                    "invalid CIDR '{s}': expected an address or prefix such as 203.0.113.0/24, 203.0.113.7 or 2001:db8::/48"
                )))
            }
        },
    };
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
