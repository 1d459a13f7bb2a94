//! What the operator sees of a running pipeline when something goes wrong (issue 19): a
//! failed worker's reason and a stalled worker in `status`, `top --once` and the
//! metrics.

mod common;

use common::*;
use serde_json::Value;
use std::process::Child;

/// `endless.toml` with `[restart] max_crashes = 1` (a killed worker is marked failed at
/// once), serving metrics on `port`, in `dir`.
fn start_fragile(name: &str, dir: &std::path::Path, port: u16) -> Child {
    let file = edited_fixture(
        "endless.toml",
        dir,
        &[(
            "[[ring]]\nname = \"raw\"",
            "[restart]\nmax_crashes = 1\n\n[[ring]]\nname = \"raw\"",
        )],
    );
    spawn(&[
        "run",
        file.to_str().unwrap(),
        "--name",
        name,
        "--output",
        dir.to_str().unwrap(),
        "--metrics",
        &format!("127.0.0.1:{port}"),
        "--json",
    ])
}

/// The Prometheus page served on `port`.
fn metrics(port: u16) -> String {
    let mut http = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics port");
    std::io::Write::write_all(&mut http, b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut page = String::new();
    std::io::Read::read_to_string(&mut http, &mut page).unwrap();
    page
}

fn signal(pid: u64, signal: i32) {
    // SAFETY: kill(2) on a worker of a pipeline this test started; it is alive (its
    // status says so) and its supervisor has not reaped it.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0, "kill {pid}");
}

fn stop(name: &str) {
    let out = streamd()
        .args(["stop", "--pipeline", name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_failed_worker_says_why_in_status_top_and_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let name = pipeline_name("why");
    let port = (40_000 + std::process::id() % 20_000) as u16;
    let child = start_fragile(&name, dir.path(), port);
    let live = wait_status(&name, "frames at the sink", |s| frames_in(s, "sink") > 20);
    assert_eq!(worker(&live, "sink", 0)["reason"], Value::Null);
    let health = || {
        let out = streamd()
            .args(["status", "--health", "--pipeline", &name])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    };
    assert_eq!(health(), (Some(0), format!("pipeline '{name}' is healthy")));
    signal(num(worker(&live, "sink", 0), "pid"), libc::SIGKILL);
    let report = wait_status(&name, "the sink failed", |s| {
        worker(s, "sink", 0)["state"] == "failed"
    });
    let sink = worker(&report, "sink", 0);
    let killed = "was killed by signal 9 (SIGKILL)";
    assert_eq!(sink["last_exit"], killed);
    assert_eq!(sink["exit_signal"], 9);
    assert_eq!(sink["exit_status"], Value::Null);
    assert_eq!(sink["reason"], killed);

    let text = streamd()
        .args(["status", "--pipeline", &name])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("sink worker 0 failed: {killed}")),
        "{text}"
    );
    let top = streamd()
        .args(["top", "--once", "--pipeline", &name])
        .output()
        .unwrap();
    let top = String::from_utf8_lossy(&top.stdout);
    assert!(
        top.contains(&format!("FAILED: sink w0 ({killed})")),
        "{top}"
    );
    // The health check a service manager or a monitor runs.
    assert_eq!(
        health(),
        (
            Some(1),
            format!("pipeline '{name}': sink worker 0 failed: {killed}")
        )
    );

    let page = metrics(port);
    let labels = format!("pipeline=\"{name}\",stage=\"sink\",worker=\"0\"");
    for line in [
        format!("streamd_worker_failed{{{labels}}} 1"),
        format!("streamd_worker_exit_signal{{{labels}}} 9"),
        format!("streamd_worker_reason_info{{{labels},state=\"failed\",reason=\"{killed}\"}} 1"),
    ] {
        assert!(page.lines().any(|l| l == line), "no {line:?} in\n{page}");
    }

    stop(&name);
    let out = finish(child, "run with a failed sink");
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let last = counters(&out, "run with a failed sink");
    assert_eq!(worker(&last, "sink", 0)["reason"], killed);
}

#[test]
fn a_stopped_worker_is_flagged_stalled_and_what_waits_for_it_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let name = pipeline_name("stall");
    let port = (41_000 + std::process::id() % 20_000) as u16;
    let child = start_fragile(&name, dir.path(), port);
    let live = wait_status(&name, "frames at the sink", |s| frames_in(s, "sink") > 20);
    let sink = num(worker(&live, "sink", 0), "pid");
    signal(sink, libc::SIGSTOP);
    // The sink's rings fill, so everything before it waits for space: only the sink
    // itself is stalled.
    let report = wait_status(&name, "the sink stalled, the rest held back", |s| {
        worker(s, "sink", 0)["stalled"] == true
            && worker(s, "source", 0)["waiting_for"].is_string()
            && (0..2).all(|w| worker(s, "pass", w)["waiting_for"].is_string())
    });
    let stalled = worker(&report, "sink", 0);
    assert_eq!(stalled["state"], "running", "{stalled}");
    assert!(num(stalled, "heartbeat_age_ms") > 2000, "{stalled}");
    let why = stalled["reason"].as_str().unwrap();
    assert!(
        why.starts_with("no heartbeat for ") && why.ends_with(" s, process stopped (SIGSTOP)"),
        "{why}"
    );
    let source = worker(&report, "source", 0);
    assert_eq!(source["stalled"], false);
    assert_eq!(source["waiting_for"], format!("{name}.raw"));
    assert_eq!(source["reason"], format!("waiting for space in {name}.raw"));
    for w in 0..2 {
        assert_eq!(worker(&report, "pass", w)["stalled"], false);
        assert_eq!(
            worker(&report, "pass", w)["waiting_for"],
            format!("{name}.out.{w}")
        );
    }

    let text = streamd()
        .args(["status", "--pipeline", &name])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    let row = text
        .lines()
        .find(|l| l.starts_with("sink "))
        .unwrap_or_else(|| panic!("no sink row:\n{text}"));
    assert_eq!(row.split_whitespace().nth(4), Some("stalled"), "{text}");
    assert!(
        text.contains("sink worker 0 stalled: no heartbeat for "),
        "{text}"
    );
    let page = metrics(port);
    let labels = |stage: &str| format!("pipeline=\"{name}\",stage=\"{stage}\",worker=\"0\"");
    for line in [
        format!("streamd_worker_stalled{{{}}} 1", labels("sink")),
        format!("streamd_worker_stalled{{{}}} 0", labels("source")),
    ] {
        assert!(page.lines().any(|l| l == line), "no {line:?} in\n{page}");
    }

    // Going on again, it is no longer stalled and nothing was lost.
    signal(sink, libc::SIGCONT);
    wait_status(&name, "the sink running again", |s| {
        worker(s, "sink", 0)["stalled"] == false
            && frames_in(s, "sink") > frames_in(&report, "sink")
    });
    stop(&name);
    let (_, last) = finished_ok(child, "run after SIGCONT");
    let ids = id_counts(dir.path(), &["sink.ids"]);
    assert_exactly_once(
        &ids,
        num(worker(&last, "source", 0), "last_frame_id") + 1,
        "sink",
    );
}

