//! Retrying what failed transiently: one schedule for every step that retries (the sink's
//! ClickHouse writes, the consumer loop, dead-letter writes, incident webhooks).

use std::time::Duration;

/// The retry schedule of a step that failed transiently (a ClickHouse write of an insert task
/// or of the consumer loop, a dead-letter write): 200 ms doubling to 10 s, each wait drawn
/// from its upper half ("equal jitter") so replicas that failed together do not retry in
/// lockstep; every failure is counted and logged.
pub struct Backoff {
    next: Duration,
    seed: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded randomly per process: enough to spread replicas apart.
        let seed = std::collections::hash_map::RandomState::new().build_hasher().finish();
        Backoff { next: Duration::from_millis(200), seed }
    }
}

impl Backoff {
    /// Records that `what` failed (`meanwhile`: what happens until the retry) and returns how
    /// long to wait before trying again.
    pub fn failed(&mut self, what: &str, meanwhile: &str, e: &dyn std::fmt::Display) -> Duration {
        let delay = jittered(self.next, &mut self.seed);
        metrics::counter!("sitelog_process_retries_total", "step" => what.to_owned()).increment(1);
        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "{what} failed; {meanwhile}");
        self.next = (self.next * 2).min(Duration::from_secs(10));
        delay
    }
}

/// `base / 2 + random(0 ..= base / 2)`, from a SplitMix64 step of `state`.
fn jittered(base: Duration, state: &mut u64) -> Duration {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let half = base / 2;
    half + Duration::from_nanos(z % (half.as_nanos() as u64 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_ten_seconds_with_jitter_in_the_upper_half() {
        let mut b = Backoff::default();
        let mut seen = std::collections::HashSet::new();
        for step in 0..12u32 {
            let base = (Duration::from_millis(200) * 2u32.pow(step.min(6))).min(Duration::from_secs(10));
            let d = b.failed("test", "retrying", &"e");
            assert!(d >= base / 2 && d <= base, "step {step}: {d:?} outside {:?}..={base:?}", base / 2);
            seen.insert(d);
        }
        assert!(seen.len() > 6, "jitter varies: {seen:?}");
    }
}
