//! `streamd top` end to end: a real pipeline, the dashboard in a tmux pane (a real
//! pseudo-terminal), the screen read back until every stage shows frames flowing; `q`
//! leaves the terminal as it found it. And `--once` prints the same overview as text.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A tmux server of this test's own, killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// A tmux server of its own: the tests of this file run at once, each with a session
    /// named `top`.
    fn new() -> Tmux {
        static SERVERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = SERVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Tmux {
            socket: format!("streamd-test-{}-{n}", std::process::id()),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux is installed by scripts/install-deps");
        assert!(out.status.success(), "tmux {args:?}: {}", stderr(&out));
        out
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }

    /// Waits (up to the hang guard) until the screen satisfies `ready`.
    fn wait_for(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            assert!(
                started.elapsed() < HANG_GUARD,
                "the screen never showed {what}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// The stage table's rows: (stage, worker, IN/s, OUT/s).
fn rows(screen: &str) -> Vec<(String, u32, f64, f64)> {
    screen
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line
                .trim_matches(|c| c == '│' || c == ' ')
                .split_whitespace()
                .collect();
            // STAGE W PID CORE STATE IN/s OUT/s ...
            let worker = cells.get(1)?.parse().ok()?;
            let fps_in = cells.get(5)?.parse().ok()?;
            let fps_out = cells.get(6)?.parse().ok()?;
            Some((cells[0].to_string(), worker, fps_in, fps_out))
        })
        .collect()
}

/// Every stage of `endless.toml` shows frames flowing: the source publishing, the
/// others taking frames in.
fn all_flowing(screen: &str) -> bool {
    let rows = rows(screen);
    let flowing = |stage: &str, worker: u32| {
        rows.iter().any(|(s, w, fps_in, fps_out)| {
            s == stage
                && *w == worker
                && if stage == "source" {
                    *fps_out > 0.0
                } else {
                    *fps_in > 0.0
                }
        })
    };
    flowing("source", 0) && flowing("pass", 0) && flowing("pass", 1) && flowing("sink", 0)
}

#[test]
fn the_dashboard_shows_every_stage_flowing_and_q_restores_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let name = pipeline_name("top");
    let child = start("endless.toml", &name, dir.path());
    wait_status(&name, "frames flowing", |s| frames_in(s, "sink") > 0);

    let once = streamd()
        .args(["top", "--once", "--pipeline", &name])
        .output()
        .unwrap();
    assert!(once.status.success(), "{}", stderr(&once));
    let text = String::from_utf8_lossy(&once.stdout);
    assert!(all_flowing(&text), "--once:\n{text}");
    assert!(
        text.contains(&format!("pipeline {name}  running")),
        "{text}"
    );

    let tmux = Tmux::new();
    let stty = dir.path().join("stty-after");
    let binary = env!("CARGO_BIN_EXE_streamd");
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "150",
        "-y",
        "45",
        "bash --norc --noprofile",
    ]);
    let before = dir.path().join("stty-before");
    let script = format!(
        "stty -a > {}; {binary} top --pipeline {name}; echo top-exited-$?; stty -a > {}",
        before.display(),
        stty.display()
    );
    tmux.run(&["send-keys", "-t", "top", &script, "Enter"]);
    let screen = tmux.wait_for("every stage with a non-zero rate", all_flowing);
    assert!(screen.contains("stages · workers"), "{screen}");
    assert!(screen.contains("q quit"), "the help line:\n{screen}");
    assert!(!screen.contains("LOSS"), "{screen}");

    tmux.run(&["send-keys", "-t", "top", "q"]);
    let screen = tmux.wait_for("the shell after q", |s| s.contains("top-exited-0"));
    assert!(
        !screen.contains("stages · workers"),
        "the dashboard's screen was left:\n{screen}"
    );
    let started = Instant::now();
    while !stty.exists() || std::fs::read_to_string(&stty).unwrap().is_empty() {
        assert!(started.elapsed() < HANG_GUARD, "stty never ran after top");
        std::thread::sleep(Duration::from_millis(50));
    }
    let settings = |path: &Path| -> Vec<String> {
        let text = std::fs::read_to_string(path).unwrap();
        text.split([' ', ';', '\n'])
            .filter(|w| ["icanon", "-icanon", "echo", "-echo", "isig", "-isig"].contains(w))
            .map(str::to_string)
            .collect()
    };
    let after = settings(&stty);
    assert_eq!(after, settings(&before), "terminal modes after top");
    assert!(after.contains(&"icanon".to_string()) && after.contains(&"echo".to_string()));

    let stopped = streamd()
        .args(["stop", "--pipeline", &name])
        .output()
        .unwrap();
    assert!(stopped.status.success(), "{}", stderr(&stopped));
    finished_ok(child, "run endless");
}

