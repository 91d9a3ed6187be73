//! Lease lengths written as Go durations (`1h30m`, `90s`, `1.5h`), the format Kubernetes users
//! know from `metav1.Duration`.
//!
//! Parsing follows Go's `time.ParseDuration` except where a lease needs more care: signs are
//! refused, whitespace is refused, anything under one second is refused (a lease that short
//! can never be activated and revoked in time), and everything is capped by a ceiling.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const NANOS_PER_MICRO: u64 = 1_000;
const NANOS_PER_MILLI: u64 = 1_000_000;
const NANOS_PER_SEC: u64 = 1_000_000_000;
const NANOS_PER_MIN: u64 = 60 * NANOS_PER_SEC;
const NANOS_PER_HOUR: u64 = 60 * NANOS_PER_MIN;
/// Go's own limit: durations are `int64` nanoseconds, so anything above this is an overflow
/// rather than merely too long.
const GO_MAX_NANOS: u128 = i64::MAX as u128;
/// Fraction digits beyond this are ignored, as Go does: they are below one nanosecond of any unit.
const MAX_FRACTION_DIGITS: u32 = 18;

/// A validated lease length: at least one second, at most [`LeaseDuration::MAX`], with
/// nanosecond precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseDuration(u64 /* nanoseconds */);

/// Why a duration string was refused.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum DurationError {
    #[error("duration is empty")]
    Empty,
    #[error("duration `{input}` is malformed: {reason}")]
    Malformed { input: String, reason: String },
    /// Also returned for totals under one second: such a lease would end before it started.
    #[error("duration is shorter than one second: a lease must last at least 1s")]
    Zero,
    #[error("duration is negative: a lease length has no sign")]
    Negative,
    #[error("duration overflows: it is larger than any representable duration")]
    Overflow,
    #[error("duration {value} is longer than the allowed maximum of {ceiling}")]
    TooLong { value: String, ceiling: String },
}

impl LeaseDuration {
    /// The hard ceiling: 366 days. No lease may be longer, whatever the policy says.
    pub const MAX: LeaseDuration = LeaseDuration(366 * 24 * NANOS_PER_HOUR);
    /// The shortest lease: one second.
    pub const MIN: LeaseDuration = LeaseDuration(NANOS_PER_SEC);

    /// Parses a Go duration, capped at [`LeaseDuration::MAX`].
    pub fn parse(s: &str) -> Result<Self, DurationError> {
        Self::parse_with_ceiling(s, Self::MAX)
    }

    /// Parses a Go duration, capped at `ceiling` (and never above [`LeaseDuration::MAX`]).
    pub fn parse_with_ceiling(s: &str, ceiling: LeaseDuration) -> Result<Self, DurationError> {
        let nanos = parse_go_nanos(s)?;
        let ceiling = ceiling.min(Self::MAX);
        if nanos < u128::from(Self::MIN.0) {
            return Err(DurationError::Zero);
        }
        if nanos > u128::from(ceiling.0) {
            return Err(DurationError::TooLong {
                value: s.to_owned(),
                ceiling: ceiling.to_string(),
            });
        }
        // In range by the two checks above, so the conversion cannot fail.
        u64::try_from(nanos)
            .map(LeaseDuration)
            .map_err(|_| DurationError::Overflow)
    }

    /// A lease of whole seconds.
    pub fn from_secs(secs: u64) -> Result<Self, DurationError> {
        if secs == 0 {
            return Err(DurationError::Zero);
        }
        match secs.checked_mul(NANOS_PER_SEC) {
            Some(nanos) if nanos <= Self::MAX.0 => Ok(LeaseDuration(nanos)),
            _ => Err(DurationError::TooLong {
                value: format!("{secs}s"),
                ceiling: Self::MAX.to_string(),
            }),
        }
    }

    /// Whole seconds, rounded down.
    pub fn as_secs(&self) -> u64 {
        self.0 / NANOS_PER_SEC
    }

    /// The exact length in nanoseconds.
    pub fn as_nanos(&self) -> u64 {
        self.0
    }

    pub fn to_std(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.0)
    }

    pub fn to_chrono(&self) -> chrono::TimeDelta {
        // Always fits: MAX is far below i64::MAX nanoseconds.
        chrono::TimeDelta::nanoseconds(i64::try_from(self.0).unwrap_or(i64::MAX))
    }
}

fn malformed(input: &str, reason: impl Into<String>) -> DurationError {
    DurationError::Malformed {
        input: input.to_owned(),
        reason: reason.into(),
    }
}

