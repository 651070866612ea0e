//! Timestamp arithmetic that cannot panic or overflow.

use jiff::{SignedDuration, Timestamp};

/// `t + d`, saturating at the ends of the representable range.
pub fn add(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_add(d).unwrap_or(if d.is_negative() {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// The time from `a` to `b` (negative when `b` is earlier).
pub fn between(a: Timestamp, b: Timestamp) -> SignedDuration {
    b.duration_since(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturates_instead_of_overflowing() {
        assert_eq!(
            add(Timestamp::MAX, SignedDuration::from_hours(1)),
            Timestamp::MAX
        );
        assert_eq!(
            add(Timestamp::MIN, SignedDuration::from_hours(-1)),
            Timestamp::MIN
        );
        let t: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(
            between(t, add(t, SignedDuration::from_mins(30))),
            SignedDuration::from_mins(30)
        );
    }
}
