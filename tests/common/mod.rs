//! Helpers for tests that run the real `streamd` binary as separate processes.
#![allow(dead_code)]

use serde_json::Value;
use std::collections::BTreeMap;
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

/// Runs `scripts/SCRIPT ARGS...` (one of the independent readers) with the project's
/// `.venv` interpreter; its JSON report (the last line it printed).
pub fn read_back(script: &str, args: &[&str]) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join(".venv/bin/python"))
        .arg(root.join("scripts").join(script))
        .args(args)
        .output()
        .expect(".venv/bin/python (scripts/install-deps installs it)");
    assert!(
        out.status.success(),
        "{script} {args:?}: {}{}",
        stderr(&out),
        String::from_utf8_lossy(&out.stdout)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{script} printed {text:?}: {e}"))
}

/// The last stdout line of a finished Python script, as JSON.
pub fn python_json(child: Child, what: &str) -> Value {
    let out = finish(child, what);
    assert!(
        out.status.success(),
        "{what} exited {:?}:\n{}",
        out.status,
        stderr(&out)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{what} printed {last:?}: {e}"))
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

/// Frame ids recorded by `consume --record-ids` or a `verify` stage's ids file.
pub fn read_ids(path: &Path) -> Vec<u64> {
    read_records(path).into_iter().map(|(id, _)| id).collect()
}

/// Lines `ID key=value ...` of a `verify` stage's ids file.
pub fn read_records(path: &Path) -> Vec<(u64, BTreeMap<String, String>)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let mut fields = line.split(' ');
            let id = fields.next().unwrap().parse().expect("an id first");
            let attributes = fields
                .map(|f| {
                    let (k, v) = f.split_once('=').expect("key=value");
                    (k.to_string(), v.to_string())
                })
                .collect();
            (id, attributes)
        })
        .collect()
}

/// Waits until `ring` has published at least `count` frames (so a kill lands mid-stream).
pub fn wait_published(ring: &str, count: u64) {
    wait_ring(ring, &format!("{count} frames published"), |r| {
        r["published"].as_u64().is_some_and(|p| p >= count)
    });
}