/// Go's `time.ParseDuration` grammar without the sign, returning total nanoseconds.
/// Totals above Go's `int64` range are [`DurationError::Overflow`].
fn parse_go_nanos(input: &str) -> Result<u128, DurationError> {
    if input.is_empty() {
        return Err(DurationError::Empty);
    }
    if input.chars().any(char::is_whitespace) {
        return Err(malformed(input, "whitespace is not allowed"));
    }
    if input.starts_with('-') {
        return Err(DurationError::Negative);
    }
    if input.starts_with('+') {
        return Err(malformed(input, "a sign is not allowed"));
    }
    // Go's one unit-less form.
    if input == "0" {
        return Ok(0);
    }
    let mut rest = input;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (whole, after_whole) = split_digits(rest);
        let (fraction, after_fraction) = match after_whole.strip_prefix('.') {
            Some(f) => split_digits(f),
            None => ("", after_whole),
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(malformed(input, format!("expected a number at `{rest}`")));
        }
        let unit_len = after_fraction
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after_fraction.len());
        let (unit, next) = after_fraction.split_at(unit_len);
        let unit_nanos = unit_nanos(unit).ok_or_else(|| {
            if unit.is_empty() {
                malformed(input, "missing unit (use ns, us, ms, s, m or h)")
            } else {
                malformed(
                    input,
                    format!("unknown unit `{unit}` (use ns, us, ms, s, m or h)"),
                )
            }
        })?;
        total = total
            .checked_add(component_nanos(whole, fraction, unit_nanos)?)
            .filter(|t| *t <= GO_MAX_NANOS)
            .ok_or(DurationError::Overflow)?;
        rest = next;
    }
    Ok(total)
}

fn split_digits(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => 1,
        // U+00B5 micro sign and U+03BC Greek mu, both accepted by Go.
        "us" | "\u{b5}s" | "\u{3bc}s" => NANOS_PER_MICRO,
        "ms" => NANOS_PER_MILLI,
        "s" => NANOS_PER_SEC,
        "m" => NANOS_PER_MIN,
        "h" => NANOS_PER_HOUR,
        _ => return None,
    })
}

/// `whole.fraction` of a unit in nanoseconds, exact to the nanosecond (rounded down).
fn component_nanos(whole: &str, fraction: &str, unit: u64) -> Result<u128, DurationError> {
    let mut value: u128 = 0;
    for d in whole.bytes() {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u128::from(d - b'0')))
            .filter(|v| *v <= GO_MAX_NANOS)
            .ok_or(DurationError::Overflow)?;
    }
    let mut nanos = value
        .checked_mul(u128::from(unit))
        .filter(|n| *n <= GO_MAX_NANOS)
        .ok_or(DurationError::Overflow)?;
    let mut numerator: u128 = 0;
    let mut scale: u128 = 1;
    for d in fraction.bytes().take(MAX_FRACTION_DIGITS as usize) {
        numerator = numerator * 10 + u128::from(d - b'0');
        scale *= 10;
    }
    // numerator < 10^18 and unit <= 3.6e12, so the product stays far below u128::MAX.
    nanos += numerator * u128::from(unit) / scale;
    Ok(nanos)
}

impl fmt::Display for LeaseDuration {
    /// The shortest Go form: zero components are left out (`1h5s`, `2h`, `1m30s`), and a
    /// sub-second remainder is a decimal fraction of seconds (`1.5s`, `1h0.25s`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hours = self.0 / NANOS_PER_HOUR;
        let minutes = self.0 % NANOS_PER_HOUR / NANOS_PER_MIN;
        let seconds = self.0 % NANOS_PER_MIN / NANOS_PER_SEC;
        let subsec = self.0 % NANOS_PER_SEC;
        if hours > 0 {
            write!(f, "{hours}h")?;
        }
        if minutes > 0 {
            write!(f, "{minutes}m")?;
        }
        if subsec > 0 {
            let digits = format!("{subsec:09}");
            write!(f, "{seconds}.{}s", digits.trim_end_matches('0'))?;
        } else if seconds > 0 || self.0 == 0 {
            write!(f, "{seconds}s")?;
        }
        Ok(())
    }
}