#[test]
fn a_source_below_its_rate_says_so_and_takes_a_new_rate_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let name = pipeline_name("rate");
    let port = (42_000 + std::process::id() % 20_000) as u16;
    // A million frames of 1 MiB per second: no host publishes that.
    let file = edited_fixture(
        "endless.toml",
        dir.path(),
        &[(
            "nx = 256\nny = 256\ndtype = \"u8\"\nfps = 500",
            "nx = 512\nny = 512\ndtype = \"f32\"\nfps = 1000000",
        )],
    );
    let child = spawn(&[
        "run",
        file.to_str().unwrap(),
        "--name",
        &name,
        "--output",
        dir.path().to_str().unwrap(),
        "--metrics",
        &format!("127.0.0.1:{port}"),
        "--json",
    ]);
    let report = wait_status(&name, "the source below its rate", |s| {
        stage(s, "source")["below_rate"] == true
    });
    let source = stage(&report, "source");
    assert_eq!(source["requested_fps"], 1e6);
    let achieved = source["achieved_fps"].as_f64().unwrap();
    assert!(achieved < 0.9e6, "{source}");
    assert!(
        worker(&report, "source", 0)["reason"]
            .as_str()
            .is_some_and(|r| r.ends_with(" of the 1000000 frames/s asked for")
                || r.starts_with("waiting for space in ")),
        "{source}"
    );
    let text = streamd()
        .args(["status", "--pipeline", &name])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("source: 1000000 frames/s asked for, ")
            && text.contains(" published — BELOW the rate asked for"),
        "{text}"
    );
    let top = streamd()
        .args(["top", "--once", "--pipeline", &name])
        .output()
        .unwrap();
    let top = String::from_utf8_lossy(&top.stdout);
    assert!(top.contains("SOURCE below the rate asked for: "), "{top}");
    let page = metrics(port);
    let labels = format!("pipeline=\"{name}\",stage=\"source\"");
    for line in [
        format!("streamd_source_requested_fps{{{labels}}} 1000000"),
        format!("streamd_source_below_rate{{{labels}}} 1"),
    ] {
        assert!(page.lines().any(|l| l == line), "no {line:?} in\n{page}");
    }
    assert!(
        page.lines()
            .any(|l| l.starts_with(&format!("streamd_source_achieved_fps{{{labels}}} "))),
        "{page}"
    );

    // The rate is the one setting of a source that changes while it runs.
    let configure = |setting: &str| {
        streamd()
            .args(["configure", "source", setting, "--pipeline", &name])
            .output()
            .unwrap()
    };
    let refused = configure("nx=64");
    assert_eq!(refused.status.code(), Some(2));
    assert_eq!(
        stderr(&refused).trim(),
        "streamd: the source takes only fps while it runs (its frames, shape and pattern are fixed when the pipeline starts): `streamd configure source fps=F`; nothing changed"
    );
    let refused = configure("fps=-3");
    assert!(
        stderr(&refused).contains("stage 'source' refused fps=-3: ")
            && stderr(&refused).contains("nothing changed"),
        "{}",
        stderr(&refused)
    );
    let taken = configure("fps=20");
    assert!(taken.status.success(), "{}", stderr(&taken));
    let reply = String::from_utf8_lossy(&taken.stdout);
    assert!(
        reply.starts_with("stage 'source': fps=20 accepted; applied by worker 0 from frame "),
        "{reply}"
    );
    let report = wait_status(&name, "the source at its new rate", |s| {
        stage(s, "source")["below_rate"] == false && stage(s, "source")["requested_fps"] == 20.0
    });
    assert_eq!(stage(&report, "source")["args"]["fps"], 20.0);
    stop(&name);
    finished_ok(child, "run at a new rate");
}

