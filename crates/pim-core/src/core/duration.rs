//! Durations as written in our resources: compact (`30m`, `8h`, `90d`, `1h30m`) or ISO-8601
//! (`PT8H`, `P90D`). The grammar is exactly `api::common::DURATION_PATTERN`; days are 24 hours
//! and weeks 7 days, since an access window is measured in elapsed time, not calendar time.

use jiff::SignedDuration;

/// Longest duration anything may name: 100 years. Keeps timestamp arithmetic far from overflow.
pub const MAX_SECONDS: i64 = 100 * 365 * 86_400;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error(
        "{field}: {value:?} is not a duration; write a number and a unit in the order w, d, h, m, s \
         (30m, 8h, 90d, 1h30m) or ISO-8601 (PT8H, P90D)"
    )]
    Syntax { field: String, value: String },
    #[error("{field}: {value:?} is negative; durations must be positive")]
    Negative { field: String, value: String },
    #[error("{field}: {value:?} is too long; the limit is 36500d (100 years)")]
    TooLong { field: String, value: String },
    #[error("{field}: must be longer than zero")]
    Zero { field: String },
}

impl DurationError {
    /// What to write instead.
    pub fn remedy(&self) -> String {
        match self {
            DurationError::Syntax { field, .. } => format!(
                "write {field} as a number and a unit, such as 30m, 8h, 90d or 1h30m, or in ISO-8601 such as PT8H"
            ),
            DurationError::Negative { field, value } => format!(
                "remove the minus sign: write {field} as {:?}",
                value.trim_start_matches('-')
            ),
            DurationError::TooLong { field, .. } => format!("set {field} to 36500d or less"),
            DurationError::Zero { field } => {
                format!("set {field} to more than zero, such as 1h")
            }
        }
    }

    pub fn field(&self) -> &str {
        match self {
            DurationError::Syntax { field, .. }
            | DurationError::Negative { field, .. }
            | DurationError::TooLong { field, .. }
            | DurationError::Zero { field } => field,
        }
    }
}

/// Parses a duration that may be zero. `field` names the field in errors, e.g. `spec.duration`.
pub fn parse(field: &str, value: &str) -> Result<SignedDuration, DurationError> {
    let syntax = || DurationError::Syntax {
        field: field.to_owned(),
        value: value.to_owned(),
    };
    if value.starts_with('-') {
        return Err(DurationError::Negative {
            field: field.to_owned(),
            value: value.to_owned(),
        });
    }
    let seconds = match value.strip_prefix('P') {
        Some(iso) => parse_iso(iso),
        None => parse_compact(value),
    }
    .ok_or_else(syntax)?;
    let seconds = seconds.ok_or_else(|| DurationError::TooLong {
        field: field.to_owned(),
        value: value.to_owned(),
    })?;
    if seconds > MAX_SECONDS {
        return Err(DurationError::TooLong {
            field: field.to_owned(),
            value: value.to_owned(),
        });
    }
    Ok(SignedDuration::from_secs(seconds))
}

/// Parses a duration that must be longer than zero.
pub fn parse_positive(field: &str, value: &str) -> Result<SignedDuration, DurationError> {
    let d = parse(field, value)?;
    if d.is_zero() {
        return Err(DurationError::Zero {
            field: field.to_owned(),
        });
    }
    Ok(d)
}

/// Writes a duration compactly, largest unit first: `1d2h`, `30m`, `0s`.
pub fn format(d: SignedDuration) -> String {
    let mut secs = d.as_secs().unsigned_abs();
    if secs == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    if d.is_negative() {
        out.push('-');
    }
    for (unit, size) in [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)] {
        if secs >= size {
            out.push_str(&(secs / size).to_string());
            out.push(unit);
            secs %= size;
        }
    }
    out
}

/// Reads `<digits><unit>` groups whose units appear in the given order, each at most once.
/// Returns `None` on a syntax error and `Some(None)` when the total overflows.
fn parse_units(mut text: &str, units: &[(char, i64)]) -> Option<(Option<i64>, usize)> {
    let mut total: Option<i64> = Some(0);
    let mut next_unit = 0;
    let mut groups = 0;
    while let Some(first) = text.chars().next() {
        if !first.is_ascii_digit() {
            break;
        }
        let digits = text.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits > 9 {
            return None;
        }
        let unit = text[digits..].chars().next()?;
        let position = units[next_unit..].iter().position(|(u, _)| *u == unit)?;
        let (_, size) = units[next_unit + position];
        let number: i64 = text[..digits].parse().ok()?;
        total = total.and_then(|t| number.checked_mul(size).and_then(|n| t.checked_add(n)));
        next_unit += position + 1;
        groups += 1;
        text = &text[digits + unit.len_utf8()..];
    }
    if !text.is_empty() {
        return None;
    }
    Some((total, groups))
}

const COMPACT_UNITS: &[(char, i64)] = &[
    ('w', 604_800),
    ('d', 86_400),
    ('h', 3_600),
    ('m', 60),
    ('s', 1),
];

fn parse_compact(text: &str) -> Option<Option<i64>> {
    match parse_units(text, COMPACT_UNITS)? {
        (_, 0) => None,
        (total, _) => Some(total),
    }
}

