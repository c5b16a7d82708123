//! Fixed-size NUL-padded strings stored in map values.

/// Truncate to 32 bytes at a char boundary, NUL-padded.
pub fn fixed(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut end = s.len().min(32);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out[..end].copy_from_slice(&s.as_bytes()[..end]);
    out
}

pub fn unfixed(b: &[u8; 32]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(32);
    String::from_utf8_lossy(&b[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_and_truncation() {
        assert_eq!(super::unfixed(&super::fixed("ssh-syn")), "ssh-syn");
        let long = "é".repeat(20);
        let f = super::unfixed(&super::fixed(&long));
        assert_eq!(f, "é".repeat(16));
    }
}
