//! The file writers in real pipelines, their files read back by independent readers
//! (`scripts/check_files.py`: h5py + hdf5plugin, tifffile, numpy): every frame equals
//! the simulator's ramp; metadata, reductions and NXmx structure are right; an SWMR
//! reader follows a file live; a writer killed with SIGKILL leaves readable files; a
//! full disk is counted exactly; wrong destinations are refused before any frame.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
}

fn checker() -> Command {
    let mut command = Command::new(python());
    command.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_files.py"));
    command
}

/// Runs the independent reader; its JSON summary.
fn check_files(kind: &str, path: &Path, extra: &[&str]) -> Value {
    let out = checker()
        .arg(kind)
        .arg(path)
        .args(extra)
        .output()
        .expect("run scripts/check_files.py (scripts/install-deps makes .venv)");
    assert!(
        out.status.success(),
        "check_files {kind} {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn writer_counters(report: &Value, stage_name: &str) -> (u64, u64, u64) {
    (
        counter(report, stage_name, "frames_written"),
        counter(report, stage_name, "frames_not_written"),
        num(stage(report, stage_name), "errors"),
    )
}

#[test]
fn every_writer_stores_every_frame_readably() {
    let dir = tempfile::tempdir().unwrap();
    let report = run_edited("writers.toml", "writers", dir.path(), &[]);
    for writer in ["h5", "tif", "flat"] {
        assert_eq!(writer_counters(&report, writer), (120, 0, 0), "{writer}");
    }

    let h5 = check_files(
        "hdf5",
        &dir.path().join("scan_master.h5"),
        &[
            "--frames",
            "120",
            "--compression",
            "bslz4",
            "--channels",
            "x,y",
            "--reductions",
            "sum,max",
        ],
    );
    // Rollover every 50 frames: three data files tied by the master's links.
    assert_eq!(
        h5["files"],
        serde_json::json!([
            "scan_data_000001.h5",
            "scan_data_000002.h5",
            "scan_data_000003.h5"
        ])
    );
    assert_eq!(h5["dtype"], "uint16");
    assert_eq!(h5["shape"], serde_json::json!([200, 256]));
    // x comes with every frame, y with every second; the reductions with all.
    assert_eq!(
        h5["values"],
        serde_json::json!({"x": 120, "y": 60, "sum": 120, "max": 120})
    );
    let geometry = &h5["geometry"];
    assert_eq!(geometry["distance"], 0.25);
    assert_eq!(geometry["beam_center_y"], 100.5);
    assert_eq!(geometry["x_pixel_size"], 75e-6);
    assert_eq!(geometry["sensor_material"], "Si");
    assert_eq!(counter(&report, "h5", "files_written"), 3);
    // Compressed chunks are what is stored.
    assert!(counter(&report, "h5", "bytes_stored") < counter(&report, "h5", "bytes_written"));

    let tiff = check_files(
        "tiff",
        dir.path(),
        &["--frames", "120", "--channels", "x,y"],
    );
    assert_eq!(tiff["frames"], 120);
    assert_eq!(counter(&report, "tif", "files_written"), 120);

    let raw = check_files(
        "raw",
        &dir.path().join("scan_000001.raw.index.csv"),
        &["--frames", "120"],
    );
    assert_eq!(raw["record_bytes"], 102_400);
}

#[test]
fn hdf5_bytes_reach_the_disk_through_io_uring() {
    let dir = tempfile::tempdir().unwrap();
    let file = edited_fixture(
        "hdf5-live.toml",
        dir.path(),
        &[("fps = 100", "fps = 0"), ("frames = 300", "frames = 40")],
    );
    let trace = dir.path().join("strace.log");
    let out = Command::new("strace")
        .args(["-f", "-y", "-o"])
        .arg(&trace)
        .args([
            "-e",
            "trace=write,pwrite64,pwritev,pwritev2,writev,io_uring_enter",
        ])
        .arg(env!("CARGO_BIN_EXE_streamd"))
        .args(["run", file.to_str().unwrap(), "--name"])
        .arg(pipeline_name("strace"))
        .arg("--output")
        .arg(dir.path())
        .stdout(Stdio::null())
        .output()
        .expect("strace is installed by scripts/install-deps");
    assert!(out.status.success(), "{}", stderr(&out));
    let log = std::fs::read_to_string(&trace).unwrap();
    let folder = dir.path().to_str().unwrap();
    let plain_writes: Vec<&str> = log
        .lines()
        .filter(|l| {
            ["write(", "pwrite64(", "pwritev(", "pwritev2(", "writev("]
                .iter()
                .any(|call| l.contains(call) && l.contains(&format!("<{folder}")))
        })
        .collect();
    assert!(
        plain_writes.is_empty(),
        "file data went through write/pwrite: {plain_writes:?}"
    );
    let uring_calls = log
        .lines()
        .filter(|l| l.contains("io_uring_enter("))
        .count();
    assert!(uring_calls > 40, "only {uring_calls} io_uring_enter calls");
    // And the bytes that went that way are the frames.
    check_files(
        "hdf5",
        &dir.path().join("live_master.h5"),
        &["--frames", "40"],
    );
    check_files("tiff", dir.path(), &["--frames", "40"]);
}

#[test]
fn an_swmr_reader_follows_the_file_while_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let name = pipeline_name("swmr");
    let child = start_edited("hdf5-live.toml", &name, dir.path(), &[]);
    let follower = checker()
        .arg("swmr")
        .arg(dir.path().join("live_data_000001.h5"))
        .args(["--frames", "300"])
        .output()
        .expect("run the SWMR follower");
    let (_out, report) = finished_ok(child, "run hdf5-live");
    assert!(
        follower.status.success(),
        "SWMR reader: {}",
        String::from_utf8_lossy(&follower.stderr)
    );
    let seen: Value = serde_json::from_slice(&follower.stdout).unwrap();
    let sizes = seen["sizes_seen"].as_array().unwrap();
    // At 100 frames/s and a flush every 100 ms the reader saw the file grow many
    // times, never shrink (checked by the reader), and verified all 300 frames.
    assert!(sizes.len() >= 5, "the reader saw only the sizes {sizes:?}");
    assert_eq!(seen["frames"], 300);
    assert_eq!(writer_counters(&report, "h5"), (300, 0, 0));
}

