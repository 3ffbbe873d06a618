//! The load generator's socket engine: many TCP connections driven from one
//! thread through one io_uring, with a safe interface.
//!
//! Why not glommio here: the generator must outrun the server it measures,
//! on one core. A glommio task per connection costs a task wake-up, a timer
//! (every read had a deadline) and a submission per request; this engine
//! keeps one receive and at most one send in flight per connection and hands
//! the kernel every operation of a loop turn in one `io_uring_enter`.
//!
//! This is the only module of herd with `unsafe`: the kernel writes into a
//! receive buffer and reads from a send buffer after the submission returns.
//! The invariant that makes it sound is kept here and nowhere else: a buffer
//! with an operation in flight is never handed out, resized, moved or freed.
//! `Conns` owns every buffer and only lends the ones that are idle; when it
//! is dropped with operations still in flight it shuts the sockets down,
//! waits for their completions (bounded), and leaks the buffers of any that
//! never came rather than free memory the kernel may still write.
//!
//! A connection may carry a TLS session (`tls.rs`): the ring then moves its
//! records, requests queued are sealed into records before they are sent,
//! and records received are opened before their replies are lent, so the
//! load loops see plaintext either way.
#![allow(unsafe_code)]

use std::io;
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use io_uring::{opcode, types, IoUring};

use crate::tls::{Opened, Tls};
use crate::wire::InBuf;

/// Submission queue size; the completion queue is four times larger.
const ENTRIES: u32 = 4096;
/// The longest a batched wait holds completions back (see `wait`).
pub const BATCH_WAIT: Duration = Duration::from_micros(50);

/// `IORING_RECVSEND_POLL_FIRST`: a receive is armed right after its
/// requests went out, before any reply can be there, so the kernel should
/// wait for data rather than first try a receive that finds none. Against
/// the bare server at 64 x 16 the server's core went from 89-93 % busy to
/// 93-97 %.
const RECV_POLL_FIRST: u16 = 1;

/// What a finished operation meant for its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// `n` more bytes are in the connection's receive buffer.
    Received(usize),
    /// The peer closed the connection (a receive returned 0).
    Closed,
    /// A receive or send failed with this OS error.
    Failed(i32),
    /// Everything queued so far has been written.
    Sent,
}

/// One connection's socket and buffers.
struct Conn {
    stream: TcpStream,
    inbuf: InBuf,
    /// Bytes being written; `sending` tells whether a send is in flight.
    out: Vec<u8>,
    /// How much of `out` the kernel has taken.
    out_done: usize,
    /// Bytes queued while a send is in flight; written next.
    queued: Vec<u8>,
    sending: bool,
    receiving: bool,
    /// The TLS session, if the connection has one: `inbuf`, `out` and
    /// `queued` then hold records, and the session the plaintext.
    tls: Option<Box<Tls>>,
}

/// Connections driven by one io_uring; index `c` names connection `c`.
pub struct Conns {
    ring: IoUring,
    /// The sockets are registered with the ring (index = connection), so
    /// an operation names its socket without the kernel looking the
    /// descriptor up and counting a reference each time.
    registered: bool,
    /// The `ioprio` of receives: `RECV_POLL_FIRST` where the kernel has it.
    poll_first: u16,
    conns: Vec<Conn>,
    in_flight: usize,
    /// Completions read but not yet handed out (see `wait`).
    ready: Vec<(usize, Event)>,
    /// Completions copied off the ring, reused so a turn allocates nothing.
    done: Vec<(u64, i32)>,
}

fn user_data(c: usize, send: bool) -> u64 {
    ((c as u64) << 1) | u64::from(send)
}

