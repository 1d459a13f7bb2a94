//! Helpers for tests that run the real `streamd` binary as separate processes.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A hang guard, not a timing assertion: a process still running after this is stuck.
pub const HANG_GUARD: Duration = Duration::from_secs(120);

pub fn streamd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_streamd"))
}

/// A ring name unique to this test process and call.
pub fn ring_name(tag: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "t{}-{}-{}",
        std::process::id(),
        tag,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn spawn(args: &[&str]) -> Child {
    streamd()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn streamd")
}

/// Waits for a child, killing it (and failing the test) if it outlives the hang guard.
pub fn finish(mut child: Child, what: &str) -> Output {
    let started = Instant::now();
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("collect output");
        }
        if started.elapsed() > HANG_GUARD {
            let rings = streamd()
                .arg("rings")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            eprintln!("rings when {what} hung:\n{}", rings.unwrap_or_default());
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect output");
            panic!(
                "{what} hung for {HANG_GUARD:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The JSON object on the last stdout line.
pub fn counters(out: &Output, what: &str) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_else(|| {
        panic!(
            "{what} printed nothing; stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{what}: last line {line:?} is not JSON: {e}"))
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn num(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// Frame ids recorded by `consume --record-ids`.
pub fn read_ids(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().expect("whole id lines"))
        .collect()
}

/// Waits until `ring` has published at least `count` frames (so a kill lands mid-stream).
pub fn wait_published(ring: &str, count: u64) {
    let started = Instant::now();
    while started.elapsed() < HANG_GUARD {
        let out = streamd().args(["rings", "--json"]).output().expect("rings");
        let v: Value = serde_json::from_slice(&out.stdout).expect("rings json");
        let published = v["rings"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["name"] == ring)
            .and_then(|r| r["published"].as_u64());
        if published.is_some_and(|p| p >= count) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("ring {ring} never published {count} frames");
}

pub fn tmp_path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

pub fn kill9(child: &Child) {
    // SAFETY: sending a signal to a pid we spawned and have not reaped yet.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill -9 {}", child.id());
}
