//! Is this request from Slack (or Teams), and recent? Pure: the clock is an argument.
//!
//! - Slack (<https://api.slack.com/authentication/verifying-requests-from-slack>):
//!   `X-Slack-Signature: v0=` + hex(HMAC-SHA256(signing secret, `v0:` + timestamp + `:` + raw
//!   body)), `X-Slack-Request-Timestamp` within five minutes of now.
//! - Teams outgoing webhooks
//!   (<https://learn.microsoft.com/en-us/microsoftteams/platform/webhooks-and-connectors/how-to/add-outgoing-webhook>):
//!   `Authorization: HMAC ` + base64(HMAC-SHA256(base64-decoded security token, raw body)); the
//!   activity's own `timestamp` (inside the signed body) within five minutes.
//!
//! Signatures are compared by `ring::hmac::verify`, in constant time. The signature is checked
//! before the time, so a forged request is always `bad_signature` and `stale_timestamp` means a
//! genuine request replayed after its window.

use base64::Engine as _;
use ring::hmac;

/// How far a request's timestamp may be from now, either way (Slack's five minutes).
pub const WINDOW_SECS: i64 = 300;

/// Why a request is not believed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unverified {
    /// Missing, malformed or wrong signature; the text says which.
    BadSignature(&'static str),
    /// Genuine but too old (or too far in the future): seconds from now.
    Stale(i64),
}

impl std::fmt::Display for Unverified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadSignature(why) => write!(f, "request signature refused: {why}"),
            Self::Stale(age) => write!(
                f,
                "request timestamp is {}s {} now, outside the {WINDOW_SECS}s window",
                age.abs(),
                if *age >= 0 { "before" } else { "after" }
            ),
        }
    }
}

/// A secret as given: never printed.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// The Slack app's signing secret as an HMAC key.
pub fn slack_key(secret: &Secret) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret.0.trim().as_bytes())
}

/// The Teams outgoing webhook's security token (base64, as Teams shows it) as an HMAC key.
pub fn teams_key(secret: &Secret) -> Result<hmac::Key, String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(secret.0.trim())
        .map_err(|e| format!("the Teams security token is not base64: {e}"))?;
    if raw.is_empty() {
        return Err("the Teams security token is empty".into());
    }
    Ok(hmac::Key::new(hmac::HMAC_SHA256, &raw))
}

/// Checks a Slack request; returns its timestamp (Unix seconds) and signature bytes (the replay
/// key).
pub fn slack(
    key: &hmac::Key,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(i64, Vec<u8>), Unverified> {
    let signature = signature.ok_or(Unverified::BadSignature("no X-Slack-Signature header"))?;
    let timestamp = timestamp.ok_or(Unverified::BadSignature(
        "no X-Slack-Request-Timestamp header",
    ))?;
    let hex = signature
        .strip_prefix("v0=")
        .ok_or(Unverified::BadSignature(
            "X-Slack-Signature is not v0=<hex>",
        ))?;
    let tag = decode_hex(hex).ok_or(Unverified::BadSignature(
        "X-Slack-Signature is not v0=<hex>",
    ))?;
    let mut signed = Vec::with_capacity(body.len() + timestamp.len() + 4);
    signed.extend_from_slice(b"v0:");
    signed.extend_from_slice(timestamp.as_bytes());
    signed.push(b':');
    signed.extend_from_slice(body);
    hmac::verify(key, &signed, &tag)
        .map_err(|_| Unverified::BadSignature("X-Slack-Signature does not match the body"))?;
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| Unverified::BadSignature("X-Slack-Request-Timestamp is not Unix seconds"))?;
    within_window(ts, now)?;
    Ok((ts, tag))
}

/// Checks a Teams request's signature; returns the signature bytes (the replay key). The
/// activity's timestamp is checked with [`within_window`] once the body is read.
pub fn teams(
    key: &hmac::Key,
    authorization: Option<&str>,
    body: &[u8],
) -> Result<Vec<u8>, Unverified> {
    let auth = authorization.ok_or(Unverified::BadSignature("no Authorization header"))?;
    let b64 = auth.strip_prefix("HMAC ").ok_or(Unverified::BadSignature(
        "Authorization is not HMAC <base64>",
    ))?;
    let tag = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| Unverified::BadSignature("Authorization is not HMAC <base64>"))?;
    hmac::verify(key, body, &tag)
        .map_err(|_| Unverified::BadSignature("the HMAC does not match the body"))?;
    Ok(tag)
}

/// `ts` (Unix seconds) is within [`WINDOW_SECS`] of `now`.
pub fn within_window(ts: i64, now: i64) -> Result<(), Unverified> {
    let age = now.saturating_sub(ts);
    if age.abs() > WINDOW_SECS {
        return Err(Unverified::Stale(age));
    }
    Ok(())
}

/// Lower- or upper-case hex; `None` when malformed.
fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16);
    s.as_bytes()
        .chunks(2)
        .map(|p| Some((digit(p[0])? * 16 + digit(p[1])?) as u8))
        .collect()
}

