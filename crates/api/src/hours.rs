//! Working hours (`AccessPolicy.spec.activeHours`): windows on a time zone's wall clock, turned
//! into instants with the IANA rules of `chrono-tz`, daylight saving time included.
//!
//! A wall-clock time that does not exist (the hour skipped in spring) is read as the instant the
//! clocks jump, and one that exists twice (the hour repeated in autumn) is read so the window
//! is never longer than either reading would make it: an opening at its later instant, a close
//! at its earlier one. A window's day is the day of its opening; one whose `to` is not after
//! its `from` closes the next day.

use std::fmt;

use chrono::{
    DateTime, Datelike, Days, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta,
    TimeZone, Utc,
};
use chrono_tz::Tz;

use crate::v1alpha1::ActiveHours;

/// A validated `activeHours`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveWindow {
    pub tz: Tz,
    /// Indexed by `Weekday::num_days_from_monday`.
    pub days: [bool; 7],
    pub from: NaiveTime,
    pub to: NaiveTime,
}

/// One opening of the window: `open <= t < close` is inside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opening {
    pub open: DateTime<Utc>,
    pub close: DateTime<Utc>,
}

#[derive(Clone, Copy)]
enum Edge {
    Open,
    Close,
}

fn clock(field: &'static str, s: &str) -> Result<NaiveTime, (&'static str, String)> {
    let ok = s.len() == 5 && s.as_bytes()[2] == b':';
    ok.then(|| NaiveTime::parse_from_str(s, "%H:%M").ok())
        .flatten()
        .ok_or_else(|| {
            (
                field,
                format!("{s:?} is not a time of day as HH:MM (00:00 to 23:59)"),
            )
        })
}

impl ActiveWindow {
    /// Validates `activeHours`; the error names the field below `spec.activeHours`.
    pub fn parse(h: &ActiveHours) -> Result<Self, (&'static str, String)> {
        let tz: Tz = h.time_zone.parse().map_err(|_| {
            (
                "timeZone",
                format!(
                    "{:?} is not an IANA time zone (such as Europe/Berlin or UTC)",
                    h.time_zone
                ),
            )
        })?;
        if h.days.is_empty() {
            return Err(("days", "must list at least one day".into()));
        }
        let mut days = [false; 7];
        for d in &h.days {
            days[d.to_chrono().num_days_from_monday() as usize] = true;
        }
        let from = clock("from", &h.from)?;
        let to = clock("to", &h.to)?;
        if from == to {
            return Err((
                "to",
                "must differ from from (a window of no time; for all day use 00:00 to 23:59)"
                    .into(),
            ));
        }
        Ok(Self { tz, days, from, to })
    }

    /// The instant a wall-clock time of `day` stands for (module docs: gaps and repeats).
    fn instant(&self, day: NaiveDate, time: NaiveTime, edge: Edge) -> Option<DateTime<Utc>> {
        let local = NaiveDateTime::new(day, time);
        match self.tz.from_local_datetime(&local) {
            LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
            LocalResult::Ambiguous(a, b) => {
                let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
                Some(match edge {
                    Edge::Open => a.max(b),
                    Edge::Close => a.min(b),
                })
            }
            // Skipped: the first wall-clock minute after the gap, which is the jump's instant
            // (a gap is whole minutes in every zone of the database, and at most a day long).
            LocalResult::None => (1..=24 * 60).find_map(|m| {
                match self
                    .tz
                    .from_local_datetime(&(local + TimeDelta::minutes(m)))
                {
                    LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
                        Some(t.with_timezone(&Utc))
                    }
                    LocalResult::None => None,
                }
            }),
        }
    }

    /// The window opening on `day`, when `day` is one of its days and it is not empty.
    fn on(&self, day: NaiveDate) -> Option<Opening> {
        if !self.days[day.weekday().num_days_from_monday() as usize] {
            return None;
        }
        let close_day = if self.to > self.from {
            day
        } else {
            day.checked_add_days(Days::new(1))?
        };
        let open = self.instant(day, self.from, Edge::Open)?;
        let close = self.instant(close_day, self.to, Edge::Close)?;
        (open < close).then_some(Opening { open, close })
    }

    /// Openings whose day is from one day before `t`'s local date to `ahead` days after it.
    fn around(&self, t: DateTime<Utc>, ahead: u64) -> impl Iterator<Item = Opening> + '_ {
        let today = t.with_timezone(&self.tz).date_naive();
        let first = today.checked_sub_days(Days::new(1)).unwrap_or(today);
        (0..=ahead + 1)
            .filter_map(move |i| first.checked_add_days(Days::new(i)))
            .filter_map(|d| self.on(d))
    }

    /// The opening `t` is inside of, if any.
    pub fn containing(&self, t: DateTime<Utc>) -> Option<Opening> {
        self.around(t, 0).find(|o| o.open <= t && t < o.close)
    }

    /// The first opening after `t` (or the one `t` is inside of). `None` only when no day of
    /// the coming week has a non-empty window.
    pub fn next(&self, t: DateTime<Utc>) -> Option<Opening> {
        self.around(t, 8).find(|o| t < o.close)
    }
}

impl fmt::Display for ActiveWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
        let days: Vec<&str> = NAMES
            .iter()
            .zip(self.days)
            .filter_map(|(n, on)| on.then_some(*n))
            .collect();
        write!(
            f,
            "{} {}-{} {}",
            days.join(","),
            self.from.format("%H:%M"),
            self.to.format("%H:%M"),
            self.tz.name()
        )
    }
}

#[cfg(test)]
mod tests;
