//! Replay: what a start reads back from the journal folder, before any
//! shard runs. Every journal file, whatever shard count wrote it, oldest
//! generation first; each record goes to the shard that owns its client in
//! this run, and the store's ordering rule keeps the newest. A damaged
//! tail is cut and logged: it never fails the start. Plain blocking reads,
//! as no executor runs yet; writing is the journal's (`mod.rs`), which
//! this file does not name.

use crate::pure::journal::{generation_of, Decoder};
use crate::pure::protocol::{parse_line, Command, Parsed};
use crate::pure::record::{Record, Tags};
use crate::pure::ring::Ring;
use crate::pure::server_ids::ServerIds;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What a start found in the journal folder: the records to apply, by the
/// shard that owns them now, and the files they came from.
pub(crate) struct Replayed {
    /// Per shard of this run, the records it owns; each shard takes its own.
    pub records: Vec<Mutex<Vec<Record>>>,
    /// The files read, removed once every shard has a complete new one.
    pub old_files: Vec<PathBuf>,
    /// The generation of this run's first files: above every old one.
    pub generation: u64,
    /// Records read (before the ordering rule drops older versions).
    pub read: usize,
    /// Bytes of damaged tails cut off.
    pub cut_bytes: u64,
}

/// Reads every journal file in `dir` (creating the folder if it is
/// missing) and sorts its records to the shards of a `shards`-shard ring.
/// A damaged tail is cut, with a log line; it never fails the start. Runs
/// before any executor: plain blocking reads.
pub(crate) fn replay(dir: &Path, shards: usize, ids: &ServerIds) -> Result<Replayed, String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create the journal folder {}: {e}", dir.display()))?;
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read the journal folder {}: {e}", dir.display()))?;
    let mut files: Vec<(u64, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let generation = generation_of(e.file_name().to_str()?)?;
            Some((generation, e.path()))
        })
        .collect();
    files.sort();
    let ring = Ring::new(shards);
    let mut records: Vec<Vec<Record>> = (0..shards).map(|_| Vec::new()).collect();
    let mut read = 0;
    let mut cut_bytes = 0;
    for (_, path) in &files {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                // Kept, not removed: an unreadable file may be readable later.
                return Err(format!("cannot read journal file {}: {e}", path.display()));
            }
        };
        let mut decoder = Decoder::new(&bytes);
        let mut unparsed = 0;
        for payload in decoder.by_ref() {
            // Checksummed, so only a bug or a hand-edited file gets here.
            let Parsed::Command(Command::At(at)) = parse_line(payload) else {
                unparsed += 1;
                continue;
            };
            // From no neighbour; made by the server its line names.
            let tags = Tags {
                source: 0,
                origin: ids.id(at.server),
            };
            let record = Record::from_at(&at, tags);
            records[ring.owner(record.client_id())].push(record);
            read += 1;
        }
        if let Some(stop) = decoder.stop().filter(|s| s.cut()) {
            // The zeros filled ahead of the entries are not part of the
            // damage: the cut ends at the last byte that is not zero.
            let damaged_end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            let cut = damaged_end.saturating_sub(decoder.valid_end());
            cut_bytes += cut as u64;
            tracing::warn!(
                file = %path.display(),
                kept_bytes = decoder.valid_end(),
                cut_bytes = cut,
                reason = %stop,
                "journal: damaged tail cut off; the records before it are kept"
            );
        }
        if unparsed > 0 {
            tracing::warn!(file = %path.display(), unparsed, "journal: entries that are not AT lines skipped");
        }
    }
    let generation = files.last().map_or(1, |(g, _)| g + 1);
    Ok(Replayed {
        records: records.into_iter().map(Mutex::new).collect(),
        old_files: files.into_iter().map(|(_, p)| p).collect(),
        generation,
        read,
        cut_bytes,
    })
}
