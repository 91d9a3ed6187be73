//! Times for people ("expires in 42m", "expired 3h ago", "starts in 5m") and the time flags
//! (`--for 1h`, `--until 2026-12-01T04:00:00Z`).

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use lapse_api::duration::LeaseDuration;

/// A flag value that is not a time or a duration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimeError {
    #[error("{flag}: {reason}")]
    Duration { flag: &'static str, reason: String },
    #[error("{flag}: {value:?} is not an RFC 3339 time with a zone (e.g. 2026-12-01T04:00:00Z)")]
    Timestamp { flag: &'static str, value: String },
}

/// A Go duration flag (`30m`, `1h30m`), with lapse's own rules (at least 1s).
pub fn parse_duration(flag: &'static str, s: &str) -> Result<LeaseDuration, TimeError> {
    LeaseDuration::parse(s).map_err(|e| TimeError::Duration {
        flag,
        reason: e.to_string(),
    })
}

/// An RFC 3339 flag, in UTC.
pub fn parse_time(flag: &'static str, s: &str) -> Result<DateTime<Utc>, TimeError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| TimeError::Timestamp {
            flag,
            value: s.to_owned(),
        })
}

/// The form the CRD accepts: RFC 3339, UTC, upper-case `T` and `Z`, whole seconds.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A length for people: at most two units, coarser as it grows (`45s`, `5m30s`, `42m`,
/// `3h5m`, `2d4h`, `12d`).
pub fn human(d: TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    let (m, h, day) = (60, 3600, 86_400);
    let two = |big: i64, unit: &str, small_unit: i64, small: &str| {
        let (a, b) = (s / big, s % big / small_unit);
        if b == 0 {
            format!("{a}{unit}")
        } else {
            format!("{a}{unit}{b}{small}")
        }
    };
    match s {
        _ if s < m => format!("{s}s"),
        _ if s < 10 * m => two(m, "m", 1, "s"),
        _ if s < h => format!("{}m", s / m),
        _ if s < day => two(h, "h", m, "m"),
        _ if s < 7 * day => two(day, "d", h, "h"),
        _ => format!("{}d", s / day),
    }
}

/// `in 42m` for a future instant, `3h ago` for a past one.
pub fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    if t > now {
        format!("in {}", human(t - now))
    } else {
        format!("{} ago", human(now - t))
    }
}

/// `expires in 42m` / `expired 3h ago`: a verb in the future and past tense.
pub fn event(future: &str, past: &str, t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    if t > now {
        format!("{future} in {}", human(t - now))
    } else {
        format!("{past} {} ago", human(now - t))
    }
}

/// A Kubernetes timestamp as chrono.
pub fn from_k8s(t: &Time) -> Option<DateTime<Utc>> {
    from_jiff(&t.0)
}

pub fn from_k8s_micro(t: &MicroTime) -> Option<DateTime<Utc>> {
    from_jiff(&t.0)
}

fn from_jiff(t: &k8s_openapi::jiff::Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(t.subsec_nanosecond()).unwrap_or(0);
    DateTime::from_timestamp(t.as_second(), nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap_or_default()
    }

    #[test]
    fn lengths_read_as_people_say_them() {
        let cases = [
            (0, "0s"),
            (45, "45s"),
            (60, "1m"),
            (330, "5m30s"),
            (600, "10m"),
            (42 * 60 + 59, "42m"),
            (3600, "1h"),
            (3 * 3600 + 5 * 60 + 9, "3h5m"),
            (86_400, "1d"),
            (2 * 86_400 + 4 * 3600, "2d4h"),
            (12 * 86_400 + 3600, "12d"),
            (-5, "0s"),
        ];
        for (secs, want) in cases {
            assert_eq!(human(TimeDelta::seconds(secs)), want, "{secs}s");
        }
    }

    #[test]
    fn instants_read_relative_to_now() {
        let now = at(0);
        assert_eq!(
            event("expires", "expired", at(42 * 60), now),
            "expires in 42m"
        );
        assert_eq!(
            event("expires", "expired", at(-3 * 3600), now),
            "expired 3h ago"
        );
        assert_eq!(event("starts", "started", at(300), now), "starts in 5m");
        assert_eq!(relative(at(-90), now), "1m30s ago");
        assert_eq!(relative(at(90), now), "in 1m30s");
    }

    #[test]
    fn flags_name_themselves_when_wrong() {
        assert_eq!(parse_duration("--for", "1h").map(|d| d.as_secs()), Ok(3600));
        let e = parse_duration("--for", "1d").err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.starts_with("--for: ")));
        let e = parse_duration("--by", "500ms").err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("at least 1s")));
        assert_eq!(
            parse_time("--until", "2026-12-01T04:00:00+01:00").map(rfc3339),
            Ok("2026-12-01T03:00:00Z".to_owned())
        );
        assert_eq!(
            parse_time("--from", "tomorrow"),
            Err(TimeError::Timestamp {
                flag: "--from",
                value: "tomorrow".into()
            })
        );
    }
}
