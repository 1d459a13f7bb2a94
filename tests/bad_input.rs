//! Issue 15: bad input gets one clear sentence, never a panic (exit 101), a spin or a
//! silent acceptance. Regression tests for each defect seen, then bounded fuzz loops
//! (seeded; `STREAMD_TEST_SEED` repeats a run) over the shipped pipeline files, the
//! command line and damaged ring segments. Each fuzz test prints how many cases it ran.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Runs `cmd` under the hang guard; on the guard, SIGTERM first (every loop must honour
/// it), and the test fails if even that is not obeyed.
fn run_guarded(mut cmd: Command, what: &str) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn streamd");
    finish(child, what)
}

/// Asserts the outcome of bad or odd input: no panic, and every stderr line one
/// `streamd...:` sentence (a refusal is exactly one line).
fn assert_clean(out: &Output, what: &str) {
    let err = stderr(out);
    assert_ne!(out.status.code(), Some(101), "{what} panicked:\n{err}");
    // Only the SIGTERM a test sends may end it (before a handler is set, its default).
    let signal = std::os::unix::process::ExitStatusExt::signal(&out.status);
    assert!(
        out.status.code().is_some() || signal == Some(libc::SIGTERM),
        "{what} died of signal {signal:?}:\n{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{what}:\n{err}"
    );
    for line in err.lines() {
        assert!(line.starts_with("streamd"), "{what}: stray line {line:?}");
        assert!(
            line.chars().count() < 600,
            "{what}: a line of {} characters",
            line.len()
        );
    }
    if out.status.code() == Some(2) {
        assert_eq!(
            err.lines().count(),
            1,
            "{what}: refusal over several lines:\n{err}"
        );
    }
}

fn refused(args: &[&str]) -> String {
    let mut cmd = streamd();
    cmd.args(args);
    let out = run_guarded(cmd, &args.join(" "));
    assert_clean(&out, &args.join(" "));
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?} was accepted: {}",
        stderr(&out)
    );
    stderr(&out).trim().to_string()
}

