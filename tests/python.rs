//! The Python package with real processes (issue 16): Python consumers and producers
//! beside the binary's, the release rule, Ctrl-C, and Python stages and sources in
//! pipelines, including the shipped examples. The package is installed into `.venv` by
//! `scripts/install-deps`; the interpreter used is `.venv/bin/python`, which is also put
//! first on PATH for the pipelines (whose Python stages name no interpreter).

mod common;

use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The project's venv interpreter, first on PATH for every process the test starts.
fn python() -> Command {
    static PATH: Once = Once::new();
    PATH.call_once(|| {
        let venv = root().join(".venv/bin");
        let path = std::env::var("PATH").unwrap_or_default();
        std::env::set_var("PATH", format!("{}:{path}", venv.display()));
    });
    Command::new(root().join(".venv/bin/python"))
}

fn script(name: &str) -> PathBuf {
    root().join("tests/python").join(name)
}

fn spawn_python(args: &[&str]) -> Child {
    python()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run .venv/bin/python (scripts/install-deps installs it)")
}

/// Reads stdout lines of `child` until one equals `line`.
fn wait_line(child: &mut Child, line: &str) {
    let stdout = child.stdout.as_mut().expect("piped stdout");
    let mut reader = BufReader::new(stdout);
    let mut got = String::new();
    loop {
        got.clear();
        let n = reader.read_line(&mut got).expect("read a line");
        assert!(n > 0, "the script ended before printing {line:?}");
        if got.trim_end() == line {
            return;
        }
    }
}

#[test]
fn a_python_consumer_shares_a_group_beside_a_broadcast_and_sees_the_ramp_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let ring = ring_name("pygrp");
    let frames = 20_000u64;
    let sim = spawn(&[
        "sim",
        "--ring",
        &ring,
        "--nx",
        "1024",
        "--ny",
        "1024",
        "--dtype",
        "u16",
        "--frames",
        &frames.to_string(),
        "--slots",
        "16",
        "--wait-consumers",
        "3",
        "--json",
    ]);
    let py_ids = dir.path().join("python.ids");
    let cli_ids = dir.path().join("cli.ids");
    let py = spawn_python(&[
        script("ramp_consumer.py").to_str().unwrap(),
        &ring,
        py_ids.to_str().unwrap(),
        "--group",
        "shared",
    ]);
    let member = spawn(&[
        "consume",
        "--ring",
        &ring,
        "--group",
        "shared",
        "--verify",
        "--json",
        "--record-ids",
        cli_ids.to_str().unwrap(),
    ]);
    let whole = spawn(&["consume", "--ring", &ring, "--verify", "--json"]);
    let py = python_json(py, "the Python consumer");
    let member = counters(&finish(member, "the group's consume"), "consume");
    let whole = counters(&finish(whole, "the broadcast consume"), "consume");
    finish(sim, "sim");
    assert_eq!(py["errors"], 0, "{py}");
    assert_eq!(
        py["outside"], 0,
        "a frame's array is not a view of the ring: {py}"
    );
    assert!(py["frames"].as_u64().unwrap() > 0, "{py}");
    assert_eq!(num(&member, "verify_errors"), 0);
    assert_eq!(num(&whole, "verify_errors"), 0);
    assert_eq!(num(&whole, "received"), frames);
    let group = id_counts(dir.path(), &["python.ids", "cli.ids"]);
    assert_exactly_once(
        &group,
        frames,
        "the group of a Python and a streamd consumer",
    );
}

