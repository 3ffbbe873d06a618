//! The journal's file format: a header, then one entry per stored record,
//! `[u32 LE payload length][u32 LE crc32 of the payload][payload]`, the
//! payload being the record's AT line.
//!
//! Owns encoding and decoding, and what counts as the valid part of a file:
//! decoding stops at the first entry that is cut short, fails its checksum
//! or claims an impossible length, and at the zero padding that direct I/O
//! leaves after the last entry; it says where and why, so the shell can log
//! the cut and carry on. Pure: bytes in, lines out; reading and writing
//! files is `shard/journal.rs`'s.

/// The first bytes of every journal file.
pub(crate) const MAGIC: [u8; 8] = *b"HERDJRNL";
/// The format this code writes and reads.
pub(crate) const VERSION: u32 = 1;
/// Magic, version, and four reserved zero bytes.
pub(crate) const HEADER_LEN: usize = 16;
/// Length and checksum before each payload.
pub(crate) const ENTRY_HEADER_LEN: usize = 8;
/// No AT line is this long (lines are capped at 1 MiB plus a server name
/// and a skew): a longer length is corruption, and refusing it keeps a
/// flipped length byte from making the reader wait for gigabytes.
pub(crate) const MAX_PAYLOAD: usize = 2 << 20;

/// Appends a file header to `out`.
pub(crate) fn write_header(out: &mut Vec<u8>) {
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
}

/// Appends one entry holding `payload` to `out`. The payload must not be
/// empty (a zero length is the padding) nor longer than [`MAX_PAYLOAD`];
/// AT lines never are.
pub(crate) fn write_entry(out: &mut Vec<u8>, payload: &[u8]) {
    debug_assert!(!payload.is_empty() && payload.len() <= MAX_PAYLOAD);
    // Both bounds hold, so the length fits a u32.
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Why decoding stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The bytes ended just after an entry: nothing was cut.
    End,
    /// Zero bytes to the end: the padding after the last entry, nothing cut.
    Padding,
    /// The file is shorter than a header, or does not start with one.
    BadHeader,
    /// A header of a version this code does not read.
    UnknownVersion(u32),
    /// An entry starts but the bytes end inside it: a torn last write.
    Truncated,
    /// An entry's checksum does not match its payload.
    BadChecksum,
    /// An entry claims an empty payload (with data after it) or one longer
    /// than any AT line.
    BadLength(u32),
}

impl Stop {
    /// Whether stopping here cut something off (the rest of the file is
    /// not what was written).
    pub(crate) fn cut(self) -> bool {
        !matches!(self, Stop::End | Stop::Padding)
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::End => f.write_str("end of file"),
            Stop::Padding => f.write_str("end of the entries (zero padding)"),
            Stop::BadHeader => f.write_str("no journal header"),
            Stop::UnknownVersion(v) => write!(f, "journal format version {v} is not known"),
            Stop::Truncated => f.write_str("an entry cut short (a torn write)"),
            Stop::BadChecksum => f.write_str("an entry whose checksum does not match"),
            Stop::BadLength(n) => write!(f, "an entry with an impossible length {n}"),
        }
    }
}

/// The entries of a whole journal file, in order; see [`Decoder::stop`]
/// and [`Decoder::valid_end`] once it returns `None`.
pub(crate) struct Decoder<'a> {
    bytes: &'a [u8],
    at: usize,
    stop: Option<Stop>,
}

impl<'a> Decoder<'a> {
    /// A decoder over the bytes of one file, header included.
    pub(crate) fn new(bytes: &'a [u8]) -> Decoder<'a> {
        let mut decoder = Decoder {
            bytes,
            at: 0,
            stop: None,
        };
        match bytes.get(..HEADER_LEN) {
            Some(header) if header[..8] == MAGIC => {
                let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
                if version == VERSION {
                    decoder.at = HEADER_LEN;
                } else {
                    decoder.stop = Some(Stop::UnknownVersion(version));
                }
            }
            _ => decoder.stop = Some(Stop::BadHeader),
        }
        decoder
    }

    /// Why decoding stopped, once it has (`None` while entries remain).
    pub(crate) fn stop(&self) -> Option<Stop> {
        self.stop
    }

    /// The offset just past the last whole, valid entry (the header's end
    /// before any, 0 without a header): where appending may resume.
    pub(crate) fn valid_end(&self) -> usize {
        self.at
    }

    fn stopped(&mut self, why: Stop) -> Option<&'a [u8]> {
        self.stop = Some(why);
        None
    }
}

