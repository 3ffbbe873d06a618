//! What an upstream call comes to, as values: a JSON answer sorted by its
//! Google `status` (serve and cache, pass Google's error through, or replace
//! an answer that is no answer), and a failed call sorted by its cause
//! (safe to retry or not, and the `error_message` of the error answer).
//!
//! Separate, and pure (in CI's source scan), so that these rules are tested
//! as plain values: no socket, no runtime, no HTTP library and no clock.
//! The callers turn causes into `CallError`s and act on the verdicts.

use std::io;
use std::time::Duration;

use serde_json::Value;

use super::MAX_BODY_BYTES;

/// Why one upstream call failed.
#[derive(Debug)]
pub(super) enum CallError {
    /// The whole call took longer than the timeout.
    Timeout(Duration),
    /// No connection could be made (resolve, TCP, TLS or HTTP handshake).
    Connect {
        /// scheme://host:port, for the message.
        origin: String,
        /// What went wrong.
        cause: String,
        /// The IO error kind, when there was one, to judge retrying.
        kind: Option<io::ErrorKind>,
    },
    /// The request failed before a response head arrived.
    Send {
        /// What went wrong.
        cause: String,
        /// Whether sending again is known to be safe.
        retryable: bool,
    },
    /// A non-2xx response.
    HttpStatus(u16),
    /// The body exceeded `MAX_BODY_BYTES`.
    TooLarge,
    /// Reading the body failed after the response head.
    Body(String),
    /// Our own side failed (should not happen).
    Local(String),
}

impl CallError {
    /// Safe to try again: nothing reached the server, or a pooled connection was dead.
    /// Never after a timeout (the budget is spent) or once response bytes arrived.
    pub(super) fn retryable(&self) -> bool {
        match self {
            CallError::Connect { kind, .. } => matches!(
                kind,
                Some(
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                )
            ),
            CallError::Send { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// The error_message of the answer; names the cause, never the key.
    pub(super) fn message(&self, origin: &str) -> String {
        match self {
            CallError::Timeout(d) => {
                format!("places upstream timed out after {} ms", d.as_millis())
            }
            CallError::Connect { origin, cause, .. } => {
                format!("cannot connect to {origin}: {cause}")
            }
            CallError::Send { cause, .. } => {
                format!("places upstream request to {origin} failed: {cause}")
            }
            CallError::HttpStatus(code) => format!("places upstream answered HTTP {code}"),
            CallError::TooLarge => {
                format!("places upstream sent a body larger than {MAX_BODY_BYTES} bytes")
            }
            CallError::Body(cause) => format!("places upstream body could not be read: {cause}"),
            CallError::Local(cause) => format!("places upstream client error: {cause}"),
        }
    }
}

/// What an answer from upstream comes to, in the legacy JSON whichever API
/// sent it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// OK or ZERO_RESULTS: serve and cache.
    Cacheable {
        /// The answer.
        answer: Value,
        /// Places left out of it for having no location (New API only).
        dropped: usize,
    },
    /// A Google error: serve, do not cache.
    Refused {
        /// The error answer, with Google's `error_message`.
        answer: Value,
        /// The legacy status.
        status: String,
    },
    /// Not an answer at all: replace with an UNKNOWN_ERROR carrying this reason.
    Malformed(String),
}

/// Sorts a legacy answer body by its `status` field.
pub(super) fn classify_legacy(body: &[u8]) -> Verdict {
    let Ok(answer) = serde_json::from_slice::<Value>(body) else {
        return Verdict::Malformed("places upstream sent a body that is not JSON".to_owned());
    };
    match answer.get("status").and_then(Value::as_str) {
        Some("OK" | "ZERO_RESULTS") => Verdict::Cacheable { answer, dropped: 0 },
        Some(status) => Verdict::Refused {
            status: status.to_owned(),
            answer,
        },
        None => Verdict::Malformed("places upstream sent JSON without a status".to_owned()),
    }
}

/// An error and its sources, joined with ": " (an HTTP client error's Display
/// shows only the top one).
pub(super) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    for _ in 0..8 {
        let Some(e) = source else { break };
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_are_classified_by_status() {
        let classify = |answer: &Value| classify_legacy(answer.to_string().as_bytes());
        for ok in [json!({"status": "OK"}), json!({"status": "ZERO_RESULTS"})] {
            assert_eq!(
                classify(&ok),
                Verdict::Cacheable {
                    answer: ok,
                    dropped: 0
                }
            );
        }
        let denied = json!({"status": "REQUEST_DENIED", "error_message": "bad key"});
        assert_eq!(
            classify(&denied),
            Verdict::Refused {
                answer: denied,
                status: "REQUEST_DENIED".to_owned()
            }
        );
        assert!(matches!(classify(&json!([1])), Verdict::Malformed(_)));
        assert!(matches!(
            classify(&json!({"status": 3})),
            Verdict::Malformed(_)
        ));
        assert_eq!(
            classify_legacy(b"<html>"),
            Verdict::Malformed("places upstream sent a body that is not JSON".to_owned())
        );
    }

    #[test]
    fn error_messages_name_the_cause() {
        let o = "http://h:1";
        let cases = [
            (
                CallError::Timeout(Duration::from_millis(300)),
                "places upstream timed out after 300 ms",
            ),
            (
                CallError::HttpStatus(500),
                "places upstream answered HTTP 500",
            ),
        ];
        for (err, text) in cases {
            assert_eq!(err.message(o), text);
            assert!(!err.retryable());
        }
        let refused = CallError::Connect {
            origin: o.to_owned(),
            cause: "Connection refused".to_owned(),
            kind: Some(io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(
            refused.message(o),
            "cannot connect to http://h:1: Connection refused"
        );
        assert!(refused.retryable());
        let tls = CallError::Connect {
            origin: o.to_owned(),
            cause: "TLS".to_owned(),
            kind: None,
        };
        assert!(!tls.retryable());
        assert!(CallError::TooLarge.message(o).contains("1048576 bytes"));
        assert!(CallError::Send {
            cause: String::new(),
            retryable: true
        }
        .retryable());
        assert!(!CallError::Body(String::new()).retryable());
    }
}
