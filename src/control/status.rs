//! The pipeline's state as `streamd status` shows it, read from the stats segment and
//! the rings — shared memory only, so building it never disturbs a worker.

use crate::ring::{list_names, RingInspector};
use crate::stats::layout::*;
use crate::stats::StatsSegment;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::Ordering::{Acquire, Relaxed};

/// Frames per second in and out of one worker, over the supervisor's last second.
pub type Rates = HashMap<usize, (f64, f64)>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub pipeline: String,
    pub supervisor_pid: u32,
    pub state: String,
    /// When the supervisor started (Unix ns): a new value means a new run of the pipeline.
    pub started_unix_ns: u64,
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
    pub fps_in: f64,
    pub fps_out: f64,
    /// Frame id from which the last `configure` applied (None before any).
    pub configured_from_frame: Option<u64>,
    pub counters: serde_json::Map<String, serde_json::Value>,
    /// The worker's latest error message, if it had one.
    pub last_error: Option<String>,
}

fn core(v: u64) -> Option<u64> {
    (v != NO_CORE).then_some(v)
}

/// Reads every counter of the pipeline behind `stats`, and its rings.
pub fn collect(stats: &StatsSegment, rates: &Rates) -> StatusReport {
    collect_with(stats, rates, &pipeline_rings(&stats.name()))
}

/// [`collect`] with the pipeline's rings already open (a reader that polls keeps them).
pub fn collect_with(stats: &StatsSegment, rates: &Rates, rings: &[RingInspector]) -> StatusReport {
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
            let (fps_in, fps_out) = rates.get(&i).copied().unwrap_or((0.0, 0.0));
            workers.push(WorkerStatus {
                worker: e.worker.load(Relaxed),
                pid: e.pid.load(Relaxed),
                core: core(e.core.load(Relaxed)),
                state: state_name(state).into(),
                frames_in: e.frames_in.load(Relaxed),
                frames_out: e.frames_out.load(Relaxed),
                bytes_in: e.bytes_in.load(Relaxed),
                bytes_out: e.bytes_out.load(Relaxed),
                missed: e.missed.load(Relaxed),
                dropped: e.dropped.load(Relaxed),
                errors: e.errors.load(Relaxed),
                restarts: e.restarts.load(Relaxed),
                proc_us_p50: e.proc_p50_ns.load(Relaxed) as f64 / 1e3,
                proc_us_p99: e.proc_p99_ns.load(Relaxed) as f64 / 1e3,
                proc_histogram: e.proc_histogram.iter().map(|c| c.load(Relaxed)).collect(),
                lag: e.lag.load(Relaxed),
                last_frame_id: e.last_frame_id(),
                span_us: e.span_us.load(Relaxed),
                heartbeat_age_ms: now.saturating_sub(e.heartbeat_ns.load(Relaxed)) / 1_000_000,
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
            });
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
        let args = stats
            .read_args(s)
            .and_then(|(_, text)| serde_json::from_str(&text).ok())
            .unwrap_or(serde_json::Value::Null);
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
        uptime_s: now.saturating_sub(h.started_unix_ns.load(Relaxed)) as f64 / 1e9,
        stages,
        rings: rings
            .iter()
            .filter_map(|r| serde_json::to_value(r.snapshot()).ok())
            .collect(),
    }
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

/// The report as a table for people.
pub fn render(report: &StatusReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pipeline {}  {}  supervisor pid {}  up {:.1} s",
        report.pipeline, report.state, report.supervisor_pid, report.uptime_s
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
                w.state,
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
    for stage in &report.stages {
        for w in &stage.workers {
            if let Some(error) = &w.last_error {
                let _ = writeln!(
                    out,
                    "{} worker {} last error: {error}",
                    stage.name, w.worker
                );
            }
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
