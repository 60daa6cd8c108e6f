//! Reconnect delays for the feeds: exponential, capped, with "equal jitter" (half fixed, half
//! random) so many Antibody replicas do not reconnect to NEXUS in lock-step.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap: cap.max(base) }
    }

    /// Delay before reconnect number `attempt` (0-based); `unit_random` in [0, 1).
    pub fn delay_with(&self, attempt: u32, unit_random: f64) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
        let ceiling = self.base.saturating_mul(factor).min(self.cap);
        let half = ceiling / 2;
        half + half.mul_f64(unit_random.clamp(0.0, 1.0))
    }

    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_jitters_within_bounds() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let cases: &[(u32, f64, u64)] = &[
            (0, 0.0, 50),
            (0, 1.0, 100),
            (1, 0.0, 100),
            (3, 0.5, 600),
            (5, 1.0, 3200),
            (6, 1.0, 5000),
            (6, 0.0, 2500),
            (40, 1.0, 5000),
            (u32::MAX, 0.5, 3750),
        ];
        for (attempt, random, want_ms) in cases {
            assert_eq!(backoff.delay_with(*attempt, *random).as_millis() as u64, *want_ms, "attempt {attempt}");
        }
        for attempt in 0..30 {
            let d = backoff.delay(attempt);
            assert!(d <= Duration::from_secs(5) && d >= Duration::from_millis(50), "{attempt}: {d:?}");
        }
        assert_eq!(Backoff::new(Duration::from_secs(2), Duration::from_secs(1)).cap, Duration::from_secs(2));
    }
}