fn parse_iso(text: &str) -> Option<Option<i64>> {
    let (date, time) = match text.split_once('T') {
        Some((date, time)) => (date, Some(time)),
        None => (text, None),
    };
    let (date_total, date_groups) = parse_units(date, &[('W', 604_800), ('D', 86_400)])?;
    let (time_total, time_groups) = match time {
        Some(time) => parse_units(time, &[('H', 3_600), ('M', 60), ('S', 1)])?,
        None => (Some(0), 0),
    };
    // `P`, `PT` and `P1DT` are well-formed per the pattern but name nothing after a designator.
    if date_groups + time_groups == 0 || time.is_some_and(|_| time_groups == 0) {
        return None;
    }
    Some(
        date_total
            .zip(time_total)
            .and_then(|(a, b)| a.checked_add(b)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::DURATION_PATTERN;
    use proptest::prelude::*;

    fn secs(v: &str) -> i64 {
        parse("f", v).map(|d| d.as_secs()).unwrap_or(-1)
    }

    #[test]
    fn accepts_the_documented_forms() {
        assert_eq!(secs("30m"), 1_800);
        assert_eq!(secs("8h"), 28_800);
        assert_eq!(secs("90d"), 90 * 86_400);
        assert_eq!(secs("1h30m"), 5_400);
        assert_eq!(secs("2w"), 14 * 86_400);
        assert_eq!(secs("PT8H"), 28_800);
        assert_eq!(secs("P90D"), 90 * 86_400);
        assert_eq!(secs("P1DT2H3M4S"), 86_400 + 7_200 + 180 + 4);
        assert_eq!(secs("PT30M"), 1_800);
        assert_eq!(secs("P1W"), 604_800);
        assert_eq!(secs("0s"), 0);
    }

    #[test]
    fn rejects_with_the_field_named() {
        for bad in [
            "", "8", "h", "8x", "8H", "30m8h", "1h1h", "P", "PT", "P1DT", "P1M", "pt8h", " 8h",
            "8h ", "1.5h", "PT8h", "8h30",
        ] {
            let err = parse("spec.activation.maxDuration", bad).unwrap_err();
            assert!(
                matches!(err, DurationError::Syntax { .. }),
                "{bad:?}: {err}"
            );
            assert!(
                err.to_string().starts_with("spec.activation.maxDuration: "),
                "{err}"
            );
        }
    }

    #[test]
    fn rejects_negatives_zero_and_overflow() {
        assert!(matches!(
            parse("f", "-8h"),
            Err(DurationError::Negative { .. })
        ));
        assert!(matches!(
            parse("f", "-PT8H"),
            Err(DurationError::Negative { .. })
        ));
        assert!(matches!(
            parse_positive("spec.duration", "0m"),
            Err(DurationError::Zero { .. })
        ));
        assert!(matches!(
            parse_positive("f", "PT0S"),
            Err(DurationError::Zero { .. })
        ));
        assert!(matches!(
            parse("f", "36501d"),
            Err(DurationError::TooLong { .. })
        ));
        assert!(matches!(
            parse("f", "999999999w999999999d"),
            Err(DurationError::TooLong { .. })
        ));
        assert!(matches!(
            parse("f", "1234567890s"),
            Err(DurationError::Syntax { .. })
        ));
        assert_eq!(secs("36500d"), MAX_SECONDS);
        assert_eq!(
            parse_positive("spec.duration", "0m")
                .unwrap_err()
                .to_string(),
            "spec.duration: must be longer than zero"
        );
    }

    #[test]
    fn formats_compactly() {
        assert_eq!(format(SignedDuration::from_secs(1_800)), "30m");
        assert_eq!(format(SignedDuration::from_secs(5_400)), "1h30m");
        assert_eq!(format(SignedDuration::from_secs(90 * 86_400)), "90d");
        assert_eq!(format(SignedDuration::ZERO), "0s");
    }

    fn crd_pattern() -> regex::Regex {
        regex::Regex::new(DURATION_PATTERN).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The CRD pattern admits a string exactly when the parser's grammar does (values over
        /// the 100-year limit pass the pattern and fail the parser as too long).
        #[test]
        fn parser_agrees_with_crd_pattern(s in "(-?[0-9]{0,3}[wdhmsWDHMPTx]?){0,4}") {
            let by_pattern = crd_pattern().is_match(&s);
            let by_parser = parse("f", &s);
            let grammar_ok = by_parser.is_ok() || matches!(by_parser, Err(DurationError::TooLong { .. }));
            prop_assert_eq!(by_pattern, grammar_ok, "{:?}: pattern {} parser {:?}", s, by_pattern, by_parser);
        }

        #[test]
        fn pattern_rejects_designators_alone(s in prop::sample::select(vec!["", "P", "PT", "P1DT", "P1WT", "T1H"])) {
            prop_assert!(!crd_pattern().is_match(s));
        }

        #[test]
        fn formatted_durations_parse_back(n in 0i64..MAX_SECONDS) {
            let d = SignedDuration::from_secs(n);
            prop_assert_eq!(parse("f", &format(d)), Ok(d));
        }
    }
}