#[test]
fn numbers_that_do_not_fit_a_duration_are_refused_with_their_limits() {
    let ring = ring_name("num");
    let cases: &[(&[&str], &str)] = &[
        (
            &["sim", "--ring", &ring, "--fps", "1e-300"],
            "give 0 (as fast as possible) or 0.001 to 10000000 frames per second",
        ),
        (
            &["sim", "--ring", &ring, "--runtime", "-1"],
            "give more than 0 and at most 31536000 seconds",
        ),
        (
            &["sim", "--ring", &ring, "--runtime", "nan"],
            "is not a duration",
        ),
        (
            &["sim", "--ring", &ring, "--runtime", "inf"],
            "is not a duration",
        ),
        (
            &["consume", "--ring", &ring, "--runtime", "-1"],
            "give more than 0",
        ),
        (
            &["consume", "--ring", &ring, "--runtime", "nan"],
            "is not a duration",
        ),
        (
            &["consume", "--ring", &ring, "--attach-timeout", "1e300"],
            "give 0 to 31536000 seconds",
        ),
        (
            &["consume", "--ring", &ring, "--attach-timeout", "-1"],
            "give 0 to 31536000 seconds",
        ),
        (
            &["run", "fixtures/pipelines/demo.toml", "--runtime=1e300"],
            "give more than 0",
        ),
        // `run`, `sim` and `consume` agree: a runtime is more than 0.
        (
            &["run", "fixtures/pipelines/demo.toml", "--runtime", "0"],
            "give more than 0",
        ),
        (
            &["sim", "--ring", &ring, "--runtime", "0"],
            "give more than 0",
        ),
        (
            &["consume", "--ring", &ring, "--runtime", "0"],
            "give more than 0",
        ),
        (
            &["sim", "--ring", &ring, "--slots", "0"],
            "not in 1..=1048576",
        ),
        (
            &["consume", "--ring", &ring, "--work-us", "99999999999"],
            "not in 0..=1000000",
        ),
    ];
    for (args, expected) in cases {
        let mut cmd = streamd();
        cmd.current_dir(env!("CARGO_MANIFEST_DIR")).args(*args);
        let out = run_guarded(cmd, &args.join(" "));
        assert_clean(&out, &args.join(" "));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn confusing_messages_say_what_is_wrong() {
    let ring = ring_name("msg");
    let msg = refused(&[
        "sim",
        "--ring",
        &ring,
        "--metadata",
        "x",
        "--metadata-ring",
        &ring,
        "--frames",
        "1",
    ]);
    assert!(msg.contains("is the frame ring itself"), "{msg}");
    assert!(!Path::new(&format!("/dev/shm/streamd-ring.{ring}")).exists());

    let demo = format!(
        "{}/fixtures/pipelines/demo.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let msg = refused(&["run", &demo, "--name", "no/slash"]);
    assert_eq!(
        msg,
        "streamd: --name 'no/slash' is invalid: use 1 to 16 characters from A-Z a-z 0-9 _ -"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    let msg = refused(&["run", &demo, "--output", file.path().to_str().unwrap()]);
    assert!(msg.contains("is a file, not a folder"), "{msg}");
    let msg = refused(&["sim", "--ring", "bad\nname", "--frames", "1"]);
    assert!(msg.contains("ring name 'bad\\nname' is invalid"), "{msg}");
    let msg = refused(&[
        "sim", "--ring", &ring, "--nx", "100000", "--ny", "100000", "--slots", "200",
    ]);
    assert!(msg.contains("would take more than 2^40 bytes"), "{msg}");
}

#[test]
fn a_garbage_npy_header_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.npy");
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    let header = "{'descr': '<u2',\n\n'shape': (oops\n\x07)}\n";
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    std::fs::write(&path, bytes).unwrap();
    let pattern = format!("--pattern=file:{}", path.display());
    refused(&[
        "sim",
        "--ring",
        &ring_name("npy"),
        &pattern,
        "--frames",
        "1",
    ]);
}

/// Issue 15, item 5: `consume --runtime` returns at its time on an idle ring and on a
/// stalled producer, and SIGTERM ends a consumer waiting on a ring that never comes.
#[test]
fn consume_runtime_holds_on_an_idle_ring() {
    let ring = ring_name("idle");
    // A producer that publishes nothing until two consumers are there: idle.
    let sim = spawn(&[
        "sim",
        "--ring",
        &ring,
        "--wait-consumers",
        "2",
        "--frames",
        "1",
    ]);
    let consume = spawn(&["consume", "--ring", &ring, "--runtime", "1", "--json"]);
    let out = finish(consume, "consume on an idle ring");
    assert_clean(&out, "consume --runtime 1");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let c = counters(&out, "consume");
    assert_eq!(c["end"], "runtime");
    assert_eq!(c["received"], 0);
    // SAFETY: signalling a child we spawned and have not reaped.
    unsafe { libc::kill(sim.id() as i32, libc::SIGTERM) };
    assert_eq!(finish(sim, "sim").status.code(), Some(0));
}

/// Issue 15, item 2: a ring whose `published` count is 2^64-1 ends a lossy consumer
/// with one sentence and status 1 instead of a silent spin; damage of any other byte of
/// a segment never panics or hangs, and SIGTERM always ends the consumer.
/// Defect 4: split-kill.toml without `fps` (the source as fast as it can) lost frames in
/// the stitcher's cache while no ring dropped anything. The stitcher now holds back the
/// input that runs ahead, so every frame is stitched whole.
#[test]
fn split_and_stitch_keep_up_without_a_rate() {
    let dir = tempfile::tempdir().unwrap();
    // Only a full cache may let a frame go incomplete here: a worker slow to start on a
    // busy host must not time a frame out.
    let report = run_edited(
        "split-kill.toml",
        "nofps",
        dir.path(),
        &[
            ("fps = 200\n", ""),
            ("timeout_ms = 200", "timeout_ms = 600000"),
        ],
    );
    assert_eq!(counter(&report, "stitch", "stitched"), 600);
    for key in ["incomplete", "late_tiles", "duplicate_tiles", "skipped_ids"] {
        assert_eq!(counter(&report, "stitch", key), 0, "{key}");
    }
    assert_eq!(counter(&report, "check", "verified"), 600);
    assert_eq!(counter(&report, "check", "verify_errors"), 0);
}

#[test]
fn damaged_segments_are_reported_once_never_spun_on() {
    let seed = seed();
    let live = ring_name("live");
    let sim = spawn(&[
        "sim",
        "--ring",
        &live,
        "--slots",
        "4",
        "--nx",
        "16",
        "--ny",
        "16",
        "--wait-consumers",
        "1",
    ]);
    let path = |r: &str| PathBuf::from(format!("/dev/shm/streamd-ring.{r}"));
    while std::fs::read(path(&live))
        .map(|b| b.len() < 12 || b[8] == 0)
        .unwrap_or(true)
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let original = std::fs::read(path(&live)).unwrap();

    let copy = ring_name("head");
    let mut bytes = original.clone();
    bytes[256..264].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(path(&copy), &bytes).unwrap();
    for delivery in ["lossy", "lossless"] {
        let mut cmd = streamd();
        cmd.args([
            "consume",
            "--ring",
            &copy,
            "--delivery",
            delivery,
            "--attach-timeout",
            "0",
            "--json",
        ]);
        let out = run_guarded(cmd, "consume on head 2^64-1");
        assert_clean(&out, "consume on head 2^64-1");
        assert_eq!(out.status.code(), Some(1), "{delivery}: {}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("is damaged (")
                && err.contains("18446744073709551615, beyond any real stream"),
            "{err}"
        );
        assert_eq!(counters(&out, "consume")["end"], "damaged");
    }
    let _ = std::fs::remove_file(path(&copy));

    // Random damage: a few bytes of the header, the tables or a slot header.
    let mut rng = fastrand::Rng::with_seed(seed);
    let cases = 100;
    for case in 0..cases {
        let name = ring_name("dmg");
        let mut bytes = original.clone();
        for _ in 0..rng.usize(1..4) {
            let region =
                [0..1024, 1024..bytes.len().min(40960), 0..bytes.len()][rng.usize(0..3)].clone();
            let at = rng.usize(region);
            bytes[at] = match rng.u8(0..3) {
                0 => 0,
                1 => 0xff,
                _ => rng.u8(..),
            };
        }
        std::fs::write(path(&name), &bytes).unwrap();
        let mut args = vec![
            "consume",
            "--ring",
            &name,
            "--attach-timeout",
            "0",
            "--runtime",
            "0.3",
        ];
        if rng.bool() {
            args.extend(["--delivery", "lossy"]);
        }
        if rng.bool() {
            args.extend(["--group", "G"]);
        }
        let mut cmd = streamd();
        cmd.args(&args);
        let out = run_guarded(cmd, &format!("damage case {case}"));
        assert_clean(&out, &format!("damage case {case} (seed {seed})"));
        assert!(
            stderr(&out).lines().count() <= 3,
            "case {case}: {}",
            stderr(&out)
        );
        let _ = std::fs::remove_file(path(&name));
    }
    println!("fuzz: {cases} damaged segments consumed (seed {seed})");
    // SAFETY: signalling a child we spawned and have not reaped.
    unsafe { libc::kill(sim.id() as i32, libc::SIGTERM) };
    finish(sim, "sim");
}

fn seed() -> u64 {
    let seed = std::env::var("STREAMD_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("seed {seed} (STREAMD_TEST_SEED repeats it)");
    seed
}

/// Values a careless user or a damaged file puts where a number or a name belongs.
const ODD_VALUES: &[&str] = &[
    "0",
    "-1",
    "1e300",
    "-1e300",
    "1e-300",
    "nan",
    "inf",
    "-inf",
    "9223372036854775807",
    "18446744073709551616",
    "0.5",
    "\"\"",
    "\"a\\nb\"",
    "[1, 2]",
    "[]",
    "{}",
    "true",
    "\"x\"",
    "[100000, 1]",
    "\"..\"",
    "\".\"",
    "\"/\"",
    "\"{worker}\"",
];

/// Mutates every shipped pipeline file (replaced values, deleted lines, duplicated
/// lines, truncation) and checks each with `streamd check`: accepted, or refused with
/// one line that names FILE:LINE:COL; never a panic or a hang.
#[test]
fn fuzz_mutated_pipeline_files() {
    let seed = seed();
    let mut rng = fastrand::Rng::with_seed(seed);
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(format!("{root}/fixtures/pipelines"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let (mut cases, mut refused, mut accepted) = (0, 0, 0);
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for _ in 0..30 {
            let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            let i = rng.usize(0..out.len());
            match rng.u8(0..5) {
                // Replace a value.
                0 | 1 => {
                    if let Some((key, _)) = out[i].split_once(" = ") {
                        out[i] = format!("{key} = {}", ODD_VALUES[rng.usize(0..ODD_VALUES.len())]);
                    }
                }
                2 => {
                    out.remove(i);
                }
                3 => {
                    let l = out[i].clone();
                    out.insert(i, l);
                }
                _ => out.truncate(i),
            }
            let path = dir.path().join(file.file_name().unwrap());
            std::fs::write(&path, out.join("\n")).unwrap();
            let mut cmd = streamd();
            cmd.current_dir(dir.path()).arg("check").arg(&path);
            let result = run_guarded(cmd, &format!("check of a mutated {}", file.display()));
            let what = format!("{} mutated at line {} (seed {seed})", file.display(), i + 1);
            assert_clean(&result, &what);
            match result.status.code() {
                Some(0) => accepted += 1,
                Some(2) => {
                    refused += 1;
                    let err = stderr(&result);
                    let origin = format!("streamd: {}:", path.display());
                    let located = err.strip_prefix(&origin).is_some_and(|rest| {
                        let mut parts = rest.splitn(3, ':');
                        parts.next().is_some_and(|l| l.parse::<u32>().is_ok())
                            && parts.next().is_some_and(|c| c.parse::<u32>().is_ok())
                    });
                    assert!(located, "{what}: not located: {err}");
                }
                other => panic!("{what}: exit {other:?}: {}", stderr(&result)),
            }
            cases += 1;
        }
    }
    println!("fuzz: {cases} mutated pipeline files checked ({refused} refused, {accepted} accepted; seed {seed})");
}

/// Random command lines for `sim`, `consume`, `run` and `check` with odd values: never a
/// panic, a refusal is one line, and whatever runs ends on SIGTERM (the hang guard).
#[test]
fn fuzz_command_lines() {
    let seed = seed();
    let mut rng = fastrand::Rng::with_seed(seed);
    let values = [
        "0",
        "-1",
        "1e300",
        "1e-300",
        "nan",
        "inf",
        "-0",
        "0.001",
        "3",
        "abc",
        "",
        "18446744073709551616",
        "a\nb",
    ];
    let flags: &[(&str, &[&str])] = &[
        (
            "sim",
            &[
                "--fps",
                "--runtime",
                "--slots",
                "--nx",
                "--ny",
                "--frames",
                "--metadata-jitter-us",
                "--metadata-gap",
                "--wait-consumers",
            ],
        ),
        (
            "consume",
            &[
                "--runtime",
                "--attach-timeout",
                "--batch",
                "--frames",
                "--work-us",
                "--group",
                "--delivery",
            ],
        ),
        ("run", &["--runtime", "--name", "--metrics"]),
        ("check", &["--name", "--output"]),
    ];
    let demo = format!(
        "{}/fixtures/pipelines/demo.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let cases = 120;
    for case in 0..cases {
        let (command, options) = flags[rng.usize(0..flags.len())];
        let ring = ring_name("cli");
        let mut args: Vec<String> = vec![command.into()];
        match command {
            "sim" => args.extend([
                "--ring".into(),
                ring.clone(),
                "--nx".into(),
                "8".into(),
                "--ny".into(),
                "8".into(),
            ]),
            "consume" => args.extend([
                "--ring".into(),
                ring.clone(),
                "--attach-timeout".into(),
                "0".into(),
            ]),
            _ => args.push(demo.clone()),
        }
        let out_dir = tempfile::tempdir().unwrap();
        if command == "run" {
            args.extend(["--output".into(), out_dir.path().display().to_string()]);
            args.extend(["--name".into(), pipeline_name("fz")]);
        }
        for _ in 0..rng.usize(1..3) {
            args.push(options[rng.usize(0..options.len())].into());
            args.push(values[rng.usize(0..values.len())].into());
        }
        // Whatever would run for long is bounded: sim stops after a few frames.
        if command == "sim"
            && !args.contains(&"--frames".to_string())
            && !args.contains(&"--runtime".to_string())
        {
            args.extend(["--frames".into(), "3".into()]);
        }
        if command == "run" {
            // A run that starts is stopped by SIGTERM below, if the guard of the
            // runtime does not end it first.
            args.push("--json".into());
        }
        let what = format!("case {case}: streamd {} (seed {seed})", args.join(" "));
        let mut child = streamd()
            .args(&args)
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Give it a moment to refuse; then whatever still runs must obey SIGTERM.
        let mut waited = 0;
        while child.try_wait().unwrap().is_none() && waited < 100 {
            std::thread::sleep(std::time::Duration::from_millis(10));
            waited += 1;
        }
        if child.try_wait().unwrap().is_none() {
            // SAFETY: signalling a child we spawned and have not reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        let out = finish(child, &what);
        assert_clean(&out, &what);
        let _ = std::fs::remove_file(format!("/dev/shm/streamd-ring.{ring}"));
    }
    println!("fuzz: {cases} command lines run (seed {seed})");
}
