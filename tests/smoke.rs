//! Runs `tests/smoke.sh` (netcat against `herd up`) on free ports, so that
//! `cargo test` covers the nc smoke test too.

// A test that cannot go on should stop loudly.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;
use support::*;

#[test]
fn nc_smoke_test_of_a_running_herd_passes() {
    assert!(
        Command::new("sh")
            .args(["-c", "command -v nc"])
            .output()
            .is_ok_and(|o| o.status.success()),
        "the smoke test needs nc: apt-get install netcat-openbsd"
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write_file(
        dir.path(),
        "herd.json",
        &default_herd_on_free_ports().to_json_pretty(),
    );
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/smoke.sh"))
        .arg(herd_bin())
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("smoke: 5 passed, 0 failed"), "{stdout}");
}
