//! Synchronized expiry (docs/architecture.md, "Synchronized expiry"): when more leases of one
//! subscription end about the same time than ARM's delete budget can delete by then, some
//! deletes must start before their lease ends, or the last ones overstay by minutes (2,000 ends
//! in one second take (2,000 − 200) / 10 = 180 s at ARM's 200 + 10/s).
//!
//! [`schedule`] gives each lease the latest moment its deletes can start so that every delete
//! of its budget is sent by its lease's end, within the budget. It walks the ends backwards: a
//! token bucket run in reverse time is the same bucket (a schedule fits a bucket exactly when
//! no window of length `w` holds more than `burst + rate · w` calls, which reads the same both
//! ways), so the latest ends take the bucket's burst at their own end and each earlier lease
//! starts as late as the refill allows. A lease therefore ends early by no more than the budget
//! forces on it: the leases ending last and the ones the burst covers end on time.

use std::collections::HashMap;
use std::hash::Hash;

use chrono::{DateTime, TimeDelta, Utc};

/// The pace deletes of one budget can keep.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeleteBudget {
    /// Deletes that can go at once (the bucket's capacity, less headroom).
    pub burst: f64,
    /// Deletes a second after that (its refill, less headroom).
    pub per_second: f64,
}

/// One lease's deletes against one budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deletes<K, B> {
    pub lease: K,
    pub ends_at: DateTime<Utc>,
    /// Which budget (an ARM subscription) the deletes draw from.
    pub budget: B,
    /// How many deletes the lease owes there (1 per role assignment or managed-identity
    /// credential).
    pub count: u32,
}

/// A lease whose deletes must start before it ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EarlyEnd<B> {
    /// When its deletes start: the lease ends then.
    pub starts_at: DateTime<Utc>,
    /// The end this was planned for: a lease whose end has moved since (an extension) keeps
    /// its own end until the plan catches up.
    pub for_end: DateTime<Utc>,
    /// The budget that forces it (the earliest start's, when several do).
    pub budget: B,
    /// Deletes of that budget sent from `starts_at` on to keep up with the ends up to
    /// `crowd_until`, this lease's included: the crowd that made it early.
    pub crowd: u32,
    /// The last end of that crowd.
    pub crowd_until: DateTime<Utc>,
}

/// Starting less than this before the end is not "early": the budget's delay is within the
/// overstay the targets allow anyway.
const EARLY_BY_AT_LEAST: TimeDelta = TimeDelta::seconds(1);

