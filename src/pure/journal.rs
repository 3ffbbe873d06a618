//! The journal's file format: a header, then one entry per stored record,
//! `[u32 LE payload length][u32 LE crc32 of the payload][payload]`, the
//! payload being the record's AT line; and the files' names,
//! `journal-<generation>-<shard>.log`, which the writer makes and replay
//! reads back.
//!
//! Between entries there may be a gap of zeros, at least an entry header
//! long, up to the next multiple of the header's block size (see
//! [`gap_end`]): a writer with two writes under way at once starts the
//! second at a block of its own, so that they never write the same block.
//! A reader skips such a gap. Version 1 files (block size 0) have none.
//!
//! Owns encoding and decoding, and what counts as the valid part of a file:
//! decoding stops at the first entry that is cut short, fails its checksum
//! or claims an impossible length, and at the zero padding that direct I/O
//! leaves after the last entry; it says where and why, so the shell can log
//! the cut and carry on. Pure: bytes in, lines out; reading and writing
//! files is `shard/journal/`'s.

/// The first bytes of every journal file.
pub(crate) const MAGIC: [u8; 8] = *b"HERDJRNL";
/// The format this code writes; it reads this one and version 1.
pub(crate) const VERSION: u32 = 2;
/// Magic, version, and the block size of the gaps (u32 LE; 0 in version 1:
/// no gaps).
pub(crate) const HEADER_LEN: usize = 16;
/// The largest block size a header may name.
const MAX_BLOCK: u32 = 1 << 20;
/// Length and checksum before each payload.
pub(crate) const ENTRY_HEADER_LEN: usize = 8;
/// No AT line is this long (lines are capped at 1 MiB plus a server name
/// and a skew): a longer length is corruption, and refusing it keeps a
/// flipped length byte from making the reader wait for gigabytes.
pub(crate) const MAX_PAYLOAD: usize = 2 << 20;

/// The name of the journal file of `shard`, generation `generation`.
pub(crate) fn file_name(generation: u64, shard: usize) -> String {
    format!("journal-{generation}-{shard}.log")
}

/// The generation of a journal file's name, `None` for any other file.
pub(crate) fn generation_of(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("journal-")?.strip_suffix(".log")?;
    let (generation, shard) = rest.split_once('-')?;
    shard.parse::<usize>().ok()?;
    generation.parse().ok()
}

/// Appends a file header to `out`, for gaps that end at multiples of
/// `block` (a power of two up to 1 MiB; the writer's direct I/O block).
pub(crate) fn write_header(out: &mut Vec<u8>, block: u32) {
    debug_assert!(block.is_power_of_two() && block <= MAX_BLOCK);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&block.to_le_bytes());
}

/// Where the next entry may start when the entries end at `end` and the
/// writer leaves a gap: the first multiple of `block` with room for a
/// zero entry header before it, which is what tells a reader it is a gap.
pub(crate) fn gap_end(end: u64, block: u64) -> u64 {
    (end + ENTRY_HEADER_LEN as u64).div_ceil(block) * block
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
    /// Zero bytes to the end: the padding after the last entry (or the
    /// zeros a writer fills files with ahead of it), nothing cut.
    Padding,
    /// The file is shorter than a header, or does not start with one (or
    /// with one naming an impossible block size).
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
    // Gaps end at multiples of this; 0: the file has none (version 1).
    block: usize,
    // Just past the last entry read (a gap after it is not yet valid).
    valid: usize,
}