impl Conns {
    /// Takes over `streams`, each with its TLS session where it has one;
    /// each gets a receive buffer of `inbuf` bytes.
    pub fn new(streams: Vec<(TcpStream, Option<Tls>)>, inbuf: usize) -> io::Result<Conns> {
        // Deferred task work: completions are processed only when this
        // thread asks for them, in one batch, instead of interrupting it.
        // Older kernels refuse the flags; plain io_uring then.
        let modern = IoUring::builder()
            .setup_cqsize(ENTRIES * 4)
            .setup_single_issuer()
            .setup_defer_taskrun()
            // Flags deferred work in the ring, so a poll (`submit`) knows
            // to enter the kernel and run it.
            .setup_taskrun_flag()
            .build(ENTRIES);
        // A kernel with deferred task work (6.1+) also knows
        // `RECV_POLL_FIRST` (5.19+); an older one could refuse the flag.
        let poll_first = if modern.is_ok() { RECV_POLL_FIRST } else { 0 };
        let ring =
            modern.or_else(|_| IoUring::builder().setup_cqsize(ENTRIES * 4).build(ENTRIES))?;
        let fds: Vec<i32> = streams.iter().map(|(s, _)| s.as_raw_fd()).collect();
        // Refused on kernels before 5.1 or past the descriptor limit: the
        // descriptors are then named directly, as before.
        let registered = ring.submitter().register_files(&fds).is_ok();
        let conns = streams
            .into_iter()
            .map(|(stream, tls)| Conn {
                stream,
                inbuf: InBuf::new(inbuf),
                out: Vec::with_capacity(4096),
                out_done: 0,
                queued: Vec::with_capacity(4096),
                sending: false,
                receiving: false,
                tls: tls.map(Box::new),
            })
            .collect();
        Ok(Conns {
            ring,
            registered,
            poll_first,
            conns,
            in_flight: 0,
            ready: Vec::with_capacity(1024),
            done: Vec::with_capacity(1024),
        })
    }

    /// The bytes to write next on connection `c` (plaintext with TLS);
    /// `flush` sends them.
    pub fn queue(&mut self, c: usize) -> &mut Vec<u8> {
        let conn = &mut self.conns[c];
        match &mut conn.tls {
            Some(tls) => tls.plain_out(),
            None => &mut conn.queued,
        }
    }

    /// Received bytes of connection `c` (replies opened, with TLS), unless
    /// a receive is in flight.
    pub fn received(&mut self, c: usize) -> Option<&mut InBuf> {
        let conn = &mut self.conns[c];
        if conn.receiving {
            return None;
        }
        Some(match &mut conn.tls {
            Some(tls) => tls.plain_in(),
            None => &mut conn.inbuf,
        })
    }

    /// True while connection `c` has bytes queued or being written.
    pub fn writing(&self, c: usize) -> bool {
        let conn = &self.conns[c];
        conn.sending
            || !conn.queued.is_empty()
            || conn.tls.as_ref().is_some_and(|tls| tls.has_plain_out())
    }

    /// Starts writing what is queued on `c`, unless a send is in flight
    /// (its completion starts the next one). With TLS, what is queued is
    /// sealed into records first, even while a send is in flight.
    pub fn flush(&mut self, c: usize) -> io::Result<()> {
        let conn = &mut self.conns[c];
        if let Some(tls) = &mut conn.tls {
            tls.seal(&mut conn.queued)?;
        }
        if conn.sending || conn.queued.is_empty() {
            return Ok(());
        }
        std::mem::swap(&mut conn.out, &mut conn.queued);
        conn.queued.clear();
        conn.out_done = 0;
        self.push_send(c)
    }