/// The leases among `deletes` that must start early, and when. A lease owing deletes in several
/// budgets starts at the earliest its budgets ask. Deterministic: ties in the end are broken
/// by lease, so a lease keeps its place from one plan to the next.
pub fn schedule<K, B>(
    deletes: impl IntoIterator<Item = Deletes<K, B>>,
    budget: DeleteBudget,
) -> HashMap<K, EarlyEnd<B>>
where
    K: Clone + Eq + Hash + Ord,
    B: Clone + Eq + Hash + Ord,
{
    let mut by_budget: HashMap<B, Vec<Deletes<K, B>>> = HashMap::new();
    for d in deletes {
        if d.count > 0 {
            by_budget.entry(d.budget.clone()).or_default().push(d);
        }
    }
    let per_second = budget.per_second.max(f64::MIN_POSITIVE);
    let burst = budget.burst.max(0.0);
    let mut early: HashMap<K, EarlyEnd<B>> = HashMap::new();
    for (_, mut leases) in by_budget {
        leases.sort_by(|a, b| {
            b.ends_at
                .cmp(&a.ends_at)
                .then_with(|| a.lease.cmp(&b.lease))
        });
        // Walking back in time from the latest end: `at` is where the walk stands, `tokens`
        // what the reversed bucket holds there.
        let Some(first) = leases.first() else {
            continue;
        };
        let mut at = first.ends_at;
        let mut tokens = burst;
        // The crowd: deletes placed since the walk last found the bucket full, and the latest
        // end among them.
        let mut crowd = 0u32;
        let mut crowd_until = first.ends_at;
        for d in leases {
            if d.ends_at < at {
                let back = (at - d.ends_at).as_seconds_f64();
                tokens = (tokens + back * per_second).min(burst);
                at = d.ends_at;
            }
            if tokens >= burst {
                crowd = 0;
                crowd_until = d.ends_at;
            }
            let need = f64::from(d.count);
            if tokens < need {
                let wait = (need - tokens) / per_second;
                at -= TimeDelta::microseconds((wait * 1e6).ceil() as i64);
                tokens = 0.0;
            } else {
                tokens -= need;
            }
            crowd = crowd.saturating_add(d.count);
            if d.ends_at - at < EARLY_BY_AT_LEAST {
                continue;
            }
            let plan = EarlyEnd {
                starts_at: at,
                for_end: d.ends_at,
                budget: d.budget,
                crowd,
                crowd_until,
            };
            match early.get_mut(&d.lease) {
                Some(e) if e.starts_at <= plan.starts_at => {}
                Some(e) => *e = plan,
                None => {
                    early.insert(d.lease, plan);
                }
            }
        }
    }
    early
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARM: DeleteBudget = DeleteBudget {
        burst: 200.0,
        per_second: 10.0,
    };

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
    }

    fn same_end(n: u32, budget: &'static str) -> Vec<Deletes<u32, &'static str>> {
        (0..n)
            .map(|i| Deletes {
                lease: i,
                ends_at: t0(),
                budget,
                count: 1,
            })
            .collect()
    }

    /// Replays a schedule forward through a token bucket: the latest a delete of it is sent
    /// after its lease's end (0 when every one goes on time).
    fn replay(
        deletes: &[Deletes<u32, &'static str>],
        plan: &HashMap<u32, EarlyEnd<&'static str>>,
        budget: DeleteBudget,
    ) -> f64 {
        let mut starts: Vec<(DateTime<Utc>, DateTime<Utc>, u32)> = deletes
            .iter()
            .map(|d| {
                let start = plan.get(&d.lease).map_or(d.ends_at, |e| e.starts_at);
                (start, d.ends_at, d.count)
            })
            .collect();
        starts.sort();
        let Some(first) = starts.first() else {
            return 0.0;
        };
        let mut clock = first.0;
        let mut tokens = budget.burst;
        let mut worst: f64 = 0.0;
        for (start, end, count) in starts {
            if start > clock {
                tokens = (tokens + (start - clock).as_seconds_f64() * budget.per_second)
                    .min(budget.burst);
                clock = start;
            }
            tokens -= f64::from(count);
            let sent = if tokens >= -1e-9 {
                clock
            } else {
                clock + TimeDelta::microseconds((-tokens / budget.per_second * 1e6) as i64)
            };
            worst = worst.max((sent - end).as_seconds_f64());
        }
        worst
    }

    #[test]
    fn two_thousand_ends_in_one_second_start_within_the_budget() {
        let deletes = same_end(2_000, "sub-a");
        let plan = schedule(deletes.clone(), ARM);
        // The burst covers 200 at the end itself; the other 1,800 start early, at 10/s.
        assert_eq!(
            plan.len(),
            1_800 - 9,
            "starts less than a second early are on time"
        );
        let earliest = plan.values().map(|e| e.starts_at).min().unwrap_or_default();
        assert_eq!(t0() - earliest, TimeDelta::seconds(180));
        assert!(
            plan.values()
                .all(|e| e.for_end == t0() && e.budget == "sub-a")
        );
        assert!(
            replay(&deletes, &plan, ARM) < 1.0,
            "replayed through ARM's bucket, no delete is sent after its lease's end"
        );
        // Without the plan the last delete goes 180 s late.
        assert!(replay(&deletes, &HashMap::new(), ARM) > 179.0);
        let earliest_lease = plan
            .values()
            .min_by_key(|e| e.starts_at)
            .map(|e| e.crowd)
            .unwrap_or_default();
        assert_eq!(
            earliest_lease, 2_000,
            "the earliest starter names the whole crowd"
        );
    }

    #[test]
    fn ends_the_budget_can_take_are_left_alone() {
        // 200 at once, then 9 a second: within ARM's budget, nobody ends early.
        let mut deletes = same_end(200, "sub-a");
        deletes.extend((0..600).map(|i| Deletes {
            lease: 1_000 + i,
            ends_at: t0() + TimeDelta::milliseconds(i64::from(i) * 1_000 / 9 + 1),
            budget: "sub-a",
            count: 1,
        }));
        assert!(schedule(deletes, ARM).is_empty());
    }

    #[test]
    fn budgets_are_separate_and_a_lease_takes_its_earliest_start() {
        let mut deletes = same_end(300, "sub-a");
        deletes.extend(same_end(150, "sub-b"));
        // Lease 0 also owes a delete in sub-b, where nothing crowds it.
        let plan = schedule(deletes, ARM);
        assert!(
            plan.values().all(|e| e.budget == "sub-a"),
            "150 ends fit sub-b's burst"
        );
        // 300 in sub-a: 100 beyond the burst, 10 s at 10/s.
        let earliest = plan.values().map(|e| e.starts_at).min().unwrap_or_default();
        assert_eq!(t0() - earliest, TimeDelta::seconds(10));

        let both = vec![
            Deletes {
                lease: 7,
                ends_at: t0(),
                budget: "sub-b",
                count: 1,
            },
            Deletes {
                lease: 7,
                ends_at: t0(),
                budget: "sub-a",
                count: 250,
            },
        ];
        let plan = schedule(both, ARM);
        assert_eq!(plan.get(&7).map(|e| e.budget), Some("sub-a"));
        assert_eq!(
            plan.get(&7).map(|e| t0() - e.starts_at),
            Some(TimeDelta::seconds(5)),
            "a lease's deletes go together: 250 in one budget need 5 s of refill"
        );
    }

    #[test]
    fn a_lease_ends_early_by_no_more_than_the_budget_forces() {
        // Two crowds a minute apart: the later one's early starters must not push the earlier
        // crowd further back than its own load needs.
        let mut deletes = same_end(400, "sub-a");
        deletes.extend((0..400).map(|i| Deletes {
            lease: 10_000 + i,
            ends_at: t0() + TimeDelta::seconds(60),
            budget: "sub-a",
            count: 1,
        }));
        let plan = schedule(deletes.clone(), ARM);
        // The later crowd: 200 in the burst, 200 over the 20 s before (no earlier than 40 s
        // after t0). Between the crowds the bucket refills 200 in 20 s, so the earlier crowd
        // again needs 20 s.
        let later = plan
            .iter()
            .filter(|(k, _)| **k >= 10_000)
            .map(|(_, e)| e.starts_at)
            .min()
            .unwrap_or_default();
        assert_eq!(later - t0(), TimeDelta::seconds(40));
        let earlier = plan
            .iter()
            .filter(|(k, _)| **k < 10_000)
            .map(|(_, e)| e.starts_at)
            .min()
            .unwrap_or_default();
        assert_eq!(t0() - earlier, TimeDelta::seconds(20));
        assert!(replay(&deletes, &plan, ARM) < 1.0);
    }

    #[test]
    fn a_plan_is_stable_as_the_early_starters_finish() {
        // The leases that started early leave the plan (their deletes are done): the rest
        // keep their starts, so nobody is pushed around by leases that already ended.
        let deletes = same_end(500, "sub-a");
        let plan = schedule(deletes.clone(), ARM);
        let first_out: Vec<u32> = {
            let mut early: Vec<(DateTime<Utc>, u32)> =
                plan.iter().map(|(k, e)| (e.starts_at, *k)).collect();
            early.sort();
            early.iter().take(50).map(|(_, k)| *k).collect()
        };
        let rest: Vec<_> = deletes
            .into_iter()
            .filter(|d| !first_out.contains(&d.lease))
            .collect();
        let again = schedule(rest, ARM);
        for (k, e) in &again {
            assert_eq!(
                plan.get(k).map(|p| p.starts_at),
                Some(e.starts_at),
                "lease {k}"
            );
        }
    }

    #[test]
    fn nothing_owed_plans_nothing() {
        let none: Vec<Deletes<u32, &str>> = Vec::new();
        assert!(schedule(none, ARM).is_empty());
        let zero = vec![Deletes {
            lease: 1,
            ends_at: t0(),
            budget: "sub-a",
            count: 0,
        }];
        assert!(schedule(zero, ARM).is_empty());
    }
}