impl<'a> Decoder<'a> {
    /// A decoder over the bytes of one file, header included.
    pub(crate) fn new(bytes: &'a [u8]) -> Decoder<'a> {
        let mut decoder = Decoder {
            bytes,
            at: 0,
            stop: None,
            block: 0,
            valid: 0,
        };
        match bytes.get(..HEADER_LEN) {
            Some(header) if header[..8] == MAGIC => {
                let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
                let block = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
                match version {
                    1 if block == 0 => decoder.at = HEADER_LEN,
                    VERSION if block.is_power_of_two() && block <= MAX_BLOCK => {
                        decoder.at = HEADER_LEN;
                        decoder.block = block as usize;
                    }
                    1 | VERSION => decoder.stop = Some(Stop::BadHeader),
                    _ => decoder.stop = Some(Stop::UnknownVersion(version)),
                }
            }
            _ => decoder.stop = Some(Stop::BadHeader),
        }
        decoder.valid = decoder.at;
        decoder
    }

    /// Why decoding stopped, once it has (`None` while entries remain).
    pub(crate) fn stop(&self) -> Option<Stop> {
        self.stop
    }

    /// The offset just past the last whole, valid entry (the header's end
    /// before any, 0 without a header): where appending may resume.
    pub(crate) fn valid_end(&self) -> usize {
        self.valid
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
        let rest = loop {
            let rest = &self.bytes[self.at..];
            if self.block == 0 || rest.len() < ENTRY_HEADER_LEN {
                break rest;
            }
            // A zero entry header opens a gap: zeros up to the next block.
            let gap = gap_end(self.at as u64, self.block as u64) as usize - self.at;
            let zeros = &rest[..gap.min(rest.len())];
            if zeros[..ENTRY_HEADER_LEN] != [0; ENTRY_HEADER_LEN] {
                break rest;
            }
            if zeros.iter().any(|&b| b != 0) {
                return self.stopped(Stop::BadLength(0));
            }
            if gap >= rest.len() {
                return self.stopped(Stop::Padding);
            }
            self.at += gap;
        };
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
        self.valid = self.at;
        Some(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file_of(lines: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out, 512);
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

    /// A file as a writer with two writes under way leaves it: a gap after
    /// each group of entries.
    fn file_with_gaps(groups: &[Vec<Vec<u8>>], block: u32) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out, block);
        for group in groups {
            for line in group {
                write_entry(&mut out, line);
            }
            let end = gap_end(out.len() as u64, u64::from(block));
            out.resize(end as usize, 0);
        }
        out
    }

    #[test]
    fn gaps_between_entries_are_skipped_and_zeros_to_the_end_are_padding() {
        let groups = vec![
            vec![b"AT a +0.1 x +1+2 3".to_vec()],
            vec![],
            vec![b"AT b +0.1 x +1+2 3".to_vec(), vec![b'c'; 700]],
            vec![vec![b'd'; 512 - HEADER_LEN - 8 - 26 - 8 - 2]],
        ];
        let bytes = file_with_gaps(&groups, 512);
        let (lines, decoder) = decoded(&bytes);
        assert_eq!(lines, groups.concat());
        assert_eq!(decoder.stop(), Some(Stop::Padding));
        let last = bytes.iter().rposition(|&b| b != 0).expect("entries") + 1;
        assert_eq!(decoder.valid_end(), last);
        // The filled zeros after the entries: still padding.
        let mut filled = bytes.clone();
        filled.resize(bytes.len() + (1 << 20), 0);
        assert_eq!(decoded(&filled).0, groups.concat());
        assert_eq!(decoded(&filled).1.stop(), Some(Stop::Padding));
        // Entries that end less than a header before a block end: the gap
        // runs to the block after.
        assert_eq!(gap_end(1020, 512), 1536);
        assert_eq!(gap_end(1016, 512), 1024);
        assert_eq!(gap_end(1024, 512), 1536);
    }

    #[test]
    fn a_gap_with_something_in_it_is_damage() {
        let groups = vec![vec![b"AT a +0.1 x +1+2 3".to_vec()], vec![b"e".to_vec()]];
        let mut bytes = file_with_gaps(&groups, 512);
        let end = HEADER_LEN + ENTRY_HEADER_LEN + groups[0][0].len();
        bytes[end + 100] = 1;
        let (lines, decoder) = decoded(&bytes);
        assert_eq!(lines, groups[0]);
        assert_eq!(decoder.stop(), Some(Stop::BadLength(0)));
        assert_eq!(decoder.valid_end(), end);
        // Version 1 files have no gaps: the zero header is the damage.
        let mut v1 = file_with_gaps(&groups, 512);
        v1[8..16].copy_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(decoded(&v1).0, groups[0]);
        assert_eq!(decoded(&v1).1.stop(), Some(Stop::BadLength(0)));
        // A block size that is not a power of two is no header of ours.
        let mut odd = file_with_gaps(&groups, 512);
        odd[12..16].copy_from_slice(&500u32.to_le_bytes());
        assert_eq!(decoded(&odd).1.stop(), Some(Stop::BadHeader));
    }

    #[test]
    fn file_names_carry_their_generation_and_other_files_are_ignored() {
        assert_eq!(generation_of(&file_name(7, 3)), Some(7));
        assert_eq!(generation_of("journal-12-0.log"), Some(12));
        assert_eq!(generation_of("journal-12.log"), None);
        assert_eq!(generation_of("journal-x-0.log"), None);
        assert_eq!(generation_of("notes.txt"), None);
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

    /// Flips byte `i` of a file of `written` and decodes it: never a wrong
    /// record (what comes out is what was written, in order, up to where
    /// the damage was found), and a cut reported if anything is missing.
    /// Returns where the valid part ends.
    fn decoded_after_flip(
        mut bytes: Vec<u8>,
        written: &[Vec<u8>],
        i: usize,
        flip: u8,
    ) -> Result<usize, TestCaseError> {
        bytes[i] ^= flip;
        let (lines, decoder) = decoded(&bytes);
        prop_assert!(lines.len() <= written.len());
        prop_assert_eq!(&lines[..], &written[..lines.len()]);
        if lines.len() < written.len() {
            prop_assert!(
                decoder.stop().is_some_and(Stop::cut),
                "{:?}",
                decoder.stop()
            );
        }
        Ok(decoder.valid_end())
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
            let bytes = file_of(&written);
            let i = at.index(bytes.len());
            let valid_end = decoded_after_flip(bytes, &written, i, flip)?;
            prop_assert!(valid_end <= i.max(HEADER_LEN) || i < HEADER_LEN);
        }

        #[test]
        fn every_flipped_byte_of_a_file_with_gaps_decodes_a_prefix_or_is_reported(
            groups in prop::collection::vec(lines(), 0..4),
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let written = groups.concat();
            let bytes = file_with_gaps(&groups, 64);
            let (lines, decoder) = decoded(&bytes);
            prop_assert_eq!(&lines, &written);
            prop_assert!(!decoder.stop().is_some_and(Stop::cut));
            let i = at.index(bytes.len());
            decoded_after_flip(bytes, &written, i, flip)?;
        }
    }
}
