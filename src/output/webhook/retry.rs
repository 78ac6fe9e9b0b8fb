//! The arithmetic of waiting after a failure: exponential backoff with jitter, the floor an
//! endpoint's `Retry-After` sets (read as seconds or as an HTTP date), and the random unit the
//! jitter is drawn from.
//!
//! Plain arithmetic: the time and the jitter come in as arguments (`random_unit` is the one
//! source of randomness). Must not depend on HTTP, the outbox or the deliverer's state.

use std::time::Duration;

/// The first pause after a failure; it doubles with each consecutive failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// A `Retry-After` longer than an hour is cut to an hour.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The pause after a failure: the backoff, or what the endpoint asked for in `Retry-After` if
/// longer. The endpoint's wish is a floor, not a licence to hammer: "0", or a date already past
/// by the endpoint's slow clock, still backs off.
pub(super) fn pause_after(
    retry_after: Option<Duration>,
    failures: u32,
    max: Duration,
    unit: f64,
) -> Duration {
    let backed_off = backoff(failures, max, unit);
    retry_after.map_or(backed_off, |asked| asked.max(backed_off))
}

/// The pause after `failures` consecutive failures: `FIRST_BACKOFF` doubled per failure, at
/// most `max`, of which the second half is jitter (`unit` in [0, 1)) so that many nodes
/// pushed back at once do not come back at once.
fn backoff(failures: u32, max: Duration, unit: f64) -> Duration {
    let factor = 1u32
        .checked_shl(failures.saturating_sub(1))
        .unwrap_or(u32::MAX);
    let full = FIRST_BACKOFF.saturating_mul(factor).min(max);
    full.mul_f64(0.5 + unit.clamp(0.0, 1.0) / 2.0)
}

/// `Retry-After` as seconds or as an HTTP date (RFC 9110 10.2.3; a date already past means now),
/// at most an hour. Anything else is ignored and backoff applies.
pub(super) fn parse_retry_after(value: &[u8], now: std::time::SystemTime) -> Option<Duration> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if text.is_empty() {
        return None;
    }
    let wait = if text.bytes().all(|b| b.is_ascii_digit()) {
        Duration::from_secs(text.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(text).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// A number in [0, 1) from the operating system's randomness (through a v4 UUID).
pub(super) fn random_unit() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u128() & ((1u128 << 53) - 1);
    bits as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_a_floor_under_the_backoff() {
        let max = Duration::from_secs(60);
        let zero = pause_after(Some(Duration::ZERO), 1, max, 0.0);
        assert_eq!(zero, backoff(1, max, 0.0));
        assert!(zero >= Duration::from_millis(250));
        assert_eq!(
            pause_after(Some(Duration::from_secs(2)), 1, max, 0.5),
            Duration::from_secs(2)
        );
        // Many failures in, a short Retry-After does not undo the backoff.
        assert_eq!(
            pause_after(Some(Duration::from_secs(2)), 12, max, 0.99),
            backoff(12, max, 0.99)
        );
        assert_eq!(pause_after(None, 3, max, 0.3), backoff(3, max, 0.3));
    }

    #[test]
    fn backoff_doubles_from_half_a_second_up_to_the_cap_with_jitter_in_the_upper_half() {
        let max = Duration::from_secs(300);
        assert_eq!(backoff(1, max, 0.0), Duration::from_millis(250));
        assert_eq!(
            backoff(1, max, 0.999_999),
            Duration::from_millis(500) - Duration::from_nanos(250)
        );
        assert_eq!(backoff(2, max, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(4, max, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(30, max, 0.0), Duration::from_secs(150));
        assert_eq!(backoff(u32::MAX, max, 0.5), Duration::from_secs(225));
        assert_eq!(
            backoff(9, Duration::from_secs(1), 0.0),
            Duration::from_millis(500)
        );
        for _ in 0..100 {
            let u = random_unit();
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[test]
    fn retry_after_is_read_in_seconds_or_as_a_date_and_capped_at_an_hour() {
        // Wed, 21 Oct 2015 07:28:00 GMT
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let p = |v: &[u8]| parse_retry_after(v, now);
        assert_eq!(p(b"2"), Some(Duration::from_secs(2)));
        assert_eq!(p(b" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(p(b"0"), Some(Duration::ZERO));
        assert_eq!(p(b"86400"), Some(MAX_RETRY_AFTER));
        assert_eq!(p(b"99999999999999999999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            p(b"Wed, 21 Oct 2015 07:28:30 GMT"),
            Some(Duration::from_secs(30))
        );
        // The two obsolete date forms HTTP still allows.
        assert_eq!(
            p(b"Wednesday, 21-Oct-15 07:29:00 GMT"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(p(b"Wed Oct 21 07:28:05 2015"), Some(Duration::from_secs(5)));
        assert_eq!(
            p(b"Wed, 21 Oct 2015 07:00:00 GMT"),
            Some(Duration::ZERO),
            "past"
        );
        assert_eq!(p(b"Thu, 22 Oct 2015 07:28:00 GMT"), Some(MAX_RETRY_AFTER));
        assert_eq!(p(b"-1"), None);
        assert_eq!(p(b""), None);
        assert_eq!(p(b"1.5"), None);
        assert_eq!(p(b"tomorrow"), None);
        assert_eq!(p(&[0xff, 0xfe]), None);
    }
}
