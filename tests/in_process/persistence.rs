//! The journal (`persistence`): a restarted server keeps what it answered,
//! whatever its shard count; a damaged tail is cut, logged and the rest
//! kept; the log stays bounded under many updates of the same clients; a
//! folder that cannot take the journal fails the start; the admin
//! endpoint counts what the journal does; a full disk is counted and the
//! server answers through it; without the section nothing is
//! kept.

use crate::support::*;
use herd::pure::config::{Fsync, PersistenceConfig};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

/// A one-server config with every port 0 (admin too) and a journal under
/// `dir`.
fn lone(name: &str, dir: &Path, fsync: Fsync) -> herd::Config {
    let mut config = lone_on_port_zero(name, admin_on_port_zero());
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

/// Server `running`'s `/metrics` sample `series`, once published.
fn journal_metric(running: &herd::Running, series: &str) -> Option<f64> {
    let admin = running.bound().admin?;
    let (_, text) = try_http(admin, "GET", "/metrics")?;
    metric(&text, series)
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
    // Every answer waited for a sync: the journal has written and synced,
    // and nothing is left behind.
    eventually("journal writes and syncs counted", || {
        let writes = journal_metric(&running, "herd_journal_writes_total")?;
        let syncs = journal_metric(&running, "herd_journal_syncs_total")?;
        let behind = journal_metric(&running, "herd_journal_behind_records{shard=\"1\"}")?;
        (writes >= 1.0 && syncs >= 1.0 && behind == 0.0).then_some(())
    });
    assert_eq!(
        journal_metric(&running, "herd_journal_replayed_records"),
        Some(0.0)
    );
    assert_eq!(
        journal_metric(&running, "herd_journal_errors_total"),
        Some(0.0)
    );
    running.stop().expect("stops");
    // Three shards now: ownership moved, every record still comes back.
    let running = start_in_process(config.clone(), "Keeper", 3);
    eventually("300 records replayed", || {
        let replayed = journal_metric(&running, "herd_journal_replayed_records")?;
        (replayed == 300.0).then_some(())
    });
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

/// Without a `persistence` section nothing is journaled: no journal in
/// `/status` or `/metrics`, and a restart starts empty.
#[test]
fn without_persistence_nothing_is_kept_across_a_restart() {
    let config = lone_on_port_zero("Volatile", admin_on_port_zero());
    let running = start_in_process(config.clone(), "Volatile", 2);
    let answered = send_all(running.bound().client, &iamats("vol", 20, 1_700_000_000));
    assert!(answered.iter().all(|a| a.starts_with("AT Volatile ")));
    let admin = running.bound().admin.expect("admin on");
    let (_, status) = http(admin, "GET", "/status");
    let status: serde_json::Value = serde_json::from_str(&status).expect("status is JSON");
    assert_eq!(status["journal"], serde_json::Value::Null, "{status}");
    let (_, metrics) = http(admin, "GET", "/metrics");
    assert!(!metrics.contains("herd_journal"), "{metrics}");
    assert!(stored_at_line(running.bound().client, "vol19").is_some());
    running.stop().expect("stops");
    let running = start_in_process(config, "Volatile", 2);
    for i in 0..20 {
        assert_eq!(
            stored_at_line(running.bound().client, &format!("vol{i}")),
            None
        );
    }
    running.stop().expect("stops");
}

/// Many clients at once, each waiting for its answer (so the writer has
/// a write under way when the next records come, and starts a second one
/// beside it, at a block of its own): after a restart, every client's last
/// answered IAMAT is held.
#[test]
fn concurrent_clients_with_fsync_always_keep_every_answer_across_a_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = lone("Busy", tmp.path(), Fsync::Always);
    let running = start_in_process(config.clone(), "Busy", 1);
    let addr = running.bound().client;
    let senders: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut client = Client::new(addr);
                let mut last = Vec::new();
                for round in 0..40u64 {
                    last.clear();
                    for i in 0..5 {
                        let line = format!(
                            "IAMAT busy{t}x{i} +34.06-118.44 {}.{i:09}\n",
                            1_700_000_000 + round
                        );
                        client.send(&line);
                        let reply = client.line();
                        assert!(reply.starts_with("AT Busy "), "{reply}");
                        last.push((format!("busy{t}x{i}"), reply.trim_end().to_owned()));
                    }
                }
                last
            })
        })
        .collect();
    let answered: Vec<(String, String)> = senders
        .into_iter()
        .flat_map(|s| s.join().expect("sender"))
        .collect();
    assert_eq!(answered.len(), 40);
    running.stop().expect("stops");
    let running = start_in_process(config.clone(), "Busy", 2);
    for (client, at) in &answered {
        assert_eq!(
            stored_at_line(running.bound().client, client).as_deref(),
            Some(at.as_str()),
            "{client}"
        );
    }
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
    // The replay runs on the thread that calls `start`: a subscriber set
    // for this thread alone sees its log lines.
    let log = LogCapture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        .finish();
    let running = tracing::subscriber::with_default(subscriber, || {
        start_in_process(config.clone(), "Mender", 1)
    });
    let logged = log.text();
    assert!(
        logged.contains("journal: damaged tail cut off")
            && logged.contains(&files[0].display().to_string())
            && logged.contains("cut_bytes="),
        "no log line for the cut: {logged}"
    );
    // The cut: everything from the damaged entry on (its 2 bytes short, plus
    // the 8 of garbage).
    let cut = eventually("the cut counted", || {
        journal_metric(&running, "herd_journal_cut_bytes").filter(|&c| c > 0.0)
    });
    assert!(
        logged.contains(&format!("cut_bytes={cut}")),
        "{cut} not in {logged}"
    );
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

