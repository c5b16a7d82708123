//! Go's `time.Duration` text, as the LAPI writes a decision's remaining
//! time: `3h59m50.123456789s`, `-13.97ms` (negative once deleted), `0s`.
//!
//! The grammar is Go's `time.ParseDuration`: an optional sign, then one or
//! more `<number><unit>` with an optional fraction, units `ns`, `us`, `µs`,
//! `μs`, `ms`, `s`, `m`, `h`; a lone `0` is zero. Like Go, a value beyond
//! an `int64` of nanoseconds (about 292 years) is an error, not a wrap.

/// Signed nanoseconds.
pub type Nanos = i128;

const MAX_NANOS: i128 = i64::MAX as i128;

fn unit_nanos(unit: &str) -> Option<i128> {
    Some(match unit {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// Parse a Go duration string into signed nanoseconds.
pub fn parse(text: &str) -> Result<Nanos, String> {
    let bad = |why: &str| Err(format!("invalid Go duration {text:?}: {why}"));
    let (neg, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return bad("empty");
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int, after) = rest.split_at(int_end);
        let (frac, after) = match after.strip_prefix('.') {
            Some(a) => {
                let end = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
                a.split_at(end)
            }
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return bad("a number must come before each unit");
        }
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        if unit.is_empty() {
            return bad("missing unit (ns, us, ms, s, m or h)");
        }
        let Some(scale) = unit_nanos(unit) else {
            return bad(&format!("unknown unit {unit:?}"));
        };
        // Digits beyond 30 overflow any real value: reject before parsing.
        if int.len() > 30 {
            return bad("out of range");
        }
        let whole: i128 = if int.is_empty() {
            0
        } else {
            int.parse()
                .map_err(|_| format!("invalid Go duration {text:?}"))?
        };
        let mut part = whole
            .checked_mul(scale)
            .filter(|v| *v <= MAX_NANOS)
            .ok_or_else(|| format!("invalid Go duration {text:?}: out of range"))?;
        // The fraction, truncated to whole nanoseconds (Go rounds through a
        // float; the difference is below a nanosecond per term).
        let mut digit_scale = scale;
        for d in frac.bytes().take(20) {
            digit_scale /= 10;
            if digit_scale == 0 {
                break;
            }
            part += (d - b'0') as i128 * digit_scale;
        }
        total = total
            .checked_add(part)
            .filter(|v| *v <= MAX_NANOS)
            .ok_or_else(|| format!("invalid Go duration {text:?}: out of range"))?;
        rest = after;
    }
    Ok(if neg { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::parse;

    const S: i128 = 1_000_000_000;

    #[test]
    fn what_the_lapi_writes() {
        assert_eq!(parse("4h").unwrap(), 4 * 3600 * S);
        assert_eq!(
            parse("3h59m50.123456789s").unwrap(),
            (3 * 3600 + 59 * 60 + 50) * S + 123_456_789
        );
        assert_eq!(parse("59.426868712s").unwrap(), 59 * S + 426_868_712);
        assert_eq!(parse("-13.974063ms").unwrap(), -13_974_063);
        assert_eq!(parse("-5.881041079s").unwrap(), -(5 * S + 881_041_079));
        assert_eq!(parse("0").unwrap(), 0);
        assert_eq!(parse("0s").unwrap(), 0);
        assert_eq!(parse("-0").unwrap(), 0);
    }

    #[test]
    fn every_unit_and_fraction_form() {
        assert_eq!(parse("1ns").unwrap(), 1);
        assert_eq!(parse("1us").unwrap(), 1_000);
        assert_eq!(parse("1µs").unwrap(), 1_000);
        assert_eq!(parse("1μs").unwrap(), 1_000);
        assert_eq!(parse("1.5ms").unwrap(), 1_500_000);
        assert_eq!(parse(".5s").unwrap(), S / 2);
        assert_eq!(parse("1.s").unwrap(), S);
        assert_eq!(parse("+2m").unwrap(), 120 * S);
        assert_eq!(parse("1h1m1s1ms1us1ns").unwrap(), 3661 * S + 1_001_001);
        assert_eq!(parse("2562047h47m16.854775807s").unwrap(), i64::MAX as i128);
    }

    #[test]
    fn garbage_and_overflow_are_errors() {
        for bad in [
            "",
            "-",
            "+",
            "s",
            "1",
            "10",
            "1d",
            "1 h",
            "h1",
            ".s",
            "1.2.3s",
            "1hh",
            "--1s",
            "2562048h",
            "9999999999999999999999999h",
            "99999999999999999999999999999999999999h",
            "1e3s",
            "NaN",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed as {:?}", parse(bad));
        }
    }
}
