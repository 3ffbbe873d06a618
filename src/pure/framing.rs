//! Line framing: turns the bytes read from a socket into protocol lines.
//!
//! Owns one connection's read buffer and the line-length limit. It never
//! buffers more than the limit plus one read: an over-long line is reported
//! once (with its first bytes) and the rest of it is skipped up to the next
//! `\n`. The buffer is allocated by the first read and can be given back
//! whenever it holds no part of a line ([`LineBuffer::release`]), so an
//! idle connection holds none. It does no I/O: the connection reads into
//! [`LineBuffer::spare`].

/// Bytes asked of the socket per read, on top of room for one whole line.
const READ_CHUNK: usize = 4096;
/// The buffer a first read (or the first after a release) allocates:
/// enough for typical lines.
pub const INITIAL: usize = 512;
/// Fewest free bytes offered to a read.
const MIN_READ: usize = 256;

/// One framed line, borrowed from the buffer until the next call.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete line without its `\n` (and without a `\r` just before it).
    Line(&'a [u8]),
    /// A line longer than the limit: its first `limit` bytes.
    TooLong(&'a [u8]),
}

/// A bounded read buffer that yields complete lines.
///
/// Kept small: it is in every client connection's task (a boxed slice, not
/// a `Vec`, and 32-bit cursors: a buffer never holds more than one line
/// plus one read, and a line is at most a few MiB).
#[derive(Debug)]
pub struct LineBuffer {
    buf: Box<[u8]>,
    start: u32,
    end: u32,
    max_line: u32,
    /// Inside an over-long line that was already reported: drop bytes up to `\n`.
    discarding: bool,
}

/// The longest line limit a buffer takes: its capacity, a line and a read,
/// must fit its 32-bit cursors.
const MAX_LIMIT: usize = (u32::MAX / 2) as usize;

/// `n` as a cursor; `n` never passes the buffer's capacity, which fits.
fn cursor(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A line limit as kept: held to [`MAX_LIMIT`].
fn limit(max_line: usize) -> u32 {
    cursor(max_line.min(MAX_LIMIT))
}

impl LineBuffer {
    /// A buffer for lines of at most `max_line` bytes (line ending
    /// excluded; at most 2 GiB); it allocates nothing until
    /// [`LineBuffer::spare`].
    pub fn new(max_line: usize) -> Self {
        LineBuffer {
            buf: Box::default(),
            start: 0,
            end: 0,
            max_line: limit(max_line),
            discarding: false,
        }
    }

    /// Raises the line-length limit (never lowers it): a connection that
    /// turned out to be a link takes longer lines than a client.
    pub fn raise_limit(&mut self, max_line: usize) {
        self.max_line = self.max_line.max(limit(max_line));
    }

    fn start(&self) -> usize {
        self.start as usize
    }

    fn end(&self) -> usize {
        self.end as usize
    }

    fn max_line(&self) -> usize {
        self.max_line as usize
    }

    /// Room for a whole line with "\r\n" and one more read, so the search
    /// for `\n` always sees enough bytes to judge the line's length.
    fn max_capacity(max_line: usize) -> usize {
        max_line + 2 + READ_CHUNK
    }

    /// Free space at the end of the buffer to read into; never empty.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.buf.len() - self.end() < MIN_READ {
            // Pending bytes are less than one line (else they would have been
            // framed or reported), so moving them to the front frees room.
            self.buf.copy_within(self.start()..self.end(), 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end() < MIN_READ {
            self.grow();
        }
        let end = self.end();
        &mut self.buf[end..]
    }

    /// Gives the buffer's memory back when it holds no part of a line (the
    /// next [`LineBuffer::spare`] allocates again); says whether it did. A
    /// line being skipped as over-long stays skipped.
    pub fn release(&mut self) -> bool {
        if self.start != self.end || self.buf.is_empty() {
            return false;
        }
        self.buf = Box::default();
        self.start = 0;
        self.end = 0;
        true
    }

    /// Whether the buffer holds no memory now (new, or released).
    pub fn is_released(&self) -> bool {
        self.buf.is_empty()
    }

    /// Records that `n` bytes were read into [`LineBuffer::spare`].
    pub fn filled(&mut self, n: usize) {
        let offered = self.buf.len() - self.end();
        self.end = cursor((self.end() + n).min(self.buf.len()));
        if n == offered {
            // The read filled all it was offered: more is probably waiting,
            // so offer more next time (up to the cap).
            self.grow();
        }
    }

    /// Doubles the buffer (from nothing: [`INITIAL`]), up to one line plus
    /// one read.
    fn grow(&mut self) {
        let cap = Self::max_capacity(self.max_line());
        if self.buf.len() < cap {
            let new_len = (self.buf.len() * 2).clamp(INITIAL.min(cap), cap);
            let mut grown = std::mem::take(&mut self.buf).into_vec();
            grown.resize(new_len, 0);
            self.buf = grown.into_boxed_slice();
        }
    }

    /// Bytes received but not framed yet.
    pub fn pending(&self) -> usize {
        self.end() - self.start()
    }

    /// The complete lines received and not framed yet (none while an
    /// over-long line is being skipped), without their `\n`: what the next
    /// calls to [`LineBuffer::next_frame`] will frame, for a look ahead.
    pub fn lines_ahead(&self) -> impl Iterator<Item = &[u8]> {
        let data = if self.discarding {
            &[][..]
        } else {
            &self.buf[self.start()..self.end()]
        };
        let mut from = 0;
        memchr::memchr_iter(b'\n', data).map(move |end| {
            let line = &data[from..end];
            from = end + 1;
            line
        })
    }

    /// The next complete line, if the buffer holds one.
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        let max_line = self.max_line();
        loop {
            let (start, end) = (self.start(), self.end());
            let data = &self.buf[start..end];
            if self.discarding {
                match memchr(data) {
                    Some(pos) => {
                        self.start = cursor(start + pos + 1);
                        self.discarding = false;
                        continue;
                    }
                    None => {
                        self.start = self.end;
                        return None;
                    }
                }
            }
            // A valid line is at most max_line bytes, plus "\r\n".
            let window = data.len().min(max_line + 2);
            return match memchr(&data[..window]) {
                Some(pos) => {
                    self.start = cursor(start + pos + 1);
                    Some(self.frame(start, pos))
                }
                None if data.len() >= max_line + 2 => {
                    // No `\n` in the window: too long. Skip what was searched;
                    // the rest is searched for the line's end from here on.
                    self.start = cursor(start + window);
                    self.discarding = true;
                    Some(Frame::TooLong(&self.buf[start..start + max_line]))
                }
                None => None,
            };
        }
    }

    /// At end of input: the last line if it had no `\n`.
    pub fn finish(&mut self) -> Option<Frame<'_>> {
        if self.discarding || self.start == self.end {
            self.start = self.end;
            return None;
        }
        let line_start = self.start();
        let len = self.pending();
        self.start = self.end;
        Some(self.frame(line_start, len))
    }

    /// Frames `len` bytes at `at` (the line ending not included).
    fn frame(&self, at: usize, len: usize) -> Frame<'_> {
        let mut line = &self.buf[at..at + len];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        if line.len() > self.max_line() {
            Frame::TooLong(&line[..self.max_line()])
        } else {
            Frame::Line(line)
        }
    }
}

