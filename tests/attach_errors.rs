//! A user mistake gets one clear sentence naming the thing and the fix, exit status 2,
//! and never a panic: wrong magic, wrong version, damaged layout, another user's
//! segment, a ring that never appears, a name that is taken.

mod common;

use common::*;
use std::fs;
use std::path::PathBuf;

fn segment(ring: &str) -> PathBuf {
    PathBuf::from(format!("/dev/shm/streamd-ring.{ring}"))
}

/// Runs `consume` against `ring` and returns its single stderr line.
fn refusal(ring: &str) -> String {
    let out = streamd()
        .args([
            "consume",
            "--ring",
            ring,
            "--attach-timeout",
            "0.2",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    one_sentence(&stderr(&out))
}

fn one_sentence(err: &str) -> String {
    let lines: Vec<_> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(lines[0].starts_with("streamd: "), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    lines[0].to_string()
}

/// A copy of a live ring's segment under another name, with `patch` applied.
fn patched_copy(live: &str, name: &str, patch: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = fs::read(segment(live)).unwrap();
    patch(&mut bytes);
    let path = segment(name);
    fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn bad_segments_and_mistakes_are_refused_with_one_sentence() {
    let live = ring_name("live");
    let sim = spawn(&[
        "sim",
        "--ring",
        &live,
        "--slots",
        "4",
        "--wait-consumers",
        "1",
    ]);
    while !segment(&live).exists() {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // Wait for initialisation to finish (version is stored last).
    while fs::read(segment(&live))
        .map(|b| b.len() < 12 || b[8] == 0)
        .unwrap_or(true)
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let mut created = Vec::new();

    let garbage = ring_name("magic");
    let mut bytes = vec![0u8; 4096];
    bytes[..8].copy_from_slice(b"NOTARING");
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    fs::write(segment(&garbage), bytes).unwrap();
    created.push(segment(&garbage));
    let msg = refusal(&garbage);
    assert!(msg.contains("is not a streamd ring (bad magic)"), "{msg}");

    let newer = ring_name("version");
    created.push(patched_copy(&live, &newer, |b| {
        b[8..12].copy_from_slice(&99u32.to_le_bytes())
    }));
    let msg = refusal(&newer);
    assert!(
        msg.contains("uses layout version 99 but this streamd speaks version 2"),
        "{msg}"
    );

    let damaged = ring_name("layout");
    created.push(patched_copy(&live, &damaged, |b| {
        b[24..28].copy_from_slice(&5u32.to_le_bytes())
    }));
    let msg = refusal(&damaged);
    assert!(
        msg.contains("inconsistent layout") && msg.contains("streamd clean"),
        "{msg}"
    );

    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let foreign = ring_name("owner");
        let path = patched_copy(&live, &foreign, |_| {});
        created.push(path.clone());
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
        let msg = refusal(&foreign);
        assert!(
            msg.contains("belongs to uid 65534, not to you (uid 0)"),
            "{msg}"
        );
    } else {
        eprintln!("not root: the foreign-owner case needs root to chown a segment");
    }

    let msg = refusal(&ring_name("absent"));
    assert!(
        msg.contains("did not appear") && msg.contains("streamd sim --ring"),
        "{msg}"
    );

    let taken = streamd()
        .args(["sim", "--ring", &live, "--frames", "1"])
        .output()
        .unwrap();
    assert_eq!(taken.status.code(), Some(2));
    let msg = one_sentence(&stderr(&taken));
    assert!(
        msg.contains(&format!(
            "ring '{live}' already has a live producer (pid {})",
            sim.id()
        )),
        "{msg}"
    );

    let bad_name = streamd()
        .args(["sim", "--ring", "no/slash", "--frames", "1"])
        .output()
        .unwrap();
    assert_eq!(bad_name.status.code(), Some(2));
    assert!(one_sentence(&stderr(&bad_name)).contains("ring name 'no/slash' is invalid"));

    for path in created {
        let _ = fs::remove_file(path);
    }
    // SAFETY: signalling a child we spawned and have not reaped.
    unsafe { libc::kill(sim.id() as i32, libc::SIGTERM) };
    assert!(finish(sim, "sim").status.success());
    assert!(!segment(&live).exists());
}
