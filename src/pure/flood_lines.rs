//! The link lines of flood trees (PROTOCOL.md, "Flood trees"): `TREE`,
//! `IHAVE`, `GRAFT` and `PRUNE`, parsed from text and written into
//! buffers. Only the words: when each is said, and what it does, is the
//! link session's (`link_session.rs`) and the shell's. Pure.

use crate::pure::digest::Digest;
use std::fmt::Write as _;

/// What one end of a link says of itself in `TREE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hello {
    /// Its run: drawn at its start, never 0.
    pub(crate) run: u64,
    /// The fingerprint of its config's graph; `None` (`-`) when it does not
    /// send along trees.
    pub(crate) topology: Option<u64>,
    /// Only a receiver says this: the sender's run as it last heard it, and
    /// the version of the last announcement it heard from that run.
    pub(crate) heard: Option<(u64, u64)>,
}

/// A line of the flood trees other than `TREE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FloodLine<'a> {
    /// `IHAVE <origin> <second> <digest> <count>`: the sender's digest of
    /// an entry.
    Entry {
        /// The origin's server name.
        origin: &'a str,
        /// The second of the origin's receive time.
        second: u64,
        /// The entry.
        digest: Digest,
    },
    /// `IHAVE <version>`: the announcement before it brings the receiver to
    /// this version.
    Version(u64),
    /// `GRAFT <origin> <second>`.
    Graft {
        /// The origin's server name.
        origin: &'a str,
        /// The second whose entry differs.
        second: u64,
    },
    /// `PRUNE <origin>`.
    Prune {
        /// The origin's server name.
        origin: &'a str,
    },
}

/// Plain decimal digits as a u64.
fn count(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Exactly 16 lowercase hex digits as a u64.
fn hex16(text: &str) -> Option<u64> {
    let ok = text.len() == 16 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    ok.then(|| u64::from_str_radix(text, 16).ok()).flatten()
}

/// A `TREE <run> <topology> [<sender-run> <version>]` line (a `TREE
/// <run>` alone too, with no topology).
pub(crate) fn parse_tree(text: &str) -> Option<Hello> {
    let mut fields = text.split_ascii_whitespace();
    if fields.next() != Some("TREE") {
        return None;
    }
    let run = count(fields.next()?)?;
    let topology = match fields.next() {
        None | Some("-") => None,
        Some(hex) => Some(hex16(hex)?),
    };
    let heard = match (fields.next(), fields.next()) {
        (Some(run), Some(version)) => Some((count(run)?, count(version)?)),
        (None, None) => None,
        _ => return None,
    };
    fields.next().is_none().then_some(Hello {
        run,
        topology,
        heard,
    })
}

/// Appends the `TREE` line of `hello`.
pub(crate) fn write_tree(out: &mut Vec<u8>, hello: &Hello) {
    let mut line = format!("TREE {} ", hello.run);
    match hello.topology {
        Some(t) => {
            let _ = write!(line, "{t:016x}");
        }
        None => line.push('-'),
    }
    if let Some((run, version)) = hello.heard {
        let _ = write!(line, " {run} {version}");
    }
    line.push('\n');
    out.extend_from_slice(line.as_bytes());
}

/// An `IHAVE`, `GRAFT` or `PRUNE` line.
pub(crate) fn parse(text: &str) -> Option<FloodLine<'_>> {
    let mut fields = text.split_ascii_whitespace();
    let word = fields.next()?;
    let args: Vec<&str> = fields.take(5).collect();
    match (word, args.as_slice()) {
        ("IHAVE", [version]) => Some(FloodLine::Version(count(version)?)),
        ("IHAVE", [origin, second, digest, n]) => Some(FloodLine::Entry {
            origin,
            second: count(second)?,
            digest: Digest {
                xor: hex16(digest)?,
                count: count(n)?,
            },
        }),
        ("GRAFT", [origin, second]) => Some(FloodLine::Graft {
            origin,
            second: count(second)?,
        }),
        ("PRUNE", [origin]) => Some(FloodLine::Prune { origin }),
        _ => None,
    }
}

/// Appends `line` and a newline.
pub(crate) fn write(out: &mut Vec<u8>, line: &FloodLine<'_>) {
    let mut text = String::with_capacity(64);
    let _ = match line {
        FloodLine::Entry {
            origin,
            second,
            digest,
        } => writeln!(
            text,
            "IHAVE {origin} {second} {:016x} {}",
            digest.xor, digest.count
        ),
        FloodLine::Version(v) => writeln!(text, "IHAVE {v}"),
        FloodLine::Graft { origin, second } => writeln!(text, "GRAFT {origin} {second}"),
        FloodLine::Prune { origin } => writeln!(text, "PRUNE {origin}"),
    };
    out.extend_from_slice(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_lines_round_trip_and_take_the_short_form() {
        for hello in [
            Hello {
                run: 7,
                topology: Some(0x00ab_cdef_0123_4567),
                heard: Some((9, 12)),
            },
            Hello {
                run: 7,
                topology: None,
                heard: None,
            },
        ] {
            let mut out = Vec::new();
            write_tree(&mut out, &hello);
            let text = String::from_utf8(out).unwrap();
            assert_eq!(parse_tree(text.trim_end()), Some(hello), "{text}");
        }
        assert_eq!(
            parse_tree("TREE 5"),
            Some(Hello {
                run: 5,
                topology: None,
                heard: None
            })
        );
        for bad in [
            "TREE",
            "TREE x",
            "TREE 5 00ab",
            "TREE 5 - 9",
            "TREE 5 - 9 1 2",
            "TREE 5 00ABCDEF01234567",
            "TREES 5",
        ] {
            assert_eq!(parse_tree(bad), None, "{bad}");
        }
    }

    #[test]
    fn flood_lines_round_trip_and_refuse_what_is_not_theirs() {
        let lines = [
            FloodLine::Entry {
                origin: "Goloman",
                second: 1_700_000_000,
                digest: Digest {
                    xor: u64::MAX,
                    count: 3,
                },
            },
            FloodLine::Version(42),
            FloodLine::Graft {
                origin: "Welsh",
                second: 12,
            },
            FloodLine::Prune { origin: "Hands" },
        ];
        for line in lines {
            let mut out = Vec::new();
            write(&mut out, &line);
            let text = String::from_utf8(out).unwrap();
            assert_eq!(parse(text.trim_end()), Some(line), "{text}");
        }
        assert_eq!(
            String::from_utf8({
                let mut out = Vec::new();
                write(&mut out, &lines[0]);
                out
            })
            .unwrap(),
            "IHAVE Goloman 1700000000 ffffffffffffffff 3\n"
        );
        for bad in [
            "IHAVE",
            "IHAVE A 1 ff 1",
            "IHAVE A 1 00000000000000ff",
            "IHAVE A x 00000000000000ff 1",
            "GRAFT A",
            "GRAFT A -1",
            "PRUNE",
            "PRUNE A B",
            "SEQ 1",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