fn signal(pid: u64, signal: i32) {
    // SAFETY: kill(2) on a worker of a pipeline this test started, alive per its status.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0, "kill {pid}");
}

#[test]
fn the_dashboard_shows_a_failed_worker_with_its_reason_and_a_stalled_one_in_colour() {
    let dir = tempfile::tempdir().unwrap();
    let name = pipeline_name("topfail");
    // Killed once, a worker is marked failed at once.
    let child = start_edited(
        "endless.toml",
        &name,
        dir.path(),
        &[(
            "[[ring]]\nname = \"raw\"",
            "[restart]\nmax_crashes = 1\n\n[[ring]]\nname = \"raw\"",
        )],
    );
    let live = wait_status(&name, "frames at the sink", |s| frames_in(s, "sink") > 20);
    signal(num(worker(&live, "pass", 0), "pid"), libc::SIGKILL);
    wait_status(&name, "pass w0 failed", |s| {
        worker(s, "pass", 0)["state"] == "failed"
    });
    let sink = num(worker(&live, "sink", 0), "pid");
    signal(sink, libc::SIGSTOP);
    wait_status(&name, "the sink stalled", |s| {
        worker(s, "sink", 0)["stalled"] == true
    });

    let tmux = Tmux::new();
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "170",
        "-y",
        "40",
        "bash --norc --noprofile",
    ]);
    let binary = env!("CARGO_BIN_EXE_streamd");
    tmux.run(&[
        "send-keys",
        "-t",
        "top",
        &format!("{binary} top --pipeline {name}"),
        "Enter",
    ]);
    let killed = "was killed by signal 9 (SIGKILL)";
    let screen = tmux.wait_for("the failed and the stalled worker", |s| {
        s.contains("REASON")
            && s.contains(&format!("FAILED: pass w0 ({killed})"))
            && s.contains("STALLED: sink w0")
            && s.contains("process stopped (SIGSTOP)")
            // The source waits for the stalled sink's rings to make room.
            && s.lines().any(|l| l.contains("│source ") && l.contains(" blocked "))
    });
    println!("streamd top, captured by tmux:\n{screen}");
    let row = |stage: &str, w: &str| -> String {
        screen
            .lines()
            .find(|l| {
                let cells: Vec<&str> = l
                    .trim_matches(|c| c == '│' || c == ' ')
                    .split_whitespace()
                    .collect();
                cells.first() == Some(&stage) && cells.get(1) == Some(&w)
            })
            .unwrap_or_else(|| panic!("no {stage} w{w} row:\n{screen}"))
            .to_string()
    };
    let failed = row("pass", "0");
    assert!(
        failed.contains(" failed ") && failed.contains(killed),
        "{failed}"
    );
    let stalled = row("sink", "0");
    assert!(
        stalled.contains(" stalled ") && stalled.contains("no heartbeat for "),
        "{stalled}"
    );
    assert!(row("source", "0").contains(" blocked "), "{screen}");

    // The stalled state is drawn in colour (magenta, colour 5), the failed one in red (1):
    // tmux writes them as SGR 3N or 38;5;N.
    let coloured =
        String::from_utf8_lossy(&tmux.run(&["capture-pane", "-p", "-e", "-t", "top"]).stdout)
            .into_owned();
    let escaped_row = |stage: &str| {
        coloured
            .lines()
            .find(|l| l.contains(stage) && (l.contains("stalled") || l.contains("failed")))
            .unwrap_or_else(|| panic!("no {stage} row in:\n{coloured}"))
            .to_string()
    };
    let coloured_as = |stage: &str, word: &str, colour: u8| {
        let line = escaped_row(stage);
        let before = &line[..line.find(word).unwrap()];
        let set = before
            .rfind("\u{1b}[")
            .map(|at| &before[at..])
            .unwrap_or_default();
        assert!(
            set.ends_with(&format!("[3{colour}m")) || set.ends_with(&format!(";5;{colour}m")),
            "{word} is not in colour {colour}: {line:?}"
        );
    };
    coloured_as("sink", "stalled", 5);
    coloured_as("pass", "failed", 1);

    tmux.run(&["send-keys", "-t", "top", "q"]);
    signal(sink, libc::SIGCONT);
    let stopped = streamd()
        .args(["stop", "--pipeline", &name])
        .output()
        .unwrap();
    assert!(stopped.status.success(), "{}", stderr(&stopped));
    let out = finish(child, "run with a failed and a stalled worker");
    assert_eq!(out.status.code(), Some(5), "a failed worker fails the run");
}
