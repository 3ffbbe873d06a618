//! Socket glue shared by the load generator and the propagation probe: a
//! read buffer that frames replies in place, and deadlines on any future,
//! so no read or write of the bench can wait forever.

use std::future::Future;
use std::time::Instant;

use futures_lite::future;

/// A reply larger than this cannot be framed: the server is broken.
const MAX_BUFFERED: usize = 4 << 20;

/// Runs `fut` until `deadline`; `None` if the deadline came first.
///
/// Dropping a glommio socket read or write is safe: the readiness poll stays
/// with the socket and no received byte is lost.
pub async fn until<T>(deadline: Instant, fut: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
        None
    })
    .await
}

/// Sleeps until `at` (returns at once if it has passed).
pub async fn sleep_until(at: Instant) {
    let left = at.saturating_duration_since(Instant::now());
    if !left.is_zero() {
        glommio::timer::sleep(left).await;
    }
}

/// Bytes read but not yet framed into replies.
pub struct InBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl InBuf {
    /// An empty buffer that first reads up to `capacity` bytes at a time.
    pub fn new(capacity: usize) -> InBuf {
        InBuf {
            data: vec![0; capacity.max(1024)],
            start: 0,
            end: 0,
        }
    }

    /// Unconsumed bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// Marks the first `n` unconsumed bytes as consumed.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Room to read into; `None` when a single reply would exceed
    /// `MAX_BUFFERED` bytes.
    pub fn spare(&mut self) -> Option<&mut [u8]> {
        if self.end == self.data.len() && self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.data.len() {
            if self.data.len() >= MAX_BUFFERED {
                return None;
            }
            self.data.resize(self.data.len() * 2, 0);
        }
        Some(&mut self.data[self.end..])
    }

    /// Records that `n` bytes were read into the slice `spare` gave.
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.data.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_keeps_unconsumed_bytes_across_compaction_and_growth() {
        let mut b = InBuf::new(1024);
        let spare = b.spare().unwrap();
        spare[..1024].fill(b'a');
        b.filled(1024);
        b.consume(1000);
        assert_eq!(b.bytes().len(), 24);
        let spare = b.spare().unwrap();
        assert_eq!(spare.len(), 1000);
        spare.fill(b'b');
        b.filled(1000);
        assert_eq!(b.bytes().len(), 1024);
        assert_eq!(b.spare().unwrap().len(), 1024);
        assert_eq!(&b.bytes()[..24], &[b'a'; 24][..]);
        b.consume(5000);
        assert!(b.bytes().is_empty());
    }

    #[test]
    fn buffer_refuses_to_grow_without_bound() {
        let mut b = InBuf::new(1024);
        while let Some(s) = b.spare() {
            let n = s.len();
            b.filled(n);
        }
        assert_eq!(b.bytes().len(), MAX_BUFFERED);
    }
}