fn memchr(data: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, PartialEq, Eq, Clone)]
    enum Owned {
        Line(Vec<u8>),
        TooLong(Vec<u8>),
    }

    fn own(frame: Frame<'_>) -> Owned {
        match frame {
            Frame::Line(l) => Owned::Line(l.to_vec()),
            Frame::TooLong(l) => Owned::TooLong(l.to_vec()),
        }
    }

    /// Feeds `input` in chunks of the given sizes (cycled), then ends input.
    fn frames(max_line: usize, input: &[u8], chunks: &[usize]) -> Vec<Owned> {
        let mut lb = LineBuffer::new(max_line);
        let mut out = Vec::new();
        let mut rest = input;
        let mut i = 0;
        while !rest.is_empty() {
            let want = chunks[i % chunks.len()].max(1);
            i += 1;
            let spare = lb.spare();
            let n = want.min(spare.len()).min(rest.len());
            spare[..n].copy_from_slice(&rest[..n]);
            lb.filled(n);
            rest = &rest[n..];
            while let Some(f) = lb.next_frame() {
                out.push(own(f));
            }
        }
        if let Some(f) = lb.finish() {
            out.push(own(f));
        }
        out
    }

    #[test]
    fn lines_end_at_newline_and_carriage_return_is_stripped() {
        let got = frames(64, b"IAMAT a\r\nWHATSAT b\n\nx\r\r\n", &[1000]);
        assert_eq!(
            got,
            vec![
                Owned::Line(b"IAMAT a".to_vec()),
                Owned::Line(b"WHATSAT b".to_vec()),
                Owned::Line(b"".to_vec()),
                Owned::Line(b"x\r".to_vec()),
            ]
        );
    }

    #[test]
    fn last_line_without_newline_is_framed_at_end_of_input() {
        assert_eq!(
            frames(64, b"a\nlast", &[3]),
            vec![Owned::Line(b"a".to_vec()), Owned::Line(b"last".to_vec())]
        );
    }

    #[test]
    fn over_long_line_is_reported_once_and_reading_resumes_after_it() {
        let mut input = vec![b'x'; 100];
        input.extend_from_slice(b"\nok\n");
        let got = frames(10, &input, &[7]);
        assert_eq!(
            got,
            vec![Owned::TooLong(vec![b'x'; 10]), Owned::Line(b"ok".to_vec())]
        );
    }

    #[test]
    fn line_of_exactly_the_limit_is_valid_with_or_without_carriage_return() {
        let mut input = vec![b'y'; 10];
        input.extend_from_slice(b"\r\n");
        input.extend_from_slice(&[b'z'; 10]);
        input.push(b'\n');
        input.extend_from_slice(&[b'w'; 11]);
        input.push(b'\n');
        assert_eq!(
            frames(10, &input, &[1]),
            vec![
                Owned::Line(vec![b'y'; 10]),
                Owned::Line(vec![b'z'; 10]),
                Owned::TooLong(vec![b'w'; 10]),
            ]
        );
    }

    #[test]
    fn over_long_last_line_without_newline_is_reported() {
        assert_eq!(
            frames(4, b"abcdef", &[100]),
            vec![Owned::TooLong(b"abcd".to_vec())]
        );
    }

    #[test]
    fn the_lines_ahead_are_what_the_next_frames_hold() {
        let ahead = |lb: &LineBuffer| lb.lines_ahead().map(<[u8]>::to_vec).collect::<Vec<_>>();
        let mut lb = LineBuffer::new(8);
        let input = b"one\ntwo\n\nthr";
        lb.spare()[..input.len()].copy_from_slice(input);
        lb.filled(input.len());
        assert_eq!(ahead(&lb), [&b"one"[..], b"two", b""]);
        assert_eq!(lb.next_frame(), Some(Frame::Line(b"one")));
        assert_eq!(ahead(&lb), [&b"two"[..], b""]);
        // Inside an over-long line there is nothing worth a look ahead.
        let long = b"0123456789abcdef";
        lb.spare()[..long.len()].copy_from_slice(long);
        lb.filled(long.len());
        assert_eq!(lb.next_frame(), Some(Frame::Line(b"two")));
        assert_eq!(lb.next_frame(), Some(Frame::Line(b"")));
        assert!(matches!(lb.next_frame(), Some(Frame::TooLong(_))));
        assert!(ahead(&lb).is_empty());
    }

    #[test]
    fn buffer_starts_small_and_grows_only_while_reads_fill_it() {
        let mut lb = LineBuffer::new(4096);
        assert!(lb.is_released());
        assert_eq!(lb.spare().len(), INITIAL);
        // Short lines that never fill the buffer keep it small.
        for _ in 0..100 {
            let spare = lb.spare();
            spare[..6].copy_from_slice(b"hello\n");
            lb.filled(6);
            while lb.next_frame().is_some() {}
        }
        assert_eq!(lb.buf.len(), INITIAL);
        // A read that fills what it was offered makes room for more.
        let n = lb.spare().len();
        lb.filled(n);
        assert!(lb.buf.len() > INITIAL);
    }

    #[test]
    fn buffer_never_grows_past_one_line_and_one_read() {
        let mut lb = LineBuffer::new(16);
        let cap = LineBuffer::max_capacity(16);
        for _ in 0..10_000 {
            let spare = lb.spare();
            assert!(!spare.is_empty());
            let n = spare.len();
            spare.fill(b'q');
            lb.filled(n);
            while lb.next_frame().is_some() {}
        }
        assert_eq!(lb.buf.len(), cap);
    }

    #[test]
    fn a_new_buffer_holds_no_memory_until_the_first_read() {
        let lb = LineBuffer::new(4096);
        assert!(lb.is_released());
        assert_eq!(lb.buf.len(), 0);
    }

    #[test]
    fn a_buffer_is_released_only_when_it_holds_no_part_of_a_line() {
        let mut lb = LineBuffer::new(64);
        let input = b"one\ntw";
        lb.spare()[..input.len()].copy_from_slice(input);
        lb.filled(input.len());
        assert_eq!(lb.next_frame(), Some(Frame::Line(b"one")));
        assert_eq!(lb.next_frame(), None);
        // "tw" waits for the rest of its line: the buffer stays.
        assert!(!lb.release());
        assert!(!lb.is_released());
        lb.spare()[..2].copy_from_slice(b"o\n");
        lb.filled(2);
        assert_eq!(lb.next_frame(), Some(Frame::Line(b"two")));
        assert!(lb.release());
        assert!(lb.is_released());
        assert_eq!(lb.buf.len(), 0);
        // Released again: nothing to give back.
        assert!(!lb.release());
        // The next read allocates the first size again.
        assert_eq!(lb.spare().len(), INITIAL);
    }

    #[test]
    fn an_over_long_line_is_still_skipped_after_a_release() {
        let mut lb = LineBuffer::new(4);
        let input = b"abcdefgh";
        lb.spare()[..input.len()].copy_from_slice(input);
        lb.filled(input.len());
        assert_eq!(lb.next_frame(), Some(Frame::TooLong(b"abcd")));
        assert_eq!(lb.next_frame(), None);
        assert!(lb.release());
        lb.spare()[..6].copy_from_slice(b"ijk\nok");
        lb.filled(6);
        assert_eq!(lb.next_frame(), None);
        assert_eq!(lb.finish(), Some(Frame::Line(b"ok")));
    }

    #[test]
    fn a_limit_past_the_cursors_range_is_held_to_it() {
        // The buffer's cursors are 32 bits: a larger limit reads as the
        // largest they take, and the buffer frames as with any other.
        let mut lb = LineBuffer::new(usize::MAX);
        assert_eq!(lb.max_line(), MAX_LIMIT);
        lb.raise_limit(usize::MAX);
        assert_eq!(lb.max_line(), MAX_LIMIT);
        let input = b"IAMAT a +1+2 3\nrest";
        lb.spare()[..input.len()].copy_from_slice(input);
        lb.filled(input.len());
        assert_eq!(lb.next_frame(), Some(Frame::Line(b"IAMAT a +1+2 3")));
        assert_eq!(lb.next_frame(), None);
        assert_eq!(lb.finish(), Some(Frame::Line(b"rest")));
    }

    proptest! {
        #[test]
        fn framing_does_not_depend_on_releases_between_reads(
            input in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), any::<u8>()], 0..400),
            chunks in proptest::collection::vec(1usize..50, 1..10),
            max_line in 1usize..40,
        ) {
            let whole = frames(max_line, &input, &[input.len().max(1)]);
            // The same reads, with a release tried after each.
            let mut lb = LineBuffer::new(max_line);
            let mut got = Vec::new();
            let mut rest = &input[..];
            let mut i = 0;
            while !rest.is_empty() {
                let spare = lb.spare();
                let n = chunks[i % chunks.len()].min(spare.len()).min(rest.len());
                i += 1;
                spare[..n].copy_from_slice(&rest[..n]);
                lb.filled(n);
                rest = &rest[n..];
                while let Some(f) = lb.next_frame() {
                    got.push(own(f));
                }
                lb.release();
            }
            if let Some(f) = lb.finish() {
                got.push(own(f));
            }
            prop_assert_eq!(&whole, &got);
        }

        #[test]
        fn framing_does_not_depend_on_how_input_is_split(
            input in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), any::<u8>()], 0..400),
            chunks in proptest::collection::vec(1usize..50, 1..10),
            max_line in 1usize..40,
        ) {
            let whole = frames(max_line, &input, &[input.len().max(1)]);
            let split = frames(max_line, &input, &chunks);
            prop_assert_eq!(&whole, &split);
            let bytewise = frames(max_line, &input, &[1]);
            prop_assert_eq!(&whole, &bytewise);
        }

        #[test]
        fn every_framed_line_respects_the_limit(
            input in proptest::collection::vec(any::<u8>(), 0..400),
            max_line in 1usize..40,
        ) {
            for f in frames(max_line, &input, &[13]) {
                match f {
                    Owned::Line(l) => {
                        prop_assert!(l.len() <= max_line);
                        prop_assert!(!l.contains(&b'\n'));
                    }
                    Owned::TooLong(l) => prop_assert_eq!(l.len(), max_line),
                }
            }
        }
    }
}