    /// Starts a receive on `c` unless one is in flight. `Err` with
    /// `InvalidData` when a single reply outgrew the receive buffer's limit.
    pub fn arm(&mut self, c: usize) -> io::Result<()> {
        let conn = &mut self.conns[c];
        if conn.receiving {
            return Ok(());
        }
        let spare = conn.inbuf.spare().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "reply too large to frame")
        })?;
        let len = u32::try_from(spare.len()).unwrap_or(u32::MAX);
        let sqe = if self.registered {
            opcode::Recv::new(types::Fixed(c as u32), spare.as_mut_ptr(), len)
                .ioprio(self.poll_first)
                .build()
        } else {
            opcode::Recv::new(types::Fd(conn.stream.as_raw_fd()), spare.as_mut_ptr(), len)
                .ioprio(self.poll_first)
                .build()
        }
        .user_data(user_data(c, false));
        conn.receiving = true;
        // SAFETY: the spare room of `inbuf` stays allocated and untouched
        // until this receive completes: `receiving` keeps `received` from
        // lending it and `arm` from reusing it, and `Drop` never frees it
        // while the receive may still be in flight.
        unsafe { self.push(&sqe) }
    }

    fn push_send(&mut self, c: usize) -> io::Result<()> {
        let conn = &mut self.conns[c];
        let rest = &conn.out[conn.out_done..];
        let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
        let sqe = if self.registered {
            opcode::Send::new(types::Fixed(c as u32), rest.as_ptr(), len).build()
        } else {
            opcode::Send::new(types::Fd(conn.stream.as_raw_fd()), rest.as_ptr(), len).build()
        }
        .user_data(user_data(c, true));
        conn.sending = true;
        // SAFETY: `out` is neither changed nor freed while `sending`: new
        // bytes go to `queued`, `flush` swaps only when no send is in
        // flight, and `Drop` never frees it while the send may be in flight.
        unsafe { self.push(&sqe) }
    }

    /// # Safety
    /// The buffer `sqe` points at must stay valid until its completion.
    unsafe fn push(&mut self, sqe: &io_uring::squeue::Entry) -> io::Result<()> {
        // SAFETY: passed on from the caller.
        while unsafe { self.ring.submission().push(sqe) }.is_err() {
            // Queue full: hand the kernel what is there and retry.
            self.ring.submit()?;
        }
        self.in_flight += 1;
        Ok(())
    }

    /// Submits everything queued and waits until an operation completes or
    /// `timeout` passes (`Duration::ZERO`: do not wait); the connections
    /// that had events are appended to `events`, once per event.
    ///
    /// With `batch` above 1, and where the kernel can (6.12 and later), it
    /// waits up to `BATCH_WAIT` longer for `batch` completions: one turn
    /// then refills more requests per send, and each send wakes the server
    /// once for more requests. A reply is stamped when the turn sees it, so
    /// this can add at most `BATCH_WAIT` to a latency; only closed loops,
    /// which measure throughput, ask for it.
    pub fn wait(
        &mut self,
        batch: usize,
        timeout: Duration,
        events: &mut Vec<(usize, Event)>,
    ) -> io::Result<()> {
        if timeout.is_zero() {
            // A poll: no timer, no sleep (a zero timeout still schedules,
            // and lets other work on this CPU run first).
            self.ring.submit()?;
            self.reap();
            events.append(&mut self.ready);
            return Ok(());
        }
        let ts = types::Timespec::from(timeout);
        let mut args = types::SubmitArgs::new().timespec(&ts);
        let mut want = 1;
        if batch > 1 && self.ring.params().is_feature_min_timeout() {
            want = batch;
            args = args.min_wait_usec(BATCH_WAIT.as_micros() as u32);
        }
        match self.ring.submitter().submit_with_args(want, &args) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR)) => {}
            // The ring is busy flushing overflowed completions: read them.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(e),
        }
        self.reap();
        events.append(&mut self.ready);
        Ok(())
    }

    /// Reads every completion and turns it into an event.
    fn reap(&mut self) {
        let mut done = std::mem::take(&mut self.done);
        done.extend(
            self.ring
                .completion()
                .map(|cqe| (cqe.user_data(), cqe.result())),
        );
        for &(data, result) in &done {
            self.in_flight -= 1;
            let c = (data >> 1) as usize;
            let send = data & 1 == 1;
            let Some(conn) = self.conns.get_mut(c) else {
                continue;
            };
            if !send {
                conn.receiving = false;
                let event = match result {
                    0 => Event::Closed,
                    n if n < 0 => Event::Failed(-n),
                    n => {
                        conn.inbuf.filled(n as usize);
                        match conn.tls.as_mut().map(|tls| tls.open(&mut conn.inbuf)) {
                            None | Some(Ok(Opened::Open)) => Event::Received(n as usize),
                            Some(Ok(Opened::Closed)) => Event::Closed,
                            // Records that do not open: the session is over.
                            Some(Err(_)) => Event::Failed(libc::EPROTO),
                        }
                    }
                };
                self.ready.push((c, event));
                continue;
            }
            conn.sending = false;
            if result < 0 {
                self.ready.push((c, Event::Failed(-result)));
                continue;
            }
            conn.out_done += result as usize;
            let again = if conn.out_done < conn.out.len() {
                // A short write: send the rest.
                self.push_send(c)
            } else if !conn.queued.is_empty() {
                self.flush(c)
            } else {
                self.ready.push((c, Event::Sent));
                Ok(())
            };
            if let Err(e) = again {
                self.ready
                    .push((c, Event::Failed(e.raw_os_error().unwrap_or(libc::EIO))));
            }
        }
        done.clear();
        self.done = done;
    }
}

