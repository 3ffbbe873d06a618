//! One upstream call: a slot under the in-flight limit, then the HTTP
//! exchange on a pooled or new connection (request, status, a body of at
//! most `MAX_BODY_BYTES`, JSON), tried again only when that is known safe.
//!
//! Separate from the lookup in `mod.rs` (cache, single-flight, timeout,
//! what the answer becomes) because this is the part that speaks HTTP and
//! decides, from how an exchange failed, whether a retry could send the
//! request twice.

use std::io;
use std::rc::Rc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use tracing::debug;

use super::classify::{error_chain, CallError};
use super::{Shared, MAX_BODY_BYTES};
use crate::places::answer::PlacesAnswer;
use crate::places::key::QueryKey;

impl Shared {
    /// Waits for an in-flight slot, then tries once plus up to `retries` safe retries.
    pub(super) async fn call_with_retries(
        self: &Rc<Self>,
        key: QueryKey,
    ) -> Result<PlacesAnswer, CallError> {
        let _slot = self
            .in_flight
            .acquire_permit(1)
            .await
            .map_err(|e| CallError::Local(format!("in-flight limiter closed: {e}")))?;
        let path = self.target.request_path(key, self.key.as_deref());
        let mut attempt = 0u32;
        // Bounded: every turn either returns or uses up one of `retries` attempts.
        loop {
            match self.attempt(&path).await {
                Err(err) if err.retryable() && attempt < self.retries => {
                    attempt += 1;
                    debug!(error = %err.message(&self.target.origin()), attempt, "retrying places upstream call");
                }
                other => return other,
            }
        }
    }

    /// One HTTP exchange on a pooled or new connection.
    async fn attempt(self: &Rc<Self>, path: &str) -> Result<PlacesAnswer, CallError> {
        let (mut sender, reused) = self.pool.checkout().await?;
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, &self.target.host_header)
            .header(hyper::header::USER_AGENT, "herd")
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| CallError::Local(format!("cannot build request: {e}")))?;
        self.count(|s| s.requests += 1);
        let response = match sender.try_send_request(request).await {
            Ok(response) => response,
            Err(mut err) => {
                // A request handed back was never written: always safe to send again.
                let unsent = err.take_message().is_some();
                let err = err.into_error();
                let retryable = unsent || (reused && err.is_incomplete_message()) || is_reset(&err);
                return Err(CallError::Send {
                    cause: error_chain(&err),
                    retryable,
                });
            }
        };
        let status = response.status();
        if !status.is_success() {
            // The unread body makes the connection unusable; it is dropped, not pooled.
            return Err(CallError::HttpStatus(status.as_u16()));
        }
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    CallError::TooLarge
                } else {
                    CallError::Body(error_chain(e.as_ref()))
                }
            })?
            .to_bytes();
        self.pool.checkin(sender);
        serde_json::from_slice(&body).map_err(|_| CallError::NotJson)
    }
}

/// Whether a hyper error comes from a connection reset/abort/broken pipe, i.e. the
/// peer dropped the connection; hyper only reports these before a response completes.
fn is_reset(err: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(err);
    // Bounded: error chains are short; stop after a few links regardless.
    for _ in 0..8 {
        let Some(e) = source else { return false };
        if let Some(io_err) = e.downcast_ref::<io::Error>() {
            return matches!(
                io_err.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
            );
        }
        source = e.source();
    }
    false
}