impl<'a> Iterator for Decoder<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.stop.is_some() {
            return None;
        }
        let rest = &self.bytes[self.at..];
        if rest.is_empty() {
            return self.stopped(Stop::End);
        }
        let Some(head) = rest.get(..ENTRY_HEADER_LEN) else {
            if rest.iter().all(|&b| b == 0) {
                return self.stopped(Stop::Padding);
            }
            return self.stopped(Stop::Truncated);
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len == 0 {
            // Direct I/O pads the last block with zeros: zeros to the end
            // are that padding; anything else after a zero length is damage.
            if rest.iter().all(|&b| b == 0) {
                return self.stopped(Stop::Padding);
            }
            return self.stopped(Stop::BadLength(0));
        }
        let n = len as usize;
        if n > MAX_PAYLOAD {
            return self.stopped(Stop::BadLength(len));
        }
        let Some(payload) = rest.get(ENTRY_HEADER_LEN..ENTRY_HEADER_LEN + n) else {
            return self.stopped(Stop::Truncated);
        };
        if crc32fast::hash(payload) != crc {
            return self.stopped(Stop::BadChecksum);
        }
        self.at += ENTRY_HEADER_LEN + n;
        Some(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file_of(lines: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out);
        for line in lines {
            write_entry(&mut out, line);
        }
        out
    }

    fn decoded(bytes: &[u8]) -> (Vec<Vec<u8>>, Decoder<'_>) {
        let mut decoder = Decoder::new(bytes);
        let lines = decoder.by_ref().map(<[u8]>::to_vec).collect();
        (lines, decoder)
    }

    fn lines() -> impl Strategy<Value = Vec<Vec<u8>>> {
        prop::collection::vec(prop::collection::vec(any::<u8>(), 1..40), 0..8)
    }

    #[test]
    fn a_whole_file_decodes_to_what_was_written_and_ends_cleanly() {
        let written = vec![
            b"AT a +0.1 x +1+2 3".to_vec(),
            b"AT b -0.2 y +3+4 5".to_vec(),
        ];
        let bytes = file_of(&written);
        let (lines, decoder) = decoded(&bytes);
        assert_eq!(lines, written);
        assert_eq!(decoder.stop(), Some(Stop::End));
        assert_eq!(decoder.valid_end(), bytes.len());
    }

    #[test]
    fn zero_padding_after_the_entries_is_the_end_not_a_cut() {
        let written = vec![b"AT a +0.1 x +1+2 3".to_vec()];
        let mut bytes = file_of(&written);
        let end = bytes.len();
        bytes.resize(4096, 0);
        let (lines, decoder) = decoded(&bytes);
        assert_eq!(lines, written);
        assert_eq!(decoder.stop(), Some(Stop::Padding));
        assert!(!Stop::Padding.cut());
        assert_eq!(decoder.valid_end(), end);
    }

    #[test]
    fn a_file_without_a_header_or_of_another_version_yields_nothing() {
        assert_eq!(decoded(b"").1.stop(), Some(Stop::BadHeader));
        assert_eq!(decoded(b"NOTAJOURNALFILE!").1.stop(), Some(Stop::BadHeader));
        let mut bytes = file_of(&[b"x".to_vec()]);
        bytes[8] = 9;
        let (lines, decoder) = decoded(&bytes);
        assert!(lines.is_empty());
        assert_eq!(decoder.stop(), Some(Stop::UnknownVersion(9)));
        assert_eq!(decoder.valid_end(), 0);
    }

    #[test]
    fn a_huge_length_is_refused_without_waiting_for_its_bytes() {
        let mut bytes = file_of(&[]);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[1, 2, 3, 4, 5]);
        assert_eq!(decoded(&bytes).1.stop(), Some(Stop::BadLength(u32::MAX)));
    }

    proptest! {
        #[test]
        fn every_truncation_decodes_a_prefix_and_reports_a_cut_inside_an_entry(
            written in lines(),
            cut in any::<prop::sample::Index>(),
        ) {
            let bytes = file_of(&written);
            let len = cut.index(bytes.len() + 1);
            let (lines, decoder) = decoded(&bytes[..len]);
            prop_assert!(lines.len() <= written.len());
            prop_assert_eq!(&lines[..], &written[..lines.len()]);
            let stop = decoder.stop().expect("stopped");
            // Only a cut exactly at an entry boundary is clean.
            let boundaries: Vec<usize> = std::iter::once(HEADER_LEN)
                .chain(written.iter().scan(HEADER_LEN, |at, l| {
                    *at += ENTRY_HEADER_LEN + l.len();
                    Some(*at)
                }))
                .collect();
            if len < HEADER_LEN {
                prop_assert_eq!(stop, Stop::BadHeader);
            } else if boundaries.contains(&len) {
                prop_assert_eq!(stop, Stop::End);
                prop_assert_eq!(decoder.valid_end(), len);
            } else {
                prop_assert!(stop.cut() || stop == Stop::Padding, "{:?}", stop);
                prop_assert!(decoder.valid_end() < len);
            }
        }

        #[test]
        fn every_flipped_byte_decodes_a_prefix_or_is_reported(
            written in lines(),
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let mut bytes = file_of(&written);
            let i = at.index(bytes.len());
            bytes[i] ^= flip;
            let (lines, decoder) = decoded(&bytes);
            // Never a wrong record: what comes out is what was written, in
            // order, up to where the damage was found.
            prop_assert!(lines.len() <= written.len());
            prop_assert_eq!(&lines[..], &written[..lines.len()]);
            if lines.len() < written.len() {
                prop_assert!(decoder.stop().is_some_and(Stop::cut), "{:?}", decoder.stop());
            }
            prop_assert!(decoder.valid_end() <= i.max(HEADER_LEN) || i < HEADER_LEN);
        }
    }
}