impl FromStr for LeaseDuration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for LeaseDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LeaseDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> LeaseDuration {
        LeaseDuration::parse(s).unwrap()
    }

    fn secs(s: &str) -> u64 {
        d(s).as_secs()
    }

    #[test]
    fn parses_go_forms() {
        assert_eq!(secs("90s"), 90);
        assert_eq!(secs("1h30m"), 5400);
        assert_eq!(secs("1.5h"), 5400);
        assert_eq!(secs("2h"), 7200);
        assert_eq!(secs("1h0m5s"), 3605);
        assert_eq!(secs("1m30s"), 90);
        assert_eq!(secs("30m30m"), 3600, "repeated units add up, as in Go");
        assert_eq!(secs(".5m"), 30, "Go accepts a bare fraction");
        assert_eq!(secs("5.m"), 300, "Go accepts an empty fraction");
        assert_eq!(secs("8784h"), 366 * 86_400);
        assert_eq!(d("1500ms").as_nanos(), 1_500_000_000);
        assert_eq!(d("1s500ms").as_nanos(), 1_500_000_000);
        assert_eq!(d("1000000us").as_nanos(), NANOS_PER_SEC);
        assert_eq!(d("1000000\u{b5}s").as_nanos(), NANOS_PER_SEC);
        assert_eq!(d("1000000\u{3bc}s").as_nanos(), NANOS_PER_SEC);
        assert_eq!(d("1000000000ns").as_nanos(), NANOS_PER_SEC);
        assert_eq!(d("1.000000001s").as_nanos(), NANOS_PER_SEC + 1);
        assert_eq!(d("0001s").as_secs(), 1, "leading zeros are digits");
    }

    #[test]
    fn fraction_digits_beyond_nanoseconds_are_dropped() {
        assert_eq!(
            d("1.0000000000000000000000000001h").as_nanos(),
            NANOS_PER_HOUR
        );
        assert_eq!(d("1.9999999999s").as_nanos(), 1_999_999_999);
    }

    #[test]
    fn rejects_empty_whitespace_and_signs() {
        assert_eq!(LeaseDuration::parse(""), Err(DurationError::Empty));
        for s in [" 1h", "1h ", "1 h", "1h 30m", "\t1h", " "] {
            assert!(
                matches!(
                    LeaseDuration::parse(s),
                    Err(DurationError::Malformed { .. })
                ),
                "{s:?}"
            );
        }
        assert_eq!(LeaseDuration::parse("-5m"), Err(DurationError::Negative));
        assert_eq!(LeaseDuration::parse("-0s"), Err(DurationError::Negative));
        assert!(matches!(
            LeaseDuration::parse("+5m"),
            Err(DurationError::Malformed { ref reason, .. }) if reason.contains("sign")
        ));
    }

    #[test]
    fn rejects_missing_or_unknown_units_naming_them() {
        let reason = |s: &str| match LeaseDuration::parse(s) {
            Err(DurationError::Malformed { input, reason }) => {
                assert_eq!(input, s);
                reason
            }
            other => panic!("{s:?} gave {other:?}"),
        };
        assert!(reason("5").contains("missing unit"));
        assert!(reason("1h30").contains("missing unit"));
        assert!(reason("5d").contains("unknown unit `d`"));
        assert!(reason("5H").contains("unknown unit `H`"));
        assert!(reason("5sec").contains("unknown unit `sec`"));
        assert!(reason("1h-5m").contains("unknown unit `h-`"));
        assert!(reason("h").contains("expected a number"));
        assert!(reason(".h").contains("expected a number"));
        assert!(reason("1..5h").contains("missing unit"));
        assert!(reason("1.5.5h").contains("missing unit"));
        assert!(reason("1e3s").contains("unknown unit `e`"));
    }

    #[test]
    fn rejects_zero_and_sub_second_totals() {
        for s in ["0", "0s", "0h0m0s", "0.0h", "999ms", "999999999ns", "0.9s"] {
            assert_eq!(LeaseDuration::parse(s), Err(DurationError::Zero), "{s}");
        }
        assert_eq!(d("1000ms"), LeaseDuration::MIN);
        assert_eq!(LeaseDuration::from_secs(0), Err(DurationError::Zero));
        assert!(DurationError::Zero.to_string().contains("at least 1s"));
    }

    #[test]
    fn overflow_is_distinct_from_too_long() {
        for s in [
            "99999999999999999999h",
            "99999999999999999999999999999999999999999999ns",
            "2562048h",
            "2562047h2562047h",
            "9223372036854775808ns",
        ] {
            assert_eq!(LeaseDuration::parse(s), Err(DurationError::Overflow), "{s}");
        }
        // Go's largest duration is valid Go, but longer than any lease.
        assert!(matches!(
            LeaseDuration::parse("9223372036854775807ns"),
            Err(DurationError::TooLong { .. })
        ));
    }

    #[test]
    fn ceiling_is_enforced_and_named() {
        assert_eq!(d("8784h"), LeaseDuration::MAX);
        assert_eq!(
            LeaseDuration::parse("8784h1ns"),
            Err(DurationError::TooLong {
                value: "8784h1ns".into(),
                ceiling: "8784h".into()
            })
        );
        let eight_hours = d("8h");
        assert_eq!(
            LeaseDuration::parse_with_ceiling("8h", eight_hours),
            Ok(eight_hours)
        );
        let err = LeaseDuration::parse_with_ceiling("8h1s", eight_hours).unwrap_err();
        assert_eq!(
            err.to_string(),
            "duration 8h1s is longer than the allowed maximum of 8h"
        );
        // A ceiling cannot lift the hard maximum.
        assert!(matches!(
            LeaseDuration::parse_with_ceiling("9000h", LeaseDuration::MAX),
            Err(DurationError::TooLong { .. })
        ));
    }

    #[test]
    fn from_secs_bounds() {
        assert_eq!(LeaseDuration::from_secs(1), Ok(LeaseDuration::MIN));
        assert_eq!(
            LeaseDuration::from_secs(366 * 86_400),
            Ok(LeaseDuration::MAX)
        );
        assert!(matches!(
            LeaseDuration::from_secs(366 * 86_400 + 1),
            Err(DurationError::TooLong { .. })
        ));
        assert!(matches!(
            LeaseDuration::from_secs(u64::MAX),
            Err(DurationError::TooLong { .. })
        ));
    }

    #[test]
    fn conversions_agree() {
        let x = d("1h30m0.5s");
        assert_eq!(x.as_secs(), 5400);
        assert_eq!(x.to_std(), std::time::Duration::from_millis(5_400_500));
        assert_eq!(x.to_chrono(), chrono::TimeDelta::milliseconds(5_400_500));
        assert_eq!(LeaseDuration::MAX.to_chrono(), chrono::TimeDelta::days(366));
    }

    #[test]
    fn displays_compact_go_form() {
        for (input, shown) in [
            ("90s", "1m30s"),
            ("1h30m", "1h30m"),
            ("2h", "2h"),
            ("120m", "2h"),
            ("1h0m5s", "1h5s"),
            ("1.5s", "1.5s"),
            ("1h250ms", "1h0.25s"),
            ("1.000000001s", "1.000000001s"),
            ("8784h", "8784h"),
            ("61s", "1m1s"),
        ] {
            assert_eq!(d(input).to_string(), shown, "{input}");
        }
    }

    #[test]
    fn serde_uses_the_string_form_and_reports_reasons() {
        let x = d("90m");
        assert_eq!(serde_json::to_string(&x).unwrap(), "\"1h30m\"");
        assert_eq!(
            serde_json::from_str::<LeaseDuration>("\"1h30m\"").unwrap(),
            x
        );
        let err = serde_json::from_str::<LeaseDuration>("\"5d\"").unwrap_err();
        assert!(err.to_string().contains("unknown unit `d`"), "{err}");
        let err = serde_json::from_str::<LeaseDuration>("\"-1h\"").unwrap_err();
        assert!(err.to_string().contains("negative"), "{err}");
        assert!(serde_json::from_str::<LeaseDuration>("3600").is_err());
    }

    #[test]
    fn error_messages_name_the_input() {
        let err = LeaseDuration::parse("5d").unwrap_err();
        assert_eq!(
            err.to_string(),
            "duration `5d` is malformed: unknown unit `d` (use ns, us, ms, s, m or h)"
        );
    }

    #[test]
    fn display_matches_the_crd_pattern() {
        let re = regex::Regex::new(crate::v1alpha1::DURATION_PATTERN).unwrap();
        for s in ["1s", "1.5s", "1h0.000000001s", "8784h", "59m59.999s"] {
            let shown = d(s).to_string();
            assert!(re.is_match(&shown), "{shown}");
        }
    }

    fn any_lease() -> impl Strategy<Value = LeaseDuration> {
        (NANOS_PER_SEC..=LeaseDuration::MAX.0).prop_map(LeaseDuration)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn display_parse_round_trips(x in any_lease()) {
            prop_assert_eq!(LeaseDuration::parse(&x.to_string()), Ok(x));
        }

        #[test]
        fn whole_second_display_round_trips(s in 1u64..=366 * 86_400) {
            let x = LeaseDuration::from_secs(s).unwrap();
            prop_assert_eq!(x.as_secs(), s);
            prop_assert_eq!(LeaseDuration::parse(&x.to_string()), Ok(x));
        }

        #[test]
        fn components_add_up(h in 0u64..8000, m in 0u64..600, s in 0u64..6000, ms in 0u64..5000) {
            let text = format!("{h}h{m}m{s}s{ms}ms");
            let nanos = h * NANOS_PER_HOUR + m * NANOS_PER_MIN + s * NANOS_PER_SEC + ms * NANOS_PER_MILLI;
            match LeaseDuration::parse(&text) {
                Ok(x) => prop_assert_eq!(x.as_nanos(), nanos),
                Err(DurationError::Zero) => prop_assert!(nanos < NANOS_PER_SEC),
                Err(DurationError::TooLong { .. }) => prop_assert!(nanos > LeaseDuration::MAX.0),
                Err(e) => prop_assert!(false, "{} gave {}", text, e),
            }
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,24}") {
            let _ = LeaseDuration::parse(&s);
        }
    }
}
