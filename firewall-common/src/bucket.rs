//! Token bucket in fixed point, with no division on the packet path.
//!
//! Tokens are kept as time credit: one token is worth `ns_per_token`
//! nanoseconds of credit, scaled by `2^SHIFT` so that rates which do not
//! divide a second evenly lose less than one token per 2^16 tokens. Credit
//! grows with elapsed time up to `burst` tokens' worth; a packet spends one
//! token. `Limit::new` (controller side) does the only division.

/// Fixed-point fraction bits of the credit.
pub const SHIFT: u32 = 16;
const NS_PER_SEC: u128 = 1_000_000_000;
/// Highest rate the arithmetic holds with sub-token precision (packets/s).
pub const MAX_RATE: u64 = 1_000_000_000;
/// Credit must stay below this so that adding elapsed time cannot overflow.
pub const MAX_CREDIT: u64 = 1 << 62;

/// A rate and burst, precomputed for the packet path.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limit {
    /// Credit one packet costs: `2^SHIFT * 1e9 / rate`, rounded down, so the
    /// effective rate is never below the configured one.
    pub ns_per_token: u64,
    /// Bucket depth in credit units: `burst * ns_per_token`.
    pub burst_credit: u64,
}

/// Why a rate/burst pair cannot be represented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitError {
    ZeroRate,
    ZeroBurst,
    RateTooHigh,
    BurstTooHigh { max: u64 },
}

impl Limit {
    /// Precompute a limit; `None`-like errors name what is out of range.
    pub fn new(rate: u64, burst: u64) -> Result<Self, LimitError> {
        if rate == 0 {
            return Err(LimitError::ZeroRate);
        }
        if burst == 0 {
            return Err(LimitError::ZeroBurst);
        }
        if rate > MAX_RATE {
            return Err(LimitError::RateTooHigh);
        }
        let ns_per_token = ((NS_PER_SEC << SHIFT) / rate as u128) as u64;
        let max = Self::max_burst(rate);
        if burst > max {
            return Err(LimitError::BurstTooHigh { max });
        }
        Ok(Limit {
            ns_per_token,
            burst_credit: burst * ns_per_token,
        })
    }

    /// The deepest bucket `rate` allows before the credit could overflow.
    pub fn max_burst(rate: u64) -> u64 {
        let ns_per_token = ((NS_PER_SEC << SHIFT) / rate.clamp(1, MAX_RATE) as u128) as u64;
        MAX_CREDIT / ns_per_token
    }

    /// Packets per second this limit admits (controller side, for display).
    pub fn rate(&self) -> u64 {
        if self.ns_per_token == 0 {
            return 0;
        }
        ((NS_PER_SEC << SHIFT) / self.ns_per_token as u128) as u64
    }

    /// Bucket depth in packets (controller side, for display).
    pub fn burst(&self) -> u64 {
        self.burst_credit
            .checked_div(self.ns_per_token)
            .unwrap_or(0)
    }

    pub fn is_set(&self) -> bool {
        self.ns_per_token != 0
    }
}

/// Fraction bits of GCRA time (1/16 ns): enough to tell rates apart up to
/// hundreds of millions a second, while `now << GCRA_SHIFT` stays clear of
/// overflow for 36 years of uptime.
pub const GCRA_SHIFT: u32 = 4;

impl Limit {
    /// GCRA emission interval: one token's worth of time, in 1/16 ns
    /// (rounded down like `ns_per_token`: the rate is never below the
    /// configured one).
    #[inline(always)]
    pub fn gcra_t(&self) -> u64 {
        let t = self.ns_per_token >> (SHIFT - GCRA_SHIFT);
        if t == 0 {
            1
        } else {
            t
        }
    }

    /// GCRA tolerance: how far ahead of now the bucket may be drawn, i.e.
    /// `burst - 1` tokens' worth of time.
    #[inline(always)]
    pub fn gcra_tau(&self) -> u64 {
        (self.burst_credit.saturating_sub(self.ns_per_token)) >> (SHIFT - GCRA_SHIFT)
    }
}

