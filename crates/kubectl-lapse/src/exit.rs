//! Outcomes that are not plain errors: each has its own exit code (docs/kubectl-lapse.md).

/// A command that ends on purpose with a non-zero exit code other than 1.
#[derive(Debug, thiserror::Error)]
pub enum Stop {
    /// The command line is wrong: a flag value that cannot be parsed (exit 2).
    #[error("{0}")]
    Usage(String),
    /// lapse does not or would not grant it, or the caller may not decide on it (exit 3).
    #[error("{0}")]
    Refused(String),
    /// `--wait` gave up (exit 4).
    #[error("{0}")]
    TimedOut(String),
    /// `audit --fail-on`: findings of a chosen kind exist (exit 3, as a refusal: a CI gate
    /// treats both alike).
    #[error("{0}")]
    Findings(String),
}

impl Stop {
    pub fn code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::Refused(_) | Self::Findings(_) => 3,
            Self::TimedOut(_) => 4,
        }
    }

    /// The word `main` prints before the message.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Usage(_) => "error",
            Self::Refused(_) => "refused",
            Self::TimedOut(_) => "timed out",
            Self::Findings(_) => "findings",
        }
    }
}

/// The exit code for an error: a [`Stop`]'s own, else 1.
pub fn code_of(e: &anyhow::Error) -> u8 {
    e.downcast_ref::<Stop>().map_or(1, Stop::code)
}

/// The word before an error's message: a [`Stop`]'s own, else `error`.
pub fn label_of(e: &anyhow::Error) -> &'static str {
    e.downcast_ref::<Stop>().map_or("error", Stop::label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stop_has_its_documented_code() {
        let codes: Vec<u8> = [
            anyhow::Error::new(Stop::Usage(String::new())),
            anyhow::Error::new(Stop::Refused(String::new())),
            anyhow::Error::new(Stop::TimedOut(String::new())),
            anyhow::Error::new(Stop::Findings(String::new())),
            anyhow::anyhow!("connection refused"),
        ]
        .iter()
        .map(code_of)
        .collect();
        assert_eq!(codes, [2, 3, 4, 3, 1]);
    }

    #[test]
    fn context_keeps_the_code() {
        let e = anyhow::Error::new(Stop::Refused("no".into())).context("grant payments/x");
        assert_eq!(code_of(&e), 3);
    }
}
