//! Shrinking a failing frame: the smallest frame found that still fails,
//! so a report shows the bytes that matter. Greedy, in the manner of
//! delta debugging: cut the tail, remove chunks of halving size, then zero
//! single bytes, keeping every change after which the frame still fails.

use crate::ETH_HLEN;

/// Shrinks `frame` while `fails` holds, asking it at most `budget` times.
/// Never goes below [`ETH_HLEN`] bytes (shorter frames are refused by the
/// kernel, a different failure). Returns the smallest failing frame found
/// (`frame` itself when nothing smaller fails).
pub fn shrink(frame: &[u8], budget: usize, mut fails: impl FnMut(&[u8]) -> bool) -> Vec<u8> {
    let mut best = frame.to_vec();
    let mut asked = 0;
    let mut try_it = |cand: Vec<u8>, best: &mut Vec<u8>| -> bool {
        if asked >= budget || cand.len() < ETH_HLEN || cand == *best {
            return false;
        }
        asked += 1;
        if fails(&cand) {
            *best = cand;
            true
        } else {
            false
        }
    };
    // Cut the tail: the shortest prefix that still fails, by halving steps.
    let mut step = best.len() / 2;
    while step > 0 {
        let cand = best[..best.len().saturating_sub(step).max(ETH_HLEN)].to_vec();
        if !try_it(cand, &mut best) {
            step /= 2;
        }
    }
    // Remove chunks anywhere after the Ethernet addresses, largest first.
    let mut chunk = best.len() / 2;
    while chunk > 0 {
        let mut at = 12;
        while at + chunk <= best.len() {
            let mut cand = best.clone();
            cand.drain(at..at + chunk);
            if !try_it(cand, &mut best) {
                at += chunk;
            }
        }
        chunk /= 2;
    }
    // Zero the bytes that do not matter (addresses first: they are noise).
    for i in 0..best.len() {
        if best[i] != 0 {
            let mut cand = best.clone();
            cand[i] = 0;
            try_it(cand, &mut best);
        }
    }
    best
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn shrinks_to_the_bytes_that_fail() {
        // Fails when some byte 0xAB follows some byte 0xCD.
        let fails = |f: &[u8]| {
            f.iter()
                .position(|b| *b == 0xcd)
                .is_some_and(|i| f[i + 1..].contains(&0xab))
        };
        let mut frame = vec![0x11u8; 200];
        frame[40] = 0xcd;
        frame[150] = 0xab;
        let small = shrink(&frame, 10_000, fails);
        assert!(fails(&small));
        assert_eq!(small.len(), ETH_HLEN);
        assert_eq!(small.iter().filter(|b| **b != 0).count(), 2, "{small:x?}");
    }

    #[test]
    fn keeps_a_frame_nothing_smaller_fails_and_respects_the_budget() {
        let frame = vec![7u8; 64];
        assert_eq!(shrink(&frame, 1000, |f: &[u8]| f == &frame[..]), frame);
        let mut asked = 0;
        shrink(&frame, 5, |_: &[u8]| {
            asked += 1;
            true
        });
        assert_eq!(asked, 5);
    }
}