impl Drop for Conns {
    fn drop(&mut self) {
        if self.in_flight == 0 {
            return;
        }
        // Shut every socket down so pending receives and sends complete.
        for conn in &self.conns {
            let _ = conn.stream.shutdown(Shutdown::Both);
        }
        let mut events = Vec::new();
        for _ in 0..100 {
            if self.in_flight == 0 {
                return;
            }
            if self
                .wait(1, Duration::from_millis(10), &mut events)
                .is_err()
            {
                break;
            }
            events.clear();
        }
        // Some operation never completed: the kernel may still use its
        // buffer, so the buffers must outlive this value.
        std::mem::forget(std::mem::take(&mut self.conns));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    fn wait_for(conns: &mut Conns, want: impl Fn(&Event) -> bool) -> Event {
        let mut events = Vec::new();
        for _ in 0..500 {
            conns
                .wait(1, Duration::from_millis(10), &mut events)
                .unwrap();
            if let Some(&(_, e)) = events.iter().find(|(_, e)| want(e)) {
                return e;
            }
            events.clear();
        }
        panic!("no event in time");
    }

    #[test]
    fn bytes_queued_are_sent_and_bytes_received_are_lent_back() {
        let (client, mut server) = pair();
        let mut conns = Conns::new(vec![(client, None)], 1024).unwrap();
        conns.queue(0).extend_from_slice(b"hello\n");
        conns.flush(0).unwrap();
        conns.arm(0).unwrap();
        // A receive is in flight: its buffer is not lent.
        assert!(conns.received(0).is_none());
        assert_eq!(wait_for(&mut conns, |e| *e == Event::Sent), Event::Sent);
        let mut got = [0u8; 6];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello\n");
        server.write_all(b"AT x\n").unwrap();
        let e = wait_for(&mut conns, |e| matches!(e, Event::Received(_)));
        assert_eq!(e, Event::Received(5));
        assert_eq!(conns.received(0).unwrap().bytes(), b"AT x\n");
        drop(server);
        conns.arm(0).unwrap();
        assert_eq!(wait_for(&mut conns, |e| *e == Event::Closed), Event::Closed);
    }

    #[test]
    fn dropping_with_a_receive_in_flight_completes_it_first() {
        let (client, _server) = pair();
        let mut conns = Conns::new(vec![(client, None)], 1024).unwrap();
        conns.arm(0).unwrap();
        conns.wait(1, Duration::ZERO, &mut Vec::new()).unwrap();
        assert_eq!(conns.in_flight, 1);
        drop(conns);
    }
}