/// Issue 19: a Python consumer in a distributor set (mode all) sees exactly its set's
/// frames, as a `streamd consume` in the same set does, and none of the other set's.
#[test]
fn a_python_consumer_in_a_set_sees_exactly_its_sets_frames() {
    let dir = tempfile::tempdir().unwrap();
    let ring = ring_name("pyset");
    let frames = 2_000u64;
    let sim = spawn(&[
        "sim",
        "--ring",
        &ring,
        "--nx",
        "64",
        "--ny",
        "64",
        "--frames",
        &frames.to_string(),
        "--wait-consumers",
        "3",
        "--json",
    ]);
    let ids = |name: &str| dir.path().join(name);
    let py = spawn_python(&[
        script("ramp_consumer.py").to_str().unwrap(),
        &ring,
        ids("python.ids").to_str().unwrap(),
        "--group",
        "ana",
        "--batch",
        "4",
        "--set",
        "1",
        "--sets",
        "2",
    ]);
    let member = |set: &str, file: &str| {
        spawn(&[
            "consume",
            "--ring",
            &ring,
            "--group",
            "ana",
            "--batch",
            "4",
            "--sets",
            "2",
            "--set",
            set,
            "--json",
            "--record-ids",
            ids(file).to_str().unwrap(),
        ])
    };
    let (same, other) = (member("1", "same.ids"), member("0", "other.ids"));
    let py = python_json(py, "the Python set member");
    finish(same, "set 1's consume");
    finish(other, "set 0's consume");
    finish(sim, "sim");
    assert_eq!(py["errors"], 0, "{py}");
    let of_set = |set| {
        (0..frames)
            .filter(|s| s / 4 % 2 == set)
            .collect::<Vec<u64>>()
    };
    assert_eq!(read_ids(&ids("python.ids")), of_set(1));
    assert_eq!(read_ids(&ids("same.ids")), of_set(1));
    assert_eq!(read_ids(&ids("other.ids")), of_set(0));
    assert_eq!(py["received"], frames / 2, "{py}");
}

#[test]
fn a_python_producer_feeds_consume_verify_and_a_killed_python_consumer_is_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let ring = ring_name("pyprod");
    let frames = 3000;
    let producer = spawn_python(&[
        script("ramp_producer.py").to_str().unwrap(),
        &ring,
        "128",
        "256",
        &frames.to_string(),
        "3",
    ]);
    let verify = spawn(&[
        "consume",
        "--ring",
        &ring,
        "--verify",
        "--json",
        "--attach-timeout",
        "60",
    ]);
    let ids = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let full = spawn_python(&[
        script("ramp_consumer.py").to_str().unwrap(),
        &ring,
        &ids("full"),
    ]);
    let mut doomed = spawn_python(&[
        script("ramp_consumer.py").to_str().unwrap(),
        &ring,
        &ids("doomed"),
        "--stop-after",
        "200",
    ]);
    wait_line(&mut doomed, "read 200");
    kill9(&doomed);
    let _ = doomed.wait();
    let produced = python_json(producer, "the Python producer");
    assert_eq!(produced["published"], frames);
    let verified = counters(&finish(verify, "consume --verify"), "consume");
    assert_eq!(num(&verified, "received"), frames);
    assert_eq!(num(&verified, "verify_errors"), 0);
    let full = python_json(full, "the Python consumer");
    assert_eq!(full["frames"], frames, "{full}");
    assert_eq!(full["errors"], 0, "{full}");
}

#[test]
fn no_array_sees_a_released_and_reused_slot() {
    let ring = ring_name("pyrel");
    let out = finish(
        spawn_python(&[script("release_rule.py").to_str().unwrap(), &ring]),
        "release rule",
    );
    assert!(
        out.status.success(),
        "the release rule is broken:\n{}",
        stderr(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("release rule holds"));
}

#[test]
fn waiting_releases_the_gil_and_ctrl_c_interrupts_it() {
    let ring = ring_name("pyint");
    let mut child = spawn_python(&[script("interrupt.py").to_str().unwrap(), &ring]);
    wait_line(&mut child, "thread ran");
    // SAFETY: a signal to a child we have not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = finish(child, "interrupt.py");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("interrupted"),
        "{}",
        stderr(&out)
    );
}

