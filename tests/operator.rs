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
