//! A keyed multiply-fold hasher for the detector's in-process maps (buckets, signal groups,
//! the scanner verdicts per user agent).
//!
//! std's SipHash-1-3 was a third of detection's cost (three lookups of a 26-byte key per
//! matching scenario, plus a ~100-byte user agent per row). This hasher folds 8 or 16 bytes per
//! 64×64→128-bit multiply (the construction of wyhash and foldhash). Its keys are random per
//! process (taken from std's `RandomState`), so an attacker choosing addresses or user agents
//! cannot aim at one hash-table slot without knowing them. Nothing it produces leaves the
//! process: event identities use the fixed-key SipHash in `detector::stable_hash`.

use std::hash::{BuildHasher, Hasher};

#[inline(always)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let r = (a as u128).wrapping_mul(b as u128);
    (r as u64) ^ ((r >> 64) as u64)
}

/// Random keys, drawn once per map.
#[derive(Clone, Copy, Debug)]
pub struct FoldState {
    k: [u64; 3],
}

impl Default for FoldState {
    fn default() -> Self {
        let s = std::collections::hash_map::RandomState::new();
        // Odd multipliers keep every key bit in play.
        FoldState { k: [s.hash_one(0x5eed_u64) | 1, s.hash_one(0xface_u64) | 1, s.hash_one(0xbeef_u64) | 1] }
    }
}

impl BuildHasher for FoldState {
    type Hasher = FoldHasher;
    #[inline]
    fn build_hasher(&self) -> FoldHasher {
        FoldHasher { h: self.k[0], k1: self.k[1], k2: self.k[2] }
    }
}

pub struct FoldHasher {
    h: u64,
    k1: u64,
    k2: u64,
}

impl Hasher for FoldHasher {
    #[inline]
    fn write_u64(&mut self, x: u64) {
        self.h = fold_mul(self.h ^ x, self.k1);
    }

    #[inline]
    fn write_u8(&mut self, x: u8) {
        self.write_u64(x as u64);
    }

    #[inline]
    fn write_u16(&mut self, x: u16) {
        self.write_u64(x as u64);
    }

    #[inline]
    fn write_u32(&mut self, x: u32) {
        self.write_u64(x as u64);
    }

    #[inline]
    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64);
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let word = |c: &[u8], i: usize| u64::from_le_bytes(c[i..i + 8].try_into().expect("8 bytes"));
        // Two independent lanes per 32 bytes (a user agent is ~100): half the multiply chain.
        let mut wide = bytes.chunks_exact(32);
        let mut lane = self.h.rotate_left(31) ^ self.k1;
        for c in &mut wide {
            self.h = fold_mul(self.h ^ word(c, 0), word(c, 8) ^ self.k2);
            lane = fold_mul(lane ^ word(c, 16), word(c, 24) ^ self.k1);
        }
        self.h ^= lane.rotate_left(17);
        let mut chunks = wide.remainder().chunks_exact(16);
        for c in &mut chunks {
            self.h = fold_mul(self.h ^ word(c, 0), word(c, 8) ^ self.k2).wrapping_add(self.h.rotate_left(23));
        }
        let rest = chunks.remainder();
        let mut tail = [0u8; 16];
        tail[..rest.len()].copy_from_slice(rest);
        self.h = fold_mul(self.h ^ word(&tail, 0) ^ bytes.len() as u64, word(&tail, 8) ^ self.k2)
            .wrapping_add(self.h.rotate_left(23));
    }

    #[inline]
    fn finish(&self) -> u64 {
        fold_mul(self.h, self.k1 ^ 0x9e37_79b9_7f4a_7c15)
    }
}

pub type FastMap<K, V> = std::collections::HashMap<K, V, FoldState>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn distinct_inputs_spread_over_the_table() {
        let s = FoldState::default();
        // Addresses differing in one octet, strings differing in one byte or only in length.
        let mut seen = HashSet::new();
        for i in 0..10_000u64 {
            assert!(seen.insert(s.hash_one((1u16, std::net::Ipv6Addr::from(i as u128), 7u64))));
        }
        for n in 0..100usize {
            assert!(seen.insert(s.hash_one("a".repeat(n))));
            assert!(seen.insert(s.hash_one(format!("Mozilla/5.0 {n:>30}"))));
        }
        // Low bits (the table index) and the top 7 bits (hashbrown's tags) both vary.
        let low: HashSet<u64> = (0..1024u64).map(|i| s.hash_one(i) & 1023).collect();
        let top: HashSet<u64> = (0..4096u64).map(|i| s.hash_one(i) >> 57).collect();
        assert!(low.len() > 550 && top.len() == 128, "{} {}", low.len(), top.len());
    }
}