/// sim → a Python rotate stage (2 workers, batch 4) → verify turned back.
fn rotate_pipeline(dir: &Path, fail_on: u64) -> PathBuf {
    let file = dir.join("pyrotate.toml");
    let text = std::fs::read_to_string(fixture("python-rotate.toml"))
        .unwrap()
        .replace(
            "args = { file = \"../../examples/python/rotate.py\", class = \"Rotate\", angle = 90 }",
            &format!(
                "args = {{ file = \"{}\", class = \"FaultyRotate\", angle = 90, fail_on = {fail_on} }}",
                root().join("fixtures/python/faulty_rotate.py").display()
            ),
        )
        .replace(
            "args = { rotated = 1 }",
            &format!("args = {{ rotated = 1, ids_file = \"{}/check.ids\" }}", dir.display()),
        );
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn a_python_stage_is_a_worker_like_any_other() {
    python();
    let dir = tempfile::tempdir().unwrap();
    let name = pipeline_name("pyrot");
    let fail_on = 7;
    let file = rotate_pipeline(dir.path(), fail_on);
    let child = start(file.to_str().unwrap(), &name, dir.path());
    let live = wait_status(&name, "frames through the Python stage", |s| {
        frames_in(s, "rotate") > 300
    });

    // A change the class refuses changes nothing; one it takes reaches every worker.
    let configure = |setting: &str| {
        streamd()
            .args(["configure", "rotate", setting, "--pipeline", &name])
            .output()
            .expect("configure")
    };
    let refused = configure("angle=45");
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("angle must be a multiple of 90 degrees"),
        "{}",
        stderr(&refused)
    );
    let taken = configure("angle=450");
    assert!(taken.status.success(), "{}", stderr(&taken));
    wait_status(&name, "the change applied by both workers", |s| {
        (0..2).all(|w| worker(s, "rotate", w)["counters"]["configured"] == 1)
    });

    // The package sees the running pipeline as plain data.
    let seen = python()
        .args([
            "-c",
            "import json, sys, streamd; s = streamd.status(sys.argv[1]); \
             print(json.dumps({'stages': [t['name'] for t in s['stages']], \
             'rings': sorted(r['name'] for r in streamd.rings() if r['name'].startswith(sys.argv[1] + '.'))}))",
            &name,
        ])
        .output()
        .unwrap();
    assert!(seen.status.success(), "{}", stderr(&seen));
    let seen: Value = serde_json::from_slice(seen.stdout.trim_ascii_end()).unwrap();
    assert_eq!(
        seen["stages"],
        serde_json::json!(["source", "rotate", "check"])
    );
    assert_eq!(
        seen["rings"],
        serde_json::json!([
            format!("{name}.raw"),
            format!("{name}.rotated.0"),
            format!("{name}.rotated.1")
        ])
    );

    // kill -9 of a Python worker: restarted, counted.
    let pid = worker(&live, "rotate", 0)["pid"].as_u64().unwrap();
    // SAFETY: a worker of the pipeline this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let out = finish(child, "the rotate pipeline");
    // The frame that raised is a data error: the run says so in its exit status.
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = counters(&out, "the rotate pipeline");
    let rotate = stage(&report, "rotate");
    let restarts: u64 = (0..2)
        .map(|w| num(worker(&report, "rotate", w), "restarts"))
        .sum();
    assert_eq!(restarts, 1, "{rotate}");
    let errors: u64 = (0..2)
        .map(|w| num(worker(&report, "rotate", w), "errors"))
        .sum();
    assert_eq!(
        errors, 1,
        "the exception on frame {fail_on} is one error: {rotate}"
    );
    let shown: Vec<String> = (0..2)
        .filter_map(|w| {
            worker(&report, "rotate", w)["last_error"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert!(
        shown.iter().any(
            |e| e.contains("ValueError: frame 7 is the one this test breaks on")
                && e.contains("faulty_rotate.py:")
        ),
        "{shown:?}"
    );
    // What the supervisor kept of each worker: how the killed one ended, and the line
    // the erring one wrote to stderr.
    let kept = |key: &str| -> Vec<String> {
        (0..2)
            .filter_map(|w| {
                worker(&report, "rotate", w)[key]
                    .as_str()
                    .map(str::to_string)
            })
            .collect()
    };
    assert!(
        kept("last_exit").contains(&"was killed by signal 9 (SIGKILL)".to_string()),
        "{rotate}"
    );
    assert!(
        kept("last_stderr")
            .iter()
            .any(|l| l.contains("ValueError: frame 7 is the one this test breaks on")),
        "{rotate}"
    );
    assert_eq!(counter(&report, "check", "verify_errors"), 0);
    // Every frame but the broken one, rotated exactly; the killed worker's unfinished run
    // is delivered again, so a frame may arrive twice, never not at all.
    let ids = id_counts(dir.path(), &["check.ids"]);
    let expected: Vec<u64> = (0..2000).filter(|&i| i != fail_on).collect();
    assert_eq!(ids.keys().copied().collect::<Vec<_>>(), expected);
    assert!(num(rotate, "frames_out") >= 1999, "{rotate}");
    // The class's own counters (get_stats) are shown for each worker.
    for w in 0..2 {
        assert!(
            worker(&report, "rotate", w)["counters"]["rotated"]
                .as_u64()
                .unwrap()
                > 0
        );
    }
}

#[test]
fn a_python_file_that_does_not_import_is_refused_before_anything_starts() {
    python();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.toml");
    let text = std::fs::read_to_string(fixture("python-rotate.toml"))
        .unwrap()
        .replace(
            "args = { file = \"../../examples/python/rotate.py\", class = \"Rotate\", angle = 90 }",
            &format!(
                "args = {{ file = \"{}\", class = \"Broken\" }}",
                root().join("fixtures/python/broken.py").display()
            ),
        );
    std::fs::write(&file, text).unwrap();
    let name = pipeline_name("pybad");
    for command in ["check", "run"] {
        let mut args = vec![command, file.to_str().unwrap()];
        if command == "run" {
            args.extend(["--name", &name]);
        }
        let out = streamd().args(&args).output().unwrap();
        assert!(!out.status.success(), "{command} accepted a syntax error");
        let message = stderr(&out);
        assert!(
            message.contains("broken.py:2:") && message.contains("SyntaxError"),
            "{command}: {message}"
        );
        assert!(
            leftovers(&name).is_empty(),
            "{command} left {:?}",
            leftovers(&name)
        );
    }
}

#[test]
fn a_module_class_without_process_is_refused_by_name() {
    python();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("module.toml");
    let text = std::fs::read_to_string(fixture("python-rotate.toml"))
        .unwrap()
        .replace(
            "args = { file = \"../../examples/python/rotate.py\", class = \"Rotate\", angle = 90 }",
            "args = { module = \"json\", class = \"JSONDecoder\" }",
        );
    std::fs::write(&file, text).unwrap();
    let out = streamd()
        .args(["check", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("class JSONDecoder has no process() method"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_python_stage_sends_to_outputs_by_port() {
    python();
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("parity.toml");
    std::fs::write(
        &pipeline,
        format!(
            r#"name = "pypar"
[[ring]]
name = "raw"
slots = 16
[[ring]]
name = "even"
slots = 16
[[ring]]
name = "odd"
slots = 16
[source]
ring = "raw"
nx = 64
ny = 32
dtype = "u8"
frames = 500
[[stage]]
name = "parity"
processor = "python"
input = "raw"
output = ["even", "odd"]
args = {{ file = "{file}", class = "ByParity" }}
[[stage]]
name = "evens"
processor = "verify"
input = "even"
args = {{ ids_file = "{dir}/even.ids", attributes = ["odd"] }}
[[stage]]
name = "odds"
processor = "verify"
input = "odd"
args = {{ ids_file = "{dir}/odd.ids", attributes = ["odd"] }}
"#,
            file = root().join("fixtures/python/by_parity.py").display(),
            dir = dir.path().display()
        ),
    )
    .unwrap();
    let name = pipeline_name("pypar");
    let (_, report) = finished_ok(
        start(pipeline.to_str().unwrap(), &name, dir.path()),
        "parity",
    );
    assert_eq!(counter(&report, "parity", "even"), 250);
    assert_eq!(counter(&report, "parity", "odd"), 250);
    for (file, parity, attr) in [("even.ids", 0, "-"), ("odd.ids", 1, "1")] {
        let records = read_records(&dir.path().join(file));
        let ids: Vec<u64> = records.iter().map(|(id, _)| *id).collect();
        assert_eq!(
            ids,
            (0..500).filter(|i| i % 2 == parity).collect::<Vec<_>>()
        );
        assert!(records.iter().all(|(_, a)| a["odd"] == attr), "{file}");
    }
    // Both outputs are the ramp, verified bit for bit.
    assert_eq!(counter(&report, "evens", "verify_errors"), 0);
    assert_eq!(counter(&report, "odds", "verify_errors"), 0);
    assert_eq!(counter(&report, "odds", "verified"), 250);
}

#[test]
fn the_examples_replay_a_folder_into_the_hit_finder_and_follow_a_ring() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("frames");
    let made = finish(
        spawn_python(&[
            root()
                .join("fixtures/python/hot_frames.py")
                .to_str()
                .unwrap(),
            folder.to_str().unwrap(),
        ]),
        "hot_frames.py",
    );
    let hot: std::collections::BTreeMap<String, u64> =
        serde_json::from_slice(made.stdout.trim_ascii_end()).unwrap();
    let examples = root().join("examples/python");
    let pipeline = dir.path().join("hits.toml");
    std::fs::write(
        &pipeline,
        format!(
            r#"name = "pyhits"
[[ring]]
name = "raw"
slots = 8
[[ring]]
name = "hits"
slots = 8
[source]
kind = "python"
ring = "raw"
file = "{ex}/replay_folder.py"
class = "ReplayFolder"
nx = 64
ny = 48
dtype = "u16"
args = {{ folder = "{folder}" }}
[[stage]]
name = "hits"
processor = "python"
input = "raw"
output = "hits"
args = {{ file = "{ex}/hit_finder.py", class = "HitFinder", threshold = 1000, min_pixels = 50 }}
[[stage]]
name = "record"
processor = "verify"
input = "hits"
args = {{ pattern = "none", ids_file = "{dir}/hits.ids", attributes = ["hit_pixels", "file"] }}
"#,
            ex = examples.display(),
            folder = folder.display(),
            dir = dir.path().display()
        ),
    )
    .unwrap();
    python();
    let name = pipeline_name("pyhits");
    let (_, report) = finished_ok(
        start(pipeline.to_str().unwrap(), &name, dir.path()),
        "hits pipeline",
    );
    assert_eq!(num(stage(&report, "source"), "frames_out"), 30);
    assert_eq!(counter(&report, "hits", "hits"), hot.len() as u64);
    assert_eq!(counter(&report, "hits", "misses"), 30 - hot.len() as u64);
    let records = read_records(&dir.path().join("hits.ids"));
    let got: Vec<(u64, String, String)> = records
        .iter()
        .map(|(id, a)| (*id, a["hit_pixels"].clone(), a["file"].clone()))
        .collect();
    let expected: Vec<(u64, String, String)> = hot
        .iter()
        .map(|(id, pixels)| {
            let id: u64 = id.parse().unwrap();
            let file = if id < 29 {
                "frames_000.npy"
            } else {
                "frames_001.npy"
            };
            (id, pixels.to_string(), file.to_string())
        })
        .collect();
    let mut got = got;
    got.sort();
    let mut expected = expected;
    expected.sort();
    assert_eq!(got, expected);

    // follow.py reads a live ring to its end and prints statistics.
    let ring = ring_name("pyfollow");
    let sim = spawn(&[
        "sim",
        "--ring",
        &ring,
        "--nx",
        "64",
        "--ny",
        "64",
        "--fps",
        "400",
        "--frames",
        "1000",
        "--wait-consumers",
        "1",
    ]);
    let follow = finish(
        spawn_python(&[examples.join("follow.py").to_str().unwrap(), &ring]),
        "follow.py",
    );
    finish(sim, "sim");
    let text = String::from_utf8_lossy(&follow.stdout);
    assert!(follow.status.success(), "{}", stderr(&follow));
    assert!(text.contains("frames/s, mean"), "{text}");
    assert!(text.contains("done: end of stream"), "{text}");
}
