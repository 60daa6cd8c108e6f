//! One backoff for everything that retries: NEXUS feed reconnects, watch re-connects, reconcile
//! requeues, notifier redelivery, plan creation; and one rule for which Kubernetes API errors
//! are worth retrying ([`api_failure`]). Exponential from `base`, capped at `cap`. Callers that many
//! replicas run at once (reconnects) add "equal jitter" — half fixed, half random — so replicas
//! do not retry in lock-step; the others use the deterministic ceiling.

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

    /// `base × 2^attempt` (0-based), at most `cap`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The ceiling with equal jitter: in [ceiling/2, ceiling]; `unit_random` in [0, 1).
    pub fn delay_with(&self, attempt: u32, unit_random: f64) -> Duration {
        let half = self.ceiling(attempt) / 2;
        half + half.mul_f64(unit_random.clamp(0.0, 1.0))
    }

    /// [`Self::delay_with`] with a random draw.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, fastrand::f64())
    }
}

/// kube watcher re-connects: 250 ms doubling to 5 s, jittered, reset by the first event. kube's
/// default (client-go's 0.8 s → 30 s) kept watches down for half a minute after an API outage.
#[derive(Debug)]
pub struct WatchBackoff {
    backoff: Backoff,
    attempt: u32,
}

impl WatchBackoff {
    pub const FIRST: Duration = Duration::from_millis(250);
    pub const MAX: Duration = Duration::from_secs(5);

    pub fn new() -> Self {
        Self { backoff: Backoff::new(Self::FIRST, Self::MAX), attempt: 0 }
    }
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let delay = self.backoff.delay(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        Some(delay)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// What a failed Kubernetes API call means for whoever retries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiFailure {
    /// Unreachable or shedding load (connect/transport error, 429, 5xx): retry soon; the
    /// request itself is fine.
    Unavailable,
    /// 409: the object changed or exists; re-read and retry.
    Conflict,
    /// Any other answer (400, 403, 404, 422, a response that would not decode): final.
    Rejected,
}

/// The one rule: intake (plan creation), the plans REST and the reconciler's backoff use it.
pub fn api_failure(error: &kube::Error) -> ApiFailure {
    match error {
        kube::Error::Api(status) if status.code == 409 => ApiFailure::Conflict,
        // 0: kube could not read a status code from the answer (a proxy's error page).
        kube::Error::Api(status) if status.code == 429 || status.code >= 500 || status.code == 0 => {
            ApiFailure::Unavailable
        }
        kube::Error::Api(_) => ApiFailure::Rejected,
        kube::Error::Service(_) | kube::Error::HyperError(_) => ApiFailure::Unavailable,
        _ => ApiFailure::Rejected,
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

    #[test]
    fn api_failures_are_classified_once() {
        let api = |code| kube::Error::Api(kube::core::Status::failure("x", "y").with_code(code).boxed());
        let cases = [
            (api(429), ApiFailure::Unavailable),
            (api(500), ApiFailure::Unavailable),
            (api(503), ApiFailure::Unavailable),
            (api(0), ApiFailure::Unavailable),
            (api(409), ApiFailure::Conflict),
            (api(400), ApiFailure::Rejected),
            (api(403), ApiFailure::Rejected),
            (api(404), ApiFailure::Rejected),
            (api(422), ApiFailure::Rejected),
            (kube::Error::LinesCodecMaxLineLengthExceeded, ApiFailure::Rejected),
        ];
        for (error, want) in cases {
            assert_eq!(api_failure(&error), want, "{error}");
        }
    }

    #[test]
    fn ceiling_doubles_and_caps() {
        let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        let ceilings: Vec<u64> = [0, 1, 2, 7, 8, 40].iter().map(|&a| backoff.ceiling(a).as_millis() as u64).collect();
        assert_eq!(ceilings, [500, 1000, 2000, 60_000, 60_000, 60_000]);
    }

    #[test]
    fn watch_backoff_stays_within_five_seconds_and_resets() {
        use kube::runtime::utils::Backoff as _;
        let mut watch = WatchBackoff::new();
        let delays: Vec<Duration> = (&mut watch).take(20).collect();
        assert!(delays[0] <= WatchBackoff::FIRST, "{delays:?}");
        assert!(delays.iter().all(|d| *d <= WatchBackoff::MAX), "{delays:?}");
        assert!(delays[19] >= WatchBackoff::MAX / 2, "reaches the cap: {delays:?}");
        watch.reset();
        assert!(watch.next().is_some_and(|d| d <= WatchBackoff::FIRST));
    }
}
