//! One upstream call: a slot under the in-flight limit, then the HTTP
//! exchange on a pooled or new connection (the request of the API in use,
//! status, a body of at most `MAX_BODY_BYTES`), tried again only when that
//! is known safe.
//!
//! Separate from the lookup in `mod.rs` (cache, single-flight, timeout,
//! what the answer becomes) because this is the part that speaks HTTP and
//! decides, from how an exchange failed, whether a retry could send the
//! request twice.

use std::io;
use std::rc::Rc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::header::HeaderValue;
use tracing::debug;

use super::classify::{error_chain, CallError};
use super::new_api;
use super::{Shared, MAX_BODY_BYTES};
use crate::places::key::QueryKey;
use crate::pure::config::PlacesApi;

/// What came back from one exchange: the HTTP status and the whole body.
pub(super) struct Reply {
    /// HTTP status code.
    pub(super) status: u16,
    /// The body, at most `MAX_BODY_BYTES`.
    pub(super) body: Bytes,
}

/// One lookup's request, built once and sent as often as it is tried.
struct Ask {
    /// Origin-form target: path and query.
    path: String,
    /// The New API's JSON body; empty for the legacy GET.
    body: Bytes,
}

impl Shared {
    /// Waits for an in-flight slot, then tries once plus up to `retries` safe retries.
    pub(super) async fn call_with_retries(
        self: &Rc<Self>,
        key: QueryKey,
    ) -> Result<Reply, CallError> {
        let _slot = self
            .in_flight
            .acquire_permit(1)
            .await
            .map_err(|e| CallError::Local(format!("in-flight limiter closed: {e}")))?;
        let ask = match self.api {
            PlacesApi::Legacy => Ask {
                path: self.target.request_path(key, self.key.as_deref()),
                body: Bytes::new(),
            },
            // The key travels in a header, never in the URL.
            PlacesApi::New => Ask {
                path: self.target.new_request_path(),
                body: Bytes::from(new_api::request_body(key)),
            },
        };
        let mut attempt = 0u32;
        // Bounded: every turn either returns or uses up one of `retries` attempts.
        loop {
            match self.attempt(&ask).await {
                Err(err) if err.retryable() && attempt < self.retries => {
                    attempt += 1;
                    debug!(error = %err.message(&self.target.origin()), attempt, "retrying places upstream call");
                }
                other => return other,
            }
        }
    }

    /// The HTTP request of one attempt.
    fn request(&self, ask: &Ask) -> Result<hyper::Request<Full<Bytes>>, CallError> {
        let builder = match self.api {
            PlacesApi::Legacy => hyper::Request::get(&ask.path),
            PlacesApi::New => {
                let mut builder = hyper::Request::post(&ask.path)
                    .header(hyper::header::CONTENT_TYPE, "application/json")
                    .header("x-goog-fieldmask", &self.field_mask);
                if let Some(key) = &self.key {
                    let mut value = HeaderValue::from_str(key).map_err(|_| {
                        CallError::Local("the API key is not a valid header value".to_owned())
                    })?;
                    // Keeps it out of any header dump hyper or a layer might make.
                    value.set_sensitive(true);
                    builder = builder.header("x-goog-api-key", value);
                }
                builder
            }
        };
        builder
            .header(hyper::header::HOST, &self.target.host_header)
            .header(hyper::header::USER_AGENT, "herd")
            .header(hyper::header::ACCEPT, "application/json")
            .body(Full::new(ask.body.clone()))
            .map_err(|e| CallError::Local(format!("cannot build request: {e}")))
    }

    /// One HTTP exchange on a pooled or new connection.
    async fn attempt(self: &Rc<Self>, ask: &Ask) -> Result<Reply, CallError> {
        let request = self.request(ask)?;
        let (mut sender, reused) = self.pool.checkout().await?;
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
        // The New API explains a refusal in its body; the legacy one answers
        // 200 with a status, so another code there is no answer at all.
        if !status.is_success() && self.api == PlacesApi::Legacy {
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
        Ok(Reply {
            status: status.as_u16(),
            body,
        })
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