/// The token bucket of a tracked source as one number (the generic cell
/// rate algorithm): `tat` is when the bucket will be full again, so a source
/// needs 8 bytes of state instead of a credit and a timestamp. A packet at
/// `now` is admitted when the bucket would not overflow its depth, and then
/// moves `tat` one token's time on. `tat <= now` is a full bucket; a new
/// source starts with `tat = 0`.
#[inline(always)]
pub fn gcra_admit(tat: &mut u64, limit: &Limit, now_ns: u64) -> bool {
    let now = now_ns << GCRA_SHIFT;
    let (t, tau) = (limit.gcra_t(), limit.gcra_tau());
    let mut base = if *tat > now { *tat } else { now };
    // Further ahead than an empty bucket: the limit changed (or the clock
    // stepped back). Like a credit clamped to the new depth, the source
    // starts from an empty bucket under the limit in force, so a changed
    // limit applies from the next packet on. Never reached with one limit
    // and a clock that only moves forward.
    if base - now > tau + t {
        base = now + tau + t;
        *tat = base;
    }
    if base - now <= tau {
        *tat = base + t;
        true
    } else {
        false
    }
}

/// Whole tokens a GCRA bucket holds at `now` (controller side, for display).
pub fn gcra_tokens(tat: u64, limit: &Limit, now_ns: u64) -> u64 {
    let now = now_ns << GCRA_SHIFT;
    let depth = limit.gcra_tau() + limit.gcra_t();
    let debt = tat.saturating_sub(now);
    depth.saturating_sub(debt) / limit.gcra_t()
}

/// Per-CPU bucket state (the flood guard's and the event budget's),
/// updated in place through a map value pointer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    pub credit: u64,
    pub last_ns: u64,
}

impl Bucket {
    /// A bucket that starts full at `now`: a new source gets its whole burst.
    #[inline(always)]
    pub fn full(limit: &Limit, now: u64) -> Self {
        Bucket {
            credit: limit.burst_credit,
            last_ns: now,
        }
    }

    /// Credit at `now`: refilled for the time since the last packet, capped
    /// at the bucket's depth.
    #[inline(always)]
    fn refilled(&self, limit: &Limit, now: u64) -> u64 {
        // Clocks of different CPUs may disagree slightly: never refill for
        // negative time.
        let elapsed = now.saturating_sub(self.last_ns);
        // `elapsed << SHIFT` overflows after ~3 days; any gap longer than
        // the full bucket's worth refills it completely anyway.
        if elapsed > (limit.burst_credit >> SHIFT) {
            return limit.burst_credit;
        }
        let c = self.credit + (elapsed << SHIFT);
        if c > limit.burst_credit {
            limit.burst_credit
        } else {
            c
        }
    }

    /// Refill, then try to spend one token. Returns whether the packet is
    /// admitted.
    #[inline(always)]
    pub fn admit(&mut self, limit: &Limit, now: u64) -> bool {
        let credit = self.refilled(limit, now);
        if now > self.last_ns {
            self.last_ns = now;
        }
        if credit >= limit.ns_per_token {
            self.credit = credit - limit.ns_per_token;
            true
        } else {
            self.credit = credit;
            false
        }
    }

