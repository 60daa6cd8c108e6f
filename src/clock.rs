//! The one "how long between two instants" rule: saturating at zero, so a clock that is a
//! little behind (another replica, the API server) never yields a negative or wrapped age. Pure.

use std::time::Duration;

use jiff::Timestamp;

/// Time from `from` to `to`; zero when `to` is not after `from`.
pub fn elapsed(from: Timestamp, to: Timestamp) -> Duration {
    let nanos = (to.as_nanosecond() - from.as_nanosecond()).max(0);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturates_at_zero_and_keeps_sub_second_precision() {
        let at = |ms: i64| Timestamp::from_millisecond(ms).expect("valid");
        let cases = [(0, 1500, 1500), (1500, 0, 0), (10, 10, 0), (-1000, 1000, 2000)];
        for (from, to, want_ms) in cases {
            assert_eq!(elapsed(at(from), at(to)), Duration::from_millis(want_ms), "{from} → {to}");
        }
    }
}