/// Waits until `ring`'s entry in `streamd rings --json` satisfies `ready`; returns it.
pub fn wait_ring(ring: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    while started.elapsed() < HANG_GUARD {
        let out = streamd().args(["rings", "--json"]).output().expect("rings");
        let v: Value = serde_json::from_slice(&out.stdout).expect("rings json");
        let entry = v["rings"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["name"] == ring);
        if let Some(entry) = entry.filter(|r| ready(r)) {
            return entry.clone();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("ring {ring} never reached: {what}");
}

/// Writes a `.npy` stack of `frames` u16 frames of `ny` × `nx`; pixel `i` of frame `f`
/// is `pixel(f, i)`.
pub fn write_npy_u16(
    path: &Path,
    (frames, ny, nx): (u64, u64, u64),
    pixel: impl Fn(u64, u64) -> u16,
) {
    let mut header =
        format!("{{'descr': '<u2', 'fortran_order': False, 'shape': ({frames}, {ny}, {nx}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    for f in 0..frames {
        for i in 0..ny * nx {
            bytes.extend(pixel(f, i).to_le_bytes());
        }
    }
    std::fs::write(path, bytes).unwrap();
}

pub fn tmp_path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

pub fn kill9(child: &Child) {
    // SAFETY: sending a signal to a pid we spawned and have not reaped yet.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill -9 {}", child.id());
}

/// SIGTERM: a `sim` then ends its stream and prints its counters.
pub fn terminate(child: &Child) {
    // SAFETY: sending a signal to a pid we spawned and have not reaped yet.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill -TERM {}", child.id());
}

// ---- Pipelines (`streamd run`) ----------------------------------------------------

/// A pipeline name unique to this test process (names are at most 16 characters).
pub fn pipeline_name(tag: &str) -> String {
    format!("{tag}{}", std::process::id() % 100_000)
}

/// A pipeline file: a name under `fixtures/pipelines/`, or a path as it is.
pub fn fixture(name: &str) -> String {
    if name.starts_with('/') {
        return name.to_string();
    }
    format!("{}/fixtures/pipelines/{name}", env!("CARGO_MANIFEST_DIR"))
}

pub fn start(fixture_file: &str, name: &str, out: &Path) -> Child {
    spawn(&[
        "run",
        &fixture(fixture_file),
        "--name",
        name,
        "--output",
        out.to_str().unwrap(),
        "--json",
    ])
}

/// `streamd status --json` of a running pipeline; `None` while it is not up yet.
pub fn status(name: &str) -> Option<Value> {
    let out = streamd()
        .args(["status", "--json", "--pipeline", name])
        .output()
        .expect("status");
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Waits until the pipeline's status satisfies `ready`; returns that status.
pub fn wait_status(name: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    while started.elapsed() < HANG_GUARD {
        if let Some(s) = status(name).filter(|s| ready(s)) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("pipeline {name} never reached: {what}");
}

pub fn stage<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no stage {name} in {report}"))
}

pub fn worker<'a>(report: &'a Value, stage_name: &str, index: usize) -> &'a Value {
    &stage(report, stage_name)["workers"][index]
}

pub fn frames_in(report: &Value, stage_name: &str) -> u64 {
    num(stage(report, stage_name), "frames_in")
}

/// How often each frame id was recorded in `files`.
pub fn id_counts(dir: &Path, files: &[&str]) -> BTreeMap<u64, u32> {
    let mut counts = BTreeMap::new();
    for f in files {
        for id in read_ids(&dir.join(f)) {
            *counts.entry(id).or_insert(0) += 1;
        }
    }
    counts
}

pub fn assert_exactly_once(counts: &BTreeMap<u64, u32>, frames: u64, what: &str) {
    let missing: Vec<u64> = (0..frames)
        .filter(|i| !counts.contains_key(i))
        .take(10)
        .collect();
    let repeated: Vec<(&u64, &u32)> = counts.iter().filter(|(_, &n)| n != 1).take(10).collect();
    assert!(
        missing.is_empty() && repeated.is_empty() && counts.len() as u64 == frames,
        "{what}: {} distinct ids of {frames}; missing {missing:?}, repeated {repeated:?}",
        counts.len()
    );
}

pub fn finished_ok(child: Child, what: &str) -> (Output, Value) {
    let out = finish(child, what);
    assert!(
        out.status.success(),
        "{what} exited {:?}; stderr:\n{}",
        out.status,
        stderr(&out)
    );
    let report = counters(&out, what);
    (out, report)
}

/// Files in /dev/shm that belong to pipeline `name`.
pub fn leftovers(name: &str) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| {
            f == &format!("streamd-stats.{name}")
                || f == &format!("streamd-control.{name}")
                || f.starts_with(&format!("streamd-ring.{name}."))
        })
        .collect()
}

/// Writes `fixture_file` with `edits` (text replacements) applied into `dir`; returns
/// the copy's path.
pub fn edited_fixture(fixture_file: &str, dir: &Path, edits: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(fixture(fixture_file)).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "{fixture_file} has no {from:?}");
        text = text.replace(from, to);
    }
    let file = dir.join(fixture_file);
    std::fs::write(&file, text).unwrap();
    file
}

/// Starts `fixture_file` with `edits` applied, in `dir`.
pub fn start_edited(fixture_file: &str, name: &str, dir: &Path, edits: &[(&str, &str)]) -> Child {
    let file = edited_fixture(fixture_file, dir, edits);
    start(file.to_str().unwrap(), name, dir)
}

/// Runs `fixture_file` with `edits` applied, in `dir`, to a successful end.
pub fn run_edited(fixture_file: &str, tag: &str, dir: &Path, edits: &[(&str, &str)]) -> Value {
    let child = start_edited(fixture_file, &pipeline_name(tag), dir, edits);
    finished_ok(child, fixture_file).1
}

/// Worker 0's processor counter `key` in a final report.
pub fn counter(report: &Value, stage_name: &str, key: &str) -> u64 {
    num(&worker(report, stage_name, 0)["counters"], key)
}

// ---- Disks ------------------------------------------------------------------------

/// A folder of `bytes` on a tmpfs of its own when the machine lets us mount one;
/// otherwise `None` (the caller limits the writer's file size instead).
pub fn small_disk(dir: &Path, bytes: u64) -> Option<PathBuf> {
    let mount = dir.join("small");
    std::fs::create_dir(&mount).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
        .arg(&mount)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    mounted.then_some(mount)
}

pub struct Unmount(pub PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
