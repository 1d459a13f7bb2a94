//! `streamd check` makes every check `run` makes before it starts anything, and prints
//! the plan; `run` refuses the same mistakes the same way, before anything starts (issue
//! 19): a missing output folder, a verifier's ids file in a missing folder, a writer's
//! folder holding an earlier run's files. (`tests/pipelines.rs` runs both over every
//! broken file in `fixtures/bad/`.)

mod common;

use common::*;
use std::path::Path;

/// `streamd ARGS...` in `dir`: exit status and stderr.
fn refused(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = streamd().current_dir(dir).args(args).output().unwrap();
    (out.status.code(), stderr(&out).trim().to_string())
}

/// Nothing of pipeline `name` in /dev/shm, and no file in `dir` but `keep`.
fn nothing_started(name: &str, dir: &Path, keep: &[&str]) {
    assert!(leftovers(name).is_empty(), "{:?}", leftovers(name));
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, keep, "files in {}", dir.display());
}

#[test]
fn check_prints_the_rings_the_processes_and_their_cores_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let name = pipeline_name("plan");
    let out = streamd()
        .args(["check", &fixture("two-groups.toml"), "--name", &name])
        .args(["--output", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "pipeline '{name}' ({}): every check passed; nothing was started",
            fixture("two-groups.toml")
        )
    );
    // Each segment: 32 KiB frames in 36 KiB slots after 36 KiB of tables.
    let segment = |slots: u64| 36 * 1024 + slots * 36 * 1024;
    let total = segment(32) + 2 * segment(16) + segment(16);
    assert!(
        lines[1].starts_with(&format!(
            "rings: {:.1} MiB of /dev/shm (",
            total as f64 / (1 << 20) as f64
        )),
        "{text}"
    );
    let cells = |line: &str| {
        line.split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        cells(lines[3]),
        [
            "a",
            "16",
            "slots",
            "of",
            "32.0",
            "KiB",
            "=",
            "1.2",
            "MiB",
            "block,",
            "one",
            "segment",
            "per",
            "writer:",
            &format!("{name}.a.0,"),
            &format!("{name}.a.1")
        ]
    );
    let processes = lines
        .iter()
        .position(|l| l.starts_with("processes: 9 on "))
        .unwrap_or_else(|| panic!("{text}"));
    let rows: Vec<Vec<String>> = lines[processes + 1..].iter().map(|l| cells(l)).collect();
    let names: Vec<String> = rows.iter().map(|r| format!("{} {}", r[0], r[1])).collect();
    assert_eq!(
        names,
        [
            "source core",
            "a1 w0",
            "a1 w1",
            "a2 w0",
            "a3 w0",
            "g2 w0",
            "g2 w1",
            "b2 w0",
            "b2 w1"
        ]
    );
    assert_eq!(
        rows[0][3..].join(" "),
        "128x128 u16 at 1000 frames/s, 3000 frames → raw"
    );
    assert_eq!(rows[1][2], "core");
    assert_eq!(rows[1][4..].join(" "), "passthrough raw → a");
    nothing_started(&name, dir.path(), &[]);
}

#[test]
fn run_and_check_refuse_a_missing_output_folder_with_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not-made");
    let missing = missing.to_str().unwrap();
    let name = pipeline_name("noout");
    let expected = format!(
        "streamd: --output '{missing}' does not exist; create it first (mkdir -p '{missing}') or give an existing folder"
    );
    let file = fixture("two-groups.toml");
    for command in ["run", "check"] {
        let (code, err) = refused(
            dir.path(),
            &[command, &file, "--name", &name, "--output", missing],
        );
        assert_eq!(
            (code, err.as_str()),
            (Some(2), expected.as_str()),
            "{command}"
        );
    }
    let (code, err) = refused(dir.path(), &["demo", "--output", missing]);
    assert_eq!((code, err.as_str()), (Some(2), expected.as_str()), "demo");
    nothing_started(&name, dir.path(), &[]);
}

#[test]
fn a_tiff_folder_holding_an_earlier_run_is_refused_up_front_unless_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let name = pipeline_name("again");
    for id in [3, 4] {
        std::fs::write(dir.path().join(format!("scan_{id:06}.tiff")), b"earlier").unwrap();
    }
    let file = edited_fixture("writers.toml", dir.path(), &[]);
    let expected_tail = "already holds 2 TIFF file(s) named like this writer's (scan_000003.tiff, ...), from an earlier run; set overwrite = true to replace them, or change `prefix` or `folder`";
    for command in ["run", "check"] {
        let (code, err) = refused(
            dir.path(),
            &[command, file.to_str().unwrap(), "--name", &name],
        );
        assert_eq!(code, Some(2), "{command}: {err}");
        assert!(err.ends_with(expected_tail), "{command}: {err}");
        assert_eq!(err.lines().count(), 1, "{command}: {err}");
    }
    nothing_started(
        &name,
        dir.path(),
        &["scan_000003.tiff", "scan_000004.tiff", "writers.toml"],
    );
    // Told to replace them, it may.
    let file = edited_fixture(
        "writers.toml",
        dir.path(),
        &[(
            "args = { prefix = \"scan\" }",
            "args = { prefix = \"scan\", overwrite = true }",
        )],
    );
    let out = streamd()
        .current_dir(dir.path())
        .args(["check", file.to_str().unwrap(), "--name", &name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// The slot size `streamd check` prints for each ring of pipeline file `file`.
fn slot_sizes(file: &str, dir: &Path) -> Vec<(String, String)> {
    let out = streamd()
        .args(["check", file, "--output", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let rings = text.lines().skip(2).take_while(|l| l.starts_with("  "));
    rings
        .map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            (cells[0].to_string(), cells[4..6].join(" "))
        })
        .collect()
}

#[test]
fn tile_rings_are_sized_for_tiles_not_whole_frames() {
    let dir = tempfile::tempdir().unwrap();
    let sizes = slot_sizes(&fixture("split-stitch.toml"), dir.path());
    // 750 × 1000 u16 frames cut 3 × 4: tiles of 250 × 250 pixels, 125,000 bytes.
    let expected = [
        ("raw", "1.4 MiB"),
        ("tiles", "122.1 KiB"),
        ("worked", "122.1 KiB"),
        ("whole", "1.4 MiB"),
    ];
    assert_eq!(sizes, expected.map(|(r, s)| (r.to_string(), s.to_string())));
    // A ZeroMQ source takes any frame up to its size: tiles of 64 × 64 pixels of the
    // widest dtype (8 bytes) rather than of the u16 it declares.
    let file = dir.path().join("zmq-split.toml");
    std::fs::write(
        &file,
        r#"name = "zmqsplit"
[[ring]]
name = "raw"
slots = 8
[[ring]]
name = "tiles"
slots = 8
[source]
kind = "zmq"
ring = "raw"
endpoint = "tcp://127.0.0.1:31009"
nx = 256
ny = 256
dtype = "u16"
[[stage]]
name = "split"
processor = "split"
input = "raw"
output = "tiles"
args = { tile = [64, 64] }
[[stage]]
name = "sink"
processor = "verify"
input = "tiles"
args = { pattern = "none" }
"#,
    )
    .unwrap();
    let sizes = slot_sizes(file.to_str().unwrap(), dir.path());
    assert_eq!(sizes[1], ("tiles".to_string(), "32.0 KiB".to_string()));
}
