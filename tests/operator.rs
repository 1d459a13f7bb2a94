//! What the operator sees of a running pipeline when something goes wrong (issue 19): a
//! failed worker's reason in `status`, `top --once` and the metrics.

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
