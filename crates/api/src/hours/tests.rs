use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;

use super::*;
use crate::v1alpha1::Weekday;

fn window(tz: &str, days: &[Weekday], from: &str, to: &str) -> ActiveWindow {
    ActiveWindow::parse(&ActiveHours {
        time_zone: tz.into(),
        days: days.to_vec(),
        from: from.into(),
        to: to.into(),
    })
    .unwrap_or_else(|e| panic!("{e:?}"))
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .with_timezone(&Utc)
}

const ALL: [Weekday; 7] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];

#[test]
fn spring_forward_in_berlin_makes_the_window_an_hour_shorter() {
    // 2026-03-29, last Sunday of March: 02:00 CET jumps to 03:00 CEST (01:00Z).
    let w = window("Europe/Berlin", &[Weekday::Sun], "01:00", "04:00");
    let o = w.containing(at("2026-03-29T01:30:00Z"));
    assert_eq!(
        o,
        Some(Opening {
            open: at("2026-03-29T00:00:00Z"),
            close: at("2026-03-29T02:00:00Z"),
        })
    );
    // A wall-clock time that never happens opens at the jump.
    let w = window("Europe/Berlin", &[Weekday::Sun], "02:30", "03:30");
    assert_eq!(
        w.next(at("2026-03-28T12:00:00Z")),
        Some(Opening {
            open: at("2026-03-29T01:00:00Z"),
            close: at("2026-03-29T01:30:00Z"),
        })
    );
    assert_eq!(w.containing(at("2026-03-29T00:59:59Z")), None);
}

#[test]
fn fall_back_in_berlin_makes_the_window_an_hour_longer_and_never_longer_than_one_reading() {
    // 2026-10-25, last Sunday of October: 03:00 CEST falls back to 02:00 CET (01:00Z).
    let w = window("Europe/Berlin", &[Weekday::Sun], "01:00", "04:00");
    assert_eq!(
        w.containing(at("2026-10-25T02:30:00Z")),
        Some(Opening {
            open: at("2026-10-24T23:00:00Z"),
            close: at("2026-10-25T03:00:00Z"),
        })
    );
    // 02:30 happens twice: the window opens at the second, and a close at 02:30 is the first.
    let w = window("Europe/Berlin", &[Weekday::Sun], "02:30", "03:30");
    assert_eq!(
        w.next(at("2026-10-25T00:00:00Z")),
        Some(Opening {
            open: at("2026-10-25T01:30:00Z"),
            close: at("2026-10-25T02:30:00Z"),
        })
    );
    let w = window("Europe/Berlin", &[Weekday::Sun], "01:00", "02:30");
    assert_eq!(
        w.containing(at("2026-10-25T00:00:00Z")).map(|o| o.close),
        Some(at("2026-10-25T00:30:00Z"))
    );
}

#[test]
fn weekdays_skip_the_weekend_and_a_night_window_closes_the_next_day() {
    let w = window(
        "UTC",
        &[
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
        ],
        "09:00",
        "17:00",
    );
    // Saturday 2026-06-06: the next opening is Monday's.
    assert_eq!(w.containing(at("2026-06-06T10:00:00Z")), None);
    assert_eq!(
        w.next(at("2026-06-06T10:00:00Z")).map(|o| o.open),
        Some(at("2026-06-08T09:00:00Z"))
    );
    let night = window("UTC", &[Weekday::Fri], "22:00", "06:00");
    assert_eq!(
        night.containing(at("2026-06-06T05:59:00Z")),
        Some(Opening {
            open: at("2026-06-05T22:00:00Z"),
            close: at("2026-06-06T06:00:00Z"),
        })
    );
    assert_eq!(night.containing(at("2026-06-06T06:00:00Z")), None);
    assert_eq!(
        w.to_string(),
        "Mon,Tue,Wed,Thu,Fri 09:00-17:00 UTC".to_owned()
    );
}

#[test]
fn bad_hours_name_the_field() {
    let bad = |tz: &str, from: &str, to: &str| {
        ActiveWindow::parse(&ActiveHours {
            time_zone: tz.into(),
            days: vec![Weekday::Mon],
            from: from.into(),
            to: to.into(),
        })
        .err()
        .map(|(f, _)| f)
    };
    assert_eq!(bad("Mars/Olympus", "09:00", "17:00"), Some("timeZone"));
    assert_eq!(bad("UTC", "9:00", "17:00"), Some("from"));
    assert_eq!(bad("UTC", "09:00", "24:00"), Some("to"));
    assert_eq!(bad("UTC", "09:00", "09:00"), Some("to"));
    assert_eq!(bad("Europe/Berlin", "09:00", "17:00"), None);
}

fn zones() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe",
        "Asia/Kolkata",
        "Pacific/Chatham",
    ])
}

proptest! {
    /// `containing` and `next` agree: inside means between an opening and its close, and the
    /// next opening of a moment outside every window lies after it.
    #[test]
    fn openings_bracket_the_moments_inside_them(
        tz in zones(),
        days in prop::collection::vec(prop::sample::select(ALL.to_vec()), 1..7),
        from in 0u32..24 * 60,
        to in 0u32..24 * 60,
        // 2024..2028, so DST transitions of both hemispheres are crossed.
        secs in 1_704_067_200i64..1_830_297_600,
    ) {
        prop_assume!(from != to);
        let hm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
        let w = window(tz, &days, &hm(from), &hm(to));
        let t = DateTime::from_timestamp(secs, 0).unwrap_or_default();
        match w.containing(t) {
            Some(o) => {
                prop_assert!(o.open <= t && t < o.close);
                // Never longer than a day and a DST hour or two.
                prop_assert!(o.close - o.open <= TimeDelta::hours(26));
                prop_assert_eq!(w.next(t), Some(o));
            }
            None => {
                let n = w.next(t);
                prop_assert!(n.is_some());
                if let Some(n) = n {
                    prop_assert!(t < n.open);
                    prop_assert_eq!(w.containing(n.open), Some(n));
                    // Nothing in between is inside.
                    let mid = t + (n.open - t) / 2;
                    prop_assert_eq!(w.containing(mid), None);
                }
            }
        }
    }
}