/// A read-only filesystem (as after disk errors) under the journal: the
/// start fails and says why, instead of a server that answers and keeps
/// nothing. Needs root (CI runs as root), or a user namespace, for the bind
/// mount, which is undone whatever happens.
#[test]
fn a_journal_folder_that_cannot_take_files_fails_the_start() {
    if !privileged(
        "persistence::a_journal_folder_that_cannot_take_files_fails_the_start",
        false,
    ) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let folder = tmp.path().join("ReadOnly");
    std::fs::create_dir_all(&folder).expect("journal folder");
    let _mount = Mount::read_only(&folder);
    let config = lone("ReadOnly", tmp.path(), Fsync::Everysec);
    let options = herd::StartOptions {
        shards: Some(2),
        ..herd::StartOptions::named("ReadOnly")
    };
    let error = match herd::start(config, options) {
        Ok(_) => panic!("a server started with a read-only journal folder"),
        Err(e) => e.to_string(),
    };
    assert!(
        error.contains("journal") && error.contains("Read-only file system"),
        "{error}"
    );
}

/// A full disk under the journal: writes and zero fills fail, and are
/// counted; the server goes on answering (`everysec` does not wait for the
/// disk) and holds every record in memory, and it still stops.
#[test]
fn a_full_disk_under_the_journal_is_counted_and_the_server_keeps_answering() {
    if !privileged(
        "persistence::a_full_disk_under_the_journal_is_counted_and_the_server_keeps_answering",
        false,
    ) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let folder = tmp.path().join("Full");
    std::fs::create_dir_all(&folder).expect("journal folder");
    let _mount = Mount::tmpfs(&folder, "256k");
    let config = lone("Full", tmp.path(), Fsync::Everysec);
    let running = start_in_process(config.clone(), "Full", 1);
    let client = running.bound().client;
    // About 80 bytes a record: 8,000 of them are more than the disk holds.
    let mut answered = Vec::new();
    for round in 0..8 {
        let lines = iamats(&format!("full{round}x"), 1000, 1_700_000_000);
        answered.extend(send_all(client, &lines));
    }
    assert_eq!(answered.len(), 8000);
    assert!(answered.iter().all(|a| a.starts_with("AT Full ")));
    eventually("the journal's errors counted", || {
        journal_metric(&running, "herd_journal_errors_total").filter(|&e| e > 0.0)
    });
    for round in [0, 7] {
        let at = &answered[round * 1000 + 999];
        assert_eq!(
            stored_at_line(client, &format!("full{round}x999")).as_deref(),
            Some(at.as_str())
        );
    }
    running.stop().expect("stops");
}

/// A filesystem mounted on a test's folder, unmounted when this is
/// dropped, whatever happens. Needs root, or a user namespace
/// (`support::privileged`).
struct Mount(PathBuf);

impl Mount {
    fn run(args: &[&str]) {
        let status = Command::new("mount")
            .args(args)
            .status()
            .expect("mount runs");
        assert!(status.success(), "mount {args:?} (the test needs root)");
    }

    /// `folder` bound onto itself read-only.
    fn read_only(folder: &Path) -> Mount {
        let path = folder.to_str().expect("utf-8 path");
        Mount::run(&["--bind", path, path]);
        let mount = Mount(folder.to_owned());
        Mount::run(&["-o", "remount,ro,bind", path]);
        mount
    }

    /// A tmpfs of `size` (as `mount -o size=` takes it) on `folder`.
    fn tmpfs(folder: &Path, size: &str) -> Mount {
        let path = folder.to_str().expect("utf-8 path");
        Mount::run(&[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size}"),
            "herd-test",
            path,
        ]);
        Mount(folder.to_owned())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Log lines written by a `tracing` subscriber, kept to be read.
#[derive(Clone, Default)]
struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;

    fn make_writer(&'a self) -> LogCapture {
        self.clone()
    }
}