/// Lower-case hex (for signing in tests and for the outgoing side, never for comparing).
#[cfg(test)]
pub fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Slack's worked example (api.slack.com/authentication/verifying-requests-from-slack).
    const DOC_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const DOC_TS: &str = "1531420618";
    const DOC_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const DOC_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn doc_key() -> hmac::Key {
        slack_key(&Secret(DOC_SECRET.into()))
    }

    #[test]
    fn slacks_documented_example_verifies() {
        let now: i64 = 1_531_420_618 + 60;
        let (ts, tag) = slack(
            &doc_key(),
            Some(DOC_TS),
            Some(DOC_SIG),
            DOC_BODY.as_bytes(),
            now,
        )
        .unwrap();
        assert_eq!(ts, 1_531_420_618);
        assert_eq!(format!("v0={}", encode_hex(&tag)), DOC_SIG);
        // Upper-case hex is the same signature.
        let upper = format!("v0={}", DOC_SIG[3..].to_ascii_uppercase());
        assert!(
            slack(
                &doc_key(),
                Some(DOC_TS),
                Some(&upper),
                DOC_BODY.as_bytes(),
                now
            )
            .is_ok()
        );
    }

    #[test]
    fn a_changed_body_timestamp_secret_or_header_is_a_bad_signature() {
        let now: i64 = 1_531_420_618;
        let body = DOC_BODY.as_bytes();
        let bad =
            |r: Result<(i64, Vec<u8>), Unverified>| matches!(r, Err(Unverified::BadSignature(_)));
        let mut tampered = body.to_vec();
        tampered[10] ^= 1;
        assert!(bad(slack(
            &doc_key(),
            Some(DOC_TS),
            Some(DOC_SIG),
            &tampered,
            now
        )));
        // A different timestamp is a different signed string, so the signature fails (not the
        // window): a replay cannot refresh its timestamp.
        assert!(bad(slack(
            &doc_key(),
            Some("1531420619"),
            Some(DOC_SIG),
            body,
            now
        )));
        let other = slack_key(&Secret("another-secret".into()));
        assert!(bad(slack(&other, Some(DOC_TS), Some(DOC_SIG), body, now)));
        for sig in [
            None,
            Some("a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"),
            Some("v1=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"),
            Some("v0=zz"),
            Some("v0=a21"),
            Some("v0=a2114d57"),
        ] {
            assert!(
                bad(slack(&doc_key(), Some(DOC_TS), sig, body, now)),
                "{sig:?}"
            );
        }
        assert!(bad(slack(&doc_key(), None, Some(DOC_SIG), body, now)));
    }

    #[test]
    fn the_window_is_five_minutes_either_way() {
        let ts: i64 = 1_531_420_618;
        let check = |now| {
            slack(
                &doc_key(),
                Some(DOC_TS),
                Some(DOC_SIG),
                DOC_BODY.as_bytes(),
                now,
            )
        };
        assert!(check(ts + WINDOW_SECS).is_ok());
        assert!(check(ts - WINDOW_SECS).is_ok());
        assert_eq!(check(ts + WINDOW_SECS + 1), Err(Unverified::Stale(301)));
        assert_eq!(check(ts - WINDOW_SECS - 1), Err(Unverified::Stale(-301)));
        assert_eq!(
            Unverified::Stale(400).to_string(),
            "request timestamp is 400s before now, outside the 300s window"
        );
    }

    // Computed with Python's hmac and base64 (independent of this code):
    // base64(hmac.new(b64decode(SECRET), BODY, sha256).digest()).
    const TEAMS_SECRET: &str = "bGFwc2UtdGVhbXMtdGVzdC1zZWNyZXQtMzItYnl0ZXM=";
    const TEAMS_BODY: &str = r#"{"type":"message","id":"1485983408511","timestamp":"2026-12-05T10:00:00.000Z","text":"<at>lapse</at> approve payments/nightly/0b1c2d3e-0000-4000-8000-000000000001/1","from":{"id":"29:1abc","name":"Bob","aadObjectId":"6f5b3c2a-0000-4000-8000-0000000000b0"}}"#;
    const TEAMS_HMAC: &str = "HMAC gQLMIlSQPhq/BZw0VaUl7rYKnYe65DEA8pab5S/GkIk=";

    #[test]
    fn teams_hmac_is_over_the_body_with_the_decoded_token() {
        let key = teams_key(&Secret(TEAMS_SECRET.into())).unwrap();
        assert!(teams(&key, Some(TEAMS_HMAC), TEAMS_BODY.as_bytes()).is_ok());
        let mut tampered = TEAMS_BODY.as_bytes().to_vec();
        tampered[3] ^= 1;
        for (auth, body) in [
            (Some(TEAMS_HMAC), tampered.as_slice()),
            (None, TEAMS_BODY.as_bytes()),
            (Some("Bearer abc"), TEAMS_BODY.as_bytes()),
            (Some("HMAC !!!"), TEAMS_BODY.as_bytes()),
        ] {
            assert!(
                matches!(teams(&key, auth, body), Err(Unverified::BadSignature(_))),
                "{auth:?}"
            );
        }
        // The token as text (not decoded) is another key.
        let raw = hmac::Key::new(hmac::HMAC_SHA256, TEAMS_SECRET.as_bytes());
        assert!(teams(&raw, Some(TEAMS_HMAC), TEAMS_BODY.as_bytes()).is_err());
        assert!(teams_key(&Secret("not base64!".into())).is_err());
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