#[test]
fn a_killed_writer_leaves_readable_files() {
    let dir = tempfile::tempdir().unwrap();
    let name = pipeline_name("wkill");
    let child = start_edited(
        "hdf5-live.toml",
        &name,
        dir.path(),
        &[("frames = 300", "frames = 5000")],
    );
    let early = wait_status(&name, "frames written", |s| frames_in(s, "h5") > 50);
    let taken_early = frames_in(&early, "h5");
    // Every frame taken by then is durable: flushed by the HDF5 writer (every 100 ms),
    // written whole by the TIFF writer.
    let live = wait_status(&name, "the early frames durable", |s| {
        ["h5", "tif"]
            .iter()
            .all(|w| num(&worker(s, w, 0)["counters"], "frames_written") >= taken_early)
    });
    for stage_name in ["h5", "tif"] {
        let victim = num(worker(&live, stage_name, 0), "pid");
        // SAFETY: signalling a pid the status reported for a live worker of our pipeline.
        assert_eq!(unsafe { libc::kill(victim as i32, libc::SIGKILL) }, 0);
    }
    let out = finish(child, "run hdf5-live");
    assert_eq!(out.status.code(), Some(5), "stderr:\n{}", stderr(&out));

    let h5 = check_files("partial", &dir.path().join("live_data_000001.h5"), &[]);
    let kept = h5["frames"].as_u64().unwrap();
    assert!(
        kept >= taken_early,
        "the file holds {kept} frames; {taken_early} were durable before the kill"
    );
    // Every TIFF under its final name is whole and right; none is missing below the last.
    let tiffs = check_files("tiff", dir.path(), &[]);
    let ids: Vec<u64> = serde_json::from_value(tiffs["ids"].clone()).unwrap();
    assert!(ids.len() as u64 >= taken_early);
    assert_eq!(ids, (0..ids.len() as u64).collect::<Vec<_>>());
}

/// The HDF5 stage of `hdf5-live.toml`, removed where only the TIFF writer is wanted.
const H5_STAGE: &str = r#"[[stage]]
name = "h5"
processor = "hdf5"
input = "raw"
args = { prefix = "live", compression = "none", flush_ms = 100, detector = { distance_m = 0.1 } }
"#;

