//! Every exchange with Azure counted by operation and outcome, where it happens: the
//! operator's `lapse_azure_calls_total` reads these counts, so no call site can forget one,
//! lookups and list pages included.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::error::{ErrorClass, Operation};

/// How one exchange ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// A 2xx answer.
    Ok,
    /// 404: a look-up of something absent, or a delete of something already gone.
    NotFound,
    /// 409: the object exists already (`RoleAssignmentExists`) or a write raced another.
    Conflict,
    /// 429: Azure asked to slow down.
    Throttled,
    /// 408, 5xx, a timeout or a transport failure.
    Retryable,
    /// Any other refusal: retrying the same request will not help.
    Terminal,
    /// No token, or 401.
    Auth,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Ok,
        Outcome::NotFound,
        Outcome::Conflict,
        Outcome::Throttled,
        Outcome::Retryable,
        Outcome::Terminal,
        Outcome::Auth,
    ];

    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NotFound => "not_found",
            Outcome::Conflict => "conflict",
            Outcome::Throttled => "throttled",
            Outcome::Retryable => "retryable",
            Outcome::Terminal => "terminal",
            Outcome::Auth => "auth",
        }
    }

    pub(crate) fn of_class(class: ErrorClass) -> Self {
        match class {
            ErrorClass::Throttled => Outcome::Throttled,
            ErrorClass::Retryable => Outcome::Retryable,
            ErrorClass::Terminal => Outcome::Terminal,
            ErrorClass::Auth => Outcome::Auth,
        }
    }
}

/// One operation's count of one outcome, since the client was built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallCount {
    pub operation: Operation,
    pub outcome: Outcome,
    pub count: u64,
}

#[derive(Debug, Default)]
pub(crate) struct CallCounts(Mutex<HashMap<(Operation, Outcome), u64>>);

impl CallCounts {
    pub(crate) fn record(&self, operation: Operation, outcome: Outcome) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry((operation, outcome))
            .or_default() += 1;
    }

    /// Every count so far, by operation then outcome.
    pub(crate) fn snapshot(&self) -> Vec<CallCount> {
        let mut out: Vec<CallCount> = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(&(operation, outcome), &count)| CallCount {
                operation,
                outcome,
                count,
            })
            .collect();
        out.sort_by_key(|c| (c.operation.as_str(), c.outcome));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The labels `docs/operator.md` lists for `lapse_azure_calls_total`, between backticks
    /// after `label:` up to the next sentence that starts with another label.
    fn documented(after: &str) -> Vec<String> {
        let doc = include_str!("../../../docs/operator.md");
        let Some(row) = doc
            .lines()
            .find(|l| l.starts_with("| `lapse_azure_calls_total`"))
        else {
            panic!("docs/operator.md has no lapse_azure_calls_total row");
        };
        let Some(start) = row.find(after) else {
            panic!("no `{after}` in {row}");
        };
        let part = &row[start + after.len()..];
        let part = &part[..part.find(". ").unwrap_or(part.len())];
        part.split('`')
            .skip(1)
            .step_by(2)
            .map(|s| s.to_owned())
            .collect()
    }

    #[test]
    fn the_docs_list_exactly_the_labels_the_client_produces() {
        // The own-identity read takes the token it has and makes no exchange.
        let ops: Vec<String> = Operation::ALL
            .iter()
            .filter(|o| **o != Operation::GetOwnIdentity)
            .map(|o| o.as_str().to_owned())
            .collect();
        assert_eq!(documented("Operations: "), ops);
        let outcomes: Vec<String> = Outcome::ALL.iter().map(|o| o.as_str().to_owned()).collect();
        assert_eq!(documented("Outcomes: "), outcomes);
    }

    #[test]
    fn counts_accumulate_per_operation_and_outcome() {
        let c = CallCounts::default();
        c.record(Operation::PutFic, Outcome::Ok);
        c.record(Operation::PutFic, Outcome::Ok);
        c.record(Operation::PutFic, Outcome::Throttled);
        c.record(Operation::DeleteFic, Outcome::NotFound);
        assert_eq!(
            c.snapshot(),
            vec![
                CallCount {
                    operation: Operation::DeleteFic,
                    outcome: Outcome::NotFound,
                    count: 1
                },
                CallCount {
                    operation: Operation::PutFic,
                    outcome: Outcome::Ok,
                    count: 2
                },
                CallCount {
                    operation: Operation::PutFic,
                    outcome: Outcome::Throttled,
                    count: 1
                },
            ]
        );
    }
}