/// A ramp of 64 × 48 u16 at 100 frames/s reduced by `stats` (its frames carry the
/// reductions as attributes) into ring `ready`, read by a verifier; runs until stopped.
const REDUCED: &str = r#"
name = "reduced"

[[ring]]
name = "raw"
slots = 16

[[ring]]
name = "ready"
slots = 16

[source]
ring = "raw"
nx = 64
ny = 48
dtype = "u16"
fps = 100

[[stage]]
name = "reduce"
processor = "stats"
input = "raw"
output = "ready"
args = { publish = "frame" }

[[stage]]
name = "sink"
processor = "verify"
input = "ready"
"#;

#[test]
fn peek_shows_the_newest_frame_its_attributes_and_statistics_and_writes_a_png() {
    let dir = tempfile::tempdir().unwrap();
    let name = pipeline_name("peek");
    let file = dir.path().join("reduced.toml");
    std::fs::write(&file, REDUCED).unwrap();
    let child = start(file.to_str().unwrap(), &name, dir.path());
    wait_status(&name, "frames at the sink", |s| frames_in(s, "sink") > 5);
    let png = dir.path().join("newest.png");
    let out = streamd()
        .args(["peek", &format!("{name}.ready"), "--json", "--png"])
        .arg(&png)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let peeked: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = num(&peeked, "frame_id");
    assert_eq!(peeked["ring"], format!("{name}.ready"));
    assert_eq!(peeked["dtype"], "u16");
    assert_eq!(peeked["dims"], serde_json::json!([48, 64]));
    assert_eq!(peeked["payload_bytes"], 64 * 48 * 2);
    // Pixel i of frame f is f + i: the statistics follow from the id, exactly.
    let n = 64 * 48;
    let stats = &peeked["stats"];
    assert_eq!(stats["count"], n);
    assert_eq!(stats["min"], id as f64);
    assert_eq!(stats["max"], (id + n - 1) as f64);
    assert_eq!(stats["sum"], (n * id + n * (n - 1) / 2) as f64);
    // The attributes the stats stage attached, as they are in the frame.
    let attributes = &peeked["attributes"];
    assert_eq!(attributes["sum"], stats["sum"]);
    assert_eq!(attributes["max"], stats["max"]);
    assert_eq!(attributes["count"], n);

    // The preview, read back by PIL: the frame's shape, contrast stretched to 0..255.
    let read = std::process::Command::new(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    )
    .arg("-c")
    .arg("import sys; from PIL import Image; im = Image.open(sys.argv[1]); print(im.format, im.mode, im.size[0], im.size[1], *im.getextrema())")
    .arg(&png)
    .output()
    .expect(".venv/bin/python (scripts/install-deps installs it)");
    assert!(read.status.success(), "{}", stderr(&read));
    assert_eq!(
        String::from_utf8_lossy(&read.stdout).trim(),
        "PNG L 64 48 0 255"
    );

    // A pipeline ring that several workers write is read as all its segments; text for
    // people names the frame.
    let text = streamd()
        .args(["peek", &format!("{name}.raw")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.starts_with(&format!("ring {name}.raw  frame ")),
        "{text}"
    );
    assert!(
        text.contains("  shape       48 x 64 u16 (6144 bytes)"),
        "{text}"
    );

    // Peek read as a lossy consumer and left: no reader of its is left on the ring.
    let ring = wait_ring(&format!("{name}.ready"), "no lossy reader", |r| {
        r["groups"]
            .as_array()
            .is_some_and(|g| g.iter().all(|g| g["delivery"] == "lossless"))
    });
    assert_eq!(ring["dropped"], 0);
    let missing = streamd()
        .args(["peek", &format!("{name}.nothing"), "--timeout", "0"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert_eq!(
        stderr(&missing).trim().lines().count(),
        1,
        "{}",
        stderr(&missing)
    );
    stop(&name);
    let (_, report) = finished_ok(child, "run reduced");
    assert_eq!(num(stage(&report, "sink"), "errors"), 0);
}

#[test]
fn consume_reads_every_segment_of_a_ring_and_members_are_readers_only() {
    let dir = tempfile::tempdir().unwrap();
    let name = pipeline_name("segs");
    let child = start("endless.toml", &name, dir.path());
    wait_status(&name, "frames at the sink", |s| frames_in(s, "sink") > 20);
    // `out` is written by pass's two workers as out.0 and out.1; consume reads both,
    // as the sink does.
    let out = streamd()
        .args([
            "consume",
            "--ring",
            &format!("{name}.out"),
            "--frames",
            "100",
        ])
        .args(["--verify", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let counts = counters(&out, "consume both segments");
    assert_eq!(num(&counts, "received"), 100);
    assert_eq!(num(&counts, "verify_errors"), 0);
    assert_eq!(counts["end"], "frames");
    // The supervisor holds each stage's group but is not one of its members.
    let ring = wait_ring(&format!("{name}.out.0"), "the sink's group", |r| {
        r["groups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g["name"] == "sink"))
    });
    let sink = ring["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "sink")
        .unwrap();
    assert_eq!(sink["members"], 1, "{ring}");
    stop(&name);
    finished_ok(child, "run endless");
}

#[test]
fn a_run_shorter_than_a_second_reports_the_rates_its_workers_held() {
    let dir = tempfile::tempdir().unwrap();
    let out = finish(
        spawn(&[
            "run",
            &fixture("two-groups.toml"),
            "--name",
            &pipeline_name("short"),
            "--output",
            dir.path().to_str().unwrap(),
            "--runtime",
            "0.5",
            "--json",
        ]),
        "a short run",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report = counters(&out, "a short run");
    for s in report["stages"].as_array().unwrap() {
        for w in s["workers"].as_array().unwrap() {
            // A worker that handled more than one frame held a rate over them.
            if num(w, "frames_in") > 1 {
                assert!(w["fps_in"].as_f64().unwrap() > 0.0, "{} {w}", s["name"]);
            }
            if num(w, "frames_out") > 1 {
                assert!(w["fps_out"].as_f64().unwrap() > 0.0, "{} {w}", s["name"]);
            }
        }
    }
}

#[test]
fn after_reset_stats_the_final_report_counts_the_whole_run_and_adds_up() {
    let dir = tempfile::tempdir().unwrap();
    let name = pipeline_name("reset");
    let child = start("two-groups.toml", &name, dir.path());
    wait_status(&name, "frames through the chain", |s| {
        frames_in(s, "a3") > 300
    });
    let out = streamd()
        .args(["reset-stats", "--pipeline", &name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let live = wait_status(&name, "counting since the reset", |s| {
        s["resets"] == 1 && s["since_reset"] == true
    });
    assert_eq!(live["resets"], 1);
    let (_, report) = finished_ok(child, "run two-groups with a reset");
    assert_eq!(report["since_reset"], false);
    // Every frame counted once by every stage it passed, reset or not.
    let frames = 3000;
    assert_eq!(num(stage(&report, "source"), "frames_out"), frames);
    for s in ["a1", "a2", "a3", "g2"] {
        assert_eq!(frames_in(&report, s), frames, "{s}");
    }
    assert_eq!(num(stage(&report, "a1"), "frames_out"), frames);
    assert_eq!(frames_in(&report, "b2"), 2 * frames);
}
