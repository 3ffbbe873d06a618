//! The journal (`persistence`): a restarted server keeps what it answered,
//! whatever its shard count; a damaged tail is cut and the rest kept; the
//! log stays bounded under many updates of the same clients.

use crate::support::*;
use herd::pure::config::{AdminListen, Fsync, PersistenceConfig};
use std::path::{Path, PathBuf};

/// A one-server config with every port 0 and a journal under `dir`.
fn lone(name: &str, dir: &Path, fsync: Fsync) -> herd::Config {
    let mut config = lone_on_port_zero(name, AdminListen::Off);
    config.persistence = Some(PersistenceConfig {
        dir: dir.to_string_lossy().into_owned(),
        fsync,
    });
    config
}

/// The journal files of server `name` under `dir`.
fn journal_files(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(name))
        .expect("journal folder")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
}

fn iamats(prefix: &str, clients: usize, time: u64) -> Vec<String> {
    (0..clients)
        .map(|i| format!("IAMAT {prefix}{i} +34.06-118.44 {time}.{i:09}"))
        .collect()
}

#[test]
fn a_restart_keeps_every_answered_iamat_even_with_another_shard_count() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = lone("Keeper", tmp.path(), Fsync::Always);
    let running = start_in_process(config.clone(), "Keeper", 2);
    let answered = send_all(running.bound().client, &iamats("keep", 300, 1_700_000_000));
    assert!(answered.iter().all(|a| a.starts_with("AT Keeper ")));
    running.stop().expect("stops");
    // Three shards now: ownership moved, every record still comes back.
    let running = start_in_process(config.clone(), "Keeper", 3);
    for (i, at) in answered.iter().enumerate() {
        assert_eq!(
            stored_at_line(running.bound().client, &format!("keep{i}")).as_deref(),
            Some(at.as_str())
        );
    }
    // Once every shard has written its own file, the old ones are gone.
    eventually("the replayed files removed", || {
        let files = journal_files(tmp.path(), "Keeper");
        (files.len() == 3).then_some(())
    });
    running.stop().expect("stops");
    let running = start_in_process(config.clone(), "Keeper", 1);
    assert!(stored_at_line(running.bound().client, "keep299").is_some());
    running.stop().expect("stops");
}

#[test]
fn a_damaged_tail_is_cut_and_everything_before_it_kept() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = lone("Mender", tmp.path(), Fsync::Everysec);
    let running = start_in_process(config.clone(), "Mender", 1);
    let answered = send_all(running.bound().client, &iamats("mend", 100, 1_700_000_000));
    running.stop().expect("stops");
    let files = journal_files(tmp.path(), "Mender");
    assert_eq!(files.len(), 1, "{files:?}");
    // The entries end at the last byte that is not padding: flip a byte of
    // the last entry, then cut it short and add garbage after.
    let mut bytes = std::fs::read(&files[0]).expect("read journal");
    let end = bytes.iter().rposition(|&b| b != 0).expect("entries") + 1;
    bytes[end - 4] ^= 0x55;
    bytes.truncate(end - 2);
    bytes.extend_from_slice(b"\x07garbage");
    std::fs::write(&files[0], &bytes).expect("damage journal");
    let running = start_in_process(config.clone(), "Mender", 1);
    for (i, at) in answered.iter().enumerate().take(99) {
        assert_eq!(
            stored_at_line(running.bound().client, &format!("mend{i}")).as_deref(),
            Some(at.as_str())
        );
    }
    assert_eq!(stored_at_line(running.bound().client, "mend99"), None);
    running.stop().expect("stops");
}

#[test]
fn many_updates_of_the_same_clients_keep_the_journal_small() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = lone("Compact", tmp.path(), Fsync::Everysec);
    let running = start_in_process(config.clone(), "Compact", 1);
    let client = running.bound().client;
    let mut last = Vec::new();
    for round in 0..2500u64 {
        last = send_all(client, &iamats("same", 20, 1_700_000_000 + round));
    }
    // 50,000 records of about 60 bytes went through: 3 MB unless compacted.
    let size = || -> u64 {
        journal_files(tmp.path(), "Compact")
            .iter()
            .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
            .sum()
    };
    eventually("the journal compacted", || (size() < 1 << 20).then_some(()));
    running.stop().expect("stops");
    let running = start_in_process(config.clone(), "Compact", 2);
    for (i, at) in last.iter().enumerate() {
        assert_eq!(
            stored_at_line(running.bound().client, &format!("same{i}")).as_deref(),
            Some(at.as_str())
        );
    }
    running.stop().expect("stops");
}
