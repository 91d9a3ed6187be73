//! Delivery: one POST per notification, retried with capped exponential backoff while the
//! webhook answers 5xx, 408 or 429 or cannot be reached; any other answer is final. Each attempt
//! has a deadline, so a webhook that accepts connections and never answers costs the delivery
//! task time, never a reconcile. The URL is never logged: it often carries the webhook's secret.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

/// How a delivery is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Wait after the first failed attempt; doubled after each further one.
    pub base: Duration,
    /// The longest wait between attempts (a 429's `Retry-After` included).
    pub cap: Duration,
    /// How long one attempt may take, connecting included.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, 1 s doubling up to 30 s between them, 10 s each: a notification is given up
    /// about 65 s after its first attempt at the latest.
    fn default() -> Self {
        Self {
            attempts: 5,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `n` (0-based): `base · 2ⁿ`, at most `cap`; a longer
    /// `Retry-After` wins, up to `cap`.
    pub fn backoff(&self, n: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .base
            .checked_mul(2u32.saturating_pow(n))
            .unwrap_or(self.cap)
            .min(self.cap);
        retry_after.map_or(exp, |r| r.min(self.cap).max(exp))
    }
}

/// What one attempt got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// An HTTP answer: its status and `Retry-After` (seconds), if any.
    Status(u16, Option<Duration>),
    /// No answer: connection refused or reset, TLS failure, the attempt's deadline.
    Unreachable(String),
}

/// What became of a notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    Delivered {
        attempts: u32,
    },
    /// Given up: the last answer, and whether it was final (a 4xx) or retries ran out.
    Failed {
        attempts: u32,
        last: String,
    },
}

/// Whether an answer is worth another attempt.
fn retryable(a: &Answer) -> bool {
    match a {
        Answer::Status(s, _) => *s == 408 || *s == 429 || *s >= 500,
        Answer::Unreachable(_) => true,
    }
}

/// Posts a body somewhere.
pub trait Post {
    fn post(
        &self,
        content_type: &'static str,
        body: &[u8],
    ) -> impl std::future::Future<Output = Answer> + Send;
}

/// Delivers `body`, retrying as `policy` says.
pub async fn deliver<P: Post + Sync>(
    post: &P,
    policy: &RetryPolicy,
    content_type: &'static str,
    body: &[u8],
) -> Delivery {
    let mut last = String::new();
    let attempts = policy.attempts.max(1);
    for n in 0..attempts {
        let answer = post.post(content_type, body).await;
        if let Answer::Status(s, _) = answer
            && (200..300).contains(&s)
        {
            return Delivery::Delivered { attempts: n + 1 };
        }
        last = match &answer {
            Answer::Status(s, _) => format!("HTTP {s}"),
            Answer::Unreachable(e) => e.clone(),
        };
        if !retryable(&answer) {
            return Delivery::Failed {
                attempts: n + 1,
                last: format!("{last} (not retried)"),
            };
        }
        if n + 1 < attempts {
            let retry_after = match answer {
                Answer::Status(_, r) => r,
                Answer::Unreachable(_) => None,
            };
            tokio::time::sleep(policy.backoff(n, retry_after)).await;
        }
    }
    Delivery::Failed {
        attempts,
        last: format!("{last} ({attempts} attempts)"),
    }
}

/// The production transport: HTTPS (or HTTP) POST to the secret URL, no redirects (one could
/// carry the body elsewhere), a deadline per attempt.
pub struct HttpPost {
    client: reqwest::Client,
    url: SecretString,
}

impl std::fmt::Debug for HttpPost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpPost").finish_non_exhaustive()
    }
}

