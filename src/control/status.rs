//! The pipeline's state as `streamd status` shows it, read from the stats segment and
//! the rings — shared memory only, so building it never disturbs a worker.

use crate::ring::{list_names, RingInspector, RingSnapshot};
use crate::stats::layout::*;
use crate::stats::StatsSegment;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed};

/// Frames per second in and out of one worker, over the supervisor's last second.
pub type Rates = HashMap<usize, (f64, f64)>;

/// A live worker whose heartbeat is older than this is stalled (it beats at least every
/// 100 ms while it runs), unless it is waiting for space in an output ring.
pub const STALL_AFTER_MS: u64 = 2000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub pipeline: String,
    pub supervisor_pid: u32,
    pub state: String,
    /// When the supervisor started (Unix ns): a new value means a new run of the pipeline.
    pub started_unix_ns: u64,
    /// How many times `reset-stats` was asked for; the counts are since the last one,
    /// except in a run's final report (`since_reset` false), which counts the whole run.
    #[serde(default)]
    pub resets: u64,
    #[serde(default)]
    pub since_reset: bool,
    pub uptime_s: f64,
    pub stages: Vec<StageStatus>,
    pub rings: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageStatus {
    pub name: String,
    pub processor: String,
    /// `running`, `finished`, `failed` (every worker failed), `degraded` (some did) ...
    pub state: String,
    pub frames_in: u64,
    pub frames_out: u64,
    pub missed: u64,
    pub dropped: u64,
    pub errors: u64,
    pub restarts: u64,
    pub fps_in: f64,
    pub fps_out: f64,
    pub args: serde_json::Value,
    /// The source: the rate it is asked for (`None`: as fast as the pipeline takes
    /// frames), the rate it published at over its measuring window (the last second,
    /// or five requested frame intervals if longer), and whether that is short of the
    /// rate asked for (under 90 % of it, or the source is held back or stalled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_fps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub achieved_fps: Option<f64>,
    #[serde(default)]
    pub below_rate: bool,
    pub workers: Vec<WorkerStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub worker: u32,
    pub pid: u32,
    pub core: Option<u64>,
    pub state: String,
    pub frames_in: u64,
    pub frames_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub missed: u64,
    pub dropped: u64,
    pub errors: u64,
    pub restarts: u64,
    pub proc_us_p50: f64,
    pub proc_us_p99: f64,
    /// Frames per processing time: bucket 0 under 2 µs, bucket b in [2^b, 2^(b+1)) µs,
    /// the last one everything longer.
    pub proc_histogram: Vec<u64>,
    pub lag: u64,
    pub last_frame_id: Option<u64>,
    /// µs from the worker's first frame to its latest: frames over it is the rate held.
    pub span_us: u64,
    pub heartbeat_age_ms: u64,
    /// Its heartbeat is older than [`STALL_AFTER_MS`] while it should run, and it is not
    /// waiting for space: stopped (SIGSTOP), stuck in a frame, or hung.
    pub stalled: bool,
    /// The output ring it is waiting for space in, when its heartbeat is stale because
    /// it claims a slot there (the stage reading it is behind): held back, not stalled.
    pub waiting_for: Option<String>,
    pub fps_in: f64,
    pub fps_out: f64,
    /// Frame id from which the last `configure` applied (None before any).
    pub configured_from_frame: Option<u64>,
    pub counters: serde_json::Map<String, serde_json::Value>,
    /// The worker's latest error message, if it had one.
    pub last_error: Option<String>,
    /// How its last process ended (`exited with status 2`, `was killed by signal 9
    /// (SIGKILL)`), if one ended.
    pub last_exit: Option<String>,
    /// The exit status of its last process, when that exited.
    pub exit_status: Option<u32>,
    /// The signal that killed its last process, when one did.
    pub exit_signal: Option<u32>,
    /// The last line it wrote to stderr, if any.
    pub last_stderr: Option<String>,
    /// Why it is not running as it should, in one line: for a failed or restarting
    /// worker how it ended, its last error and its last stderr line; for one in error
    /// the error; for a stalled one how long it has shown no sign of life; for one held
    /// back the ring it waits for.
    pub reason: Option<String>,
}

fn core(v: u64) -> Option<u64> {
    (v != NO_CORE).then_some(v)
}

/// How a worker process ended, from [`WorkerEntry::exit`]; `None` before any ended.
pub fn exit_text(exit: u64) -> Option<String> {
    let value = exit & 0xffff_ffff;
    match exit & !0xffff_ffff {
        EXIT_CODE => Some(format!("exited with status {value}")),
        EXIT_SIGNAL => Some(match signal_name(value as i32) {
            Some(name) => format!("was killed by signal {value} ({name})"),
            None => format!("was killed by signal {value}"),
        }),
        _ => None,
    }
}

fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return None,
    })
}

/// Why a worker is not running as it should, in one line: for a failed or restarting
/// worker how its process ended, then (for those and a worker in error) its last error
/// and the last line it wrote to stderr when that says something more.
fn reason(w: &WorkerStatus) -> Option<String> {
    if w.stalled {
        let seconds = w.heartbeat_age_ms as f64 / 1e3;
        return Some(match process_state(w.pid) {
            Some('T') => format!("no heartbeat for {seconds:.1} s, process stopped (SIGSTOP)"),
            Some('D') => format!("no heartbeat for {seconds:.1} s, process waits for the disk"),
            _ => format!("no heartbeat for {seconds:.1} s"),
        });
    }
    if let Some(ring) = &w.waiting_for {
        return Some(format!("waiting for space in {ring}"));
    }
    let mut parts = Vec::new();
    match w.state.as_str() {
        "failed" | "restarting" => parts.extend(w.last_exit.clone()),
        "error" => {}
        _ => return None,
    }
    if let Some(error) = &w.last_error {
        parts.push(error.clone());
    }
    if let Some(line) = &w.last_stderr {
        let repeated = w
            .last_error
            .as_ref()
            .is_some_and(|e| line.contains(e.as_str()) || e.contains(line.as_str()));
        if !repeated {
            parts.push(format!("stderr: {line}"));
        }
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Reads every counter of the pipeline behind `stats`, and its rings: frame counts since
/// the last `reset-stats`.
pub fn collect(stats: &StatsSegment, rates: &Rates) -> StatusReport {
    collect_with(stats, rates, &pipeline_rings(&stats.name()))
}

/// [`collect`] with the pipeline's rings already open (a reader that polls keeps them).
pub fn collect_with(stats: &StatsSegment, rates: &Rates, rings: &[RingInspector]) -> StatusReport {
    gather(stats, rates, rings, true)
}

/// [`collect`] counting the whole run, whatever `reset-stats` did: a run's final report,
/// whose counts add up from stage to stage.
pub fn collect_whole_run(stats: &StatsSegment, rates: &Rates) -> StatusReport {
    gather(stats, rates, &pipeline_rings(&stats.name()), false)
}

fn gather(
    stats: &StatsSegment,
    rates: &Rates,
    rings: &[RingInspector],
    since_reset: bool,
) -> StatusReport {
    let h = stats.header();
    let now = crate::sys::now_ns();
    let name = stats.name();
    let mut stages = Vec::new();
    for s in 0..stats.stage_count() {
        let slot = stats.stage(s);
        let first = slot.first_entry.load(Relaxed) as usize;
        let count = slot.workers.load(Relaxed) as usize;
        let mut workers = Vec::new();
        for i in first..(first + count).min(stats.entry_count()) {
            let e = stats.entry(i);
            // SYNC: pairs with the Release stores of the state (the worker's
            // `Report::state`, the supervisor's): the counters stored before it are visible.
            let state = e.state.load(Acquire);
            let exit = e.exit.load(Relaxed);
            let heartbeat_age_ms = now.saturating_sub(e.heartbeat_ns.load(Relaxed)) / 1_000_000;
            let (fps_in, fps_out) = rates.get(&i).copied().unwrap_or((0.0, 0.0));
            // A count since the last reset, or over the whole run.
            let count = |total: &AtomicU64, at_reset: &AtomicU64| {
                let total = total.load(Relaxed);
                if since_reset {
                    total.saturating_sub(at_reset.load(Relaxed))
                } else {
                    total
                }
            };
            let base = &e.reset_base;
            workers.push(WorkerStatus {
                worker: e.worker.load(Relaxed),
                pid: e.pid.load(Relaxed),
                core: core(e.core.load(Relaxed)),
                state: state_name(state).into(),
                frames_in: count(&e.frames_in, &base.frames_in),
                frames_out: count(&e.frames_out, &base.frames_out),
                bytes_in: count(&e.bytes_in, &base.bytes_in),
                bytes_out: count(&e.bytes_out, &base.bytes_out),
                missed: count(&e.missed, &base.missed),
                dropped: count(&e.dropped, &base.dropped),
                errors: count(&e.errors, &base.errors),
                restarts: count(&e.restarts, &e.restarts_base),
                proc_us_p50: e.proc_p50_ns.load(Relaxed) as f64 / 1e3,
                proc_us_p99: e.proc_p99_ns.load(Relaxed) as f64 / 1e3,
                proc_histogram: e.proc_histogram.iter().map(|c| c.load(Relaxed)).collect(),
                lag: e.lag.load(Relaxed),
                last_frame_id: e.last_frame_id(),
                span_us: e.span_us.load(Relaxed),
                heartbeat_age_ms,
                stalled: false,
                waiting_for: None,
                fps_in,
                fps_out,
                configured_from_frame: if e.applied_gen.load(Relaxed) > 2 {
                    e.applied_from_frame()
                } else {
                    None
                },
                counters: stats
                    .counters(i)
                    .into_iter()
                    .map(|(k, v)| (k, v.into()))
                    .collect(),
                last_error: Some(stats.last_error(i)).filter(|t| !t.is_empty()),
                last_exit: exit_text(exit),
                exit_status: (exit & !0xffff_ffff == EXIT_CODE).then_some(exit as u32),
                exit_signal: (exit & !0xffff_ffff == EXIT_SIGNAL).then_some(exit as u32),
                last_stderr: Some(stats.last_stderr(i)).filter(|t| !t.is_empty()),
                reason: None,
            });
            let w = workers.last_mut().expect("pushed above");
            let live = matches!(state, WORKER_RUNNING | WORKER_DRAINING | WORKER_ERROR);
            if live && heartbeat_age_ms > STALL_AFTER_MS {
                // A process stopped inside a claim is stalled, whatever it waited for.
                let stopped = process_state(w.pid) == Some('T');
                let port = e.claiming.load(Relaxed) as usize;
                w.waiting_for = port
                    .checked_sub(1)
                    .filter(|_| !stopped)
                    .and_then(|p| stats.outputs(i).get(p).cloned());
                w.stalled = w.waiting_for.is_none();
            }
            w.reason = reason(w);
        }
        let args: serde_json::Value = stats
            .read_args(s)
            .and_then(|(_, text)| serde_json::from_str(&text).ok())
            .unwrap_or(serde_json::Value::Null);
        let (mut requested_fps, mut achieved_fps, mut below_rate) = (None, None, false);
        if let (0, Some(source)) = (s, workers.first_mut()) {
            let e = stats.entry(first);
            requested_fps = args["fps"].as_f64().filter(|&fps| fps > 0.0);
            achieved_fps = Some(f64::from_bits(e.achieved_fps.load(Relaxed)));
            // Held back or stalled, it publishes nothing for now.
            let stuck = source.stalled || source.waiting_for.is_some();
            below_rate = requested_fps.is_some()
                && source.state == "running"
                && (e.below_rate.load(Relaxed) == 1 || stuck);
            if below_rate && source.reason.is_none() {
                source.reason = Some(format!(
                    "publishing {:.1} of the {} frames/s asked for",
                    achieved_fps.unwrap_or_default(),
                    requested_fps.unwrap_or_default()
                ));
            }
        }
        let sum = |f: fn(&WorkerStatus) -> u64| workers.iter().map(f).sum::<u64>();
        let states: Vec<&str> = workers.iter().map(|w| w.state.as_str()).collect();
        let state = if states.iter().all(|s| *s == "failed") {
            "failed"
        } else if states.contains(&"failed") {
            "degraded"
        } else if states.iter().all(|s| *s == "finished") {
            "finished"
        } else if states.contains(&"restarting") {
            "restarting"
        } else {
            states.first().copied().unwrap_or("pending")
        };
        stages.push(StageStatus {
            name: stats.stage_name(s),
            processor: stats.stage_processor(s),
            state: state.into(),
            frames_in: sum(|w| w.frames_in),
            frames_out: sum(|w| w.frames_out),
            missed: sum(|w| w.missed),
            dropped: sum(|w| w.dropped),
            errors: sum(|w| w.errors),
            restarts: sum(|w| w.restarts),
            fps_in: workers.iter().map(|w| w.fps_in).sum(),
            fps_out: workers.iter().map(|w| w.fps_out).sum(),
            args,
            requested_fps,
            achieved_fps,
            below_rate,
            workers,
        });
    }
    StatusReport {
        pipeline: name.clone(),
        supervisor_pid: h.supervisor_pid.load(Relaxed),
        // SYNC: pairs with the supervisor's Release stores of the pipeline state; only the
        // state is used (the workers' counters were read above, each after its state).
        state: pipeline_state_name(h.state.load(Acquire)).into(),
        started_unix_ns: h.started_unix_ns.load(Relaxed),
        resets: h.reset_gen.load(Relaxed),
        since_reset: since_reset && h.reset_gen.load(Relaxed) > 0,
        uptime_s: now.saturating_sub(h.started_unix_ns.load(Relaxed)) as f64 / 1e9,
        stages,
        rings: rings.iter().map(|r| ring_json(&r.snapshot())).collect(),
    }
}

/// The state letter of process `pid` (`R`, `S`, `D`, `T` stopped, ...), from
/// `/proc/PID/stat`.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in parentheses may hold anything; the state follows its end.
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// A ring as `status --json` and `rings --json` show it. A group's `members` counts its
/// readers: a pipeline's supervisor, which owns its rings and holds each stage's group
/// while its workers restart, is in `consumers` but not counted.
pub fn ring_json(ring: &RingSnapshot) -> serde_json::Value {
    let mut value = serde_json::to_value(ring).unwrap_or_default();
    let groups = value["groups"].as_array_mut().into_iter().flatten();
    for (group, snapshot) in groups.zip(&ring.groups) {
        let readers = snapshot
            .consumers
            .iter()
            .filter(|c| c.pid != ring.producer_pid)
            .count();
        group["members"] = readers.into();
    }
    value
}

/// The readable rings of pipeline `name` (segments `NAME.*`).
pub fn pipeline_rings(name: &str) -> Vec<RingInspector> {
    let prefix = format!("{name}.");
    list_names()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.starts_with(&prefix))
        .filter_map(|r| RingInspector::open(&r).ok())
        .collect()
}

/// A worker's state as the tables show it: `stalled` or `blocked` (waiting for space)
/// instead of the state it last reported when its heartbeat is stale.
pub fn shown_state(w: &WorkerStatus) -> &str {
    if w.stalled {
        "stalled"
    } else if w.waiting_for.is_some() {
        "blocked"
    } else {
        &w.state
    }
}

/// The report as a table for people.
pub fn render(report: &StatusReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pipeline {}  {}  supervisor pid {}  up {:.1} s{}",
        report.pipeline,
        report.state,
        report.supervisor_pid,
        report.uptime_s,
        if report.since_reset {
            "  (counts since reset-stats)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "{:<14} {:>2} {:>8} {:>4} {:<10} {:>9} {:>9} {:>10} {:>10} {:>7} {:>7} {:>6} {:>8} {:>8} {:>8} {:>6}",
        "STAGE", "W", "PID", "CORE", "STATE", "IN/s", "OUT/s", "IN", "OUT", "MISSED", "DROPPED",
        "ERRORS", "RESTARTS", "P50 µs", "P99 µs", "LAG"
    );
    for stage in &report.stages {
        for w in &stage.workers {
            let _ = writeln!(
                out,
                "{:<14} {:>2} {:>8} {:>4} {:<10} {:>9.1} {:>9.1} {:>10} {:>10} {:>7} {:>7} {:>6} {:>8} {:>8.1} {:>8.1} {:>6}",
                stage.name,
                w.worker,
                w.pid,
                w.core.map_or("-".to_string(), |c| c.to_string()),
                shown_state(w),
                w.fps_in,
                w.fps_out,
                w.frames_in,
                w.frames_out,
                w.missed,
                w.dropped,
                w.errors,
                w.restarts,
                w.proc_us_p50,
                w.proc_us_p99,
                w.lag
            );
        }
    }
    for stage in report.stages.iter().filter(|s| s.requested_fps.is_some()) {
        let _ = writeln!(
            out,
            "{}: {} frames/s asked for, {:.1} published{}",
            stage.name,
            stage.requested_fps.unwrap_or_default(),
            stage.achieved_fps.unwrap_or_default(),
            if stage.below_rate {
                " — BELOW the rate asked for"
            } else {
                ""
            }
        );
    }
    for stage in &report.stages {
        for w in &stage.workers {
            let why = match (&w.reason, &w.last_error) {
                (Some(reason), _) => format!("{}: {reason}", shown_state(w)),
                (None, Some(error)) => format!("last error: {error}"),
                (None, None) => continue,
            };
            let _ = writeln!(out, "{} worker {} {why}", stage.name, w.worker);
        }
    }
    for ring in &report.rings {
        let _ = writeln!(
            out,
            "ring {}: {} slots of {} bytes, published {}, dropped {}, producer {}",
            ring["name"].as_str().unwrap_or("?"),
            ring["slots"],
            ring["slot_bytes"],
            ring["published"],
            ring["dropped"],
            ring["producer"].as_str().unwrap_or("?"),
        );
    }
    out
}
