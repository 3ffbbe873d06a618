//! Glue between glommio and hyper 1.x: an IO adapter and a task executor.
//! It owns only the byte plumbing (`GlommioIo`) and task spawning (`LocalExec`).
//! It must not know about HTTP semantics, TLS policy, timeouts or Places; and it
//! uses no `unsafe`: reads go through a scratch buffer and the safe
//! `ReadBufCursor::put_slice`, at the cost of one copy of each received chunk.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};

/// Scratch buffer size for one read: how much one `poll_read` hands to hyper.
const SCRATCH_BYTES: usize = 16 * 1024;

thread_local! {
    /// The scratch space of every read on this thread (a shard runs on
    /// one): what a read brings is handed to hyper within the same call, so
    /// nothing is kept in it between calls, and one buffer serves every
    /// connection. One per connection was 16 KiB of each idle phone's
    /// connection, most of what it cost.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_BYTES].into_boxed_slice());
}

/// A `futures_lite` stream (glommio `TcpStream`, or a TLS stream over one)
/// seen through hyper's own `Read`/`Write` traits.
#[derive(Debug)]
pub struct GlommioIo<S> {
    /// The wrapped stream.
    inner: S,
}

impl<S> GlommioIo<S> {
    /// Wraps `inner` for hyper.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S: AsyncRead + Unpin> hyper::rt::Read for GlommioIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let inner = &mut self.get_mut().inner;
        // Never read more than hyper has room for: whatever is read must be handed
        // over now, because the scratch buffer is not kept across calls.
        let want = buf.remaining().min(SCRATCH_BYTES);
        if want == 0 {
            return Poll::Ready(Ok(()));
        }
        SCRATCH.with_borrow_mut(|scratch| {
            let scratch = &mut scratch[..want];
            match Pin::new(inner).poll_read(cx, scratch) {
                Poll::Ready(Ok(n)) => {
                    // `n <= want` by the AsyncRead contract; `get` keeps a buggy stream
                    // from turning into a panic here.
                    match scratch.get(..n) {
                        Some(read) => {
                            buf.put_slice(read);
                            Poll::Ready(Ok(()))
                        }
                        None => Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "stream reported more bytes than it was given room for",
                        ))),
                    }
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
    }
}

impl<S: AsyncWrite + Unpin> hyper::rt::Write for GlommioIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // futures-io calls it `close`: for TLS it sends close_notify, for TCP it shuts down.
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

/// hyper executor that runs tasks on the current glommio shard.
///
/// Tasks are detached: they live as long as their connection, not as long as
/// whoever started them. Must be used from inside a glommio executor.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
    F::Output: 'static,
{
    fn execute(&self, fut: F) {
        glommio::spawn_local(fut).detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty, Full};
    use hyper::body::Bytes;
    use hyper::rt::Executor;

    /// The read scratch is the thread's, not the connection's: an idle
    /// phone connection held 16 KiB for it (a page of it resident).
    #[test]
    fn a_wrapped_stream_carries_no_buffer_of_its_own() {
        assert_eq!(
            std::mem::size_of::<GlommioIo<glommio::net::TcpStream>>(),
            std::mem::size_of::<glommio::net::TcpStream>()
        );
    }

    /// One hyper client request against one hyper server over a real glommio TCP pair,
    /// with a body larger than the scratch buffer so reads must take several rounds.
    #[test]
    fn hyper_round_trip_over_glommio_tcp() {
        let big = "x".repeat(3 * SCRATCH_BYTES + 17);
        let expected = big.len();
        let got = glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                LocalExec.execute(async move {
                    let stream = listener.accept().await.unwrap();
                    let service = hyper::service::service_fn(move |_req| {
                        let body = Full::new(Bytes::from(big.clone()));
                        async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(body)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(GlommioIo::new(stream), service)
                        .await;
                });
                let stream = glommio::net::TcpStream::connect(addr).await.unwrap();
                let (mut send, conn) =
                    hyper::client::conn::http1::handshake(GlommioIo::new(stream))
                        .await
                        .unwrap();
                LocalExec.execute(conn);
                let req = hyper::Request::get("/")
                    .header("host", "x")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let res = send.send_request(req).await.unwrap();
                res.into_body().collect().await.unwrap().to_bytes().len()
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(got, expected);
    }
}