    /// Whole tokens the bucket holds at `now` (controller side, for display).
    pub fn tokens_at(&self, limit: &Limit, now: u64) -> u64 {
        self.refilled(limit, now)
            .checked_div(limit.ns_per_token)
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn new_source_gets_its_burst_then_the_rate() {
        let l = Limit::new(10, 5).unwrap();
        let mut b = Bucket::full(&l, 1000);
        let first: usize = (0..20).filter(|_| b.admit(&l, 1000)).count();
        assert_eq!(first, 5);
        // One second later exactly `rate` more tokens are there.
        let later: usize = (0..20).filter(|_| b.admit(&l, 1000 + SEC)).count();
        assert_eq!(later, 5, "refill capped at burst");
        let mut b = Bucket::full(&l, 0);
        for _ in 0..5 {
            assert!(b.admit(&l, 0));
        }
        assert!(!b.admit(&l, 0));
        assert!(b.admit(&l, SEC / 10), "one token after 1/rate");
        assert!(!b.admit(&l, SEC / 10));
    }

    #[test]
    fn rejects_what_it_cannot_hold() {
        assert_eq!(Limit::new(0, 1), Err(LimitError::ZeroRate));
        assert_eq!(Limit::new(1, 0), Err(LimitError::ZeroBurst));
        assert_eq!(Limit::new(MAX_RATE + 1, 1), Err(LimitError::RateTooHigh));
        let max = Limit::max_burst(1);
        assert!(Limit::new(1, max).is_ok());
        assert_eq!(
            Limit::new(1, max + 1),
            Err(LimitError::BurstTooHigh { max })
        );
        let l = Limit::new(333, 1000).unwrap();
        assert_eq!((l.rate(), l.burst()), (333, 1000));
    }

    #[test]
    fn clock_going_backwards_neither_refills_nor_panics() {
        let l = Limit::new(1, 1).unwrap();
        let mut b = Bucket::full(&l, 10 * SEC);
        assert!(b.admit(&l, 10 * SEC));
        assert!(!b.admit(&l, 9 * SEC));
        assert_eq!(b.last_ns, 10 * SEC);
        assert!(b.admit(&l, 11 * SEC));
    }

    #[test]
    fn a_changed_limit_applies_from_the_next_packet() {
        let big = Limit::new(1000, 10_000).unwrap();
        let small = Limit::new(1, 3).unwrap();
        let mut b = Bucket::full(&big, 0);
        // Credit is time: 10 s of it is clamped to the new depth of 3 s.
        let n = (0..100).filter(|_| b.admit(&small, 1)).count();
        assert_eq!(n, 3);
    }

    /// Floating-point reference: the textbook token bucket.
    fn reference(rate: f64, burst: f64, arrivals: &[u64]) -> Vec<bool> {
        let mut tokens = burst;
        let mut last = arrivals.first().copied().unwrap_or(0);
        arrivals
            .iter()
            .map(|&t| {
                tokens = (tokens + (t.saturating_sub(last)) as f64 * rate / 1e9).min(burst);
                last = last.max(t);
                if tokens >= 1.0 {
                    tokens -= 1.0;
                    true
                } else {
                    false
                }
            })
            .collect()
    }

    fn run(limit: &Limit, arrivals: &[u64]) -> Vec<bool> {
        let mut b = Bucket::full(limit, arrivals.first().copied().unwrap_or(0));
        arrivals.iter().map(|&t| b.admit(limit, t)).collect()
    }

    fn run_gcra(limit: &Limit, arrivals: &[u64]) -> Vec<bool> {
        let mut tat = 0;
        arrivals
            .iter()
            .map(|&t| gcra_admit(&mut tat, limit, t))
            .collect()
    }

    #[test]
    fn gcra_burst_then_rate_and_limit_changes() {
        let l = Limit::new(10, 5).unwrap();
        let mut tat = 0;
        let first = (0..20).filter(|_| gcra_admit(&mut tat, &l, 1000)).count();
        assert_eq!(first, 5);
        assert_eq!(gcra_tokens(tat, &l, 1000), 0);
        let later = (0..20)
            .filter(|_| gcra_admit(&mut tat, &l, 1000 + SEC))
            .count();
        assert_eq!(later, 5, "refill capped at burst");
        assert_eq!(gcra_tokens(0, &l, SEC), 5, "a new source is full");
        // Time going backwards neither refills nor panics.
        let one = Limit::new(1, 1).unwrap();
        let mut tat = 0;
        assert!(gcra_admit(&mut tat, &one, 10 * SEC));
        assert!(!gcra_admit(&mut tat, &one, 9 * SEC));
        assert!(gcra_admit(&mut tat, &one, 11 * SEC));
        // A changed limit applies from the next packet.
        let big = Limit::new(1000, 10_000).unwrap();
        let small = Limit::new(1, 3).unwrap();
        let mut tat = 0;
        assert!(gcra_admit(&mut tat, &big, 0));
        let n = (0..100).filter(|_| gcra_admit(&mut tat, &small, 1)).count();
        assert_eq!(n, 2, "one of the three was spent under the old limit");
    }

    /// Arrival times: sorted offsets within 20 s, densely clustered at times.
    fn arrivals() -> impl Strategy<Value = Vec<u64>> {
        proptest::collection::vec((0u64..200, 0u64..SEC / 10), 1..400).prop_map(|gaps| {
            let mut t = 0u64;
            gaps.into_iter()
                .map(|(dense, gap)| {
                    // Most gaps are tiny, some long: bursts and pauses.
                    t += if dense < 190 { gap / 1000 } else { gap };
                    t
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// In any window of length T, admitted <= burst + rate*T + 1.
        #[test]
        fn never_admits_more_than_burst_plus_rate(
            rate in 1u64..100_000, burst in 1u64..10_000, ts in arrivals()
        ) {
            let l = Limit::new(rate, burst).unwrap();
            let admitted = run(&l, &ts);
            let times: Vec<u64> = ts.iter().zip(&admitted).filter(|(_, a)| **a).map(|(t, _)| *t).collect();
            for i in 0..times.len() {
                for j in i..times.len() {
                    let window = (times[j] - times[i]) as f64 / 1e9;
                    let count = (j - i + 1) as f64;
                    prop_assert!(count <= burst as f64 + rate as f64 * window + 1.0,
                        "{} admitted in {}s (rate {}, burst {})", count, window, rate, burst);
                }
            }
        }

        /// A source that never sends faster than its rate is never dropped.
        #[test]
        fn below_rate_is_never_dropped(
            rate in 1u64..1_000_000, burst in 1u64..1000, slack in proptest::collection::vec(0u64..SEC, 1..300)
        ) {
            let l = Limit::new(rate, burst).unwrap();
            let interval = SEC.div_ceil(rate);
            let mut t = 0;
            let ts: Vec<u64> = slack.iter().map(|s| { t += interval + s % (interval + 1); t }).collect();
            prop_assert!(run(&l, &ts).iter().all(|a| *a));
        }

        /// GCRA (the per-source buckets): never more than burst + rate*T + 1.
        #[test]
        fn gcra_never_admits_more_than_burst_plus_rate(
            rate in 1u64..100_000, burst in 1u64..10_000, ts in arrivals()
        ) {
            let l = Limit::new(rate, burst).unwrap();
            let admitted = run_gcra(&l, &ts);
            let times: Vec<u64> = ts.iter().zip(&admitted).filter(|(_, a)| **a).map(|(t, _)| *t).collect();
            for i in 0..times.len() {
                for j in i..times.len() {
                    let window = (times[j] - times[i]) as f64 / 1e9;
                    let count = (j - i + 1) as f64;
                    prop_assert!(count <= burst as f64 + rate as f64 * window + 1.0,
                        "{} admitted in {}s (rate {}, burst {})", count, window, rate, burst);
                }
            }
        }

        /// GCRA: a source never sending faster than its rate is never dropped.
        #[test]
        fn gcra_below_rate_is_never_dropped(
            rate in 1u64..1_000_000, burst in 1u64..1000, slack in proptest::collection::vec(0u64..SEC, 1..300)
        ) {
            let l = Limit::new(rate, burst).unwrap();
            let interval = SEC.div_ceil(rate);
            let mut t = SEC;
            let ts: Vec<u64> = slack.iter().map(|s| { t += interval + s % (interval + 1); t }).collect();
            prop_assert!(run_gcra(&l, &ts).iter().all(|a| *a));
        }

        /// GCRA agrees with the float model and with the credit bucket.
        #[test]
        fn gcra_agrees_with_the_reference_model(
            rate in 1u64..100_000, burst in 1u64..1000, ts in arrivals()
        ) {
            let l = Limit::new(rate, burst).unwrap();
            let ours = run_gcra(&l, &ts).iter().filter(|a| **a).count() as i64;
            let model = reference(rate as f64, burst as f64, &ts).iter().filter(|a| **a).count() as i64;
            let credit = run(&l, &ts).iter().filter(|a| **a).count() as i64;
            prop_assert!((ours - model).abs() <= 1, "gcra {} model {}", ours, model);
            prop_assert!((ours - credit).abs() <= 1, "gcra {} credit bucket {}", ours, credit);
        }

        /// Matches the floating-point model, packet for packet, except where
        /// the model sits within rounding distance of a whole token.
        #[test]
        fn agrees_with_the_reference_model(
            rate in 1u64..100_000, burst in 1u64..1000, ts in arrivals()
        ) {
            let l = Limit::new(rate, burst).unwrap();
            let ours = run(&l, &ts);
            let model = reference(rate as f64, burst as f64, &ts);
            let ours_n = ours.iter().filter(|a| **a).count() as i64;
            let model_n = model.iter().filter(|a| **a).count() as i64;
            prop_assert!((ours_n - model_n).abs() <= 1, "ours {} model {}", ours_n, model_n);
        }
    }
}