impl HttpPost {
    pub fn new(url: SecretString, policy: &RetryPolicy) -> Result<Self, super::NotifyError> {
        let parsed = reqwest::Url::parse(url.expose_secret())
            .map_err(|e| super::NotifyError::Url(e.to_string()))?;
        if !matches!(parsed.scheme(), "https" | "http") {
            return Err(super::NotifyError::Url(format!(
                "scheme {:?}: only https (or http) webhooks are supported",
                parsed.scheme()
            )));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(policy.timeout)
            .timeout(policy.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("lapse-operator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| super::NotifyError::Client(e.without_url().to_string()))?;
        Ok(Self { client, url })
    }
}

impl Post for HttpPost {
    async fn post(&self, content_type: &'static str, body: &[u8]) -> Answer {
        let sent = self
            .client
            .post(self.url.expose_secret())
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body.to_vec())
            .send()
            .await;
        match sent {
            Ok(resp) => {
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                Answer::Status(resp.status().as_u16(), retry_after)
            }
            // Never the URL: it often is the webhook's secret.
            Err(e) => Answer::Unreachable(describe(&e)),
        }
    }
}

/// A transport error without its URL.
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Answers from a script, recording when each attempt came (on tokio's paused clock).
    struct Scripted {
        answers: Mutex<Vec<Answer>>,
        at: Mutex<Vec<tokio::time::Instant>>,
    }

    impl Scripted {
        fn new(mut answers: Vec<Answer>) -> Self {
            answers.reverse();
            Self {
                answers: Mutex::new(answers),
                at: Mutex::default(),
            }
        }
        fn gaps(&self) -> Vec<Duration> {
            let at = self.at.lock().unwrap_or_else(|e| e.into_inner());
            at.windows(2).map(|w| w[1] - w[0]).collect()
        }
    }

    impl Post for Scripted {
        async fn post(&self, _: &'static str, _: &[u8]) -> Answer {
            self.at
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(tokio::time::Instant::now());
            self.answers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop()
                .unwrap_or(Answer::Status(200, None))
        }
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_honours_retry_after_within_it() {
        let p = RetryPolicy::default();
        let waits: Vec<Duration> = (0..7).map(|n| p.backoff(n, None)).collect();
        assert_eq!(waits, vec![S(1), S(2), S(4), S(8), S(16), S(30), S(30)]);
        assert_eq!(p.backoff(40, None), S(30), "no overflow far out");
        assert_eq!(p.backoff(0, Some(S(7))), S(7), "a longer Retry-After wins");
        assert_eq!(p.backoff(3, Some(S(2))), S(8), "a shorter one does not");
        assert_eq!(p.backoff(0, Some(S(3600))), S(30), "capped");
    }

    #[tokio::test(start_paused = true)]
    async fn server_errors_throttling_and_unreachable_webhooks_are_retried_with_backoff() {
        let post = Scripted::new(vec![
            Answer::Status(503, None),
            Answer::Unreachable("could not connect".into()),
            Answer::Status(429, Some(S(10))),
            Answer::Status(204, None),
        ]);
        let d = deliver(&post, &RetryPolicy::default(), "application/json", b"{}").await;
        assert_eq!(d, Delivery::Delivered { attempts: 4 });
        // 1 s, 2 s, then the 429's 10 s (longer than the 4 s backoff).
        assert_eq!(post.gaps(), vec![S(1), S(2), S(10)]);
    }

    #[tokio::test(start_paused = true)]
    async fn other_client_errors_are_final_at_once() {
        for status in [400, 401, 403, 404, 410, 413] {
            let post = Scripted::new(vec![Answer::Status(status, None)]);
            let d = deliver(&post, &RetryPolicy::default(), "application/json", b"{}").await;
            assert_eq!(
                d,
                Delivery::Failed {
                    attempts: 1,
                    last: format!("HTTP {status} (not retried)")
                }
            );
            assert!(post.gaps().is_empty());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_bounded() {
        let post = Scripted::new(vec![Answer::Status(500, None); 10]);
        let started = tokio::time::Instant::now();
        let d = deliver(&post, &RetryPolicy::default(), "application/json", b"{}").await;
        assert_eq!(
            d,
            Delivery::Failed {
                attempts: 5,
                last: "HTTP 500 (5 attempts)".into()
            }
        );
        assert_eq!(post.gaps(), vec![S(1), S(2), S(4), S(8)]);
        assert_eq!(started.elapsed(), S(15), "no wait after the last attempt");
    }

    /// The real transport against a webhook that accepts connections and never answers: each
    /// attempt ends at its deadline, and the URL (with its secret) is in no error.
    #[tokio::test]
    async fn a_webhook_that_never_answers_times_out_each_attempt()
    -> Result<(), Box<dyn std::error::Error>> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let hold = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                open.push(sock);
            }
        });
        let policy = RetryPolicy {
            attempts: 2,
            base: Duration::from_millis(10),
            cap: Duration::from_millis(10),
            timeout: Duration::from_millis(300),
        };
        let url = format!("http://{addr}/hooks/T000/SECRET-TOKEN");
        let post = HttpPost::new(url.into(), &policy)?;
        let started = std::time::Instant::now();
        let d = deliver(&post, &policy, "application/json", b"{}").await;
        let took = started.elapsed();
        hold.abort();
        let Delivery::Failed { attempts: 2, last } = d else {
            panic!("expected two failed attempts, got {d:?}");
        };
        assert!(last.starts_with("timed out"), "{last}");
        assert!(!last.contains("SECRET"), "the URL leaked: {last}");
        assert!(
            took >= Duration::from_millis(600) && took < Duration::from_secs(5),
            "{took:?}"
        );
        Ok(())
    }

    #[test]
    fn only_http_urls_are_accepted_and_the_error_shows_no_secret() {
        let policy = RetryPolicy::default();
        let err = HttpPost::new("ftp://example.com/SECRET".to_owned().into(), &policy)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("scheme \"ftp\""), "{err}");
        assert!(!err.contains("SECRET"), "{err}");
        let err = HttpPost::new("not a url SECRET".to_owned().into(), &policy)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!err.is_empty() && !err.contains("SECRET"), "{err}");
    }
}