#[test]
fn a_full_disk_is_counted_exactly_and_follows_the_error_policy() {
    let dir = tempfile::tempdir().unwrap();
    // 102,400-byte frames: about 19 fit in 2 MB.
    let small = small_disk(dir.path(), 2_000_000);
    let _unmount = small.clone().map(Unmount);
    let folder = small.clone().unwrap_or_else(|| dir.path().join("small"));
    let frames = 60u64;
    for policy in ["continue", "stop"] {
        for entry in std::fs::read_dir(&folder).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
        let args = format!(
            "args = {{ prefix = \"full\", folder = \"{}\", on_error = \"{policy}\" }}",
            folder.display()
        );
        let file = edited_fixture(
            "hdf5-live.toml",
            dir.path(),
            &[
                ("nx = 128", "nx = 256"),
                ("ny = 128", "ny = 200"),
                ("frames = 300", "frames = 60"),
                (H5_STAGE, ""),
                ("args = { prefix = \"live\" }", &args),
            ],
        );
        let name = pipeline_name("full");
        let child = start(file.to_str().unwrap(), &name, dir.path());
        if small.is_none() {
            // No tmpfs of our own: limit the TIFF worker's file size below one TIFF.
            let live = wait_status(&name, "the TIFF worker runs", |s| {
                worker(s, "tif", 0)["state"] == "running"
            });
            let pid = num(worker(&live, "tif", 0), "pid").to_string();
            let limited = Command::new("prlimit")
                .args(["--pid", &pid, "--fsize=51200:51200"])
                .status()
                .unwrap();
            assert!(limited.success(), "prlimit --pid {pid}");
        }
        let out = finish(child, "run on a full disk");
        assert!(
            !out.status.success(),
            "a full disk must show in the exit status"
        );
        let report = counters(&out, "run on a full disk");
        let (written, not_written, errors) = writer_counters(&report, "tif");
        let on_disk = std::fs::read_dir(&folder)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "tiff")
            })
            .count() as u64;
        assert!(not_written > 0, "{policy}: the disk never filled");
        assert_eq!(
            on_disk, written,
            "{policy}: files on disk vs frames_written"
        );
        assert_eq!(
            errors, not_written,
            "{policy}: each frame not written is an error"
        );
        let taken = frames_in(&report, "tif");
        assert_eq!(
            written + not_written,
            taken,
            "{policy}: every frame accounted"
        );
        let last_error = worker(&report, "tif", 0)["last_error"]
            .as_str()
            .unwrap()
            .to_string();
        let cause = if small.is_some() {
            "is full"
        } else {
            "file-size limit"
        };
        assert!(last_error.contains(cause), "{policy}: {last_error}");
        if policy == "continue" {
            assert_eq!(taken, frames, "continue: the writer saw every frame");
        } else {
            assert!(
                stderr(&out).contains("stopped the pipeline (on_error = \"stop\")"),
                "{}",
                stderr(&out)
            );
        }
        check_files("tiff", &folder, &[]);
    }
}

#[test]
fn wrong_destinations_are_refused_before_any_frame() {
    let dir = tempfile::tempdir().unwrap();
    let read_only = dir.path().join("read-only");
    std::fs::create_dir(&read_only).unwrap();
    let cases = [
        (
            "folder = \"missing\"",
            "output folder missing does not exist; create it or correct `folder`",
        ),
        (
            "template = \"../{frame_id}.tiff\"",
            "would write outside the output folder",
        ),
        (
            "template = \"/tmp/{frame_id}.tiff\"",
            "would write outside the output folder",
        ),
        (
            "folder = \"read-only\"",
            "no permission to write in read-only",
        ),
    ];
    // Root may write anywhere: the permission case then runs as nobody.
    // SAFETY: getuid has no preconditions.
    let root = unsafe { libc::getuid() } == 0;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&read_only, std::fs::Permissions::from_mode(0o555)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    for (arg, message) in cases {
        let file = edited_fixture(
            "hdf5-live.toml",
            dir.path(),
            &[(
                "args = { prefix = \"live\" }",
                &format!("args = {{ {arg} }}"),
            )],
        );
        let mut command = if root && arg.contains("read-only") {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(env!("CARGO_BIN_EXE_streamd"));
            c
        } else {
            streamd()
        };
        let out = command
            .args(["run", file.to_str().unwrap(), "--name"])
            .arg(pipeline_name("dest"))
            .current_dir(dir.path())
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{arg}: {err}");
        assert!(err.contains(message), "{arg}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{arg}: one sentence: {err}");
        // Nothing started: no HDF5 file of the other writer, no frame taken.
        assert!(!dir.path().join("live_master.h5").exists(), "{arg}");
    }
}
